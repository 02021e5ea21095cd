"""The retriever contract that every back-end of the course follows, and what is built on it.

    retriever = BM25Retriever().fit(passages)          # passage records: id, title, text
    scores, ids = retriever.search(questions, k=5)      # [n_queries, k] each, best first
    retriever.add([{"id": "NEW/1", "title": ..., "text": ...}])   # edit the index, no retraining
    retriever.delete(["FRA/capital"])
    retriever.doc_ids_                                  # the ids in the index, in index order

A **passage record** is a dict with ``id``, ``title`` and ``text``; ``search`` answers with those
ids, so a result means the same thing after any edit of the index. Chapter 01 also fits retrievers
on bare documents (strings or token lists): a bare document's id is then its position in the
corpus given to ``fit`` (documents added later continue the count), so ids and positions agree
until a document is deleted, and ids are never reused.

Every retriever — sparse (chapter 01), dense with any faiss index (chapter 02), the hybrid below,
and the back-ends of later chapters — subclasses :class:`Retriever` and implements four hooks on
*rows*, positions in its own index: ``_fit(documents)``, ``_add(documents)``, ``_delete(rows)`` and
``_scores_rows(queries, k) -> (scores, rows)``. The base class keeps ``doc_ids_`` in row order and
does every check, so that bad input gets the same clear error from every back-end.

Also here: :func:`reciprocal_rank_fusion`, :class:`HybridRetriever` and
:func:`evaluate_retriever`, which work through the contract alone.
"""
import math
import numbers
import warnings
from collections.abc import Mapping

import numpy as np

from ragtutor.metrics import retrieval_scores

__all__ = ["Retriever", "HybridRetriever", "reciprocal_rank_fusion", "evaluate_retriever",
           "top_k", "check_queries", "check_texts", "check_k", "passage_text", "UnknownQueryWarning",
           "warn_unknown", "unknown_to_tokenizer"]


class UnknownQueryWarning(UserWarning):
    """A query has no word (or token) the model knows: its results are a guess, not an answer."""


def warn_unknown(queries, unknown, who):
    """Warn, naming them, about the ``unknown`` positions of ``queries`` (nothing when empty)."""
    if unknown:
        shown = ", ".join(f"[{i}] {queries[i]!r}" for i in unknown[:3])
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        warnings.warn(f"{len(unknown)} of {len(queries)} queries contain no word {who} knows "
                      f"({shown}{more}): their results are arbitrary, not an answer. Rephrase them "
                      "in words of the corpus, or treat them as unanswerable.",
                      UnknownQueryWarning, stacklevel=3)


def unknown_to_tokenizer(tokenizer, texts):
    """Positions of ``texts`` that a Hugging Face ``tokenizer`` reads as nothing but unknown
    tokens, special tokens and bare word-boundary markers (the "▁" a BPE puts before "巴黎")."""
    skip = set(tokenizer.all_special_ids) | {tokenizer.unk_token_id}

    def known(ids):
        return any(t not in skip and tokenizer.convert_ids_to_tokens(t).strip("▁Ġ ") for t in ids)

    return [i for i, ids in enumerate(tokenizer(list(texts)).input_ids) if not known(ids)]


def check_queries(queries):
    """``queries`` as a list, after checking that it is a non-empty list (not a lone string)."""
    if isinstance(queries, (str, bytes, Mapping)) or not hasattr(queries, "__len__"):
        raise TypeError(f"queries must be a list of queries, got {type(queries).__name__}; for a "
                        "single query pass [query]")
    if len(queries) == 0:
        raise ValueError("queries is empty: pass a list with at least one query")
    return list(queries)


def check_texts(texts, what="questions"):
    """``texts`` as a list of non-blank strings, after checking that it is one (not a lone
    string): the questions a neural retriever or a RAG model reads."""
    if isinstance(texts, (str, bytes, Mapping)) or not hasattr(texts, "__len__"):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}; wrap a "
                        "single one in a list")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty: pass at least one")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a non-empty string, got "
                            f"{type(text).__name__}: {text!r}")
        if not text.strip():
            raise ValueError(f"{what}[{i}] must be a non-empty string, but it is empty ({text!r}): "
                             "there is nothing to read; ask in words")
    return texts


def check_k(k, n, holder="the corpus", items="documents"):
    """``k`` as an int, after checking that 1 <= k <= n (``holder`` has n ``items``)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {type(k).__name__}: {k!r}")
    if k <= 0:
        raise ValueError(f"k must be at least 1, got k={k}")
    if k > n:
        raise ValueError(f"k={k} is larger than {holder}, which has {n} {items}: ask for at most "
                         f"k={n}")
    return int(k)


def top_k(scores, k):
    """The ``k`` best entries of each row of ``scores``, best first, ties broken by the lower index.

    ``scores`` has shape ``[n_queries, n_docs]``; returns ``(top_scores, ids)``, both
    ``[n_queries, k]``. A partial sort (``np.argpartition``, O(n_docs) per row) finds each row's
    k best; only those k are then fully sorted.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape [n_queries, n_docs], got shape {scores.shape}")
    if scores.dtype.kind in "biu":
        # Negating unsigned integers (or a signed type's minimum) wraps around, and floats cannot
        # tell 2**62 from 2**62 + 1: rank integers exactly, on costs that reverse their order
        # without overflow (max - x for unsigned, ~x = -x - 1 for signed), and return the scores
        # as the integers they are.
        exact = scores.astype(np.int64) if scores.dtype.kind == "b" else scores
        costs = (np.iinfo(exact.dtype).max - exact) if exact.dtype.kind == "u" else ~exact
        _, ids = _k_smallest(costs, check_k(k, scores.shape[1]))
        return np.take_along_axis(exact, ids, axis=1), ids
    if scores.dtype.kind != "f":
        raise TypeError(f"scores must be numbers, got an array of {scores.dtype}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN, which has no rank: fix what computed them")
    costs, ids = _k_smallest(-scores, check_k(k, scores.shape[1]))
    return 0.0 - costs, ids  # not -costs, which turns a score of 0 into -0.0


def _k_smallest(costs, k):
    """``top_k`` on costs = -scores, so that best first is ascending order. (Partitioning at the
    front of a row is about twice as fast as at its end when many values repeat, as BM25's do.)

    A partial sort picks arbitrarily among entries tied with the k-th smallest cost, so in the rows
    where such a tie straddles the cut the k are chosen again: every entry below the k-th smallest
    cost, then the tied ones with the lowest indices.
    """
    ids = np.argpartition(costs, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(costs, ids, axis=1).max(axis=1, keepdims=True)
    straddle = np.flatnonzero(np.count_nonzero(costs <= kth, axis=1) > k)
    if straddle.size:
        below = costs[straddle] < kth[straddle]
        tied = costs[straddle] == kth[straddle]
        need = k - np.count_nonzero(below, axis=1, keepdims=True)
        keep = below | (tied & (np.cumsum(tied, axis=1) <= need))
        ids[straddle] = np.nonzero(keep)[1].reshape(len(straddle), k)  # row by row, ascending
    values = np.take_along_axis(costs, ids, axis=1)
    order = np.lexsort((ids, values), axis=1)  # the last key is the primary one: cost, then id
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(ids, order, axis=1)


def passage_text(record):
    """What a sparse retriever indexes of a passage record: ``title + " " + text``."""
    return f"{record['title']} {record['text']}"


def _is_record(document):
    return isinstance(document, Mapping)


class Retriever:
    """The base class of every retriever: ``fit``, ``search``, ``score``, ``add``, ``delete``.

    Learned state: ``doc_ids_``, a NumPy array of the indexed documents' ids in row order (an
    object array of passage ids for passage records, an int64 array of positions for bare
    documents), and ``n_docs_``. A subclass sets ``_name`` and implements the four row hooks
    (module docstring); its ``_fit`` and ``_add`` receive the documents as given (records or
    bare), already checked.
    """

    _name = "retriever"

    # -- the contract ---------------------------------------------------------------------------
    def fit(self, corpus):
        """Index ``corpus``: passage records (dicts with ``id``, ``title``, ``text``) or bare
        documents. Replaces whatever was indexed before. Returns ``self``."""
        corpus = self._check_documents(corpus, "corpus")
        records = _is_record(corpus[0])
        if records:
            ids = self._check_new_ids(corpus, known=())
            doc_ids = np.empty(len(ids), dtype=object)
            doc_ids[:] = ids
        else:
            doc_ids = np.arange(len(corpus), dtype=np.int64)
        self._fit(corpus)
        self.doc_ids_ = doc_ids
        return self

    def add(self, documents):
        """Add ``documents`` to the index, of the kind it was fitted on (passage records whose
        ids are not in it yet, or bare documents, which get the next positions). The model is not
        retrained: a dense retriever encodes them with its encoder as it is. Returns ``self``."""
        self._check_fitted()
        documents = self._check_documents(documents, "documents")
        if _is_record(documents[0]) != self._records:
            raise TypeError(f"this {self._name} was fitted on "
                            f"{'passage records' if self._records else 'bare documents'}: add the "
                            "same kind")
        if self._records:
            new = np.empty(len(documents), dtype=object)
            new[:] = self._check_new_ids(documents, known=set(self.doc_ids_))
        else:
            start = int(self.doc_ids_.max()) + 1 if len(self.doc_ids_) else 0
            new = np.arange(start, start + len(documents), dtype=np.int64)
        self._add(documents)
        self.doc_ids_ = np.concatenate([self.doc_ids_, new])
        return self

    def delete(self, ids):
        """Remove the documents with these ids from the index. Returns ``self``."""
        self._check_fitted()
        if isinstance(ids, (str, bytes, Mapping)) or not hasattr(ids, "__len__"):
            raise TypeError(f"ids must be a list of passage ids, got {type(ids).__name__}; to "
                            "delete one passage pass [id]")
        ids = list(ids)
        if not ids:
            raise ValueError("ids is empty: pass the ids of the passages to delete")
        row = {doc_id: i for i, doc_id in enumerate(self.doc_ids_.tolist())}
        missing = [doc_id for doc_id in ids if doc_id not in row]
        if missing:
            raise KeyError(f"{len(missing)} of the ids to delete are not in the index, e.g. "
                           f"{missing[0]!r}: nothing was deleted")
        rows = np.array(sorted({row[doc_id] for doc_id in ids}), dtype=np.int64)
        if len(rows) == len(self.doc_ids_):
            raise ValueError("deleting every document would leave an empty index: fit() a new "
                             "corpus instead")
        self._delete(rows)
        self.doc_ids_ = np.delete(self.doc_ids_, rows)
        return self

    def search(self, queries, k):
        """The ``k`` best documents for each query: ``(scores, ids)``, both ``[n_queries, k]``,
        best first; ids are ``doc_ids_`` entries."""
        self._check_fitted()
        queries = check_queries(queries)
        k = check_k(k, self.n_docs_)
        scores, rows = self._scores_rows(queries, k)
        return scores, self.doc_ids_[rows]

    @property
    def n_docs_(self):
        return len(self.doc_ids_)

    # -- shared checks --------------------------------------------------------------------------
    @property
    def _records(self):
        return self.doc_ids_.dtype == object

    def _check_fitted(self):
        if not hasattr(self, "doc_ids_"):
            raise ValueError(f"this {self._name} is not fitted yet: call fit(corpus) first")

    @staticmethod
    def _check_documents(documents, name):
        if isinstance(documents, (str, bytes, Mapping)) or not hasattr(documents, "__len__"):
            raise TypeError(f"{name} must be a list of documents, got "
                            f"{type(documents).__name__}; wrap a single document in a list")
        documents = list(documents)
        if not documents:
            raise ValueError(f"{name} is empty: pass at least one document")
        kinds = {_is_record(d) for d in documents}
        if len(kinds) > 1:
            raise TypeError(f"{name} mixes passage records (dicts) and bare documents: pass all "
                            "documents one way")
        if kinds == {True}:
            for i, record in enumerate(documents):
                absent = [key for key in ("id", "title", "text") if key not in record]
                if absent:
                    raise ValueError(f"{name}[{i}] has no {', '.join(absent)}: a passage record "
                                     "has 'id', 'title' and 'text'")
                if not isinstance(record["title"], str) or not isinstance(record["text"], str):
                    raise TypeError(f"{name}[{i}]: 'title' and 'text' must be strings")
        return documents

    @staticmethod
    def _check_new_ids(records, known):
        ids = [record["id"] for record in records]
        seen = set()
        for doc_id in ids:
            if not isinstance(doc_id, (str, numbers.Integral)) or isinstance(doc_id, bool):
                raise TypeError(f"passage ids must be strings or integers, got {doc_id!r}")
            if doc_id in seen or doc_id in known:
                raise ValueError(f"passage id {doc_id!r} is {'already in the index' if doc_id in known else 'given twice'}: "
                                 "ids must be unique (delete the old passage to replace it)")
            seen.add(doc_id)
        return ids


def reciprocal_rank_fusion(rankings, n_docs, k=60):
    r"""Reciprocal rank fusion (Cormack, Clarke & Büttcher, 2009) of several rankings of one query.

    ``rankings`` is a list of rankings, each a sequence of document positions (0..n_docs-1), best
    first. Returns the fused score of every document, ``[n_docs]``:

    .. math:: \mathrm{RRF}(d) = \sum_{r} \frac{1}{k + \mathrm{rank}_r(d)}

    with ranks counted from 1; a document missing from a ranking gets nothing from it. Only ranks
    matter, so retrievers whose scores live on different scales (BM25, dot products) combine
    without calibration; k = 60 damps the weight of the very first ranks.
    """
    if isinstance(n_docs, bool) or not isinstance(n_docs, numbers.Integral) or n_docs < 1:
        raise ValueError(f"n_docs must be a positive int, got {n_docs!r}")
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or not k > 0 or not math.isfinite(k):
        raise ValueError(f"k (RRF's damping constant) must be a positive number, got {k!r}")
    fused = np.zeros(n_docs)
    for r, ranking in enumerate(rankings):
        ranking = np.asarray(ranking)
        if ranking.size == 0:
            continue  # a retriever that found nothing adds nothing
        if ranking.ndim != 1 or ranking.dtype.kind not in "iu":
            raise TypeError(f"rankings[{r}] must be a list of document positions (ints), got "
                            f"{ranking.tolist()!r}")
        if ranking.min() < 0 or ranking.max() >= n_docs:
            raise ValueError(f"rankings[{r}] holds a position outside 0..{n_docs - 1}: "
                             f"{ranking.tolist()!r}; positions index the n_docs={n_docs} documents")
        if len(np.unique(ranking)) != len(ranking):
            raise ValueError(f"rankings[{r}] names a document twice: {ranking.tolist()!r}; a "
                             "ranking names each document once")
        fused[ranking] += 1.0 / (k + np.arange(1, len(ranking) + 1))
    return fused


class HybridRetriever(Retriever):
    """Two retrievers fused by :func:`reciprocal_rank_fusion` over their top ``depth`` documents
    (at least the k asked for).

    ``first`` and ``second`` follow the contract and index the same documents in the same order
    (the same ``doc_ids_``): ``fit(corpus)`` fits both on ``corpus``, and ``add`` / ``delete``
    edit both. Already fitted retrievers need no ``fit``. ``fit(corpus, second_corpus)`` fits the
    second on another form of the same documents (strings for BM25 and title/text pairs for a
    dense retriever, say).
    """

    _name = "HybridRetriever"

    def __init__(self, first, second, k=60, depth=20):
        self.first = first
        self.second = second
        self.k = k
        self.depth = depth

    def fit(self, corpus, second_corpus=None):
        self.first.fit(corpus)
        self.second.fit(corpus if second_corpus is None else second_corpus)
        return self

    def add(self, documents):
        self.first.add(documents)
        self.second.add(documents)
        return self

    def delete(self, ids):
        self.first.delete(ids)
        self.second.delete(ids)
        return self

    @property
    def doc_ids_(self):
        first, second = self.first.doc_ids_, self.second.doc_ids_
        if len(first) != len(second) or not np.array_equal(first, second):
            raise ValueError(f"the retrievers index different corpora ({len(first)} and "
                             f"{len(second)} documents): fit both on the same documents, in the "
                             "same order")
        return first

    def score(self, query):
        """The fused score of every document for one query: ``[n_docs]``."""
        return self._fused([query])[0]

    def _scores_rows(self, queries, k):
        return top_k(self._fused(queries, k), k)

    def _fused(self, queries, k=1):
        doc_ids = self.doc_ids_
        row = {doc_id: i for i, doc_id in enumerate(doc_ids.tolist())}
        # Below both retrievers' top `depth` every document scores 0: search deep enough for k.
        depth = min(max(self.depth, k), len(doc_ids))
        _, first = self.first.search(queries, depth)
        _, second = self.second.search(queries, depth)
        to_rows = np.vectorize(row.__getitem__, otypes=[np.int64])
        return np.stack([reciprocal_rank_fusion([a, b], len(doc_ids), self.k)
                         for a, b in zip(to_rows(first), to_rows(second))])


def evaluate_retriever(retriever, questions, passage_ids=None, ks=(1, 5, 20)):
    """Recall@k and MRR of ``retriever`` on ``questions``, over all and over the mismatched ones.

    A question's gold passage is its ``passage_id``. A retriever fitted on passage records answers
    with passage ids; one fitted on bare documents answers with positions, and
    ``passage_ids[i]`` names the passage at position i. Returns ``{"all": {...}, "mismatch":
    {...}}`` ("mismatch" only when some question is marked mismatched), each a row of ``ragtutor.metrics.retrieval_scores`` over the top ``max(ks)`` (so MRR
    is MRR@max(ks)).
    """
    _, ids = retriever.search([q["question"] for q in questions], max(ks))
    if np.asarray(ids).dtype == object:
        ranked = [list(row) for row in ids]
    elif passage_ids is None:
        raise ValueError("the retriever answers with positions (it was fitted on bare documents): "
                         "pass passage_ids, the id of each position")
    else:
        ranked = [[passage_ids[i] for i in row] for row in ids]
    relevant = [{q["passage_id"]} for q in questions]
    report = {"all": retrieval_scores(ranked, relevant, ks)}
    chosen = [i for i, q in enumerate(questions) if q.get("mismatch")]
    if chosen:  # hand-typed questions are not marked, and some sets have no mismatched question
        report["mismatch"] = retrieval_scores([ranked[i] for i in chosen],
                                              [relevant[i] for i in chosen], ks)
    return report
