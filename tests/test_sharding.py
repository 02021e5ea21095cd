"""Sharded retrieval on Ray (ragtutor.sharding): the shards' merged top k is one index's top k.

The retriever contract itself is tested for a sharded DenseRetriever in test_retrieval.py."""
import numpy as np
import pytest

from ragtutor.index import VectorIndex, ann_recall
from ragtutor.sharding import ShardedIndex, local_ray, merge_top_k, shard_rows


@pytest.fixture(scope="module")
def ray_cluster():
    with local_ray(num_cpus=1, object_store_mb=80) as ray:
        yield ray


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3001, 16)).astype(np.float32), \
        rng.standard_normal((40, 16)).astype(np.float32)


# Runs before the module's Ray cluster starts (tests run in file order).
def test_without_ray_it_says_how_to_start_it(vectors):
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is running in this process")
    with pytest.raises(RuntimeError, match="local_ray"):
        ShardedIndex(2).fit(vectors[0][:10])


def test_shard_rows_deals_even_contiguous_blocks():
    blocks = shard_rows(10, 3, start=5)
    assert [b.tolist() for b in blocks] == [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14]]


def test_merge_top_k_breaks_ties_by_the_lower_row():
    scores = [np.array([[3.0, 1.0]]), np.array([[3.0, 2.0]])]
    rows = [np.array([[7, 0]]), np.array([[2, 5]])]
    merged_scores, merged_rows = merge_top_k(scores, rows, 3)
    assert merged_rows.tolist() == [[2, 7, 5]]
    assert merged_scores.tolist() == [[3.0, 3.0, 2.0]]


def test_merge_top_k_equals_top_k_of_the_whole(vectors):
    data, queries = vectors
    scores = queries @ data.T
    blocks = shard_rows(len(data), 4)
    found = [np.argsort(-scores[:, b], axis=1, kind="stable")[:, :10] for b in blocks]
    merged, rows = merge_top_k([np.take_along_axis(scores[:, b], f, 1) for b, f in zip(blocks, found)],
                               [b[f] for b, f in zip(blocks, found)], 10)
    assert (rows == np.argsort(-scores, axis=1, kind="stable")[:, :10]).all()


@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_sharded_flat_index_equals_one_flat_index(ray_cluster, vectors, n_shards):
    data, queries = vectors
    sharded = ShardedIndex(n_shards).fit(data[:2000]).add(data[2000:])
    assert sharded.ntotal == len(data)
    assert sum(len(r) for r in sharded.rows_) == len(data)
    one_scores, one_ids = VectorIndex("flat").fit(data).search(queries, 10)
    scores, ids = sharded.search(queries, 10)
    np.testing.assert_allclose(scores, one_scores, rtol=1e-6)
    assert (ids == one_ids).all()  # random Gaussian vectors: no ties
    sharded.close()


def test_sharded_ivf_trains_one_quantizer_per_shard(ray_cluster, vectors):
    data, queries = vectors
    exact = VectorIndex("flat").fit(data).search(queries, 10)[1]
    sharded = ShardedIndex(2, index=VectorIndex("ivf", nlist=8, nprobe=8)).fit(data)
    assert ann_recall(sharded, queries, exact) == 1.0  # every cell visited: exact
    sharded.index.nprobe = 1
    fresh = ShardedIndex(2, index=VectorIndex("ivf", nlist=8, nprobe=1)).fit(data)
    assert ann_recall(fresh, queries, exact) < 1.0
    assert fresh.memory_bytes() > 0


def test_reset_then_add_refills(ray_cluster, vectors):
    data, queries = vectors
    sharded = ShardedIndex(2).fit(data[:100])
    sharded.reset().add(data[:50])
    assert sharded.ntotal == 50
    assert sharded.search(data[:1], 1)[1].tolist() == [[0]]


@pytest.mark.parametrize("make, error, problem", [
    (lambda: ShardedIndex(0), ValueError, "n_shards must be a positive"),
    (lambda: ShardedIndex(2, threads_per_shard=0), ValueError, "threads_per_shard"),
    (lambda: ShardedIndex(2, index="flat"), TypeError, "VectorIndex"),
    (lambda: ShardedIndex(5), ValueError, "cannot fill"),
])
def test_bad_settings_are_refused(ray_cluster, make, error, problem):
    with pytest.raises(error, match=problem):
        make().fit(np.ones((4, 3), dtype=np.float32))


def test_search_before_fit_and_with_a_wrong_dimension(ray_cluster, vectors):
    data, _ = vectors
    with pytest.raises(ValueError, match="empty"):
        ShardedIndex(2).search(data[:1], 1)
    sharded = ShardedIndex(2).fit(data[:10])
    with pytest.raises(ValueError, match="dimension"):
        sharded.search(np.ones((1, 3), dtype=np.float32), 1)
    with pytest.raises(ValueError, match="larger than the index"):
        sharded.search(data[:1], 11)


def test_a_rag_model_answers_the_same_from_a_sharded_index(ray_cluster):
    from ragtutor.data import load_questions
    from ragtutor.generation import CHECKPOINT_DIR
    from ragtutor.rag_model import RAGModel

    model = RAGModel.from_pretrained(CHECKPOINT_DIR / "rag_token")
    questions = [q["question"] for q in load_questions("test")[:24]]
    scores, ids = model.retrieve(questions)
    answers = model.generate(questions)
    model.index = ShardedIndex(3).fit(model.passage_vectors.numpy())
    sharded_scores, sharded_ids = model.retrieve(questions)
    assert (sharded_ids == ids).all()
    np.testing.assert_allclose(sharded_scores, scores, rtol=1e-5)
    assert model.generate(questions) == answers
    model.index.close()
