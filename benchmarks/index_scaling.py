"""What a faiss index costs at a million vectors: memory, recall and speed of each kind (chapter 09).

    python benchmarks/index_scaling.py [--n 1000000] [--threads 2]

A synthetic set of ``--n`` vectors of 64 dimensions, unit length (inner product = cosine), drawn
from a mixture of Gaussian clusters of unequal sizes along directions of decaying variance, so that
neighbours crowd together and cells are unevenly filled, as with real passage embeddings; 1,000
queries drawn from the same mixture (not in the set). The exact top 10 of each query, by
``VectorIndex("flat")``, is the ground truth.

For each index — ``ragtutor.index.VectorIndex`` of kind "flat", "ivf", "hnsw" and "pq", and faiss's
``IndexIVFPQ`` (IVF cells holding PQ codes, which is not a ``VectorIndex`` kind) — and each of its
search settings: build time (training and adding), size as faiss serialises it (and per vector),
Recall@10 against exact search (:func:`ragtutor.index.ann_recall`), the median time of one query
searched alone with one thread, and queries per second for a batch of 1,000 with ``--threads``.
IVF and PQ are trained on a sample of the set (``TRAIN_PER_CELL`` vectors per IVF cell).

Then a calculation, not a measurement: what each index would take for the RAG paper's Wikipedia,
21 million passages of 768 dimensions, from the bytes per vector measured here.

Writes ``benchmarks/index_scaling.json`` and the index-scaling section of
``benchmarks/RESULTS.md``; ``--no-write`` prints the section instead, and ``--report`` rewrites the
section (and the calculation) from the JSON without measuring again.
"""
import argparse
import json
import math
import resource
import time
from pathlib import Path

import faiss
import numpy as np

from ragtutor.index import VectorIndex, ann_recall
from ragtutor.tools.records import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "benchmarks" / "index_scaling.json"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- index_scaling:begin -->", "<!-- index_scaling:end -->"

DIM = 64
K = 10
N_QUERIES = 1000
N_CLUSTERS = 1000
# Within-cluster standard deviation relative to the centres' spread: at 1.0 clusters overlap
# enough that IVF with one probe misses a good share of the neighbours, as with real embeddings
# (at 0.8 it misses few; at 1.5 even 32 probes miss a quarter, as if there were no clusters).
SPREAD = 1.0
TRAIN_PER_CELL = 50   # faiss asks for at least 39 training vectors per k-means centroid
HNSW_M = 32
EF_CONSTRUCTION = 40  # VectorIndex's default
PQ_BITS = 8
IVFPQ_M = 16
# The RAG paper's document index: Wikipedia (December 2018) in 100-word passages, DPR's
# 768-dimensional BERT-base vectors.
WIKI_N, WIKI_DIM, WIKI_CODE_BYTES = 21_000_000, 768, 64


def make_vectors(n, n_queries=N_QUERIES, dim=DIM, n_clusters=N_CLUSTERS, seed=0):
    """``(vectors [n, dim], queries [n_queries, dim])``, float32, each row of unit length.

    Cluster sizes follow a Zipf-like law (a few large topics, many small ones); coordinate j has
    standard deviation ``1 / sqrt(1 + j / 8)``, so most of the variance lies in a few directions,
    as in trained embeddings. Queries are further draws from the same mixture.
    """
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(1.0 + np.arange(dim) / 8.0)).astype(np.float32)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32) * scale
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.5
    weights /= weights.sum()
    total = n + n_queries
    points = np.empty((total, dim), dtype=np.float32)
    for start in range(0, total, 250_000):  # in chunks: no float64 copy of the whole set
        stop = min(start + 250_000, total)
        cluster = rng.choice(n_clusters, size=stop - start, p=weights)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        points[start:stop] = centres[cluster] + SPREAD * noise * scale
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    order = rng.permutation(total)  # queries are not the last cluster draws: any row may be one
    return np.ascontiguousarray(points[order[:n]]), np.ascontiguousarray(points[order[n:]])


def default_nlist(n):
    """IVF cells for ``n`` vectors: about 4·sqrt(n), a power of two (4096 at a million)."""
    return 2 ** round(math.log2(4 * math.sqrt(n)))


def plan(nlist):
    """The indexes and their search settings: ``[(name, params, build, settings)]`` where
    ``build(vectors, sample)`` returns a built index and each setting is ``(label, knobs)``, the
    search-time parameters by faiss's names (``faiss.ParameterSpace``)."""

    def vector_index(**params):
        def build(vectors, sample):
            index = VectorIndex(**params)
            if params["kind"] in ("ivf", "pq"):
                return index.train(sample).add(vectors)
            return index.fit(vectors)
        return build

    def ivfpq(vectors, sample):
        quantizer = faiss.IndexFlatIP(DIM)
        index = faiss.IndexIVFPQ(quantizer, DIM, nlist, IVFPQ_M, PQ_BITS,
                                 faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        index.add(vectors)
        return index

    return [
        ("Flat (VectorIndex \"flat\")", {"kind": "flat"},
         vector_index(kind="flat"), [("exact", {})]),
        ("IVF-Flat (VectorIndex \"ivf\")", {"kind": "ivf", "nlist": nlist},
         vector_index(kind="ivf", nlist=nlist),
         [(f"nprobe={p}", {"nprobe": p}) for p in (1, 8, 32) if p <= nlist]),
        ("HNSW-Flat (VectorIndex \"hnsw\")",
         {"kind": "hnsw", "hnsw_m": HNSW_M, "ef_construction": EF_CONSTRUCTION},
         vector_index(kind="hnsw", hnsw_m=HNSW_M, ef_construction=EF_CONSTRUCTION),
         [(f"efSearch={e}", {"efSearch": e}) for e in (16, 64, 256)]),
        ("PQ (VectorIndex \"pq\")", {"kind": "pq", "pq_m": 8, "pq_bits": PQ_BITS},
         vector_index(kind="pq", pq_m=8, pq_bits=PQ_BITS), [("m=8, 8 bits", {})]),
        ("PQ (VectorIndex \"pq\")", {"kind": "pq", "pq_m": 16, "pq_bits": PQ_BITS},
         vector_index(kind="pq", pq_m=16, pq_bits=PQ_BITS), [("m=16, 8 bits", {})]),
        ("IVF-PQ (faiss IndexIVFPQ)",
         {"kind": "faiss.IndexIVFPQ", "nlist": nlist, "pq_m": IVFPQ_M, "pq_bits": PQ_BITS},
         ivfpq, [(f"nprobe={p}", {"nprobe": p}) for p in (8, 32) if p <= nlist]),
    ]


def index_bytes(index):
    """Serialised size: ``VectorIndex.memory_bytes()``, or faiss's for a plain faiss index."""
    if isinstance(index, VectorIndex):
        return index.memory_bytes()
    return int(faiss.serialize_index(index).size)


def faiss_index(index):
    """The faiss index itself. Searches are timed on it, without ``VectorIndex.search``'s input
    checks (a few tens of microseconds), so that both kinds of index are timed alike; and an IVF
    query whose one visited cell holds fewer than k vectors gets a short list (ids -1, counted as
    misses) where ``VectorIndex.search`` would raise an error."""
    return index.index_ if isinstance(index, VectorIndex) else index


def time_batch1(search, queries, n_timed):
    """Median and 90th percentile seconds of one query searched alone, over the first
    ``n_timed`` queries (after one untimed query)."""
    search(queries[:1], K)
    times = []
    for i in range(n_timed):
        start = time.perf_counter()
        search(queries[i:i + 1], K)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.percentile(times, 90))


def measure(n, threads=2, n_latency=200, nlist=None, seed=0, log=print):
    """Run the benchmark on ``n`` vectors; returns the results dict (see the module docstring).
    ``nlist`` defaults to :func:`default_nlist`."""
    wall = time.perf_counter()
    faiss.omp_set_num_threads(threads)
    vectors, queries = make_vectors(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    nlist = nlist or default_nlist(n)
    entries = plan(nlist)
    n_train = min(n, TRAIN_PER_CELL * nlist)
    sample = vectors[np.sort(rng.choice(n, size=n_train, replace=False))]
    log(f"{n:,} vectors x {DIM}, {len(queries):,} queries, nlist={nlist}, training sample "
        f"{n_train:,}, {threads} thread(s)")
    exact_ids = None
    rows = []
    for name, params, build, settings in entries:
        faiss.omp_set_num_threads(threads)
        start = time.perf_counter()
        index = build(vectors, sample)
        build_s = time.perf_counter() - start
        size = index_bytes(index)
        if exact_ids is None:  # the first index is Flat: its answers are the ground truth
            exact_ids = index.search(queries, K)[1]
        for label, knobs in settings:
            searched = faiss_index(index)
            for knob, value in knobs.items():
                faiss.ParameterSpace().set_index_parameter(searched, knob, value)
            faiss.omp_set_num_threads(threads)
            recall = ann_recall(searched, queries, exact_ids)  # also warms the caches
            start = time.perf_counter()
            _, found = searched.search(queries, K)
            batch_s = time.perf_counter() - start
            short = int((found < 0).any(axis=1).sum())
            faiss.omp_set_num_threads(1)
            median_s, p90_s = time_batch1(searched.search, queries, n_latency)
            row = {"index": name, "params": params, "setting": label, "search_params": knobs,
                   "build_s": build_s, "bytes": size, "bytes_per_vector": size / n,
                   "recall_at_10": recall,
                   "batch1_median_ms": median_s * 1e3, "batch1_p90_ms": p90_s * 1e3,
                   "batch1000_qps": len(queries) / batch_s,
                   "queries_short_of_k": short}
            rows.append(row)
            log(f"{name:32s} {label:14s} build {build_s:7.1f} s  {size / n:7.1f} B/vector  "
                f"R@10 {recall:.3f}  batch 1: {median_s * 1e3:8.3f} ms  "
                f"batch 1000: {row['batch1000_qps']:10.0f} q/s"
                f"{f'  ({short} queries short of {K})' if short else ''}", flush=True)
        del index
    return {
        "machine": machine(packages=("faiss-cpu", "numpy")),
        "data": {"n": n, "dim": DIM, "n_queries": len(queries), "k": K, "clusters": N_CLUSTERS,
                 "spread": SPREAD, "seed": seed, "metric": "inner product, unit-length vectors",
                 "nlist": nlist, "training_sample": n_train},
        "threads": {"build_and_batch_1000": threads, "batch_1": 1},
        "batch1_queries_timed": n_latency,
        "rows": rows,
        "extrapolation": extrapolate(rows, n),
        "total_seconds": time.perf_counter() - wall,
        "peak_memory_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    }


def extrapolate(rows, n):
    """Bytes for ``WIKI_N`` vectors of ``WIKI_DIM`` dimensions, calculated: the raw vectors or the
    codes grow with the dimension; what each index adds per vector (HNSW's links, IVF's ids) does
    not, so it is taken as measured here; trained tables (centroids, codebooks) are recomputed for
    768 dimensions."""
    first = {}
    for row in rows:
        first.setdefault((row["index"], row["params"].get("pq_m")), row)
    flat = first[("Flat (VectorIndex \"flat\")", None)]
    ivf = first[("IVF-Flat (VectorIndex \"ivf\")", None)]
    hnsw = first[("HNSW-Flat (VectorIndex \"hnsw\")", None)]
    ivfpq = first[("IVF-PQ (faiss IndexIVFPQ)", IVFPQ_M)]
    nlist = ivf["params"]["nlist"]
    wiki_nlist = default_nlist(WIKI_N)
    vector = 4 * DIM
    flat_extra = flat["bytes"] / n - vector
    hnsw_extra = hnsw["bytes"] / n - vector
    ivf_extra = (ivf["bytes"] - nlist * vector) / n - vector
    ivfpq_extra = (ivfpq["bytes"] - nlist * vector - codebook_bytes(DIM)) / n - IVFPQ_M
    wiki_vector = 4 * WIKI_DIM
    wiki_centroids = wiki_nlist * wiki_vector
    m = WIKI_CODE_BYTES
    # Expected HNSW links per vector in faiss: 2M at level 0, and M at each upper level, which a
    # vector reaches with probability M^-l: 2M + M / (M - 1) int32 ids; plus an 8-byte offset
    # and a 4-byte level.
    links = 2 * HNSW_M + HNSW_M / (HNSW_M - 1)
    hnsw_formula = 4 * links + 8 + 4
    estimates = [
        ("Flat", "4 · 768 bytes per vector", wiki_vector + flat_extra, 0),
        ("IVF-Flat", f"4 · 768 + {ivf_extra:.1f} (id, list overhead) per vector; "
                     f"nlist = {wiki_nlist:,} centroids of 768 floats",
         wiki_vector + ivf_extra, wiki_centroids),
        (f"HNSW-Flat, M={HNSW_M}", f"4 · 768 + {hnsw_extra:.1f} (graph: measured at 64 dims; "
                                   f"{hnsw_formula:.1f} by the formula) per vector",
         wiki_vector + hnsw_extra, 0),
        ("PQ, 64 bytes", "64 one-byte codes per vector; 64 codebooks of 256 x 12 floats",
         m, codebook_bytes(WIKI_DIM)),
        ("IVF-PQ, 64 bytes", f"64 codes + {ivfpq_extra:.1f} (id, list overhead) per vector; "
                             f"nlist = {wiki_nlist:,} centroids; codebooks",
         m + ivfpq_extra, wiki_centroids + codebook_bytes(WIKI_DIM)),
    ]
    return {
        "n": WIKI_N, "dim": WIKI_DIM, "code_bytes": m, "nlist": wiki_nlist,
        "measured_overhead_bytes_per_vector": {"flat": flat_extra, "ivf": ivf_extra,
                                               "hnsw": hnsw_extra, "ivfpq": ivfpq_extra},
        "hnsw_overhead_formula_bytes_per_vector": hnsw_formula,
        "indexes": [{"index": name, "how": how, "bytes_per_vector": per_vector,
                     "fixed_bytes": fixed, "bytes": per_vector * WIKI_N + fixed,
                     "gb": (per_vector * WIKI_N + fixed) / 1e9}
                    for name, how, per_vector, fixed in estimates],
    }


def codebook_bytes(dim):
    """PQ's trained tables: m sub-quantizers of 2**bits centroids of dim / m floats."""
    return 2 ** PQ_BITS * dim * 4


def size(nbytes):
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def latency(ms):
    return f"{ms:.2f} ms" if ms >= 0.1 else f"{ms * 1e3:.0f} µs"


def report(results):
    d, t, x = results["data"], results["threads"], results["extrapolation"]
    lines = [
        "## Vector indexes at a million passages: memory, recall, speed (chapter 09)", "",
        f"Measured with `python benchmarks/index_scaling.py` on {results['machine']}; the whole "
        f"run took {results['total_seconds'] / 60:.1f} min, peak memory "
        f"{results['peak_memory_gb']:.1f} GB.", "",
        f"Synthetic set: {d['n']:,} vectors of {d['dim']} dimensions, unit length, from a mixture "
        f"of {d['clusters']:,} Gaussian clusters of Zipf-like sizes (seed {d['seed']}); "
        f"{d['n_queries']:,} queries drawn from the same mixture; inner product. Recall@{d['k']}: "
        f"the share of the exact top {d['k']} (Flat's) that an index returns. IVF: nlist = "
        f"{d['nlist']:,}{' (about 4·√N)' if d['nlist'] == default_nlist(d['n']) else ''}, "
        f"trained, like PQ, on {d['training_sample']:,} sampled "
        f"vectors; HNSW: M = {HNSW_M}, efConstruction = {EF_CONSTRUCTION}. IVF-PQ is faiss's "
        "`IndexIVFPQ` used directly (not a `VectorIndex` kind); the others are "
        "`ragtutor.index.VectorIndex`. Size: the index as faiss serialises it "
        "(`memory_bytes()`). Build: training and adding, "
        f"{t['build_and_batch_1000']} threads. Batch 1: the median time of one query searched "
        f"alone, {t['batch_1']} thread, over {results['batch1_queries_timed']} queries. Batch "
        f"1,000: all queries in one call, {t['build_and_batch_1000']} threads. Times are faiss's "
        "own search, without `VectorIndex.search`'s input checks (tens of microseconds).", "",
        "| index | search setting | build | size | bytes / vector | Recall@10 | batch 1: latency "
        "| batch 1,000: queries / s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["rows"]:
        lines.append(f"| {r['index']} | {r['setting']} | {r['build_s']:.1f} s | {size(r['bytes'])} "
                     f"| {r['bytes_per_vector']:.1f} | {r['recall_at_10']:.3f} | "
                     f"{latency(r['batch1_median_ms'])} | {r['batch1000_qps']:,.0f} |")
    short = [r for r in results["rows"] if r["queries_short_of_k"]]
    if short:
        lines += ["", "Short lists: " + "; ".join(
            f"{r['index']}, {r['setting']}: {r['queries_short_of_k']} of {d['n_queries']:,} "
            f"queries got fewer than {d['k']} answers" for r in short) + ". The cells they "
            "visited hold too few vectors; the missing answers count as misses (faiss returns id "
            "−1; `VectorIndex.search` raises an error and asks for a larger nprobe)."]
    over = x["measured_overhead_bytes_per_vector"]
    lines += [
        "", "### A calculation, not a measurement: the RAG paper's Wikipedia", "",
        f"{x['n'] / 1e6:.0f} million passages of {x['dim']} dimensions. Raw vectors and codes grow "
        "with the dimension; what an index adds per vector does not (HNSW's graph links, IVF's "
        f"64-bit ids), so it is taken as measured above at {d['dim']} dimensions: HNSW "
        f"{over['hnsw']:.1f} bytes (the expected links, 4·(2M + M/(M−1)), plus an offset and a "
        f"level give {x['hnsw_overhead_formula_bytes_per_vector']:.1f}), IVF-Flat "
        f"{over['ivf']:.1f}, IVF-PQ {over['ivfpq']:.1f}. Trained tables are recomputed for "
        f"{x['dim']} dimensions, with nlist = {x['nlist']:,} (about 4·√N) and {x['code_bytes']}-byte "
        "PQ codes (64 sub-vectors of 12 dimensions, 8 bits each).", "",
        "| index | per vector | bytes / vector | fixed | total |", "| --- | --- | ---: | ---: | ---: |"]
    for e in x["indexes"]:
        lines.append(f"| {e['index']} | {e['how']} | {e['bytes_per_vector']:,.1f} | "
                     f"{size(e['fixed_bytes']) if e['fixed_bytes'] else '—'} | {e['gb']:.1f} GB |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the set")
    parser.add_argument("--threads", type=int, default=2, help="faiss threads for building and "
                        "for the batch of 1,000 (one query alone always runs on one)")
    parser.add_argument("--latency-queries", type=int, default=200,
                        help="queries timed one at a time, per setting")
    parser.add_argument("--nlist", type=int, default=None,
                        help="IVF cells (default about 4·sqrt(n), a power of two)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the results")
    parser.add_argument("--report", action="store_true",
                        help="rewrite the section and the calculation from index_scaling.json; "
                        "measure nothing")
    args = parser.parse_args(argv)
    if args.report:  # the calculation is redone from the stored measurements
        results = json.loads(RESULTS_JSON.read_text())
        results["extrapolation"] = extrapolate(results["rows"], results["data"]["n"])
        RESULTS_JSON.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        write_section(RESULTS_MD, report(results), BEGIN, END)
        print(f"-> {RESULTS_JSON}, {RESULTS_MD}")
        return
    results = measure(args.n, args.threads, args.latency_queries, args.nlist)
    print(f"total {results['total_seconds'] / 60:.1f} min, peak memory "
          f"{results['peak_memory_gb']:.2f} GB")
    if args.no_write:
        print(report(results))
        return
    RESULTS_JSON.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_section(RESULTS_MD, report(results), BEGIN, END)
    print(f"-> {RESULTS_JSON}, {RESULTS_MD}")


if __name__ == "__main__":
    main()
