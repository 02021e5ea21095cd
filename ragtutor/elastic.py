r"""BM25 as Lucene and Elasticsearch compute it, and Elasticsearch itself as a retriever.

Chapter 01's :class:`ragtutor.sparse.BM25Retriever` is BM25 with exact document lengths. A search
engine stores less: Lucene (and so Elasticsearch, OpenSearch, Solr and Anserini) keeps each
document's length in **one byte**, its *norm*, and scores with the length that byte decodes to.
This module rebuilds that step by step, so that a learner can see what changes and by how much::

    encode_length([100])  -> [57]          # one byte per document
    decode_length([63])   -> [96]          # the length BM25 then sees
    LuceneBM25Retriever().fit(passages)    # BM25 exactly as Lucene scores one text field
    compare_with_exact(passages, questions)   # how far that is from chapter 01's exact BM25
    ElasticsearchRetriever(url).fit(passages) # a real Elasticsearch server, same contract

Three things separate an Elasticsearch score from chapter 01's, and each can be switched on alone:

1. **The analyzer** (``analyzer=``): Elasticsearch's ``standard`` analyzer keeps accents and keeps
   "france's" as one token; the course's tokenizer folds "é" to "e" and splits at the apostrophe.
2. **The one-byte length** (``quantize_lengths=``): lengths from 24 up keep 4 significant bits.
3. **The constant factor** (k1 + 1): Lucene ≥ 8 drops it, so every Lucene score is the textbook
   score divided by k1 + 1 = 2.2; rankings are unchanged.

Sources checked: Lucene's ``org.apache.lucene.util.SmallFloat`` (``intToByte4``, ``byte4ToInt``,
``longToInt4``, ``int4ToLong``), ``org.apache.lucene.search.similarities.BM25Similarity``
(``computeNorm``, ``idf``, ``avgFieldLength``, ``LENGTH_TABLE``, ``BM25Scorer.score``),
``BooleanQuery.rewrite`` (duplicate SHOULD clauses summed as boosts) and Elasticsearch's
reference for the ``standard`` analyzer, the ``dense_vector`` field and kNN search.
"""
import math
import numbers
import os
import re
from collections.abc import Mapping

import numpy as np

from ragtutor.retrieval import Retriever, check_k, passage_text, warn_unknown
from ragtutor.sparse import BM25Retriever, _SparseRetriever
from ragtutor.text import tokenize

__all__ = ["encode_length", "decode_length", "standard_analyzer", "LuceneBM25Retriever",
           "ElasticsearchRetriever", "ElasticsearchUnavailableError", "compare_with_exact",
           "articles_by_title", "ES_URL_ENV", "DOCKER_COMMAND"]

# --------------------------------------------------------------------------------------------
# Lucene's one-byte document length (SmallFloat.intToByte4 / byte4ToInt)
# --------------------------------------------------------------------------------------------
# A length of 24 or more is stored as 24 + a 4-significant-bit float code of (length - 24).
# Lucene computes the 24 as 255 - longToInt4(Integer.MAX_VALUE) = 255 - 231.
_NUM_FREE_VALUES = 24
_MAX_LENGTH = 2**31 - 1  # a Java int: Lucene refuses nothing below it, and nothing above exists


def _long_to_int4(x):
    """SmallFloat.longToInt4 of the non-negative int64 array ``x``: a float with 4 significant bits
    (3 stored, the leading 1 implicit) and a 5-bit exponent, which preserves order."""
    bits = np.zeros(x.shape, dtype=np.int64)
    nonzero = x > 0
    # The number of bits of x (64 - numberOfLeadingZeros). frexp is exact for x < 2**53.
    bits[nonzero] = np.frexp(x[nonzero].astype(np.float64))[1]
    shift = np.maximum(bits - 4, 0)
    # Below 8 (under 4 bits) the value is "subnormal": stored as is, exponent field 0.
    normal = ((x >> shift) & 0x07) | ((shift + 1) << 3)
    return np.where(bits < 4, x, normal)


def _int4_to_long(code):
    """SmallFloat.int4ToLong: the smallest value that ``_long_to_int4`` maps to ``code``."""
    mantissa = code & 0x07
    shift = (code >> 3) - 1
    return np.where(shift == -1, mantissa, (mantissa | 0x08) << np.maximum(shift, 0))


def encode_length(lengths):
    """Lucene's one-byte norm of document lengths (``SmallFloat.intToByte4``): ``[n]`` -> uint8.

    Lengths 0..23 are stored exactly; a length L ≥ 24 as 24 + a float code of L − 24 with 4
    significant bits, truncated (rounded down). So 100 is stored as 24 + the code of
    76 = 0b1001100, whose 4 leading bits 0b1001 are kept with an exponent of 3: byte 57, which
    decodes to 24 + 0b1001000 = 24 + 72 = 96. Each code covers a range of lengths about
    1/8 to 1/16 of its size wide; decoding returns the range's smallest length
    (:func:`decode_length`). This is what ``BM25Similarity.computeNorm`` stores for a text field
    (the token count less tokens at the same position, which the standard analyzer never makes).
    """
    x = np.asarray(lengths)
    if x.dtype.kind not in "iu" and not (x.dtype.kind == "f" and np.all(x == np.round(x))):
        raise TypeError(f"lengths must be whole numbers of tokens, got an array of {x.dtype}")
    x = x.astype(np.int64)
    if x.size and (x.min() < 0 or x.max() > _MAX_LENGTH):
        raise ValueError(f"lengths must lie in 0..{_MAX_LENGTH} (a Java int, as Lucene stores "
                         f"them), got values from {x.min()} to {x.max()}")
    free = x < _NUM_FREE_VALUES
    shifted = np.where(free, 0, x - _NUM_FREE_VALUES)
    return np.where(free, x, _NUM_FREE_VALUES + _long_to_int4(shifted)).astype(np.uint8)


def decode_length(codes):
    """The length Lucene's BM25 scores with for each one-byte norm (``SmallFloat.byte4ToInt``,
    ``BM25Similarity.LENGTH_TABLE``): uint8 codes ``[n]`` -> int64 lengths ``[n]``.

    Codes below 24 are the length itself; code c ≥ 24 decodes to 24 + int4ToLong(c − 24), the
    smallest length whose code is c. Monotone: code 255 decodes to 2,013,265,944.
    """
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers (one byte each), got an array of {c.dtype}")
    c = c.astype(np.int64)
    if c.size and (c.min() < 0 or c.max() > 255):
        raise ValueError(f"codes must lie in 0..255 (one byte), got values from {c.min()} to "
                         f"{c.max()}")
    free = c < _NUM_FREE_VALUES
    return np.where(free, c, _NUM_FREE_VALUES + _int4_to_long(np.maximum(c - _NUM_FREE_VALUES, 0)))


# --------------------------------------------------------------------------------------------
# Elasticsearch's standard analyzer, approximated
# --------------------------------------------------------------------------------------------
# Characters that UAX#29 segments one at a time: Han ideographs and Hiragana (and the ideographic
# iteration marks). Everything else of \w that is not "_" counts as a letter or digit.
_IDEOGRAPH = r"\u3005\u3007\u3040-\u309f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_ALNUM = rf"(?:(?![{_IDEOGRAPH}])[^\W_])"
_LETTER = rf"(?:(?![{_IDEOGRAPH}])[^\W\d_])"
# A word: runs of letters and digits, joined as UAX#29 joins them (rules WB6/7, WB11/12, WB13a/b):
# ' ’ . : · between two letters, , ; ' ’ . between two digits, underscores between alphanumerics.
_STANDARD_TOKEN = re.compile(
    rf"[{_IDEOGRAPH}]"
    rf"|{_ALNUM}[\u0300-\u036f]*(?:"
    rf"{_ALNUM}[\u0300-\u036f]*"
    rf"|(?<={_LETTER})['\u2019.:\u00b7](?={_LETTER})"
    rf"|(?<=\d)[,;'\u2019.](?=\d)"
    rf"|_+(?={_ALNUM}))*")
# Elasticsearch's default max_token_length: a longer word is cut into pieces of this size.
_MAX_TOKEN_LENGTH = 255


def standard_analyzer(text):
    """Tokens of ``text`` as Elasticsearch's default ``standard`` analyzer makes them, approximately.

    The standard analyzer is Lucene's ``StandardTokenizer`` (word boundaries of Unicode's UAX#29)
    and a lower-case filter; no accent folding, no stop words::

        "São Tomé's capital, 1,000 km from the U.S."
            -> ["são", "tomé's", "capital", "1,000", "km", "from", "the", "u.s"]

    Kept from UAX#29: letters and digits run together ("3rd", "abc123"); an apostrophe, a period,
    a colon or a middle dot between two letters joins them ("france's", "u.s", "a:b"); a comma,
    semicolon, period or apostrophe between two digits joins them ("1,000", "3.14"); underscores
    join ("snake_case"); each Han ideograph and Hiragana character is a token of its own; words
    longer than 255 characters are cut into pieces of 255, as Elasticsearch's ``max_token_length``
    does. Lower-casing is Python's ``str.lower``.

    Where this differs from Lucene (none of it occurs in the course's English knowledge base):
    emoji, which Lucene keeps as tokens, are dropped; Katakana, Thai, Lao, Khmer and Myanmar
    runs follow the letter rule above instead of UAX#29's script rules; combining marks are
    attached only from the block U+0300–U+036F; format characters (soft hyphen, zero-width
    joiner) split words here but not in UAX#29; Java's ``Character.toLowerCase`` and Python's
    ``str.lower`` disagree on a few characters ("İ" -> "i" in Java, "i̇" in Python).
    """
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}: {text!r}")
    tokens = []
    for match in _STANDARD_TOKEN.finditer(text):
        word = match.group().lower()
        tokens.extend(word[i:i + _MAX_TOKEN_LENGTH]
                      for i in range(0, len(word), _MAX_TOKEN_LENGTH))
    return tokens


ANALYZERS = {"standard": standard_analyzer, "course": tokenize}


# --------------------------------------------------------------------------------------------
# BM25 as Lucene scores it
# --------------------------------------------------------------------------------------------
class LuceneBM25Retriever(_SparseRetriever):
    r"""BM25 exactly as Lucene ≥ 8 and Elasticsearch score one ``text`` field (``BM25Similarity``).

    For query q (each occurrence of a term counted once, as Elasticsearch's ``match`` query
    makes one SHOULD clause per token and ``BooleanQuery`` sums duplicate clauses as a boost of 2)
    and document d:

    .. math::
        s(q, d) = \sum_{t \in q} \mathrm{idf}(t)\,
                  \frac{f(t, d)}{f(t, d) + k_1 \left(1 - b + b\,\frac{L(d)}{\mathrm{avgdl}}\right)},
        \qquad \mathrm{idf}(t) = \ln\!\left(1 + \frac{N - \mathrm{df}(t) + 0.5}{\mathrm{df}(t) + 0.5}\right)

    - f(t, d): how often t occurs in d; df(t): the number of documents that contain t;
    - N: the number of documents with at least one token (Lucene's ``docCount`` of the field: an
      empty document is in the index but not in N);
    - avgdl = (total number of tokens) / N, from the exact lengths (Lucene's
      ``sumTotalTermFreq / docCount``);
    - L(d) = ``decode_length(encode_length(|d|))``, the length kept in d's one-byte norm, or the
      exact |d| when ``quantize_lengths=False``.

    Unlike :class:`ragtutor.sparse.BM25Retriever` (method "lucene"), the factor (k1 + 1) is not
    in the numerator, as in Lucene ≥ 8: with ``quantize_lengths=False`` and the same tokens,
    ``BM25Retriever`` scores are these times (k1 + 1). Scores are float64; Lucene computes in
    float32, so Elasticsearch's scores agree to about 1e-6 relatively, and two documents whose
    float64 scores differ by less than that may be ranked in the other order there.

    Parameters (stored as given, checked by :meth:`fit`): ``k1`` = 1.2 and ``b`` = 0.75,
    Elasticsearch's defaults; ``analyzer``: ``"standard"`` (:func:`standard_analyzer`,
    Elasticsearch's default), ``"course"`` (:func:`ragtutor.text.tokenize`, chapter 01's tokens)
    or any callable from a string to a list of tokens. Token lists are always used as given.
    ``quantize_lengths``: True to score with the one-byte lengths, as Lucene does.

    Index edits: :meth:`add` and :meth:`delete` recompute N, df and avgdl, so an edited index
    scores as a fresh fit on the edited corpus. That is Lucene's state **after segments merge**:
    until then a deleted document still counts in N, df and avgdl (Lucene's statistics come
    from the segments, which only mark it deleted). Elasticsearch merges in the background, or at
    once with ``POST /<index>/_forcemerge?max_num_segments=1``, which
    :class:`ElasticsearchRetriever` calls after a delete.

    Learned state after :meth:`fit`: ``vocabulary_``, ``idf_`` ``[V]``, ``doc_len_`` ``[n_docs]``
    (exact token counts), ``norms_`` ``[n_docs]`` (uint8 codes), ``scored_len_`` ``[n_docs]``
    (the L(d) used), ``avgdl_``, ``doc_count_`` (N), ``index_`` (CSR ``[V, n_docs]``: term t's
    contribution to s(q, d) per occurrence of t in q) and ``doc_ids_``.
    """

    _name = "LuceneBM25Retriever"
    stopwords = None  # the standard analyzer removes none; the shared tokenising code asks

    def __init__(self, k1=1.2, b=0.75, analyzer="standard", quantize_lengths=True):
        self.k1 = k1
        self.b = b
        self.analyzer = analyzer
        self.quantize_lengths = quantize_lengths

    def _check_params(self):
        for name, value in (("k1", self.k1), ("b", self.b)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {name}={value}")
        if self.k1 < 0:
            raise ValueError(f"k1 must be non-negative, got k1={self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"b must lie in [0, 1], got b={self.b}")
        if not isinstance(self.quantize_lengths, bool):
            raise TypeError(f"quantize_lengths must be True or False, got "
                            f"{self.quantize_lengths!r}")
        self._analyze()  # refuses an unknown analyzer before anything is tokenised

    def _analyze(self):
        if callable(self.analyzer):
            return self.analyzer
        if isinstance(self.analyzer, str) and self.analyzer in ANALYZERS:
            return ANALYZERS[self.analyzer]
        raise ValueError(f"unknown analyzer {self.analyzer!r}: choose one of {sorted(ANALYZERS)} "
                         "or pass a function from a string to a list of tokens")

    def _tokens(self, text, where):
        if not isinstance(text, str):
            return super()._tokens(text, where)  # a token list, checked and used as given
        tokens = self._analyze()(text)
        if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
            raise TypeError(f"the analyzer must return a list of string tokens, but for {where} "
                            f"it returned {tokens!r}")
        return list(tokens)

    def _fit_weights(self, counts, doc_len):
        df = np.diff(counts.indptr)  # CSR rows are terms: a row's stored entries are its documents
        n = np.count_nonzero(doc_len)
        self.doc_len_ = doc_len
        self.doc_count_ = int(n)
        self.avgdl_ = doc_len.sum() / n
        self.norms_ = encode_length(doc_len)
        self.scored_len_ = decode_length(self.norms_) if self.quantize_lengths else doc_len
        self.idf_ = np.log(1 + (n - df + 0.5) / (df + 0.5))
        tf = counts.data
        length_norm = 1 - self.b + self.b * self.scored_len_[counts.indices] / self.avgdl_
        index = counts.copy()
        index.data = np.repeat(self.idf_, df) * tf / (tf + self.k1 * length_norm)
        return index

    def _query_weights(self, counts):
        return counts


# --------------------------------------------------------------------------------------------
# How far Lucene's BM25 is from the course's exact BM25
# --------------------------------------------------------------------------------------------
def articles_by_title(passages):
    """One long document per title: the passage texts of each entity joined, in corpus order.

    Returns passage records ``{"id": title, "title": title, "text": ...}``. The knowledge base's
    passages are 20 to 60 tokens, where the one-byte length is exact or nearly so; articles run
    to hundreds of tokens, where it keeps 4 significant bits and so matters.
    """
    texts = {}
    for p in passages:
        texts.setdefault(p["title"], []).append(p["text"])
    return [{"id": title, "title": title, "text": " ".join(parts)} for title, parts in texts.items()]


def _variants(k1, b):
    return {
        "course tokens, exact length": LuceneBM25Retriever(k1, b, "course", quantize_lengths=False),
        "course tokens, one-byte length": LuceneBM25Retriever(k1, b, "course"),
        "standard analyzer, exact length": LuceneBM25Retriever(k1, b, quantize_lengths=False),
        "standard analyzer, one-byte length": LuceneBM25Retriever(k1, b),
    }


def compare_with_exact(corpus, queries, k=10, variants=None, k1=1.2, b=0.75):
    r"""How far each variant of BM25 ranks and scores from chapter 01's exact
    ``BM25Retriever(k1, b)``, on ``corpus`` (passage records or strings) and ``queries`` (strings).

    ``variants`` maps a name to an unfitted retriever with a ``score(query)`` method; the default
    separates the two causes of difference: the course's tokens or the standard analyzer, each
    with exact or one-byte lengths (the first should agree perfectly: it is the check). Each is
    fitted on ``corpus``. Returns ``{name: row}``, each row a dict of

    - ``top1``: the fraction of queries whose best document is the exact BM25's best;
    - ``top_k_same_set``: the fraction whose k best are the same set as the exact BM25's;
    - ``overlap_at_k``: the mean of \|top-k ∩ exact top-k\| / k;
    - ``kendall_tau``: the mean, over queries, of Kendall's τ-b between the variant's and the
      exact scores of the exact BM25's k best documents (1: the same order; queries whose scores
      there are all tied are left out);
    - ``max_rel_score_diff`` and ``median_rel_score_diff``: the largest and the median
      \|s − s_exact / (k1 + 1)\| / (s_exact / (k1 + 1)) over the exact BM25's k best documents of
      every query, where that score is positive (the exact scores are divided by k1 + 1, which
      Lucene drops). A different analyzer can take a query word away altogether ("france's" is
      not "france"), so its largest difference is close to 1 even when rankings agree.

    Ties in a top k are broken by the lower row, as :func:`ragtutor.retrieval.top_k` does.
    """
    from scipy.stats import kendalltau

    exact = BM25Retriever(k1=k1, b=b).fit(corpus)
    exact_scores = np.stack([exact.score(q) for q in queries]) / (k1 + 1)
    k = check_k(k, exact_scores.shape[1])
    exact_top = _top_rows(exact_scores, k)
    report = {}
    for name, retriever in (_variants(k1, b) if variants is None else variants).items():
        retriever.fit(corpus)
        scores = np.stack([retriever.score(q) for q in queries])
        top = _top_rows(scores, k)
        taus = []
        for row, chosen in enumerate(exact_top):
            a, c = exact_scores[row, chosen], scores[row, chosen]
            if np.ptp(a) > 0 and np.ptp(c) > 0:
                taus.append(kendalltau(a, c).statistic)
        reference = np.take_along_axis(exact_scores, exact_top, axis=1)
        mine = np.take_along_axis(scores, exact_top, axis=1)
        positive = reference > 0
        relative = np.abs(mine - reference)[positive] / reference[positive]
        report[name] = {
            "top1": float(np.mean(top[:, 0] == exact_top[:, 0])),
            "top_k_same_set": float(np.mean([set(a) == set(c) for a, c in zip(top, exact_top)])),
            "overlap_at_k": float(np.mean([len(set(a) & set(c)) / k
                                           for a, c in zip(top, exact_top)])),
            "kendall_tau": float(np.mean(taus)) if taus else float("nan"),
            "max_rel_score_diff": float(relative.max()) if relative.size else 0.0,
            "median_rel_score_diff": float(np.median(relative)) if relative.size else 0.0,
        }
    return report


def _top_rows(scores, k):
    """The k best rows of each query, best first, ties by the lower row: ``[n_queries, k]``."""
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores),
                       axis=1)
    return order[:, :k]


# --------------------------------------------------------------------------------------------
# Elasticsearch
# --------------------------------------------------------------------------------------------
ES_URL_ENV = "RAGTUTOR_ES_URL"


def _docker_command():
    # Name a server release of the client's own major.minor: the client speaks its major version's
    # REST API (it asks for "compatible-with=9"), which an 8.x server refuses.
    try:
        from elasticsearch import __versionstr__ as version
        major, minor = version.split(".")[:2]
    except Exception:  # the client is optional: the message must still name a server
        major, minor = "9", "0"
    return ("docker run -p 9200:9200 -e discovery.type=single-node "
            "-e xpack.security.enabled=false "
            f"docker.elastic.co/elasticsearch/elasticsearch:{major}.{minor}.0")


DOCKER_COMMAND = _docker_command()
_HOW_TO_START = (f"Start a local server (any {DOCKER_COMMAND.rsplit(':', 1)[1].split('.')[0]}.x "
                 f"release) with\n    {DOCKER_COMMAND}\nthen set {ES_URL_ENV}=http://localhost:9200 "
                 "(or pass url=...).")


class ElasticsearchUnavailableError(ConnectionError):
    """No Elasticsearch server to use: no URL was given, or none answers there. The message says
    how to start one."""


class ElasticsearchRetriever(Retriever):
    """An Elasticsearch index on the course's retriever contract (:mod:`ragtutor.retrieval`)::

        retriever = ElasticsearchRetriever("http://localhost:9200").fit(passages)
        scores, ids = retriever.search(questions, k=5)   # [n_queries, k] each, best first
        retriever.add(new_passages); retriever.delete(["FRA/capital"])

    ``mode="bm25"``: one ``text`` field (a passage record's ``title + " " + text``, or a bare
    string) with the ``standard`` analyzer and the ``BM25`` similarity with ``k1`` and ``b``,
    searched with a ``match`` query — the scores of :class:`LuceneBM25Retriever` with its
    defaults, in float32. Documents that share no token with the query come after the matches
    with a score of 0, so that every k up to the corpus size is answered.

    ``mode="dense"``: one ``dense_vector`` field holding ``encoder.encode_passages`` of each
    document (a :class:`ragtutor.dense.BiEncoder`), searched by kNN with
    ``encoder.encode_questions``. The field uses ``similarity: "max_inner_product"``, the one
    that accepts vectors of any length (``dot_product`` requires unit vectors), and
    ``index_options: {"type": "flat"}``, an exhaustive search, so that the answer is exact as
    :class:`ragtutor.dense.DenseRetriever` with a flat index (HNSW, Elasticsearch's default,
    would be approximate and, from 8.14, int8-quantised). Elasticsearch reports
    max_inner_product scores as x + 1 for a dot product x ≥ 0 and 1 / (1 − x) below 0; they are
    turned back into the dot product q(x) · e(d).

    ``url`` defaults to the variable ``RAGTUTOR_ES_URL``; with neither, or with no server
    answering, :meth:`fit` raises :class:`ElasticsearchUnavailableError`, which says how to start
    one. ``fit`` **deletes and recreates** the index ``index_name`` (one shard, no replica, so
    that idf and avgdl are those of the whole corpus). Passage ids become the documents' ``_id``
    (as strings), and every write is followed by a refresh, so the next search sees it; a delete
    is followed by a force-merge to one segment, so that N, df and avgdl no longer count the
    deleted documents (:class:`LuceneBM25Retriever` states the same assumption).

    Learned state: ``client_`` (an ``elasticsearch.Elasticsearch``), ``dims_`` (dense mode),
    ``doc_ids_``, ``n_docs_``.
    """

    _name = "ElasticsearchRetriever"
    MODES = ("bm25", "dense")
    _FIELD_TEXT, _FIELD_VECTOR, _FIELD_ORDER = "text", "vector", "order"
    _BATCH = 100  # queries per _msearch request

    def __init__(self, url=None, index_name="ragtutor", encoder=None, mode="bm25", k1=1.2, b=0.75,
                 batch_size=256, timeout=30):
        self.url = url
        self.index_name = index_name
        self.encoder = encoder
        self.mode = mode
        self.k1 = k1
        self.b = b
        self.batch_size = batch_size
        self.timeout = timeout

    # -- the four hooks -------------------------------------------------------------------------
    def _fit(self, corpus):
        self._check_params()
        self.client_ = self._connect()
        client = self.client_
        mapping = {self._FIELD_ORDER: {"type": "long"}}
        if self.mode == "bm25":
            mapping[self._FIELD_TEXT] = {"type": "text", "analyzer": "standard",
                                         "similarity": "ragtutor_bm25"}
        else:
            vectors = self._passage_vectors(corpus)
            self.dims_ = vectors.shape[1]
            mapping[self._FIELD_VECTOR] = {"type": "dense_vector", "dims": self.dims_,
                                           "index": True, "similarity": "max_inner_product",
                                           "index_options": {"type": "flat"}}
        settings = {"number_of_shards": 1, "number_of_replicas": 0,
                    "similarity": {"ragtutor_bm25": {"type": "BM25", "k1": self.k1, "b": self.b}}}
        client.indices.delete(index=self.index_name, ignore_unavailable=True)
        client.indices.create(index=self.index_name, settings=settings,
                              mappings={"properties": mapping})
        self._next_order = 0
        ids = ([d["id"] for d in corpus] if isinstance(corpus[0], Mapping)
               else list(range(len(corpus))))
        self._write(corpus, ids, vectors if self.mode == "dense" else None, known=())

    def _add(self, documents):
        if isinstance(documents[0], Mapping):
            ids = [d["id"] for d in documents]
        else:
            start = int(self.doc_ids_.max()) + 1 if len(self.doc_ids_) else 0
            ids = list(range(start, start + len(documents)))
        vectors = self._passage_vectors(documents) if self.mode == "dense" else None
        self._write(documents, ids, vectors, known=self.doc_ids_.tolist())

    def _delete(self, rows):
        from elasticsearch import helpers

        actions = [{"_op_type": "delete", "_index": self.index_name, "_id": str(doc_id)}
                   for doc_id in self.doc_ids_[rows].tolist()]
        helpers.bulk(self.client_, actions, refresh=True)
        # Merged state: the deleted documents leave N, df and avgdl only when segments merge.
        self.client_.indices.forcemerge(index=self.index_name, max_num_segments=1)
        self.client_.indices.refresh(index=self.index_name)

    def _scores_rows(self, queries, k):
        for i, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise TypeError(f"queries[{i}] must be a non-empty string, got {query!r}")
        if k > 10_000:
            raise ValueError(f"k={k} is more than Elasticsearch returns in one search (10,000 by "
                             "its index.max_result_window): ask for fewer")
        if self.mode == "bm25":
            warn_unknown(queries, [i for i, q in enumerate(queries) if not standard_analyzer(q)],
                         "the standard analyzer")
            bodies = [self._bm25_body(q, k) for q in queries]
        else:
            vectors = self.encoder.encode_questions(queries, self.batch_size)
            bodies = [self._knn_body(v, k) for v in vectors]
        row = {str(doc_id): i for i, doc_id in enumerate(self.doc_ids_.tolist())}
        scores, rows = np.zeros((len(queries), k)), np.zeros((len(queries), k), dtype=np.int64)
        for start in range(0, len(bodies), self._BATCH):
            searches = []
            for body in bodies[start:start + self._BATCH]:
                searches += [{"index": self.index_name}, body]
            answers = self.client_.msearch(searches=searches)["responses"]
            for offset, answer in enumerate(answers):
                if "error" in answer:
                    raise RuntimeError(f"Elasticsearch refused the search for "
                                       f"queries[{start + offset}]: {answer['error']}")
                hits = answer["hits"]["hits"]
                if len(hits) != k:
                    raise RuntimeError(f"Elasticsearch returned {len(hits)} hits for "
                                       f"queries[{start + offset}] instead of k={k}: the index "
                                       f"{self.index_name!r} was changed by someone else; fit() "
                                       "again")
                scores[start + offset] = [self._score(h) for h in hits]
                rows[start + offset] = [row[h["_id"]] for h in hits]
        return scores, rows

    # -- helpers --------------------------------------------------------------------------------
    def _check_params(self):
        if self.mode not in self.MODES:
            raise ValueError(f"unknown mode {self.mode!r}: choose one of {self.MODES}")
        if self.mode == "dense" and not hasattr(self.encoder, "encode_passages"):
            raise TypeError("mode='dense' needs encoder=, a ragtutor.dense.BiEncoder (anything with "
                            f"encode_passages and encode_questions), got {self.encoder!r}")
        if not isinstance(self.index_name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*",
                                                                   self.index_name):
            raise ValueError(f"index_name must be a lower-case Elasticsearch index name (letters, "
                             f"digits, _ . -), got {self.index_name!r}")
        LuceneBM25Retriever(self.k1, self.b)._check_params()

    def _connect(self):
        url = self.url if self.url is not None else os.environ.get(ES_URL_ENV, "").strip()
        if not url:
            raise ElasticsearchUnavailableError(
                f"no Elasticsearch server given: pass url=... or set {ES_URL_ENV}. {_HOW_TO_START}")
        try:
            from elasticsearch import Elasticsearch
        except ImportError as error:
            raise ImportError("ElasticsearchRetriever needs the official client: pip install "
                              "'elasticsearch>=9,<10'") from error
        client = Elasticsearch(url, request_timeout=self.timeout)
        try:
            client.info()
        except Exception as error:  # refused, blocked, timed out, not Elasticsearch...
            raise ElasticsearchUnavailableError(
                f"no Elasticsearch server answers at {url} ({type(error).__name__}: {error}). "
                f"{_HOW_TO_START}") from error
        return client

    def _passage_vectors(self, documents):
        for i, d in enumerate(documents):
            if not isinstance(d, (str, Mapping)):
                raise TypeError(f"documents[{i}] must be a passage record or a string, got "
                                f"{type(d).__name__}: {d!r}")
        return np.asarray(self.encoder.encode_passages(documents, self.batch_size), np.float32)

    def _write(self, documents, ids, vectors, known):
        from elasticsearch import helpers

        names = [str(i) for i in ids]
        # Ids 3 and "3" are different passages to the contract but one _id to Elasticsearch.
        taken = {str(i) for i in known}
        if len(set(names)) != len(names) or taken & set(names):
            raise ValueError("two passage ids have the same text (such as 3 and '3'), which "
                             "Elasticsearch cannot tell apart: use distinct strings")
        actions = []
        for i, (doc, name) in enumerate(zip(documents, names)):
            source = {self._FIELD_ORDER: self._next_order + i}
            if self.mode == "bm25":
                if not isinstance(doc, (str, Mapping)):
                    raise TypeError(f"documents[{i}] must be a passage record or a string (the "
                                    f"server tokenises), got {type(doc).__name__}: {doc!r}")
                source[self._FIELD_TEXT] = passage_text(doc) if isinstance(doc, Mapping) else doc
            else:
                source[self._FIELD_VECTOR] = vectors[i].tolist()
            actions.append({"_op_type": "index", "_index": self.index_name, "_id": name,
                            "_source": source})
        helpers.bulk(self.client_, actions, refresh=True)
        self._next_order += len(documents)

    def _bm25_body(self, query, k):
        # The filter keeps every document in the answer (score 0 when nothing matches); the order
        # field breaks ties by the row, as the course's retrievers do.
        return {"size": k, "track_scores": True, "_source": False,
                "query": {"bool": {"should": [{"match": {self._FIELD_TEXT: query}}],
                                   "filter": [{"match_all": {}}]}},
                "sort": [{"_score": "desc"}, {self._FIELD_ORDER: "asc"}]}

    def _knn_body(self, vector, k):
        return {"size": k, "_source": False,
                "knn": {"field": self._FIELD_VECTOR, "query_vector": vector.tolist(), "k": k,
                        "num_candidates": min(max(k, 100), 10_000)}}

    def _score(self, hit):
        score = hit["_score"] if hit.get("_score") is not None else hit["sort"][0]
        if self.mode == "dense":
            # Undo max_inner_product's mapping of a dot product x to a positive score.
            return score - 1 if score >= 1 else 1 - 1 / score
        return score
