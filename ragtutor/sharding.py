"""One vector index split over several processes: shards held by Ray actors (chapter 09).

A corpus too large for one process is split into shards; each shard is an index of its own,
held by a worker; a query goes to every shard at once, and the k best of the shards' k best are
the k best of the whole corpus — the same result as one index, because the top k of a union is
among the union of the top k's::

    with local_ray(num_cpus=2):                              # a Ray cluster on this machine
        index = ShardedIndex(n_shards=2).fit(vectors)        # as VectorIndex("flat").fit(vectors)
        scores, ids = index.search(queries, k=10)             # ids are rows of `vectors`

    retriever = DenseRetriever(encoder, index=ShardedIndex(2))  # the retriever contract, sharded

:class:`ShardedIndex` has :class:`ragtutor.index.VectorIndex`'s interface (``fit``, ``train``,
``add``, ``reset``, ``search``, ``ntotal``, ``get_params``), so a
:class:`ragtutor.dense.DenseRetriever` or a :class:`ragtutor.rag_model.RAGModel` uses it in place
of its one index and answers as before. The shards are `Ray <https://docs.ray.io>`_ actors:
:func:`start_local_ray` starts a Ray cluster on this machine (:func:`local_ray` for a ``with``
block); ``ray.init(address=...)`` joins a cluster of many machines instead, and the same code then
puts the shards on them. Hugging Face's RAG fine-tuning scripts serve their retrieval index from
Ray actors in the same way (``RagRayDistributedRetriever``).
"""
import contextlib
import logging
import numbers
import os

import numpy as np
import psutil

from ragtutor.index import VectorIndex, _as_matrix
from ragtutor.retrieval import check_k

__all__ = ["ShardedIndex", "start_local_ray", "local_ray", "merge_top_k", "shard_rows"]


def start_local_ray(num_cpus=2, object_store_mb=100):
    """Start a Ray cluster on this machine (unless Ray is running already) and return the ``ray``
    module; ``ray.shutdown()`` stops it.

    ``num_cpus`` caps the tasks Ray runs at once; ``object_store_mb`` bounds its shared-memory
    object store (Ray would otherwise reserve 30% of the machine's memory). The dashboard and
    usage statistics stay off, and the cluster takes only callers that hold its token.
    """
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # A new local cluster takes only callers holding its token (~/.ray/auth_token), Ray's
        # default; the notice Ray logs about that default is kept out of a notebook's output.
        notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = notice.level
        notice.setLevel(logging.ERROR)
        try:
            ray.init(num_cpus=num_cpus, object_store_memory=int(object_store_mb) * 2**20,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        finally:
            notice.setLevel(level)
    return ray


@contextlib.contextmanager
def local_ray(num_cpus=2, object_store_mb=100):
    """:func:`start_local_ray` for the ``with`` block, and ``ray.shutdown()`` after it. If Ray is
    already running (``ray.init`` was called, maybe with a cluster's address), the block uses it
    and leaves it running."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    start_local_ray(num_cpus, object_store_mb)
    try:
        yield ray
    finally:
        ray.shutdown()


def shard_rows(n, n_shards, start=0):
    """Rows ``start .. start + n - 1`` dealt into ``n_shards`` contiguous blocks as even as can be
    (the first ``n % n_shards`` blocks one longer): a list of ``n_shards`` int64 arrays."""
    return np.array_split(np.arange(start, start + n, dtype=np.int64), n_shards)


def merge_top_k(shard_scores, shard_rows_found, k):
    """The ``k`` best of several shards' results for each query, best first, ties broken by the
    lower row (as one flat index breaks them).

    ``shard_scores`` and ``shard_rows_found`` are lists, one entry per shard, of arrays
    ``[n_queries, k_s]`` (a shard's k_s best, its rows already global). Returns ``(scores, rows)``,
    ``[n_queries, k]``. The k best of the union are among the union of each shard's k best: a
    document outside its shard's top k has k better documents in that shard alone.
    """
    scores = np.concatenate(shard_scores, axis=1)
    rows = np.concatenate(shard_rows_found, axis=1)
    if scores.shape[1] < k:
        raise ValueError(f"the shards returned {scores.shape[1]} results per query, fewer than "
                         f"k={k}")
    order = np.lexsort((rows, -scores), axis=1)[:, :k]  # the last key is the primary one
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


class _Shard:
    """What one Ray actor holds: a VectorIndex over its share of the rows. (Wrapped by
    ``ray.remote`` when the first shard is created, so that importing this module needs no Ray.)"""

    def __init__(self, settings, threads):
        import faiss

        faiss.omp_set_num_threads(threads)
        self.index = VectorIndex(**settings)

    def train(self, vectors):
        self.index.train(vectors)

    def add(self, vectors):
        self.index.add(vectors)

    def reset(self):
        self.index.reset()

    def search(self, queries, k):
        return self.index.search(queries, k)

    def memory_bytes(self):
        return self.index.memory_bytes()

    def where(self):
        """(the Ray node this actor runs on, its process id)."""
        import ray

        return ray.get_runtime_context().get_node_id(), os.getpid()


class ShardedIndex:
    """A :class:`ragtutor.index.VectorIndex` split over ``n_shards`` Ray actors.

    ``index`` is the VectorIndex whose kind and settings every shard copies (default: exact,
    ``VectorIndex("flat")``); an IVF or PQ shard trains its own quantizer on its own vectors, as
    the shards of a search cluster do. Row i of the vectors given to ``fit`` keeps id i, and
    ``add`` continues the count, exactly as in one VectorIndex; ``fit`` and ``add`` deal the rows
    to the shards in contiguous, even blocks (:func:`shard_rows`). ``threads_per_shard`` is the
    number of threads faiss uses inside each actor.

    A search sends the queries to every shard in parallel, each answers its own top k, and
    :func:`merge_top_k` keeps the k best: with exact shards the result equals one flat index's
    (ties aside). Ray must be running (:func:`local_ray`, or ``ray.init``); :meth:`close` ends the
    actors and waits for their processes to end. Learned state: ``shards_`` (the actor handles),
    ``processes_`` (each actor's node and process id), ``rows_`` (each shard's global rows),
    ``dim_``.
    """

    def __init__(self, n_shards=2, index=None, threads_per_shard=1):
        self.n_shards = n_shards
        self.index = index
        self.threads_per_shard = threads_per_shard

    def get_params(self):
        """The constructor's parameters: ``ShardedIndex(**index.get_params())`` is an unbuilt
        index with the same settings (what ``DenseRetriever.fit`` builds anew)."""
        return {"n_shards": self.n_shards, "index": self.index,
                "threads_per_shard": self.threads_per_shard}

    # -- building -------------------------------------------------------------------------------
    def fit(self, vectors):
        """Deal ``vectors`` ``[n, dim]`` to the shards, train each shard (IVF, PQ) on its share
        and add it; vector i gets id i. Returns ``self``."""
        return self.train(vectors).add(vectors)

    def train(self, vectors):
        """Start the shards (new actors) and, for IVF and PQ, train each on its share of
        ``vectors``. Returns ``self``."""
        import ray

        vectors = _as_matrix(vectors, "vectors")
        n_shards = self._check_settings()
        if len(vectors) < n_shards:
            raise ValueError(f"{len(vectors)} vectors cannot fill n_shards={n_shards} shards: "
                             "use fewer shards")
        if not ray.is_initialized():
            raise RuntimeError("Ray is not running: wrap the work in `with "
                               "ragtutor.sharding.local_ray():` (a cluster on this machine) or "
                               "call ray.init(address=...) to join a cluster")
        self.close()
        settings = (self.index or VectorIndex("flat")).get_params()
        actor = ray.remote(_Shard)
        self.shards_ = [actor.remote(settings, self.threads_per_shard) for _ in range(n_shards)]
        self.processes_ = ray.get([shard.where.remote() for shard in self.shards_])
        if settings["kind"] in ("ivf", "pq"):
            ray.get([shard.train.remote(vectors[rows]) for shard, rows
                     in zip(self.shards_, shard_rows(len(vectors), n_shards))])
        self.rows_ = [np.empty(0, dtype=np.int64) for _ in range(n_shards)]
        self.dim_ = vectors.shape[1]
        return self

    def add(self, vectors):
        """Append ``vectors`` ``[n, dim]``; ids continue from :attr:`ntotal`, dealt to the shards
        in even blocks. A flat or HNSW index is started on first use. Returns ``self``."""
        import ray

        vectors = _as_matrix(vectors, "vectors")
        if not hasattr(self, "shards_"):
            if (self.index or VectorIndex("flat")).kind in ("ivf", "pq"):
                raise ValueError("this sharded index is not trained: call fit(vectors), which "
                                 "trains and adds")
            self.train(vectors)
        if vectors.shape[1] != self.dim_:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, but the index holds "
                             f"vectors of dimension {self.dim_}")
        start = self.ntotal
        blocks = shard_rows(len(vectors), len(self.shards_), start=start)
        # The block for shard s goes to the shard that holds the fewest vectors now, so that
        # repeated small additions do not all land on the first shard.
        emptiest = np.argsort([len(r) for r in self.rows_], kind="stable")
        calls = []
        for shard, rows in zip(emptiest, sorted(blocks, key=len, reverse=True)):
            if len(rows):
                calls.append(self.shards_[shard].add.remote(vectors[rows - start]))
                self.rows_[shard] = np.concatenate([self.rows_[shard], rows])
        ray.get(calls)
        return self

    def reset(self):
        """Remove every vector, keeping what training learned. Returns ``self``."""
        import ray

        self._check_built()
        ray.get([shard.reset.remote() for shard in self.shards_])
        self.rows_ = [np.empty(0, dtype=np.int64) for _ in self.shards_]
        return self

    def close(self):
        """End the shards' actors (their memory is freed); the index must be fitted again."""
        import ray

        if ray.is_initialized():  # after ray.shutdown() the actors are gone already
            for shard in getattr(self, "shards_", []):
                ray.kill(shard)
            # ray.kill returns at once; wait for the processes on this machine to end, so that
            # their memory is free before new shards start.
            here = ray.get_runtime_context().get_node_id()
            local = []
            for node, pid in getattr(self, "processes_", []):
                try:
                    if node == here:
                        local.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(local, timeout=10)
        for name in ("shards_", "processes_", "rows_", "dim_"):
            self.__dict__.pop(name, None)

    # -- searching ------------------------------------------------------------------------------
    def search(self, queries, k):
        """The ``k`` vectors with the largest inner product with each query, best first, over
        every shard: ``(scores, ids)``, float32 and int64, both ``[n_queries, k]``."""
        import ray

        if self.ntotal == 0:
            raise ValueError("the index is empty: call fit(vectors) before search()")
        queries = _as_matrix(queries, "queries")
        if queries.shape[1] != self.dim_:
            raise ValueError(f"queries have dimension {queries.shape[1]}, but the index holds "
                             f"vectors of dimension {self.dim_}")
        k = check_k(k, self.ntotal, "the index", "vectors")
        shared = ray.put(queries)  # one copy in the object store, read by every shard
        live = [(shard, rows) for shard, rows in zip(self.shards_, self.rows_) if len(rows)]
        answers = ray.get([shard.search.remote(shared, min(k, len(rows))) for shard, rows in live])
        return merge_top_k([scores for scores, _ in answers],
                           [rows[found] for (_, rows), (_, found) in zip(live, answers)], k)

    @property
    def ntotal(self):
        """The number of vectors stored, over all shards."""
        return int(sum(len(rows) for rows in self.rows_)) if hasattr(self, "rows_") else 0

    def memory_bytes(self):
        """The size of every shard's index, summed (as faiss serialises them)."""
        import ray

        self._check_built()
        return int(sum(ray.get([shard.memory_bytes.remote() for shard in self.shards_])))

    def _check_built(self):
        if not hasattr(self, "shards_"):
            raise ValueError("the index is not built yet: call fit(vectors) first")

    def _check_settings(self):
        n = self.n_shards
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n_shards must be a positive integer, got {n!r}")
        t = self.threads_per_shard
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 1:
            raise ValueError(f"threads_per_shard must be a positive integer, got {t!r}")
        if self.index is not None and not isinstance(self.index, VectorIndex):
            raise TypeError(f"index must be a ragtutor.index.VectorIndex (the settings every "
                            f"shard copies), got {type(self.index).__name__}")
        return int(n)

    def __repr__(self):
        kind = (self.index or VectorIndex("flat")).kind
        return f"ShardedIndex(n_shards={self.n_shards}, kind={kind!r}, ntotal={self.ntotal})"
