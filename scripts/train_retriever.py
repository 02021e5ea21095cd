"""Train chapter 02's dense retriever: a DPR bi-encoder with in-batch negatives.

    python scripts/train_retriever.py                           # into checkpoints/retriever/
    python scripts/train_retriever.py --out /tmp/r --steps 500  # a shorter run elsewhere
    python scripts/train_retriever.py --hard-negatives 0        # an ablation (see --help)

The question and passage encoders share their weights while training (separate encoders learn
nothing in minutes from scratch: benchmarks/RESULTS.md, dense section) and are saved as two
``DPRQuestionEncoder`` / ``DPRContextEncoder`` folders with identical weights, with the tokenizer,
by ``BiEncoder.save_pretrained``. Training material: the train split's questions with their gold
passages, plus counterfactual examples (``ragtutor.counterfactual``) whose passages state false facts about
every entity of the knowledge base, so that the names of dev and test entities are trained too;
no dev or test question and no dev or test passage is trained on. Each question gets one BM25
hard negative (``--hard-negatives 0`` turns them off).

The folder also receives ``training.json``: the command, seed, thread count, library versions,
the configuration, the loss curve, the time taken and the metrics reached — Recall@1/5/20 and MRR
on dev and on test, over all questions and over the vocabulary-mismatch ones, with BM25's on the
same questions for comparison. With the same torch build and thread count a rerun gives the same
weights and metrics.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from ragtutor import set_seed
from ragtutor.tools.records import versions
from ragtutor.data import load_entities, load_passages, load_questions
from ragtutor.dense import (BiEncoder, DenseRetriever, HybridRetriever, biencoder_batches,
                            bm25_hard_negatives, build_tokenizer, evaluate_retriever,
                            train_biencoder, training_examples)
from ragtutor.counterfactual import counterfactual_examples
from ragtutor.sparse import BM25Retriever
from ragtutor.templates import training_phrasings

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 0,
    "counterfactual_examples": 30000,
    # Subwords, uncased (as DPR's BERT): a name never seen is spelt from pieces, not <unk>, and
    # "germany" reads as "Germany" does.
    "tokenizer": {"kind": "bpe", "vocab_size": 4000, "lowercase": True},
    # Questions asked as people type (ragtutor.templates.PHRASINGS' train pool, random surface
    # forms): the share of counterfactual questions, and extra questions per train question.
    "typed": {"counterfactual": 0.5, "per_train_question": 2},
    "model": {"hidden_size": 64, "layers": 2, "heads": 4, "intermediate_size": 128,
              "max_positions": 128, "tied": True, "pooling": "first"},
    "training": {"batch_size": 64, "hard_negatives": 1, "lr": 1e-3, "warmup": 200, "steps": 3000,
                 "eval_every": 250},
}


def build_data(config, seed):
    """The tokenizer, the training examples (with their hard negatives) and the splits."""
    entities, passages = load_entities(), load_passages()
    splits = {split: load_questions(split) for split in ("train", "dev", "test")}
    typed = config["typed"]
    counterfactual = counterfactual_examples(entities, config["counterfactual_examples"], seed=seed,
                                             typed=typed["counterfactual"])
    train_questions = splits["train"] + training_phrasings(
        splits["train"], entities, typed["per_train_question"], seed)
    tokenizer = build_tokenizer(passages, [q for s in splits.values() for q in s] + train_questions,
                                counterfactual, **config["tokenizer"])
    train_entities = {e["id"] for e in entities if e["split"] == "train"}
    # Real passages enter training only as the train questions' gold passages (and as hard
    # negatives of other questions): no dev or test question or passage is trained on.
    train_passages = [p for p in passages if p["entity_id"] in train_entities]
    examples = training_examples(train_passages, train_questions, counterfactual)
    negatives = bm25_hard_negatives(examples) if config["training"]["hard_negatives"] else None
    return tokenizer, examples, negatives, passages, splits


def dev_recall(model, passages, dev, dev_new):
    """Dev Recall@1 over all passages: overall, on the mismatched questions, on new phrasings."""
    retriever = DenseRetriever(model).fit(passages)
    report = evaluate_retriever(retriever, dev)
    new = evaluate_retriever(retriever, dev_new)
    return {"dev_recall@1": round(report["all"]["recall@1"], 4),
            "dev_mismatch_recall@1": round(report["mismatch"]["recall@1"], 4),
            "dev_new_recall@1": round(new["all"]["recall@1"], 4)}


def rounded(metrics):
    """Keep the table's metrics, to four decimals."""
    keys = ("recall@1", "recall@5", "recall@20", "mrr", "n")
    return {split: {subset: {k: round(v, 4) for k, v in row.items() if k in keys}
                    for subset, row in subsets.items()} for split, subsets in metrics.items()}


def train(config, progress=False, stop_after=None):
    """Build the data and the model, train, evaluate: (model, record). ``stop_after`` ends
    training after that many of the configured steps (the schedule does not depend on the total,
    so this is the start of the full run)."""
    seed = set_seed(config["seed"])
    tokenizer, examples, negatives, passages, splits = build_data(config, seed)
    model = BiEncoder.build(tokenizer, **config["model"])
    t = config["training"]
    batches = biencoder_batches(examples, t["batch_size"], seed=seed, hard_negatives=negatives)
    steps = t["steps"] if stop_after is None else min(t["steps"], stop_after)
    history = train_biencoder(model, batches, lr=t["lr"], warmup=t["warmup"], max_steps=steps,
                              evaluate=lambda m: dev_recall(m, passages, splits["dev"],
                                                            load_questions("dev", phrasing="new")),
                              eval_every=t["eval_every"], progress=progress)
    dense = DenseRetriever(model).fit(passages)
    bm25 = BM25Retriever().fit(passages)
    ids = [p["id"] for p in passages]
    sets = {**{split: splits[split] for split in ("dev", "test")},
            "dev_new": load_questions("dev", phrasing="new"),
            "test_new": load_questions("test", phrasing="new"),
            "dev_typed": load_questions("dev", phrasing="typed")}
    metrics, baseline, hybrid = (
        rounded({name: evaluate_retriever(retriever, questions, ids)
                 for name, questions in sets.items()})
        for retriever in (dense, bm25, HybridRetriever(bm25, dense)))
    record = {"seed": seed, "config": config, "vocab_size": len(tokenizer),
              "training_examples": len(examples),
              "parameters": sum(p.numel() for p in model.parameters()),
              "train_seconds": round(history["seconds"][-1], 1),
              "metrics": metrics, "bm25": baseline, "hybrid": hybrid,
              "history": {"step": history["step"], "loss": [round(x, 4) for x in history["loss"]],
                          "eval": history["eval"]}}
    return model, record


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints" / "retriever",
                        help="folder for the checkpoint (default: checkpoints/retriever/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; the recorded metrics were reached with 1")
    parser.add_argument("--seed", type=int, help=f"default {CONFIG['seed']}")
    parser.add_argument("--steps", type=int, help=f"default {CONFIG['training']['steps']}")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of the configured run (its start, to compare with "
                             "a recorded run's history; tests/test_dense.py does)")
    parser.add_argument("--hard-negatives", type=int, choices=(0, 1),
                        help="BM25 hard negatives per question (default 1)")
    parser.add_argument("--counterfactual", type=int,
                        help=f"counterfactual examples (default {CONFIG['counterfactual_examples']}; "
                             "0 trains on the train split's questions alone, an ablation)")
    parser.add_argument("--separate", action="store_true",
                        help="train separate question and passage encoders (an ablation)")
    parser.add_argument("--pooling", choices=("first", "mean"),
                        help="first-token (default, as DPR) or mean pooling (an ablation)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = copy.deepcopy(CONFIG)
    for value, section, key in ((args.seed, None, "seed"), (args.steps, "training", "steps"),
                                (args.hard_negatives, "training", "hard_negatives"),
                                (args.pooling, "model", "pooling"),
                                (args.counterfactual, None, "counterfactual_examples")):
        if value is not None:
            (config[section] if section else config)[key] = value
    if args.separate:
        config["model"]["tied"] = False
    start = time.perf_counter()
    model, record = train(config, progress=True, stop_after=args.stop_after)
    seconds = time.perf_counter() - start
    model.save_pretrained(args.out)
    record = {"command": " ".join(["python scripts/train_retriever.py", *argv]),
              "threads": args.threads, "stop_after": args.stop_after,
              "versions": versions("torch", "transformers", "tokenizers"),
              "seconds": round(seconds, 1), **record}
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    for split in ("dev", "test", "dev_new", "test_new", "dev_typed"):
        for subset in record["metrics"][split]:
            print(f"{split} {subset}:", ", ".join(
                f"{name} R@1 {record[name][split][subset]['recall@1']:.3f}"
                for name in ("metrics", "bm25", "hybrid")).replace("metrics", "dense"))
    print(f"{record['train_seconds']} s of training, {seconds:.0f} s in all -> {args.out}")


if __name__ == "__main__":
    main()
