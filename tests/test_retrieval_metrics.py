"""Retrieval metrics: hand-computed cases, scikit-learn as a peer, and bad input."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, ndcg_score

from ragtutor.metrics import (average_precision, mean_reciprocal_rank, ndcg_at_k, precision_at_k,
                              recall_at_k, reciprocal_rank, retrieval_scores)

# A ranking of five documents; b and e are relevant, and so is x, which was never retrieved.
RANKING = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "e", "x"}


def test_recall_and_precision_by_hand():
    assert recall_at_k(RANKING, RELEVANT, 1) == 0.0
    assert recall_at_k(RANKING, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKING, RELEVANT, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RANKING, RELEVANT, 50) == pytest.approx(2 / 3)  # k beyond the list is fine
    assert precision_at_k(RANKING, RELEVANT, 2) == 0.5
    assert precision_at_k(RANKING, RELEVANT, 5) == pytest.approx(2 / 5)
    assert precision_at_k(RANKING, RELEVANT, 10) == pytest.approx(2 / 10)  # empty slots are misses


def test_reciprocal_rank_and_mrr_by_hand():
    assert reciprocal_rank(RANKING, RELEVANT) == 0.5
    assert reciprocal_rank(RANKING, RELEVANT, k=1) == 0.0
    assert reciprocal_rank(RANKING, {"z"}) == 0.0
    # ranks 2, 1 and none: MRR = (1/2 + 1 + 0) / 3
    assert mean_reciprocal_rank([RANKING, ["b", "a"], ["c"]], [RELEVANT, {"b"}, {"x"}]) == \
        pytest.approx(0.5)


def test_average_precision_by_hand():
    # hits at ranks 2 and 5: precisions 1/2 and 2/5; x is never found, so divide by |R| = 3
    assert average_precision(RANKING, RELEVANT) == pytest.approx((1 / 2 + 2 / 5) / 3)
    assert average_precision(RANKING, RELEVANT, k=2) == pytest.approx((1 / 2) / 3)
    assert average_precision(["b", "e", "x", "a"], RELEVANT) == 1.0


def test_ndcg_by_hand():
    binary = ndcg_at_k(RANKING, RELEVANT, 5)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert binary == pytest.approx(dcg / idcg)
    # graded: a=3, c=1, z=2 (never retrieved); d is judged not relevant (grade 0)
    grades = {"a": 3, "c": 1, "z": 2, "d": 0}
    dcg = 3 / math.log2(2) + 1 / math.log2(4)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RANKING, grades, 5) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["a", "z", "c"], grades, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["a"], grades, 1) == 1.0  # the ideal top 1


def test_ndcg_and_average_precision_equal_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 30))
        grades = rng.integers(0, 4, size=n)
        grades[rng.integers(n)] = 2  # at least one relevant document
        scores = rng.permutation(n).astype(float)  # distinct: sklearn averages over ties
        ranking = list(np.argsort(-scores))
        relevance = dict(enumerate(grades.tolist()))
        for k in (1, 3, n):
            assert ndcg_at_k(ranking, relevance, k) == pytest.approx(
                ndcg_score([grades], [scores], k=k), abs=1e-12)
        assert average_precision(ranking, relevance) == pytest.approx(
            average_precision_score(grades > 0, scores), abs=1e-12)


def test_retrieval_scores_is_a_table_row():
    rankings = [RANKING, ["b", "a"], np.array([7, 3, 9])]
    relevant = [RELEVANT, {"b": 2, "a": 0}, {3}]
    row = retrieval_scores(rankings, relevant, ks=(1, 2), ndcg_k=2)
    assert set(row) == {"recall@1", "recall@2", "mrr", "ndcg@2", "map", "n"}
    assert row["n"] == 3
    assert row["recall@1"] == pytest.approx((0 + 1 + 0) / 3)
    assert row["recall@2"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert row["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert row["ndcg@2"] == pytest.approx(np.mean([ndcg_at_k(r, rel, 2)
                                                   for r, rel in zip(rankings, relevant)]))


@pytest.mark.parametrize("bad, error, words", [
    (lambda: recall_at_k(RANKING, set(), 5), ValueError, "no relevant ids"),
    (lambda: recall_at_k(RANKING, {"a": 0}, 5), ValueError, "no relevant ids"),
    (lambda: ndcg_at_k(RANKING, {"a": -1}, 5), ValueError, "non-negative numbers"),
    (lambda: recall_at_k(RANKING, "b", 5), TypeError, r"wrap a single id as \{id\}"),
    (lambda: recall_at_k("abc", RELEVANT, 5), TypeError, "ranked list of ids"),
    (lambda: recall_at_k({"a", "b"}, RELEVANT, 5), TypeError, "ranked list of ids"),
    (lambda: recall_at_k([["a"], ["b"]], RELEVANT, 5), TypeError, "flat list of ids"),
    (lambda: recall_at_k(["a", "b", "a"], RELEVANT, 5), ValueError, "lists id 'a' more than once"),
    (lambda: recall_at_k(RANKING, RELEVANT, 0), ValueError, "k must be at least 1"),
    (lambda: precision_at_k(RANKING, RELEVANT, 2.5), TypeError, "k must be an integer"),
    (lambda: mean_reciprocal_rank([RANKING], [RELEVANT, RELEVANT]), ValueError, "1 rankings but 2"),
    (lambda: retrieval_scores([], []), ValueError, "no queries"),
])
def test_bad_input_is_explained(bad, error, words):
    with pytest.raises(error, match=words):
        bad()


# --- properties: every metric against a NumPy reference on random rankings ---------------------

rankings = st.lists(st.integers(0, 30), min_size=1, max_size=20, unique=True)
graded = st.dictionaries(st.integers(0, 40), st.integers(0, 3), min_size=1, max_size=10).filter(
    lambda grades: any(g > 0 for g in grades.values()))


@given(rankings, graded, st.integers(1, 25))
def test_property_metrics_equal_a_numpy_reference(retrieved, grades, k):
    gains = np.array([grades.get(d, 0) for d in retrieved], float)
    hits = gains > 0
    n_relevant = sum(g > 0 for g in grades.values())
    top = hits[:k]
    ranks = np.arange(1, len(retrieved) + 1)
    assert recall_at_k(retrieved, grades, k) == pytest.approx(top.sum() / n_relevant)
    assert precision_at_k(retrieved, grades, k) == pytest.approx(top.sum() / k)
    assert reciprocal_rank(retrieved, grades) == pytest.approx(
        1 / ranks[hits][0] if hits.any() else 0.0)
    assert average_precision(retrieved, grades) == pytest.approx(
        (np.cumsum(hits) / ranks)[hits].sum() / n_relevant)
    discounts = 1 / np.log2(np.arange(2, k + 2))
    ideal = np.sort(np.array(list(grades.values()), float))[::-1][:k]
    assert ndcg_at_k(retrieved, grades, k) == pytest.approx(
        (gains[:k] * discounts[:len(gains[:k])]).sum() / (ideal * discounts[:len(ideal)]).sum())


@pytest.mark.parametrize("grade", [float("nan"), float("inf")])
def test_ndcg_refuses_grades_that_are_not_finite(grade):
    with pytest.raises(ValueError, match="finite, non-negative"):
        ndcg_at_k(RANKING, {"b": grade}, 5)
