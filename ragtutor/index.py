"""Nearest-neighbour search over dense vectors with faiss, behind one ``search()`` (chapter 02).

A dense retriever scores a passage by the inner product s = q · e of two vectors. Finding the k
largest inner products among N passage vectors of dimension D exactly costs N·D multiplications per
question; approximate indexes trade a little recall for much less work (Johnson, Douze & Jégou,
2019, *Billion-scale similarity search with GPUs*; Jégou, Douze & Schmid, 2011, *Product
quantization for nearest neighbor search*; Malkov & Yashunin, 2018, *Efficient and robust
approximate nearest neighbor search using Hierarchical Navigable Small World graphs*):

=========  ====================================================  ==================================
kind       how it searches                                        search-time knob
=========  ====================================================  ==================================
``flat``   every vector, exactly (``IndexFlatIP``)                —
``ivf``    k-means splits the vectors into ``nlist`` cells;       ``nprobe``: cells visited
           a query visits the ``nprobe`` cells nearest to it
           (``IndexIVFFlat``)
``hnsw``   a graph linking each vector to ``hnsw_m`` neighbours;  ``ef_search``: candidates kept
           a query walks it greedily (``IndexHNSWFlat``)          during the walk
``pq``     every vector, compressed to ``pq_m`` codes of          —
           ``pq_bits`` bits each (``IndexPQ``): less memory,
           approximate scores
=========  ====================================================  ==================================

Every kind answers ``search(queries, k) -> (scores, ids)``, both ``[n_queries, k]``, best first, like
the retrievers of ``ragtutor.sparse`` and ``ragtutor.dense``; :func:`ann_recall` measures how many
of the exact top k an approximate index finds.
"""
import numbers

import faiss
import numpy as np

from ragtutor.retrieval import check_k

__all__ = ["VectorIndex", "ann_recall"]


class VectorIndex:
    """One faiss index of inner-product similarity, of the ``kind`` "flat", "ivf", "hnsw" or "pq".

    Parameters are stored as given and checked when the index is built (the scikit-learn
    convention). ``nprobe`` and ``ef_search`` act at search time, so they may be changed between
    searches on a built index.

    - ``nlist``: IVF cells (k-means centroids); training needs at least that many vectors, and
      faiss recommends about 40 per cell.
    - ``nprobe``: IVF cells visited per query, 1..nlist (nlist visits every cell: exact).
    - ``hnsw_m``: graph neighbours per vector; ``ef_construction``, ``ef_search``: the size of the
      candidate list while building and while searching (larger: slower and more accurate).
    - ``pq_m``: sub-vectors per vector (must divide the dimension); ``pq_bits``: bits per code, so
      a vector takes ``pq_m * pq_bits / 8`` bytes instead of ``4 * dim``.

    Learned state: ``index_`` (the faiss index), ``dim_``. ``fit(vectors)`` is ``train`` then
    ``add``; IVF and PQ must be trained (k-means) before vectors can be added.
    """

    KINDS = ("flat", "ivf", "hnsw", "pq")

    def __init__(self, kind="flat", nlist=100, nprobe=1, hnsw_m=32, ef_construction=40,
                 ef_search=16, pq_m=8, pq_bits=8):
        self.kind = kind
        self.nlist = nlist
        self.nprobe = nprobe
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.pq_m = pq_m
        self.pq_bits = pq_bits

    def get_params(self):
        """The constructor's parameters, as a dict: ``VectorIndex(**index.get_params())`` is an
        unbuilt index of the same kind and settings."""
        return {name: getattr(self, name) for name in (
            "kind", "nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "pq_m", "pq_bits")}

    # -- building -------------------------------------------------------------------------------
    def fit(self, vectors):
        """Train the index on ``vectors`` ``[n, dim]`` (when its kind needs training) and add
        them; vector i gets id i. Returns ``self``."""
        return self.train(vectors).add(vectors)

    def train(self, vectors):
        """Create the empty index for ``vectors``' dimension and, for IVF and PQ, run k-means on
        them. Returns ``self``."""
        vectors = _as_matrix(vectors, "vectors")
        dim = vectors.shape[1]
        self.index_ = self._new_index(dim, len(vectors))
        self.dim_ = dim
        if not self.index_.is_trained:
            self.index_.train(vectors)
        return self

    def add(self, vectors):
        """Append ``vectors`` ``[n, dim]``; ids continue from the number already stored. A flat
        or HNSW index is created on first use; IVF and PQ must be trained first."""
        vectors = _as_matrix(vectors, "vectors")
        if not hasattr(self, "index_"):
            if self.kind in ("ivf", "pq"):
                raise ValueError(f"this {self.kind.upper()} index is not trained: call "
                                 "train(vectors) first, or fit(vectors), which trains and adds")
            self.train(vectors)
        self._check_dim(vectors, "vectors")
        self.index_.add(vectors)
        return self

    def reset(self):
        """Remove every vector, keeping what training learned (IVF's cells, PQ's codebooks), so
        that :meth:`add` can refill the index. Returns ``self``."""
        if not hasattr(self, "index_"):
            raise ValueError("the index is not built yet: call fit(vectors) first")
        self.index_.reset()
        return self

    def _new_index(self, dim, n):
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown kind {self.kind!r}: choose one of {self.KINDS}")
        ip = faiss.METRIC_INNER_PRODUCT
        if self.kind == "flat":
            return faiss.IndexFlatIP(dim)
        if self.kind == "ivf":
            nlist = _positive_int(self.nlist, "nlist")
            if n < nlist:
                raise ValueError(f"IVF training needs at least nlist={nlist} vectors (one per "
                                 f"k-means centroid), got {n}: lower nlist or train on more vectors")
            # The quantizer holds the nlist centroids and finds the cells nearest to a query.
            return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, ip)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, _positive_int(self.hnsw_m, "hnsw_m"), ip)
            index.hnsw.efConstruction = _positive_int(self.ef_construction, "ef_construction")
            return index
        pq_m, pq_bits = _positive_int(self.pq_m, "pq_m"), _positive_int(self.pq_bits, "pq_bits")
        if dim % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the dimension {dim}: each of the pq_m "
                             "sub-vectors gets dim / pq_m coordinates")
        if pq_bits < 3:
            # faiss's SIMD distance tables need ksub = 2**pq_bits to be a multiple of 8 for some
            # sub-vector sizes (an assertion fails inside search on AVX2 machines, not on others).
            raise ValueError(f"pq_bits must be at least 3 (8 centroids per sub-quantizer), got "
                             f"{pq_bits}: faiss's fast distance tables need them; to save memory, "
                             "lower pq_m instead")
        if n < 2**pq_bits:
            raise ValueError(f"PQ training needs at least 2**pq_bits={2**pq_bits} vectors (one "
                             f"per centroid of each sub-quantizer), got {n}: lower pq_bits")
        return faiss.IndexPQ(dim, pq_m, pq_bits, ip)

    # -- searching ------------------------------------------------------------------------------
    def search(self, queries, k):
        """The ``k`` vectors with the largest inner product with each query, best first:
        ``(scores, ids)``, float32 and int64, both ``[n_queries, k]``.

        An IVF search that visits too few cells to find k vectors raises an error rather than
        returning a shorter list: raise ``nprobe``.
        """
        if not hasattr(self, "index_") or self.index_.ntotal == 0:
            raise ValueError("the index is empty: call fit(vectors) (or train and add) before "
                             "search()")
        queries = _as_matrix(queries, "queries")
        self._check_dim(queries, "queries")
        k = check_k(k, self.index_.ntotal, "the index", "vectors")
        if self.kind == "ivf":
            self.index_.nprobe = _check_range(self.nprobe, "nprobe", 1, self.index_.nlist)
        elif self.kind == "hnsw":
            self.index_.hnsw.efSearch = _positive_int(self.ef_search, "ef_search")
        scores, ids = self.index_.search(queries, k)
        missing = (ids < 0).any(axis=1)
        if missing.any():
            fix = (f"the {self.nprobe} cell(s) visited hold too few vectors. Raise nprobe"
                   if self.kind == "ivf" else
                   f"the graph search kept too few candidates. Raise ef_search (now "
                   f"{self.ef_search})" if self.kind == "hnsw" else "the index holds too few vectors")
            raise ValueError(f"the search found fewer than k={k} vectors for {int(missing.sum())} "
                             f"of {len(queries)} queries: {fix} (or lower k)")
        return scores, ids

    @property
    def ntotal(self):
        """The number of vectors stored."""
        return self.index_.ntotal if hasattr(self, "index_") else 0

    def memory_bytes(self):
        """The size of the index (vectors or codes, centroids, graph), as faiss serialises it."""
        if not hasattr(self, "index_"):
            raise ValueError("the index is not built yet: call fit(vectors) first")
        return int(faiss.serialize_index(self.index_).size)

    def _check_dim(self, matrix, name):
        if matrix.shape[1] != self.dim_:
            raise ValueError(f"{name} have dimension {matrix.shape[1]}, but the index holds "
                             f"vectors of dimension {self.dim_}")

    def __repr__(self):
        knobs = {"ivf": f"nlist={self.nlist}, nprobe={self.nprobe}",
                 "hnsw": f"hnsw_m={self.hnsw_m}, ef_search={self.ef_search}",
                 "pq": f"pq_m={self.pq_m}, pq_bits={self.pq_bits}"}.get(self.kind, "")
        return f"VectorIndex({self.kind!r}{', ' + knobs if knobs else ''}, ntotal={self.ntotal})"


def ann_recall(index, queries, exact_ids):
    r"""Recall@k of an approximate index against exact search: the share of each query's true k
    nearest neighbours that ``index`` returns in its top k, averaged over queries,
    :math:`\frac{1}{n}\sum_q |A_k(q) \cap E_k(q)| / k`.

    ``exact_ids`` ``[n_queries, k]`` are the true neighbours, found once by exact search over the
    same vectors: ``VectorIndex("flat").fit(vectors).search(queries, k)[1]``; k is its width.
    """
    exact_ids = np.asarray(exact_ids)
    if exact_ids.ndim != 2 or len(exact_ids) != len(queries):
        raise ValueError(f"exact_ids must have shape [n_queries, k] = [{len(queries)}, k], got "
                         f"{list(exact_ids.shape)}")
    if exact_ids.min() < 0 or exact_ids.max() >= index.ntotal:
        raise ValueError(f"exact_ids name vectors that the index does not hold (it holds "
                         f"{index.ntotal}): search the same vectors exactly")
    _, found = index.search(queries, exact_ids.shape[1])
    hits = (found[:, :, None] == exact_ids[:, None, :]).any(axis=2).sum(axis=1)
    return float(hits.mean()) / exact_ids.shape[1]


def _as_matrix(x, name):
    """``x`` as a C-contiguous float32 array ``[n, dim]`` (what faiss takes), checked."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array [n, dim], got shape {x.shape}; "
                         "pass a single vector as x[None, :]")
    if x.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return x


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_range(value, name, low, high):
    value = _positive_int(value, name)
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {name}={value}")
    return value
