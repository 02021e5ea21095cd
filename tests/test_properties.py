"""Property-based tests (hypothesis) of every index kind, retriever and ranking metric against a
NumPy or plain-Python reference. The default profile is derandomised and capped at 200 examples per
test (tests/conftest.py); the full search: ``HYPOTHESIS_PROFILE=full pytest -p no:cacheprovider
tests -k property``."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ragtutor.index import VectorIndex
from ragtutor.metrics import ndcg_at_k, recall_at_k, reciprocal_rank
from ragtutor.retrieval import HybridRetriever, UnknownQueryWarning, reciprocal_rank_fusion
from ragtutor.sparse import BM25Retriever, TfidfRetriever

FLOATS = st.floats(-1, 1, width=32, allow_nan=False, allow_infinity=False)


@st.composite
def data_and_queries(draw, min_rows=1, dim=st.integers(2, 12)):
    d = draw(dim)
    n = draw(st.integers(min_rows, 48))
    data = draw(arrays(np.float32, (n, d), elements=FLOATS))
    queries = draw(arrays(np.float32, (draw(st.integers(1, 6)), d), elements=FLOATS))
    k = draw(st.integers(1, n))
    return data, queries, k


def assert_a_true_top_k(data, queries, k, scores, ids):
    """Sorted, unique, in range, each score the exact inner product of its id, and the scores the
    k largest (ties may be broken either way)."""
    exact = queries.astype(np.float64) @ data.T.astype(np.float64)
    assert scores.shape == ids.shape == (len(queries), k)
    for row, (s, i) in enumerate(zip(scores, ids)):
        assert len(set(i.tolist())) == k and i.min() >= 0 and i.max() < len(data)
        assert np.all(np.diff(s) <= 1e-5)
        np.testing.assert_allclose(s, exact[row, i], atol=1e-4)
        np.testing.assert_allclose(s, np.sort(exact[row])[::-1][:k], atol=1e-4)


@given(data_and_queries())
def test_property_flat_search_is_the_exact_top_k(case):
    data, queries, k = case
    assert_a_true_top_k(data, queries, k, *VectorIndex("flat").fit(data).search(queries, k))


@given(data_and_queries(min_rows=4), st.integers(1, 4))
def test_property_ivf_visiting_every_cell_equals_flat(case, nlist):
    data, queries, k = case
    assume(len(data) >= nlist)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # faiss advises more training points than a test needs
        index = VectorIndex("ivf", nlist=nlist, nprobe=nlist).fit(data)
    assert_a_true_top_k(data, queries, k, *index.search(queries, k))


@given(data_and_queries())
def test_property_hnsw_returns_sorted_unique_ids_with_exact_scores(case):
    data, queries, k = case
    index = VectorIndex("hnsw", hnsw_m=8, ef_search=max(16, k)).fit(data)
    try:
        scores, ids = index.search(queries, k)
    except ValueError as error:
        # A graph search among many equal vectors can keep fewer than k: the contract is a clear
        # refusal, never a short or padded list.
        assert "Raise ef_search" in str(error)
        return
    exact = queries.astype(np.float64) @ data.T.astype(np.float64)
    for row, (s, i) in enumerate(zip(scores, ids)):
        assert len(set(i.tolist())) == k and 0 <= i.min() and i.max() < len(data)
        assert np.all(np.diff(s) <= 1e-5)
        np.testing.assert_allclose(s, exact[row, i], atol=1e-4)


@given(data_and_queries(min_rows=16, dim=st.sampled_from([4, 8])),
       st.sampled_from([(2, 4), (1, 3), (4, 3), (4, 4)]))
def test_property_pq_scores_are_the_decoded_vectors_inner_products(case, pq):
    data, queries, k = case
    index = VectorIndex("pq", pq_m=pq[0], pq_bits=pq[1]).fit(data)
    scores, ids = index.search(queries, k)
    decoded = index.index_.reconstruct_n(0, len(data)).astype(np.float64)
    assert_a_true_top_k(decoded, queries, k, scores, ids)


# -- sparse retrievers: search is the top of score(), ties to the lower id --------------------

WORDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])


@given(st.lists(st.lists(WORDS, min_size=1, max_size=8), min_size=1, max_size=20),
       st.lists(st.lists(WORDS, min_size=1, max_size=4), min_size=1, max_size=5),
       st.sampled_from(["bm25", "okapi", "tfidf"]), st.data())
def test_property_sparse_search_is_the_top_of_the_full_scores(docs, queries, kind, data):
    retriever = {"bm25": BM25Retriever(), "okapi": BM25Retriever(method="okapi"),
                 "tfidf": TfidfRetriever()}[kind].fit(docs)
    k = data.draw(st.integers(1, len(docs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownQueryWarning)
        scores, ids = retriever.search(queries, k)
    for query, s, i in zip(queries, scores, ids):
        full = retriever.score(query)
        expected = sorted(range(len(docs)), key=lambda d: (-full[d], d))[:k]
        assert i.tolist() == expected
        np.testing.assert_allclose(s, full[expected], rtol=1e-12, atol=1e-12)


# -- fusion and metrics against plain-Python references ---------------------------------------

RANKING = st.lists(st.integers(0, 14), min_size=1, max_size=10, unique=True)


@given(st.lists(RANKING, min_size=1, max_size=4), st.integers(1, 100))
def test_property_reciprocal_rank_fusion_is_the_sum_of_reciprocal_ranks(rankings, c):
    fused = reciprocal_rank_fusion(rankings, 15, k=c)
    expected = np.zeros(15)
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            expected[doc] += 1 / (c + rank)
    np.testing.assert_allclose(fused, expected, rtol=1e-12)


@given(RANKING, st.sets(st.integers(0, 14), min_size=1, max_size=5), st.integers(1, 12))
def test_property_recall_and_reciprocal_rank_match_their_definitions(ranking, relevant, k):
    assert recall_at_k(ranking, relevant, k) == pytest.approx(
        len(set(ranking[:k]) & relevant) / len(relevant))
    first = next((r for r, d in enumerate(ranking, start=1) if d in relevant), None)
    assert reciprocal_rank(ranking, relevant) == pytest.approx(0.0 if first is None else 1 / first)


@given(RANKING, st.dictionaries(st.integers(0, 14), st.integers(0, 3), min_size=1, max_size=6),
       st.integers(1, 12))
def test_property_ndcg_matches_its_definition(ranking, grades, k):
    if not any(g > 0 for g in grades.values()):
        with pytest.raises(ValueError, match="no relevant ids"):
            ndcg_at_k(ranking, grades, k)
        return
    dcg = sum(grades.get(d, 0) / math.log2(r + 1) for r, d in enumerate(ranking[:k], start=1))
    ideal = sorted(grades.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 1) for r, g in enumerate(ideal, start=1))
    expected = dcg / idcg
    assert ndcg_at_k(ranking, grades, k) == pytest.approx(expected)
    assert 0.0 <= ndcg_at_k(ranking, grades, k) <= 1.0 + 1e-12


@given(st.lists(st.lists(WORDS, min_size=1, max_size=6), min_size=2, max_size=12), st.data())
def test_property_the_hybrid_ranks_by_fused_reciprocal_ranks(docs, data):
    bm25, tfidf = BM25Retriever().fit(docs), TfidfRetriever().fit(docs)
    hybrid = HybridRetriever(bm25, tfidf, k=60)
    query = data.draw(st.lists(WORDS, min_size=1, max_size=3))
    n = data.draw(st.integers(1, len(docs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownQueryWarning)
        scores, ids = hybrid.search([query], n)
        depth = hybrid.depth if hasattr(hybrid, "depth") else len(docs)
        rankings = [r.search([query], min(depth, len(docs)))[1][0].tolist() for r in (bm25, tfidf)]
    fused = reciprocal_rank_fusion(rankings, len(docs), k=60)
    np.testing.assert_allclose(scores[0], np.sort(fused)[::-1][:n], rtol=1e-9)
    np.testing.assert_allclose(fused[ids[0]], scores[0], rtol=1e-9)


# -- the dense retriever: search is the exact top k of q(x)·e(d), after any edit -----------------

_VOCABULARY = ["capital", "currency", "france", "spain", "iron", "symbol", "paris", "euro", "of",
               "the", "what", "is"]
_DENSE = {}


def _dense():
    """One tiny random bi-encoder for every example (built once: hypothesis forbids per-example
    fixtures), over passages made of the vocabulary."""
    if not _DENSE:
        import torch

        from ragtutor.dense import BiEncoder, build_tokenizer
        torch.manual_seed(0)
        passages = [{"id": f"p{i}", "title": _VOCABULARY[i % 6],
                     "text": " ".join(_VOCABULARY[i:] + _VOCABULARY[:i])}
                    for i in range(len(_VOCABULARY))]
        tokenizer = build_tokenizer(passages, [{"question": " ".join(_VOCABULARY)}])
        _DENSE.update(encoder=BiEncoder.build(tokenizer, hidden_size=8, layers=1, heads=2,
                                              intermediate_size=16, max_positions=64),
                      passages=passages)
    return _DENSE["encoder"], _DENSE["passages"]


@given(st.lists(st.lists(st.sampled_from(_VOCABULARY), min_size=1, max_size=5).map(" ".join),
                min_size=1, max_size=4),
       st.sets(st.integers(0, len(_VOCABULARY) - 1), max_size=4), st.data())
def test_property_dense_search_is_the_exact_top_k_after_deletes(questions, deleted, data):
    from ragtutor.dense import DenseRetriever

    encoder, passages = _dense()
    retriever = DenseRetriever(encoder).fit(passages)
    keep = [p for i, p in enumerate(passages) if i not in deleted]
    assume(keep)
    if deleted:
        retriever.delete([passages[i]["id"] for i in sorted(deleted)])
    k = data.draw(st.integers(1, len(keep)))
    scores, ids = retriever.search(questions, k)
    q = encoder.encode_questions(questions).astype(np.float64)
    e = encoder.encode_passages(keep).astype(np.float64)
    exact = q @ e.T
    position = {p["id"]: i for i, p in enumerate(keep)}
    for row, (s, i) in enumerate(zip(scores, ids)):
        assert len(set(i.tolist())) == k and set(i.tolist()) <= set(position)
        np.testing.assert_allclose(s, exact[row, [position[x] for x in i]], atol=1e-4)
        np.testing.assert_allclose(s, np.sort(exact[row])[::-1][:k], atol=1e-4)
