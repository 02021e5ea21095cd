"""Chapter 02's measurements: what each part of the dense retriever's recipe is worth, and exact
vs approximate nearest-neighbour search.

    python benchmarks/dense_retrieval.py                   # everything (about two hours)
    python benchmarks/dense_retrieval.py --only recipe     # the training ablations alone
    python benchmarks/dense_retrieval.py --only index      # the faiss sweep alone (a minute)
    python benchmarks/dense_retrieval.py --only notebook   # the chapter's run time and memory

**Recipe.** The checkpoint's recipe (``scripts/train_retriever.py``: tied encoders, first-token
pooling, one BM25 hard negative per question) against one change at a time — no hard negative;
separate question and passage encoders (DPR's default); mean pooling; no counterfactual examples,
so that the names of dev and test entities are never trained — each trained by that script with
the same seed and number of steps, on one thread. The checkpoint's own record
(``checkpoints/retriever/training.json``) stands for the recipe, so run the script first.

**Index.** Exact search (``IndexFlatIP``) against IVF over ``nprobe``, HNSW over ``ef_search`` and PQ
over the number of sub-vectors, on 100,000 synthetic 64-dimensional vectors (the knowledge base's
1,811 passages are searched exactly in a millisecond, too few for approximate search to matter):
recall@10 against exact search, queries per second (1,000 queries in one batch, the best of two
searches, faiss's default threads) and the memory of each index.

**Notebook.** Chapter 02's run time and peak memory, with two threads and with one, measured as
``benchmarks/notebooks.py`` measures every chapter.

Writes ``benchmarks/dense_results.json`` (every record, loss curves included, which chapter 02
plots) and the dense section of ``benchmarks/RESULTS.md``.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from notebooks import duration, run_once  # the notebook benchmark, beside this script
from ragtutor.index import VectorIndex, ann_recall
from ragtutor.tools.records import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "retriever"
NOTEBOOK = ROOT / "notebooks" / "02_dense_retrieval.ipynb"
RESULTS_JSON = ROOT / "benchmarks" / "dense_results.json"
BEGIN, END = "<!-- dense:begin -->", "<!-- dense:end -->"


# name -> (the options of scripts/train_retriever.py that make the variant, the configuration
# they change: {section: {key: value}}, "" the top level); None: the checkpoint itself
VARIANTS = {
    "recipe: tied, first token, 1 hard negative": None,
    "no hard negative": (["--hard-negatives", "0"], {"training": {"hard_negatives": 0}}),
    "separate encoders": (["--separate"], {"model": {"tied": False}}),
    "mean pooling": (["--pooling", "mean"], {"model": {"pooling": "mean"}}),
    "no counterfactual examples": (["--counterfactual", "0"], {"": {"counterfactual_examples": 0}}),
}


def variant_config(recipe_config, changes):
    """The configuration a variant trains with: the recipe's, with ``changes`` applied."""
    config = json.loads(json.dumps(recipe_config))
    for section, values in changes.items():
        (config[section] if section else config).update(values)
    return config


# The synthetic vectors and the knobs swept (the same as in chapter 02).
N_VECTORS, DIM, N_CENTRES, NOISE, N_QUERIES, K = 100_000, 64, 1_000, 1.2, 1_000, 10
SWEEP = [("flat", {}, {})] + \
    [("ivf", {"nlist": 1024}, {"nprobe": n}) for n in (1, 2, 4, 8, 16, 32, 64, 128)] + \
    [("hnsw", {"hnsw_m": 16}, {"ef_search": e}) for e in (8, 16, 32, 64, 128, 256)] + \
    [("pq", {"pq_m": m}, {}) for m in (8, 16, 32)]


def synthetic_vectors(seed=0):
    """Vectors and queries drawn around shared random centres, as embeddings cluster by topic."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CENTRES, DIM))
    points = centres[rng.integers(0, N_CENTRES, N_VECTORS + N_QUERIES)]
    points = points + NOISE * rng.normal(size=points.shape)
    return points[:N_VECTORS].astype(np.float32), points[N_VECTORS:].astype(np.float32)


def measure(index, queries, exact_ids, repeat=2):
    """(recall@K against exact search, queries per second: the best of ``repeat`` searches)."""
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        recall = ann_recall(index, queries, exact_ids)
        seconds.append(time.perf_counter() - start)
    return recall, len(queries) / min(seconds)


def index_sweep():
    vectors, queries = synthetic_vectors()
    exact_ids = VectorIndex("flat").fit(vectors).search(queries, K)[1]
    rows, built = [], {}
    for kind, build, knobs in SWEEP:
        key = (kind, tuple(sorted(build.items())))
        if key not in built:
            start = time.perf_counter()
            built[key] = (VectorIndex(kind, **build).fit(vectors), time.perf_counter() - start)
        index, build_seconds = built[key]
        for name, value in knobs.items():
            setattr(index, name, value)
        recall, speed = measure(index, queries, exact_ids)
        rows.append({"kind": kind, **build, **knobs, "recall@10": round(recall, 4),
                     "queries_per_second": round(speed),
                     "memory_mb": round(index.memory_bytes() / 2**20, 2),
                     "build_seconds": round(build_seconds, 2)})
        print(rows[-1], flush=True)
    return {"vectors": N_VECTORS, "dim": DIM, "centres": N_CENTRES, "noise": NOISE,
            "queries": N_QUERIES, "k": K, "rows": rows}


def recipe_ablations(previous, save):
    """Train every variant and return the records. A variant already in ``previous`` (the last
    results) trained with the same configuration is kept rather than retrained, and ``save(records)`` runs after
    each variant, so a long run that is stopped resumes where it stopped."""
    recipe = json.loads((CHECKPOINT / "training.json").read_text())
    records = {}
    for name, variant in VARIANTS.items():
        if variant is None:
            records[name] = recipe
            continue
        options, changes = variant
        done = previous.get(name)
        # Kept only when trained with exactly the recipe's configuration but for the variant's
        # change (a retrained checkpoint with a new recipe retrains every variant).
        if done and done["config"] == variant_config(recipe["config"], changes):
            records[name] = done
            continue
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, str(ROOT / "scripts" / "train_retriever.py"), "--out", folder,
                       "--threads", str(recipe["threads"]), *options]
            print(" ".join(command[1:]), flush=True)
            subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            records[name] = json.loads((Path(folder) / "training.json").read_text())
        save(records)
    return records


def notebook_timing():
    """Chapter 02 top to bottom in a fresh kernel, as benchmarks/notebooks.py runs it: with 2
    threads and with 1, (seconds, peak bytes) each."""
    return {threads: run_once(NOTEBOOK, threads, timeout=600) for threads in (2, 1)}


def recipe_table(records):
    lines = ["| variant | dev R@1 | dev R@1, mismatch | dev R@20 | dev MRR | test R@1 | test R@1, "
             "mismatch | dev R@1, new phrasings | dev R@1, typed | loss at the end | training time |",
             "|" + " --- |" * 11]
    for name, r in records.items():
        m = r["metrics"]
        dev, test = m["dev"], m["test"]
        other = [f"{m[key]['all']['recall@1']:.4f}" if key in m else "—" for key in ("dev_new", "dev_typed")]
        lines.append(f"| {name} | {dev['all']['recall@1']:.4f} | {dev['mismatch']['recall@1']:.4f} | "
                     f"{dev['all']['recall@20']:.4f} | {dev['all']['mrr']:.4f} | "
                     f"{test['all']['recall@1']:.4f} | {test['mismatch']['recall@1']:.4f} | "
                     f"{' | '.join(other)} | "
                     f"{r['history']['loss'][-1]:.3f} | {r['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def quality_table(recipe):
    lines = ["| split | subset | questions | retriever | R@1 | R@5 | R@20 | MRR |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for split in ("dev", "test", "dev_new", "test_new", "dev_typed"):
        for subset in ("all", "mismatch"):
            for name, rows in (("BM25", recipe["bm25"]), ("dense", recipe["metrics"]),
                               ("hybrid (RRF, k = 60, top 20 of each)", recipe["hybrid"])):
                if subset not in rows.get(split, {}):
                    continue
                row = rows[split][subset]
                lines.append(f"| {split} | {subset} | {row['n']} | {name} | {row['recall@1']:.4f} | "
                             f"{row['recall@5']:.4f} | {row['recall@20']:.4f} | {row['mrr']:.4f} |")
    return "\n".join(lines)


def index_table(sweep):
    lines = ["| index | knob | recall@10 vs exact | queries/s | memory | build |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in sweep["rows"]:
        knob = {"flat": "—", "ivf": f"nlist {row.get('nlist')}, nprobe {row.get('nprobe')}",
                "hnsw": f"M {row.get('hnsw_m')}, efSearch {row.get('ef_search')}",
                "pq": f"{row.get('pq_m')} sub-vectors x 8 bits"}[row["kind"]]
        lines.append(f"| {row['kind']} | {knob} | {row['recall@10']:.3f} | "
                     f"{row['queries_per_second']:,} | {row['memory_mb']:.1f} MB | "
                     f"{row['build_seconds']:.1f} s |")
    return "\n".join(lines)


def write_results(results):
    recipe = json.loads((CHECKPOINT / "training.json").read_text())
    parts = ["## Dense retrieval (chapter 02)", "",
             f"Measured on {results['date']} with `python benchmarks/dense_retrieval.py` on "
             f"{results['machine']}.", ""]
    parts += ["### The checkpoint against BM25", "",
              f"`{recipe['command']}` ({recipe['threads']} thread, "
              f"{recipe['config']['training']['steps']} steps, {recipe['train_seconds'] / 60:.1f} min "
              f"of training, {recipe['seconds'] / 60:.1f} min in all), read from "
              "`checkpoints/retriever/training.json`. BM25: chapter 01's (title + text, k1 = 1.2, "
              "b = 0.75). Metrics as recorded (four decimals); chapter 02 recomputes them and "
              "adds bootstrap intervals.", "", quality_table(recipe), ""]
    if "recipe" in results:
        steps = {r["config"]["training"]["steps"] for r in results["recipe"].values()}
        parts += ["### What each part of the recipe is worth", "",
                  f"Each row changes one thing in the recipe; same seed, data and number of steps "
                  f"({', '.join(map(str, sorted(steps)))}), one thread. R@1 is Recall@1 over the "
                  "1,811 passages; the loss is the mean over the last 50 steps (chance: ln of the "
                  "number of passages in a batch — 128 with a hard negative, 64 without).", "",
                  recipe_table(results["recipe"]), ""]
    if "notebook" in results:
        timing = results["notebook"]
        parts += ["### The notebook", "",
                  "`notebooks/02_dense_retrieval.ipynb` top to bottom in a fresh kernel (as "
                  "`benchmarks/notebooks.py` runs it; budget 3 min, 1.5 GB): " + "; ".join(
                      f"{t} thread{'s' * (t != '1')}: {duration(v['seconds'])}, "
                      f"peak {v['peak_bytes'] / 1e9:.2f} GB" for t, v in timing.items()) + ".", ""]
    if "index" in results:
        sweep = results["index"]
        parts += ["### Exact vs approximate search", "",
                  f"{sweep['vectors']:,} synthetic vectors of dimension {sweep['dim']} around "
                  f"{sweep['centres']:,} random centres (noise {sweep['noise']}), "
                  f"{sweep['queries']:,} queries in one batch, k = {sweep['k']}; the best of 2 "
                  "timings.", "", index_table(sweep), ""]
    write_section(ROOT / "benchmarks" / "RESULTS.md", "\n".join(parts), BEGIN, END)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("recipe", "index", "notebook"), help="run one part "
                        "only; the other parts' last results are kept")
    args = parser.parse_args(argv)
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    if args.only in (None, "recipe"):
        results["recipe"] = recipe_ablations(
            results.get("recipe", {}),
            lambda records: RESULTS_JSON.write_text(json.dumps({**results, "recipe": records}, indent=1) + "\n"))
    if args.only in (None, "index"):
        results["index"] = index_sweep()
    if args.only in (None, "notebook"):
        results["notebook"] = {str(t): {"seconds": round(seconds, 1), "peak_bytes": peak}
                               for t, (seconds, peak) in notebook_timing().items()}
    results["date"] = time.strftime("%Y-%m-%d")
    results["machine"] = machine()
    RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
    write_results(results)


if __name__ == "__main__":
    main()
