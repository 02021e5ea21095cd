"""ragtutor.index: every faiss wrapper keeps the search contract; exact search is NumPy's."""
import numpy as np
import pytest

from ragtutor.index import VectorIndex, ann_recall

DIM = 16


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    # Clustered data, as embeddings are: approximate indexes have structure to exploit.
    centres = rng.normal(size=(20, DIM))
    data = centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, DIM))
    queries = centres[rng.integers(0, 20, 50)] + 0.3 * rng.normal(size=(50, DIM))
    return data.astype(np.float32), queries.astype(np.float32)


KINDS = [("flat", {}), ("ivf", {"nlist": 20, "nprobe": 4}), ("hnsw", {"ef_search": 64}),
         ("pq", {"pq_m": 4, "pq_bits": 6})]


@pytest.mark.parametrize("kind, params", KINDS)
def test_every_kind_returns_the_contracts_shapes(vectors, kind, params):
    data, queries = vectors
    index = VectorIndex(kind, **params).fit(data)
    scores, ids = index.search(queries, 7)
    assert scores.shape == ids.shape == (len(queries), 7)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < len(data)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert all(len(set(row)) == 7 for row in ids.tolist())
    assert index.ntotal == len(data) and index.memory_bytes() > 0


def test_exact_search_equals_numpy_brute_force(vectors):
    data, queries = vectors
    scores, ids = VectorIndex("flat").fit(data).search(queries, 10)
    brute = queries.astype(np.float64) @ data.T.astype(np.float64)
    expected_ids = np.argsort(-brute, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected_ids, axis=1), rtol=1e-5)


def test_ivf_visiting_every_cell_is_exact(vectors):
    data, queries = vectors
    exact = VectorIndex("flat").fit(data)
    ivf = VectorIndex("ivf", nlist=20, nprobe=20).fit(data)
    np.testing.assert_array_equal(ivf.search(queries, 10)[1], exact.search(queries, 10)[1])
    assert ann_recall(ivf, queries, exact.search(queries, 10)[1]) == 1.0


def test_approximate_indexes_trade_recall_for_work(vectors):
    data, queries = vectors
    exact = VectorIndex("flat").fit(data)
    true = exact.search(queries, 10)[1]
    assert ann_recall(exact, queries, true) == 1.0
    few = ann_recall(VectorIndex("ivf", nlist=20, nprobe=1).fit(data), queries, true)
    many = ann_recall(VectorIndex("ivf", nlist=20, nprobe=8).fit(data), queries, true)
    assert few <= many <= 1.0
    assert ann_recall(VectorIndex("hnsw", ef_search=128).fit(data), queries, true) > 0.95


def test_search_time_knobs_change_on_a_built_index(vectors):
    data, queries = vectors
    true = VectorIndex("flat").fit(data).search(queries, 10)[1]
    index = VectorIndex("ivf", nlist=20, nprobe=1).fit(data)
    index.nprobe = 20
    assert ann_recall(index, queries, true) == 1.0


def test_product_quantisation_takes_less_memory(vectors):
    data, _ = vectors
    flat = VectorIndex("flat").fit(data)
    pq = VectorIndex("pq", pq_m=4, pq_bits=6).fit(data)
    assert pq.memory_bytes() < flat.memory_bytes() / 4


def test_add_appends_ids(vectors):
    data, queries = vectors
    index = VectorIndex("flat").add(data[:1000]).add(data[1000:])
    np.testing.assert_array_equal(index.search(queries, 5)[1],
                                  VectorIndex("flat").fit(data).search(queries, 5)[1])


@pytest.mark.parametrize("make, problem", [
    (lambda d: VectorIndex("ivf", nlist=20).add(d), "IVF index is not trained"),
    (lambda d: VectorIndex("pq", pq_m=4).add(d), "PQ index is not trained"),
    (lambda d: VectorIndex("flat").fit(d).search(d[:3, :8], 5), "dimension 8, but the index holds"),
    (lambda d: VectorIndex("flat").fit(d).add(d[:3, :8]), "dimension 8, but the index holds"),
    (lambda d: VectorIndex("flat").fit(d[:10]).search(d[:3], 11), "k=11 is larger than the index"),
    (lambda d: VectorIndex("flat").fit(d).search(d[:3], 0), "k must be at least 1"),
    (lambda d: VectorIndex("flat").search(d[:3], 1), "the index is empty"),
    (lambda d: VectorIndex("ivf", nlist=20).fit(d[:10]), "at least nlist=20 vectors"),
    (lambda d: VectorIndex("ivf", nlist=20, nprobe=21).fit(d).search(d[:3], 5), r"nprobe must lie in \[1, 20\]"),
    (lambda d: VectorIndex("pq", pq_m=5).fit(d), "pq_m=5 must divide the dimension 16"),
    (lambda d: VectorIndex("annoy").fit(d), "unknown kind 'annoy'"),
    (lambda d: VectorIndex("flat").fit(d[0]), "non-empty 2-D array"),
    (lambda d: VectorIndex("flat").fit(np.full((3, DIM), np.nan)), "NaN or infinite"),
])
def test_bad_input_raises_a_clear_error(vectors, make, problem):
    with pytest.raises(ValueError, match=problem):
        make(vectors[0])


def test_an_ivf_search_that_finds_too_few_vectors_says_so():
    rng = np.random.default_rng(1)
    # 200 vectors in 50 cells: one cell holds far fewer than k = 30 of them.
    data = rng.normal(size=(200, DIM)).astype(np.float32)
    index = VectorIndex("ivf", nlist=50, nprobe=1).fit(data)
    with pytest.raises(ValueError, match="Raise nprobe"):
        index.search(data[:20], 30)


def test_ann_recall_counts_the_true_neighbours_found():
    index = VectorIndex().fit(np.eye(4, dtype=np.float32))
    queries = np.eye(4, dtype=np.float32)[:2]  # each query's nearest vector is itself
    assert ann_recall(index, queries, [[0], [1]]) == 1.0
    assert ann_recall(index, queries, [[0], [3]]) == 0.5


def test_ann_recall_needs_the_exact_neighbours_of_the_same_vectors(vectors):
    data, queries = vectors
    true = VectorIndex().fit(data).search(queries, 5)[1]
    with pytest.raises(ValueError, match="does not hold"):
        ann_recall(VectorIndex().fit(data[:100]), queries, true)
    with pytest.raises(ValueError, match=r"shape \[n_queries, k\]"):
        ann_recall(VectorIndex().fit(data), queries, true[:3])


def test_torch_tensors_are_accepted(vectors):
    torch = pytest.importorskip("torch")
    data, queries = vectors
    index = VectorIndex().fit(torch.from_numpy(data))
    np.testing.assert_array_equal(index.search(torch.from_numpy(queries), 3)[1],
                                  index.search(queries, 3)[1])


def test_get_params_makes_an_unbuilt_copy(vectors):
    index = VectorIndex("ivf", nlist=20, nprobe=3).fit(vectors[0])
    copy = VectorIndex(**index.get_params())
    assert copy.get_params() == index.get_params() and copy.ntotal == 0
