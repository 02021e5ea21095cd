"""Train a cross-encoder that re-ranks chapter 02's dense retriever's top 20 passages.

    python scripts/train_reranker.py                            # into checkpoints/reranker/
    python scripts/train_reranker.py --out /tmp/r --steps 500   # a shorter run elsewhere
    python scripts/train_reranker.py --first-stage bm25         # re-rank BM25 instead
    python scripts/train_reranker.py --init random              # a BERT from random weights

The cross-encoder (``ragtutor.rerank.CrossEncoder``) reads ``<s> question </s> title text </s>``
and scores the pair with a linear head on the first token's output vector. It starts from chapter
02's bi-encoder (``checkpoints/retriever``: its BERT and its tokenizer, with a fresh head), which
already knows every token of the knowledge base; ``--init random`` starts from random weights of
the same sizes instead.

Training material: the train split's questions and two typed wordings of each
(``ragtutor.templates.training_phrasings``, the training pool of wordings), each with its gold
passage and hard negatives: the first stage's top 20 for the question, the gold passage left
out, over the train entities' passages only, so that no dev or test question or passage is
trained on. The loss is listwise: a softmax over the gold passage and 7 negatives drawn from those
20 (``ragtutor.rerank.train_cross_encoder``). Every ``eval_every`` steps the re-ranker is
evaluated on all dev questions — the knowledge base's wordings, new wordings and typed ones
pooled — and the weights with the best dev Recall@1 are kept.

The folder receives the model (``CrossEncoder.save_pretrained``) and ``training.json``: the
command, seed, thread count, library versions, the configuration, the loss curve and evaluations,
and for each dev set Recall@1/5/20 and MRR of the first stage alone and re-ranked (its top 20,
re-scored), with the time re-ranking adds per question. With the same torch build and thread count
a rerun gives the same weights and metrics.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from ragtutor import set_seed
from ragtutor.data import load_entities, load_passages, load_questions
from ragtutor.dense import BiEncoder, DenseRetriever
from ragtutor.rerank import CrossEncoder, Reranker, train_cross_encoder
from ragtutor.retrieval import evaluate_retriever
from ragtutor.sparse import BM25Retriever
from ragtutor.templates import training_phrasings
from ragtutor.tools.records import versions

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 0,
    # The retriever whose results are re-ranked, and whose top `depth` are the hard negatives.
    "first_stage": "dense",
    # "retriever": start from chapter 02's bi-encoder; "random": a BERT of `model`'s sizes.
    "init": "retriever",
    "model": {"hidden_size": 64, "layers": 2, "heads": 4, "intermediate_size": 128,
              "max_positions": 128},
    # Extra training questions per train question, asked as people type (PHRASINGS' train pool).
    "typed_per_train_question": 2,
    "training": {"batch_size": 16, "n_negatives": 7, "depth": 20, "lr": 5e-4, "warmup": 100,
                 "steps": 3000, "eval_every": 250, "keep_best": "dev_pooled_recall@1"},
    # How many of the first stage's passages the re-ranker re-scores when it is evaluated.
    "rerank_depth": 20,
}
DEV_SETS = (("dev", "seen"), ("dev_new", "new"), ("dev_typed", "typed"))
LATENCY_QUESTIONS = 100


def first_stage(config, biencoder):
    """An unfitted first-stage retriever of the kind ``config["first_stage"]`` names."""
    if config["first_stage"] == "dense":
        return DenseRetriever(biencoder)
    return BM25Retriever()


def build_model(config, biencoder):
    """The cross-encoder to train: chapter 02's BERT with a fresh head, or random weights."""
    if config["init"] == "retriever":
        return CrossEncoder.from_biencoder(biencoder)
    return CrossEncoder.build(biencoder.tokenizer, **config["model"])


def dev_recall(reranker, dev_sets):
    """Re-ranked Recall@1 on each dev set (``dev_recall@1``, ``dev_new_recall@1``,
    ``dev_typed_recall@1``) and over all their questions pooled (``dev_pooled_recall@1``, the one
    the kept weights are chosen by)."""
    report, hits, total = {}, 0.0, 0
    for name, questions in dev_sets.items():
        row = evaluate_retriever(reranker, questions, ks=(1,))["all"]
        report[f"{name}_recall@1"] = round(row["recall@1"], 4)
        hits += row["recall@1"] * row["n"]
        total += row["n"]
    return {"dev_pooled_recall@1": round(hits / total, 4), **report}


def rounded(report):
    keys = ("recall@1", "recall@5", "recall@20", "mrr", "n")
    return {subset: {k: round(v, 4) for k, v in row.items() if k in keys}
            for subset, row in report.items()}


def latency(retriever, reranker, questions, k=5):
    """Milliseconds per question, asked one at a time and as one batch: the first stage's top
    ``k`` alone, re-ranked, and what re-ranking adds."""
    texts = [q["question"] for q in questions]

    def timed(search, batches):
        start = time.perf_counter()
        for batch in batches:
            search(batch, k)
        return 1000 * (time.perf_counter() - start) / len(texts)

    result = {}
    for mode, batches in (("one_at_a_time", [[t] for t in texts]), ("batched", [texts])):
        alone, reranked = timed(retriever.search, batches), timed(reranker.search, batches)
        result[mode] = {"first_stage": round(alone, 2), "reranked": round(reranked, 2),
                        "added": round(reranked - alone, 2)}
    return result


def train(config, start_from, progress=False, stop_after=None):
    """Build the data and the model, train, evaluate: (model, record). ``stop_after`` ends
    training after that many of the configured steps (the schedule does not depend on the total,
    so this is the start of the full run)."""
    seed = set_seed(config["seed"])
    entities, passages = load_entities(), load_passages()
    train_questions = load_questions("train")
    train_questions = train_questions + training_phrasings(
        train_questions, entities, config["typed_per_train_question"], seed=0)
    dev_sets = {name: load_questions("dev", phrasing=phrasing) for name, phrasing in DEV_SETS}
    biencoder = BiEncoder.from_pretrained(start_from / "retriever")
    train_entities = {e["id"] for e in entities if e["split"] == "train"}
    train_passages = [p for p in passages if p["entity_id"] in train_entities]
    negatives_from = first_stage(config, biencoder).fit(train_passages)
    model = build_model(config, biencoder)
    # Fitted on every passage, as the first stage searches at evaluation; the re-ranker holds the
    # model being trained, so each evaluation re-ranks with the weights of that step.
    reranker = Reranker(first_stage(config, biencoder), model,
                        depth=config["rerank_depth"]).fit(passages)
    searched = reranker.first_stage
    t = config["training"]
    history = train_cross_encoder(
        model, train_questions, train_passages, negatives_from, steps=t["steps"],
        batch_size=t["batch_size"], lr=t["lr"], n_negatives=t["n_negatives"], seed=seed,
        depth=t["depth"], warmup=t["warmup"], stop_after=stop_after,
        evaluate=lambda m: dev_recall(reranker, dev_sets), eval_every=t["eval_every"],
        evaluate_ends=True, keep_best=t["keep_best"], progress=progress)
    ids = [p["id"] for p in passages]
    metrics = {name: {"first_stage": rounded(evaluate_retriever(searched, questions, ids)),
                      "reranked": rounded(evaluate_retriever(reranker, questions, ids))}
               for name, questions in dev_sets.items()}
    record = {"seed": seed, "config": config,
              "training_questions": len(train_questions),
              "training_passages": len(train_passages),
              "parameters": sum(p.numel() for p in model.parameters()),
              "train_seconds": round(history["seconds"][-1], 1),
              "best_step": history["best_step"], "metrics": metrics,
              "latency_ms": latency(searched, reranker, dev_sets["dev"][:LATENCY_QUESTIONS]),
              "history": {"step": history["step"], "loss": [round(x, 4) for x in history["loss"]],
                          "eval": [{k: round(v, 4) if isinstance(v, float) else v
                                    for k, v in row.items()} for row in history["eval"]]}}
    return model, record


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints" / "reranker",
                        help="folder for the checkpoint (default: checkpoints/reranker/)")
    parser.add_argument("--start-from", type=Path, default=ROOT / "checkpoints",
                        help="folder holding retriever/, chapter 02's bi-encoder (default: "
                             "checkpoints/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; the recorded metrics were reached with 1")
    parser.add_argument("--seed", type=int, help=f"default {CONFIG['seed']}")
    parser.add_argument("--steps", type=int, help=f"default {CONFIG['training']['steps']}")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of the configured run (its start, to compare with "
                             "a recorded run's history)")
    parser.add_argument("--first-stage", choices=("dense", "bm25"),
                        help=f"the retriever re-ranked (default {CONFIG['first_stage']})")
    parser.add_argument("--init", choices=("retriever", "random"),
                        help=f"the cross-encoder's start (default {CONFIG['init']})")
    args = parser.parse_args(argv)
    for name in ("threads", "steps", "stop_after"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    torch.set_num_threads(args.threads)
    config = copy.deepcopy(CONFIG)
    for value, section, key in ((args.seed, None, "seed"), (args.steps, "training", "steps"),
                                (args.first_stage, None, "first_stage"), (args.init, None, "init")):
        if value is not None:
            (config[section] if section else config)[key] = value
    start = time.perf_counter()
    model, record = train(config, args.start_from, progress=True, stop_after=args.stop_after)
    seconds = time.perf_counter() - start
    model.save_pretrained(args.out)
    record = {"command": " ".join(["python scripts/train_reranker.py", *argv]),
              "threads": args.threads, "stop_after": args.stop_after,
              "versions": versions("torch", "transformers", "tokenizers", "safetensors"),
              "seconds": round(seconds, 1), **record}
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    for name, rows in record["metrics"].items():
        first, reranked = rows["first_stage"]["all"], rows["reranked"]["all"]
        print(f"{name}: first stage R@1 {first['recall@1']:.3f} R@5 {first['recall@5']:.3f}; "
              f"re-ranked R@1 {reranked['recall@1']:.3f} R@5 {reranked['recall@5']:.3f} "
              f"(n={first['n']})")
    added = record["latency_ms"]["one_at_a_time"]["added"]
    print(f"re-ranking adds {added:.1f} ms per question; best step {record['best_step']}; "
          f"{record['train_seconds']} s of training, {seconds:.0f} s in all -> {args.out}")


if __name__ == "__main__":
    main()
