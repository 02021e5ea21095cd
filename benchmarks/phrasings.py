"""Questions as people ask them: the shipped models on seen phrasings, held-out phrasings and typed
questions.

    python benchmarks/phrasings.py

For the dev and test splits, each in its seen phrasings (the knowledge base's own templates, which
the training split shares), its new phrasings (worded as no training question is, typed in lower
case or without a question mark; ``load_questions(split, phrasing="new")``) and, for dev, the
hand-typed questions (``phrasing="typed"``): gold-passage Recall@1 and Recall@5 of BM25 and of
chapter 02's dense retriever over all passages, and exact match and Recall@1 of chapter 05's two
RAG models (``checkpoints/rag_token``, ``checkpoints/rag_sequence``), each with its 95% bootstrap
interval. Writes ``benchmarks/phrasings.json`` and the phrasings section of
``benchmarks/RESULTS.md``.
"""
import json
from pathlib import Path

import numpy as np
import torch

from ragtutor import RAGModel, data, set_seed
from ragtutor.dense import BiEncoder, DenseRetriever
from ragtutor.metrics import bootstrap_interval, exact_match
from ragtutor.sparse import BM25Retriever
from ragtutor.tools.records import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "benchmarks" / "phrasings.json"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- phrasings:begin -->", "<!-- phrasings:end -->"
SETS = [("test", "seen"), ("test", "new"), ("dev", "seen"), ("dev", "new"), ("dev", "typed")]


def summary(hits):
    low, high = bootstrap_interval(hits)
    return {"mean": float(np.mean(hits)), "low": low, "high": high, "n": len(hits)}


def retriever_hits(retriever, questions):
    _, ids = retriever.search([q["question"] for q in questions], k=5)
    gold = [q["passage_id"] for q in questions]
    return ([float(row[0] == g) for row, g in zip(ids, gold)],
            [float(g in list(row)) for row, g in zip(ids, gold)])


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "checkpoints",
                        help="folder of retriever/, rag_token/ and rag_sequence/ (default checkpoints/)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    set_seed(0)
    passages = data.load_passages()
    sets = {f"{split}/{phrasing}": data.load_questions(split, phrasing=phrasing)
            for split, phrasing in SETS}
    retrievers = {"BM25": BM25Retriever().fit(passages),
                  "dense": DenseRetriever(BiEncoder.from_pretrained(args.folder / "retriever"))
                  .fit(passages)}
    results = {"machine": machine(), "retrievers": {}, "rag": {}, "by_form": {}, "examples": {}}
    for name, retriever in retrievers.items():
        for key, questions in sets.items():
            at1, at5 = retriever_hits(retriever, questions)
            results["retrievers"][f"{name} {key}"] = {"recall@1": summary(at1), "recall@5": summary(at5)}
    for variant in ("token", "sequence"):
        if not (args.folder / f"rag_{variant}").is_dir():
            continue
        model = RAGModel.from_pretrained(args.folder / f"rag_{variant}")
        for key, questions in sets.items():
            out = model.evaluate(questions)
            em = [float(exact_match(p, q["answers"])) for p, q in zip(out["predictions"], questions)]
            _, ids = model.retrieve([q["question"] for q in questions])
            at1 = [float(row[0] == q["passage_id"]) for row, q in zip(ids, questions)]
            results["rag"][f"RAG-{variant} {key}"] = {"em": summary(em), "recall@1": summary(at1)}
            if key.endswith("/new"):
                for form in sorted({q["form"] for q in questions}):
                    hits = [h for h, q in zip(em, questions) if q["form"] == form]
                    results["by_form"][f"RAG-{variant} {key} {form}"] = summary(hits)
            wrong = [(q["question"], p, q["answers"][0]) for p, q, h in
                     zip(out["predictions"], questions, em) if not h]
            results["examples"][f"RAG-{variant} {key}"] = wrong[:8]
        print(variant, "done", flush=True)
    if args.no_write:
        print(report(results))
        return
    RESULTS_JSON.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_section(RESULTS_MD, report(results), BEGIN, END)


def cell(s):
    return f"{s['mean']:.3f} ({s['low']:.3f}–{s['high']:.3f})"


def report(results):
    lines = ["## Questions as people ask them: seen and new phrasings", "",
             "`python benchmarks/phrasings.py` on " + results["machine"] + ". Seen: the knowledge "
             "base's own questions, in the templates the training split shares. New: one question "
             "per fact in a phrasing no training question uses, typed as people type "
             "(`load_questions(split, phrasing=\"new\")`). Typed: 123 dev questions written by hand "
             "(`phrasing=\"typed\"`). Figures are means with their 95% bootstrap interval.", "",
             "| retriever | questions | n | Recall@1 | Recall@5 |", "| --- | --- | ---: | --- | --- |"]
    for key, r in results["retrievers"].items():
        name, questions = key.split(" ", 1)
        lines.append(f"| {name} | {questions} | {r['recall@1']['n']} | {cell(r['recall@1'])} | "
                     f"{cell(r['recall@5'])} |")
    lines += ["", "| model | questions | n | exact match | Recall@1 |", "| --- | --- | ---: | --- | --- |"]
    for key, r in results["rag"].items():
        name, questions = key.split(" ", 1)
        lines.append(f"| {name} | {questions} | {r['em']['n']} | {cell(r['em'])} | "
                     f"{cell(r['recall@1'])} |")
    lines += ["", "Exact match on the new phrasings by how they were typed:", "",
              "| model | questions | surface form | n | exact match |", "| --- | --- | --- | ---: | --- |"]
    for key, r in results["by_form"].items():
        name, questions, form = key.split(" ", 2)
        lines.append(f"| {name} | {questions} | {form} | {r['n']} | {cell(r)} |")
    lines += ["", "Wrong answers of RAG-token on the test split's new phrasings (question → answer, "
              "expected):", ""]
    lines += [f"- `{q}` → \"{p}\" (expected \"{a}\")" for q, p, a in
              results["examples"].get("RAG-token test/new", [])[:6]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
