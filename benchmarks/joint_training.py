"""Chapter 05's live joint run across starting points and seeds: how weak may the start be?

    python benchmarks/joint_training.py                  # -> benchmarks/joint_results.json
    python benchmarks/joint_training.py --weak-steps 48 --seeds 0 --out /tmp/j.json

For each number of labelled warm-up steps (``--weak-steps``; 0 is the cold start) and each seed,
the question encoder starts as in ``scripts/train_rag.py`` — chapter 02's frozen passage index,
fresh question-encoder layers, that many labelled steps against the index (each seed its own
start) — and is then trained exactly as in chapter 05's live run: RAG-Token, K = 5, chapter 03's
reader frozen, no retrieval labels, 200 steps of batch 16 at lr 5e-4 (20 warm-up steps, then
constant), one thread, on the train questions and two typed wordings of each. Every 50
steps it is evaluated on every third dev question (exact match, Recall@1, Recall@5). The notebook
takes its asserted margins and its start-strength figure from the JSON this writes.

    python benchmarks/joint_training.py --report

writes the chapter 05 section of benchmarks/RESULTS.md from that JSON and from the checkpoints'
``training.json`` (``scripts/train_rag.py``), after evaluating every model of chapter 05's table on
the test questions (about 2 minutes).
"""
import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from ragtutor import set_seed
from ragtutor.data import load_passages, load_questions
from ragtutor.dense import BiEncoder, cold_question_encoder, train_question_encoder
from ragtutor.generation import combined_input, evaluate_qa, load_checkpoint, reader_sources
from ragtutor.rag_model import VARIANTS, RAGModel, train_rag
from ragtutor.sparse import BM25Retriever
from ragtutor.tools.records import load_script, versions, write_section


ROOT = Path(__file__).resolve().parents[1]
LIVE_RUN = {"variant": "token", "n_docs": 5, "steps": 200, "lr": 5e-4, "warmup": 20,
            "batch_size": 16, "eval_every": 50, "dev": "every third dev question",
            "train": "the train questions and two typed wordings of each (as scripts/train_rag.py)"}
RECIPE_SCRIPT = load_script("train_rag")
RECIPE = RECIPE_SCRIPT.CONFIG  # the checkpoints' weak start and typed wordings


def training_questions():
    """The train questions and, as in ``scripts/train_rag.py``, typed wordings of each."""
    return RECIPE_SCRIPT.typed_training_questions(load_questions("train"))


def make_start(retriever, passages, train, weak_steps, seed):
    """Chapter 02's bi-encoder with fresh question-encoder layers and ``weak_steps`` labelled
    steps against its frozen index (0: the cold start), as in ``scripts/train_rag.py``."""
    set_seed(seed)
    start = cold_question_encoder(retriever, seed=seed)
    if weak_steps:
        train_question_encoder(start, passages, train, weak_steps, seed=seed)
    return start


def live_run(weak_steps, seed, retriever, reader, tokenizer, passages, train, dev):
    """One start and seed: the evaluations of the live run."""
    start = make_start(retriever, passages, train, weak_steps, seed)
    model = RAGModel(start, reader, tokenizer, passages, n_docs=LIVE_RUN["n_docs"],
                     variant=LIVE_RUN["variant"])
    history = train_rag(model, train, max_steps=LIVE_RUN["steps"], lr=LIVE_RUN["lr"],
                        warmup=LIVE_RUN["warmup"], batch_size=LIVE_RUN["batch_size"],
                        dev=dev[::3], eval_every=LIVE_RUN["eval_every"], seed=seed, progress=False)
    return [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            for row in history["eval"]]


def test_table(passages, test, retriever, weak, reader, tokenizer):
    """Chapter 05's table on the test questions: {row: {variant or "": metrics}}."""
    position = {p["id"]: i for i, p in enumerate(passages)}
    questions = [q["question"] for q in test]
    gold = np.array([position[q["passage_id"]] for q in test])
    closed_book, _, _ = load_checkpoint("closed_book")
    rows = {"closed-book": {"": evaluate_qa(closed_book, tokenizer, questions, test)[0]}}
    bm25 = BM25Retriever().fit([p["title"] + " " + p["text"] for p in passages])
    top = np.asarray(bm25.search(questions, k=1)[1])[:, 0]
    sources = [combined_input(passages[i]["title"], passages[i]["text"], q)
               for i, q in zip(top, questions)]
    rows["BM25 -> reader"] = {"": {**evaluate_qa(reader, tokenizer, sources, test)[0],
                                   "recall@1": float((top == gold).mean())}}
    joint = {v: BiEncoder.from_pretrained(ROOT / "checkpoints" / f"rag_{v}" / "retriever")
             for v in VARIANTS}
    for name, retrievers in (("RAG-BM25", dict.fromkeys(VARIANTS, bm25)),
                             ("RAG, frozen dense (chapter 02)", dict.fromkeys(VARIANTS, retriever)),
                             ("RAG, weak start", dict.fromkeys(VARIANTS, weak)),
                             ("RAG, joint (no retrieval labels)", joint)):
        rows[name] = {}
        for variant in VARIANTS:
            result = RAGModel(retrievers[variant], reader, tokenizer, passages, n_docs=5,
                              variant=variant).evaluate(test)
            result.pop("predictions")
            rows[name][variant] = result
    oracle = evaluate_qa(reader, tokenizer, reader_sources(test, passages), test)[0]
    rows["reader with the gold passage"] = {"": {**oracle, "recall@1": 1.0}}
    return rows


def report(path, passages, test, retriever, weak, reader, tokenizer):
    """Write the chapter 05 section of RESULTS.md."""
    measured = json.loads(path.read_text())
    checkpoints = {v: json.loads((ROOT / "checkpoints" / f"rag_{v}" / "training.json").read_text())
                   for v in VARIANTS}
    rows = test_table(passages, test, retriever, weak, reader, tokenizer)
    cell = lambda r, key: f"{r[key]:.3f}" if key in r else "—"  # noqa: E731
    lines = ["## Joint training (chapter 05)", "",
             f"Measured on {datetime.date.today().isoformat()} with `python "
             "benchmarks/joint_training.py` (the live run across starts and seeds) and `python "
             "scripts/train_rag.py` (the checkpoints), one thread, Python "
             f"{platform.python_version()}, torch {torch.__version__}, transformers "
             f"{transformers.__version__}; this section by `python benchmarks/joint_training.py "
             "--report`.", "",
             "### The table: test questions (538, entities never seen in training)", "",
             "K = 5; chapter 03's reader, frozen, reads every passage. The joint rows are the saved "
             "seed of `scripts/train_rag.py`: chapter 02's frozen index, a question encoder with "
             f"fresh layers given {RECIPE['weak_start']['weak_steps']} labelled steps (the weak "
             "start), then joint training with no retrieval labels ("
             + ", ".join(f"{checkpoints[v]['config']['joint']['steps']} steps for RAG-{v}"
                         for v in VARIANTS) + "); the question encoder of `checkpoints/rag_<variant>`"
             " with the reader, frozen.", "",
             "| model | variant | EM | F1 | R@1 | R@5 |", "| --- | --- | --- | --- | --- | --- |"]
    for name, by_variant in rows.items():
        for variant, r in by_variant.items():
            lines.append(f"| {name} | {variant or '—'} | {cell(r, 'em')} | {cell(r, 'f1')} | "
                         f"{cell(r, 'recall@1')} | {cell(r, 'recall@5')} |")
    lines += ["", "### The checkpoints across seeds", "",
              "`python scripts/train_rag.py`: every seed starts from the same weak start and makes "
              "its own joint run; the "
              "weights with the best dev Recall@1 (every third dev question, every 50 steps) are "
              "kept. Test metrics on all 538 questions.", "",
              "| variant | seed | weak start: test EM | R@1 | R@5 | joint: test EM | R@1 | R@5 | "
              "best step | training |", "|" + " --- |" * 10]
    for variant, record in checkpoints.items():
        for run in record["runs"]:
            before, after = run["weak_start"]["test"], run["trained"]["test"]
            lines.append(f"| {variant} | {run['seed']} | {before['em']:.3f} | "
                         f"{before['recall@1']:.3f} | {before['recall@5']:.3f} | {after['em']:.3f} | "
                         f"{after['recall@1']:.3f} | {after['recall@5']:.3f} | {run['best_step']} | "
                         f"{run['train_seconds']:.0f} s |")
    lines += ["", "### How weak may the start be? The live run across starts and seeds", "",
              "Chapter 05's live run (RAG-Token, 200 steps, lr 5e-4, no retrieval labels) from "
              "question encoders given 0 (cold) to "
              f"{max(r['weak_steps'] for r in measured['runs'])} labelled steps, each with its "
              "own seed; dev = every third dev question (174).", "",
              "| labelled steps | seed | dev R@1 at start | R@5 at start | R@1 after 200 steps | "
              "R@5 after | EM at start | EM after |", "|" + " --- |" * 8]
    for run in measured["runs"]:
        first, last = run["eval"][0], run["eval"][-1]
        lines.append(f"| {run['weak_steps']} | {run['seed']} | {first['recall@1']:.3f} | "
                     f"{first['recall@5']:.3f} | {last['recall@1']:.3f} | {last['recall@5']:.3f} | "
                     f"{first['em']:.3f} | {last['em']:.3f} |")
    results = ROOT / "benchmarks" / "RESULTS.md"
    write_section(results, "\n".join(lines), "<!-- joint:begin -->", "<!-- joint:end -->")
    print(f"-> {results}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weak-steps", type=int, nargs="+", default=[0, 40, 48, 56, 64, 72])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "joint_results.json")
    parser.add_argument("--report", action="store_true",
                        help="write RESULTS.md's chapter 05 section from --out and the checkpoints")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    passages = load_passages()
    train, dev = training_questions(), load_questions("dev")
    retriever = BiEncoder.from_pretrained(ROOT / "checkpoints" / "retriever")
    reader, tokenizer, _ = load_checkpoint("reader")
    if args.report:
        w = RECIPE["weak_start"]
        weak = make_start(retriever, passages, train, weak_steps=w["weak_steps"], seed=w["seed"])
        report(args.out, passages, load_questions("test"), retriever, weak, reader, tokenizer)
        return
    runs, began = [], time.perf_counter()
    for weak_steps in args.weak_steps:
        for seed in args.seeds:
            evals = live_run(weak_steps, seed, retriever, reader, tokenizer, passages, train, dev)
            runs.append({"weak_steps": weak_steps, "seed": seed, "eval": evals})
            first, last = evals[0], evals[-1]
            print(f"weak steps {weak_steps:3d} seed {seed}: dev R@1 {first['recall@1']:.3f} -> "
                  f"{last['recall@1']:.3f}, R@5 {first['recall@5']:.3f} -> {last['recall@5']:.3f}, "
                  f"EM {first['em']:.3f} -> {last['em']:.3f}", flush=True)
    record = {"command": "python benchmarks/joint_training.py", "threads": 1,
              "versions": versions("torch", "transformers"),
              "seconds": round(time.perf_counter() - began, 1), "live_run": LIVE_RUN,
              "runs": runs}
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{record['seconds']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
