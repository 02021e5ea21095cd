"""Sparse retrieval: TF-IDF and BM25 over an inverted index kept as a sparse matrix (chapter 01).

Both retrievers follow the course's retriever contract (:mod:`ragtutor.retrieval`)::

    retriever = BM25Retriever().fit(corpus)        # passage records, strings, or token lists
    retriever.score("capital of France")            # [n_docs] scores, one per document
    scores, ids = retriever.search(queries, k=5)   # [n_queries, k] each, best first
    retriever.add(more); retriever.delete(ids)     # index edits: every weight recomputed

The index is the matrix ``index_`` of shape ``[V, n_docs]``: row ``t`` holds term ``t``'s weight in
every document that contains it, so row ``t`` *is* the posting list of an inverted index, stored in
CSR form. A query becomes a sparse vector ``q`` of shape ``[V]`` (BM25: its term counts; TF-IDF: its
unit-length tf-idf vector), and its scores are ``q @ index_``: the weighted sum, over the query's
terms, of their posting lists. A batch of B queries is one
sparse product ``[B, V] @ [V, n_docs]``, which SciPy computes term at a time, touching only the
postings of the query terms: the same work an inverted index does, with no Python loop over
documents. The top k of each row are then found by a partial sort (``np.argpartition``).

References: Robertson & Zaragoza (2009), *The Probabilistic Relevance Framework: BM25 and Beyond*;
Manning, Raghavan & Schütze (2008), *Introduction to Information Retrieval*, ch. 6; Kamphuis, de
Vries, Boytsov & Lin (2020), *Which BM25 Do You Mean? A Large-Scale Reproducibility Study of Scoring
Variants*; Trotman, Puurula & Burgess (2014), *Improvements to BM25 and Language Models Examined*.
"""
import math
import numbers
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from ragtutor.retrieval import Retriever, _k_smallest, passage_text, top_k, warn_unknown
from ragtutor.text import tokenize

__all__ = ["BM25Retriever", "TfidfRetriever", "top_k"]

# How many scores one sparse product may produce at once (B x n_docs float64 values, 32 MB): large
# enough that SciPy's per-call overhead vanishes, small enough for a 2 GB Binder kernel.
_MAX_BATCH_SCORES = 2**22


class _SparseRetriever(Retriever):
    """What TF-IDF and BM25 share: tokenising, counting, the index matrix, search and top-k, on
    the course's retriever contract (:mod:`ragtutor.retrieval`).

    A subclass sets ``_name`` (for messages) and implements ``_check_params()``;
    ``_fit_weights(counts, doc_len)``, which turns the term-count matrix ``[V, n_docs]`` into
    ``index_`` (same shape) and sets its learned state; and ``_query_weights(counts)``, which
    turns query term counts ``[B, V]`` into query vectors. The term counts are kept, so that
    :meth:`add` and :meth:`delete` recompute every weight (idf and the mean document length
    change with the corpus): an edited index scores exactly as a fresh fit on the edited corpus.
    """

    def fit(self, corpus):
        """Index ``corpus``: passage records (dicts with ``id``, ``title`` and ``text``; the title
        and text are indexed), a list of strings (tokenised with :func:`ragtutor.text.tokenize`)
        or a list of token lists (used as given). Returns ``self``."""
        return super().fit(corpus)

    def _fit(self, corpus):
        self._check_params()
        if self.stopwords is not None and (isinstance(self.stopwords, str) or not all(
                isinstance(w, str) for w in self.stopwords)):
            raise TypeError(f"stopwords must be None or a set of words, got {self.stopwords!r}")
        self.vocabulary_ = {}
        self._counts = sp.csr_array((0, 0))
        self._doc_len = np.zeros(0, dtype=np.int64)
        self._append(self._tokenize_corpus(corpus))

    def _add(self, documents):
        self._append(self._tokenize_corpus(documents))

    def _append(self, docs):
        doc_len = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        vocabulary = self.vocabulary_
        term_ids = np.fromiter((vocabulary.setdefault(t, len(vocabulary)) for d in docs for t in d),
                               dtype=np.int64, count=int(doc_len.sum()))
        columns = np.repeat(np.arange(len(docs)), doc_len)
        # One entry per token; converting to CSR sums the duplicates into term frequencies.
        counts = sp.csr_array((np.ones(len(term_ids)), (term_ids, columns)),
                              shape=(len(vocabulary), len(docs)))
        counts.sum_duplicates()
        old = self._counts
        old.resize((len(vocabulary), old.shape[1]))  # rows for the new terms, empty so far
        self._set_counts(sp.hstack([old, counts], format="csr"),
                         np.concatenate([self._doc_len, doc_len]))

    def _delete(self, rows):
        keep = np.setdiff1d(np.arange(self._counts.shape[1]), rows)
        counts = self._counts[:, keep]
        # Terms left in no document leave the vocabulary, as a fresh fit would never see them.
        used = np.diff(counts.indptr) > 0
        new_row = np.cumsum(used) - 1
        self.vocabulary_ = {t: int(new_row[i]) for t, i in self.vocabulary_.items() if used[i]}
        self._set_counts(counts[used], self._doc_len[keep])

    def _set_counts(self, counts, doc_len):
        if doc_len.sum() == 0:
            raise ValueError(f"every one of the {len(doc_len)} documents is empty after "
                             "tokenisation: there is nothing to index")
        counts.sort_indices()
        self._counts, self._doc_len = counts, doc_len
        self.index_ = self._fit_weights(counts, doc_len)

    def score(self, query):
        """Scores of every document for one query (a string or a token list): shape ``[n_docs]``."""
        self._check_fitted()
        vector = self._query_matrix([self._tokenize_query(query, "query")])
        return (vector @ self.index_).toarray()[0]

    def search(self, queries, k):
        """The ``k`` best documents for each query: ``(scores, ids)``, both ``[n_queries, k]``.

        ``queries`` is a list of queries, each a string or a token list. Rows are best first; equal
        scores are ordered by the document's row in the index (its position in the corpus, for a
        corpus that was never edited). Ids are passage ids, or positions for bare documents.
        """
        if not _is_sequence(queries) and not isinstance(queries, str):
            raise TypeError(f"queries must be a list of queries (strings or token lists), got "
                            f"{type(queries).__name__}; for a single query pass [query]")
        return super().search(queries, k)

    def _scores_rows(self, queries, k):
        tokens = [self._tokenize_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
        warn_unknown(queries, [i for i, words in enumerate(tokens)
                               if not any(w in self.vocabulary_ for w in words)],
                     f"this {self._name}'s corpus")
        n_docs = self.index_.shape[1]
        batch = max(1, _MAX_BATCH_SCORES // n_docs)
        costs, ids = [], []
        for start in range(0, len(tokens), batch):
            # One sparse product per batch, negated through the small query matrix so that it
            # yields costs = -scores directly, which _k_smallest_sparse ranks.
            vectors = self._query_matrix(tokens[start:start + batch])
            batch_costs, batch_ids = _k_smallest_sparse((-vectors @ self.index_).tocsr(), k)
            costs.append(batch_costs)
            ids.append(batch_ids)
        return 0.0 - np.concatenate(costs), np.concatenate(ids)

    def _query_matrix(self, token_lists):
        """Query vectors ``[B, V]`` of B tokenised queries, a sparse matrix."""
        rows, cols = [], []
        for row, tokens in enumerate(token_lists):
            # Terms the corpus never uses match no document, so they drop out here.
            known = [self.vocabulary_[t] for t in tokens if t in self.vocabulary_]
            rows.extend([row] * len(known))
            cols.extend(known)
        counts = sp.csr_array((np.ones(len(cols)), (rows, cols)),
                               shape=(len(token_lists), len(self.vocabulary_)))
        counts.sum_duplicates()
        return self._query_weights(counts)

    def _tokenize_corpus(self, corpus):
        if not _is_sequence(corpus):
            raise TypeError(f"corpus must be a list of documents (strings or token lists), got "
                            f"{type(corpus).__name__}; wrap a single document in a list")
        if len(corpus) == 0:
            raise ValueError("corpus is empty: fit() needs at least one document")
        if isinstance(corpus[0], Mapping):
            corpus = [passage_text(record) for record in corpus]
        kind = str if isinstance(corpus[0], str) else list
        docs = []
        for i, doc in enumerate(corpus):
            if isinstance(doc, str) != (kind is str):
                raise TypeError(f"corpus mixes strings and token lists (corpus[0] is "
                                f"{type(corpus[0]).__name__}, corpus[{i}] is "
                                f"{type(doc).__name__}): pass all documents one way")
            docs.append(self._tokens(doc, f"corpus[{i}]"))
        return docs

    def _tokenize_query(self, query, where):
        tokens = self._tokens(query, where)
        if not tokens:
            raise ValueError(f"{where} is empty after tokenisation ({query!r}): a query needs at "
                             "least one word")
        return tokens

    def _tokens(self, text, where):
        if isinstance(text, str):
            return tokenize(text, self.stopwords)
        if not _is_sequence(text):
            raise TypeError(f"{where} must be a string or a list of string tokens, got "
                            f"{type(text).__name__}: {text!r}")
        for token in text:
            if not isinstance(token, str):
                raise TypeError(f"{where} must be a string or a list of string tokens, but it "
                                f"contains {type(token).__name__}: {token!r}")
        return list(text)

def _k_smallest_sparse(costs, k):
    """:func:`ragtutor.retrieval._k_smallest` of each row of the sparse matrix ``costs``, whose
    missing entries are 0 (documents that share no term with the query).

    When a row stores at least k costs and its k smallest are all below 0, the answer lies among
    the stored entries alone, so only those are partitioned — on a large corpus a good share of
    the documents share no word with a query, and partitioning is most of a search's time. Any
    other row (fewer than k matching documents, or scores of 0 or below in its top k) is ranked
    in full, so that ties with unmatched documents are broken by the lower index as usual.
    """
    n_rows, n_docs = costs.shape
    top_costs, top_ids = np.empty((n_rows, k)), np.empty((n_rows, k), dtype=np.int64)
    for row in range(n_rows):
        start, end = costs.indptr[row], costs.indptr[row + 1]
        data, cols = costs.data[start:end], costs.indices[start:end]
        if end - start >= k:
            chosen = np.argpartition(data, k - 1)[:k]
            kth = data[chosen].max()
            if kth < 0:
                tied = np.flatnonzero(data == kth)
                if len(tied) > np.count_nonzero(data[chosen] == kth):
                    # The tie straddles the cut: every entry below it, then the lowest indices.
                    below = np.flatnonzero(data < kth)
                    tied = tied[np.argsort(cols[tied], kind="stable")][:k - len(below)]
                    chosen = np.concatenate([below, tied])
                order = np.lexsort((cols[chosen], data[chosen]))
                top_costs[row], top_ids[row] = data[chosen][order], cols[chosen][order]
                continue
        dense = np.zeros((1, n_docs))
        dense[0, cols] = data
        top_costs[row], top_ids[row] = (a[0] for a in _k_smallest(dense, k))
    return top_costs, top_ids


def _is_sequence(obj):
    """An ordered collection that is not a string: a list, tuple, NumPy array, dataset column..."""
    return (not isinstance(obj, (str, bytes, Mapping)) and hasattr(obj, "__len__")
            and hasattr(obj, "__getitem__"))


class BM25Retriever(_SparseRetriever):
    r"""Okapi BM25 (Robertson & Zaragoza, 2009): a probabilistic term weight with saturating tf.

    The score of document d for query q (a bag of terms, each counted as often as it occurs) is

    .. math::
        s(q, d) = \sum_{t \in q} \mathrm{idf}(t)\,
                  \frac{\mathrm{tf}(t, d)\,(k_1 + 1)}
                       {\mathrm{tf}(t, d) + k_1 \left(1 - b + b\,\frac{|d|}{\mathrm{avgdl}}\right)}

    with tf(t, d) the count of t in d, |d| the length of d in tokens and avgdl the mean length over
    the N documents. k1 ≥ 0 sets how fast repeated terms saturate (k1 = 0: only presence counts);
    b ∈ [0, 1] how much long documents are penalised (b = 0: not at all). df(t) is the number of
    documents that contain t. ``method`` picks the idf:

    - ``"lucene"`` (default): idf(t) = ln(1 + (N − df + 0.5) / (df + 0.5)), always positive, as in
      Lucene, Elasticsearch and Anserini. The factor (k1 + 1) is **kept**: it is the textbook
      formula's, and a constant per query, so rankings equal those of Lucene ≥ 8 and of ``bm25s``,
      which drop it; their scores are ours divided by (k1 + 1).
    - ``"okapi"``: idf(t) = ln((N − df + 0.5) / (df + 0.5)), negative for terms in more than half
      of the documents; those get ε × (mean idf over the vocabulary) instead, where ε is
      ``epsilon``. This reproduces ``rank_bm25.BM25Okapi`` exactly.
    - ``"atire"``: idf(t) = ln(N / df) (Trotman et al., 2014), as ``bm25s``'s "atire": positive
      except for a term in every document, which scores 0.

    Parameters are stored as given and checked by :meth:`fit` (the scikit-learn convention).
    ``stopwords``: a set of normalised words dropped when strings are tokenised (e.g.
    :data:`ragtutor.text.STOPWORDS`); None keeps every word. Token lists are always used as given.

    Learned state after :meth:`fit`: ``vocabulary_`` (term -> row of the index), ``idf_`` ``[V]``,
    ``doc_len_`` ``[n_docs]``, ``avgdl_``, ``n_docs_``, and ``index_``, a ``scipy.sparse`` CSR
    matrix ``[V, n_docs]`` whose entry (t, d) is term t's contribution to s(q, d) for each
    occurrence of t in q.
    """

    _name = "BM25Retriever"
    METHODS = ("lucene", "okapi", "atire")

    def __init__(self, k1=1.2, b=0.75, method="lucene", epsilon=0.25, stopwords=None):
        self.k1 = k1
        self.b = b
        self.method = method
        self.epsilon = epsilon
        self.stopwords = stopwords

    def _check_params(self):
        if self.method not in self.METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {self.METHODS}")
        for name, value in (("k1", self.k1), ("b", self.b), ("epsilon", self.epsilon)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {name}={value}: every score "
                                 "would be NaN or infinite")
        if self.k1 < 0:
            raise ValueError(f"k1 must be non-negative, got k1={self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"b must lie in [0, 1], got b={self.b}")

    def _fit_weights(self, counts, doc_len):
        n = len(doc_len)
        df = np.diff(counts.indptr)  # CSR rows are terms: a row's stored entries are its documents
        if self.method == "lucene":
            idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        elif self.method == "okapi":
            idf = np.log(n - df + 0.5) - np.log(df + 0.5)
            idf[idf < 0] = self.epsilon * idf.mean()
        else:
            idf = np.log(n / df)
        self.idf_ = idf
        self.doc_len_ = doc_len
        self.avgdl_ = doc_len.mean()
        tf = counts.data
        length_norm = 1 - self.b + self.b * doc_len[counts.indices] / self.avgdl_
        tf_part = tf * (self.k1 + 1) / (tf + self.k1 * length_norm)
        index = counts.copy()
        index.data = np.repeat(idf, df) * tf_part
        return index

    def _query_weights(self, counts):
        return counts


class TfidfRetriever(_SparseRetriever):
    r"""TF-IDF vectors compared by cosine similarity (Manning et al., 2008, ch. 6).

    Each document and query becomes the vector w(t, d) = tf(t, d) · idf(t) over the vocabulary,
    scaled to unit length, and the score is their dot product, the cosine of the angle between them:

    .. math::
        s(q, d) = \frac{w_q \cdot w_d}{\lVert w_q \rVert\, \lVert w_d \rVert}, \qquad
        \mathrm{idf}(t) = \ln\frac{1 + N}{1 + \mathrm{df}(t)} + 1

    with N documents and df(t) the number that contain t. ``smooth_idf=False`` uses
    idf(t) = ln(N / df(t)) + 1; ``sublinear_tf=True`` replaces tf by 1 + ln tf. These are
    scikit-learn's ``TfidfVectorizer`` defaults and options, and the scores equal its cosine
    similarities. Query terms the corpus never uses are dropped; a query made only of those, or an
    empty document, scores 0.

    Learned state after :meth:`fit`: ``vocabulary_``, ``idf_`` ``[V]``, ``n_docs_`` and ``index_``,
    a ``scipy.sparse`` CSR matrix ``[V, n_docs]`` whose column d is document d's unit vector.
    """

    _name = "TfidfRetriever"

    def __init__(self, smooth_idf=True, sublinear_tf=False, stopwords=None):
        self.smooth_idf = smooth_idf
        self.sublinear_tf = sublinear_tf
        self.stopwords = stopwords

    def _check_params(self):
        for name in ("smooth_idf", "sublinear_tf"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def _fit_weights(self, counts, doc_len):
        n = len(doc_len)
        df = np.diff(counts.indptr)
        smooth = int(self.smooth_idf)
        self.idf_ = np.log((n + smooth) / (df + smooth)) + 1
        index = counts.copy()
        index.data = self._tf(index.data) * np.repeat(self.idf_, df)
        index.data /= _l2_norms(index.data, index.indices, n)[index.indices]  # columns: documents
        return index

    def _query_weights(self, counts):
        weights = counts.copy()
        weights.data = self._tf(weights.data) * self.idf_[weights.indices]
        rows = np.repeat(np.arange(weights.shape[0]), np.diff(weights.indptr))
        weights.data /= _l2_norms(weights.data, rows, weights.shape[0])[rows]
        return weights

    def _tf(self, tf):
        return 1 + np.log(tf) if self.sublinear_tf else tf


def _l2_norms(values, group, n_groups):
    """Euclidean norm of each group of ``values`` (``group[i]`` is the group of ``values[i]``)."""
    return np.sqrt(np.bincount(group, weights=values**2, minlength=n_groups))
