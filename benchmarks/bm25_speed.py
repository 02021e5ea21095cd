"""BM25 speed: ragtutor's BM25Retriever against rank_bm25 and bm25s on a synthetic Zipf corpus.

    python benchmarks/bm25_speed.py            # 100,000 documents; about a minute

Measures, in one run and on one thread, the time to index the corpus and the query throughput
(queries per second, top 10) of each library, then writes the table between the markers
``<!-- bm25:begin -->`` and ``<!-- bm25:end -->`` of benchmarks/RESULTS.md, leaving the rest of the
file as it is. rank_bm25 scores a query with a Python loop over every document, so it is timed once
on a sample of the queries (``--rank-bm25-queries``); the others answer all of them, ``--repeat``
times, alternately, and the median run counts. bm25s runs its NumPy backend (no numba), like ragtutor. The
script also checks that the three give the same answers: ragtutor's "okapi" scores equal
rank_bm25's, and its "lucene" top-10 scores equal bm25s's once divided by (k1 + 1).

The corpus: document lengths uniform in [20, 80] tokens, each token drawn from a Zipf law over a
vocabulary of 50,000 words (p(rank r) ∝ 1/r^1.1), roughly the shape of English text. Queries are 2
to 6 tokens from the same law, without replacement, so they share the corpus's common words.
"""
import os

# One thread everywhere, set before NumPy loads its BLAS: Binder's single CPU, and a fair race.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"
os.environ["DISABLE_TQDM"] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

import bm25s  # noqa: E402
import numpy as np  # noqa: E402
import rank_bm25  # noqa: E402

from ragtutor.sparse import BM25Retriever  # noqa: E402
from ragtutor.tools.records import cpu_name, write_section  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
BEGIN, END = "<!-- bm25:begin -->", "<!-- bm25:end -->"
K = 10
K1, B = 1.5, 0.75  # rank_bm25's and bm25s's defaults


def zipf_corpus(n_docs, n_queries, vocab_size=50_000, exponent=1.1, seed=0):
    """Token lists of ``n_docs`` documents and ``n_queries`` queries (see the module docstring)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(vocab_size)], dtype=object)
    p = 1.0 / np.arange(1, vocab_size + 1) ** exponent
    p /= p.sum()
    lengths = rng.integers(20, 81, size=n_docs)
    tokens = words[rng.choice(vocab_size, size=lengths.sum(), p=p)]
    docs = [chunk.tolist() for chunk in np.split(tokens, np.cumsum(lengths)[:-1])]
    queries = [words[rng.choice(vocab_size, size=rng.integers(2, 7), p=p, replace=False)].tolist()
               for _ in range(n_queries)]
    return docs, queries


def timed(fn, repeat=1):
    """``fn()``'s result and its fastest time over ``repeat`` runs: on a shared machine the minimum
    is the least disturbed by other processes (the advice of Python's timeit)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, min(times)


def rank_bm25_top_k(index, queries):
    top = []
    for query in queries:
        scores = index.get_scores(query)
        top.append(np.argsort(-scores, kind="stable")[:K])
    return top


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000, help="corpus size (default 100,000)")
    parser.add_argument("--queries", type=int, default=1_000, help="queries for ragtutor and bm25s")
    parser.add_argument("--rank-bm25-queries", type=int, default=50,
                        help="the sample of queries rank_bm25 is timed on (it is slow)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="alternating query runs of ragtutor and bm25s; the median counts "
                             "(default 3)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()

    docs, queries = zipf_corpus(args.docs, args.queries)
    known = {t for d in docs for t in d}
    queries = [[t for t in q if t in known] or q[:1] for q in queries]  # bm25s rejects unseen words
    sample = queries[:args.rank_bm25_queries]
    n_tokens = sum(map(len, docs))
    print(f"corpus: {len(docs):,} documents, {n_tokens:,} tokens, {len(known):,} distinct words; "
          f"{len(queries):,} queries")

    ours, ours_index_s = timed(lambda: BM25Retriever(k1=K1, b=B).fit(docs))

    def bm25s_index():
        index = bm25s.BM25(k1=K1, b=B, method="lucene", backend="numpy")
        index.index(docs, show_progress=False)
        return index

    theirs, bm25s_index_s = timed(bm25s_index)
    # The two query runs alternate, so that a slow spell of the machine hits both alike; the
    # median of each counts.
    ours_times, bm25s_times = [], []
    for _ in range(args.repeat):
        (ours_scores, ours_ids), seconds = timed(lambda: ours.search(queries, K))
        ours_times.append(seconds)
        result, seconds = timed(lambda: theirs.retrieve(
            queries, k=K, n_threads=0, backend_selection="numpy", show_progress=False))
        bm25s_times.append(seconds)
    ours_query_s, bm25s_query_s = statistics.median(ours_times), statistics.median(bm25s_times)
    print("ragtutor / bm25s queries per second, run by run: "
          + ", ".join(f"{len(queries) / a:,.0f} / {len(queries) / b:,.0f}"
                      for a, b in zip(ours_times, bm25s_times)))

    okapi, rank_index_s = timed(lambda: rank_bm25.BM25Okapi(docs, k1=K1, b=B))
    rank_top, rank_query_s = timed(lambda: rank_bm25_top_k(okapi, sample))

    # The race only counts if everyone gives the same answer (bm25s in float32, up to ties).
    np.testing.assert_allclose(ours_scores / (K1 + 1), result.scores, rtol=1e-5)
    agree = np.mean([set(a) == set(b) for a, b in zip(ours_ids, result.documents)])
    ours_okapi = BM25Retriever(k1=K1, b=B, method="okapi").fit(docs)
    for query, top in zip(sample, rank_top):
        np.testing.assert_allclose(ours_okapi.score(query), okapi.get_scores(query), rtol=1e-9)
    print(f"checked: okapi scores equal rank_bm25's on {len(sample)} queries; lucene top-{K} "
          f"scores equal bm25s's on all, same documents on {agree:.1%} (the rest differ by ties)")

    rows = [
        ("ragtutor BM25Retriever", version("ragtutor"), ours_index_s, len(queries), ours_query_s),
        ("bm25s (NumPy backend)", version("bm25s"), bm25s_index_s, len(queries), bm25s_query_s),
        ("rank_bm25 BM25Okapi", version("rank-bm25"), rank_index_s, len(sample), rank_query_s),
    ]
    ours_qps = len(queries) / ours_query_s
    lines = [
        f"Synthetic Zipf corpus of {len(docs):,} documents ({n_tokens:,} tokens, {len(known):,} "
        f"distinct words), top {K}, one thread; Python {platform.python_version()}, NumPy "
        f"{np.__version__}, SciPy {version('scipy')}, {cpu_name()}. "
        f"Regenerate with `python benchmarks/bm25_speed.py`.",
        "",
        "| library | version | index time (s) | queries timed | queries / s "
        "| ragtutor's speed-up |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, ver, index_s, n, query_s in rows:
        qps = n / query_s
        lines.append(f"| {name} | {ver} | {index_s:.1f} | {n:,} | {qps:,.1f} "
                     f"| {ours_qps / qps:.1f}× |")
    lines += ["", f"rank_bm25 is timed once, on the first {len(sample)} queries only: it loops "
              f"over all {len(docs):,} documents in Python for every query term. ragtutor and "
              f"bm25s answer all {len(queries):,} queries; each is timed {args.repeat} times, "
              "alternately, and the median counts. Targets: at least 100× rank_bm25's throughput and at least "
              "bm25s's."]
    table = "\n".join(lines)
    print(table)

    bm25s_qps, rank_qps = len(queries) / bm25s_query_s, len(sample) / rank_query_s
    print(f"targets: {ours_qps / rank_qps:.0f}× rank_bm25 (≥ 100: "
          f"{'met' if ours_qps >= 100 * rank_qps else 'MISSED'}), {ours_qps / bm25s_qps:.2f}× bm25s "
          f"(≥ 1: {'met' if ours_qps >= bm25s_qps else 'MISSED'})")
    if not args.no_write:
        write_section(RESULTS, f"## BM25 speed\n\n{table}", BEGIN, END)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
