"""Train chapter 03's checkpoints: the reader, the closed-book model and their shared tokenizer.

    python scripts/train_generation.py                       # both, into checkpoints/
    python scripts/train_generation.py --out /tmp/ckpt       # elsewhere (the slow test does this)

The reader maps "title / text // question" to the answer. It learns from counterfactual examples
(``ragtutor.counterfactual``) drawn fresh for every batch: the knowledge base's passage templates filled with
real names, test entities' included, and false facts, so that every name token is trained and the
passage is the only place the answer can come from. The closed-book model maps the question alone
to the answer and learns true facts about training entities, nothing else
(``generation.closed_book_questions``). Both are the same tiny BART and share one tokenizer,
trained on every passage, question and answer of the knowledge base plus counterfactual text, so
it covers every name; chapters 05 and 06 reuse it.

Each model's folder receives what ``save_pretrained`` writes (config, generation config,
model.safetensors, tokenizer files) and ``training.json``: the command, seed, thread count,
library versions, the configuration, the loss and evaluation curves, the metrics reached and the
time taken. With the same torch build and thread count, a rerun gives the same weights and
metrics. ``benchmarks/generation_recipes.py`` reuses these functions to compare other recipes.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import transformers

from ragtutor import set_seed
from ragtutor.tools.records import versions
from ragtutor.data import load_entities, load_passages, load_questions
from ragtutor.generation import (build_seq2seq, closed_book_batches, closed_book_questions,
                                 evaluate_qa, max_combined_length, reader_batches, reader_sources,
                                 train_seq2seq, train_tokenizer)
from ragtutor.checksums import write_manifest
from ragtutor.counterfactual import counterfactual_examples
from ragtutor.metrics import normalize_answer

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 0,
    # Subwords: the reader can spell an answer it never produced in training, and a name typed in
    # lower case is pieces, not <unk>.
    "tokenizer": {"kind": "bpe", "vocab_size": 4000, "counterfactual_texts": 20000},
    # The share of counterfactual questions asked as people type (PHRASINGS' train pool), and of
    # passages stating a made-up value that only spelling out what was read can answer.
    "typed": 0.5,
    "invented": 0.6,
    "model": {"d_model": 64, "layers": 3, "heads": 4, "ffn_dim": 128, "max_positions": 128,
              "tie_embeddings": True},
    "reader": {"batch_size": 64, "lr": 2e-3, "warmup": 300, "steps": 10000, "eval_every": 500},
    "closed_book": {"batch_size": 64, "lr": 2e-3, "warmup": 300, "steps": 1500, "eval_every": 250},
}


def load_knowledge_base():
    """Entities, passages and the three question splits."""
    splits = {split: load_questions(split) for split in ("train", "dev", "test")}
    return load_entities(), load_passages(), splits


def build_tokenizer(entities, passages, splits, config, seed, max_positions, typed=0.0):
    """Train the shared tokenizer; check that every passage fits with every question.

    Returns the tokenizer and the longest combined input in tokens.
    """
    questions = [q for split in splits.values() for q in split]
    texts = [p["title"] + " " + p["text"] for p in passages] + [q["question"] for q in questions]
    texts += [a for e in entities for answers in e["answers"].values() for a in answers]
    texts += [e["text"] + " " + e["question"]
              for e in counterfactual_examples(entities, config["counterfactual_texts"], seed=seed,
                                               typed=typed)]
    tokenizer = train_tokenizer(texts, kind=config["kind"], vocab_size=config["vocab_size"] or 8000)
    longest = max_combined_length(tokenizer, passages, questions)
    if longest > max_positions:
        raise ValueError(f"the longest passage with the longest question is {longest} tokens, more "
                         f"than the model's {max_positions} positions: raise max_positions")
    return tokenizer, longest


def _steps(config, stop_after):
    return config["steps"] if stop_after is None else min(config["steps"], stop_after)


def _scores(model, tokenizer, sources, questions, prefix, num_beams=1):
    result, _ = evaluate_qa(model, tokenizer, sources, questions, num_beams=num_beams)
    return {f"{prefix}_em": result["em"], f"{prefix}_f1": result["f1"]}


def train_reader(tokenizer, passages, splits, config, model_config, seed, examples,
                 stop_after=None):
    """Train a reader on ``examples``, an iterator of (sources, targets) batches (``stop_after``:
    only the first that many of the configured steps; the schedule does not depend on the total).

    Returns (model, history, metrics). The metrics: exact match and F1 with the gold passage on
    each split (greedy decoding, and 4 beams on test); exact match on the test questions whose
    entity name or answer has a token the reader never saw in training (``test_unseen_names``
    such questions); and on those whose answer was never a training target
    (``test_untrained_answers`` of them, listed by id in ``test_untrained_answer_ids``).
    """
    torch.manual_seed(seed)
    model = build_seq2seq(tokenizer, **model_config)
    dev_sources = reader_sources(splits["dev"], passages)
    seen_tokens, trained_answers = set(), set()

    def batches():
        for sources, targets in examples:
            seen_tokens.update(t for ids in tokenizer(sources).input_ids for t in ids)
            trained_answers.update(map(normalize_answer, targets))
            yield sources, targets

    history = train_seq2seq(model, tokenizer, batches(), lr=config["lr"], warmup=config["warmup"],
                            max_steps=_steps(config, stop_after), eval_every=config["eval_every"],
                            evaluate=lambda m: _scores(m, tokenizer, dev_sources, splits["dev"],
                                                       "dev"))
    metrics = {}
    for split in ("train", "dev", "test"):
        metrics.update(_scores(model, tokenizer, reader_sources(splits[split], passages),
                               splits[split], split))
    for split, phrasing in (("dev", "new"), ("test", "new"), ("dev", "typed")):
        questions = load_questions(split, phrasing=phrasing)
        metrics.update(_scores(model, tokenizer, reader_sources(questions, passages), questions,
                               f"{split}_{phrasing}"))
    test = list(zip(reader_sources(splits["test"], passages), splits["test"]))
    metrics.update(_scores(model, tokenizer, *map(list, zip(*test)), "test_beam4", num_beams=4))
    unseen = [(source, q) for source, q in test
              if not set(tokenizer(q["entity"] + " " + q["answers"][0]).input_ids) <= seen_tokens]
    untrained = [(source, q) for source, q in test
                 if normalize_answer(q["answers"][0]) not in trained_answers]
    for name, subset in (("unseen_names", unseen), ("untrained_answers", untrained)):
        metrics[f"test_{name}"] = len(subset)
        if subset:
            metrics.update(_scores(model, tokenizer, *map(list, zip(*subset)), f"test_{name}"))
    metrics["test_untrained_answer_ids"] = [q["id"] for _, q in untrained]
    return model, history, metrics


def train_closed_book(tokenizer, entities, splits, config, model_config, seed, stop_after=None):
    """Train the closed-book model on training entities' true facts (``stop_after`` as for
    :func:`train_reader`).

    Returns (model, history, metrics): exact match and F1 on the questions it was trained on, on
    dev and on test.
    """
    torch.manual_seed(seed)
    model = build_seq2seq(tokenizer, **model_config)
    train = closed_book_questions(splits["train"], entities)
    followed = train[::5]  # a fifth of the training questions, to follow memorisation cheaply
    history = train_seq2seq(
        model, tokenizer, closed_book_batches(train, config["batch_size"], seed=seed),
        lr=config["lr"], warmup=config["warmup"], max_steps=_steps(config, stop_after),
        eval_every=config["eval_every"],
        evaluate=lambda m: _scores(m, tokenizer, [q["question"] for q in followed], followed,
                                   "train_sample"))
    metrics = {"train_questions": len(train)}
    for split, questions in (("train", train), ("dev", splits["dev"]), ("test", splits["test"])):
        metrics.update(_scores(model, tokenizer, [q["question"] for q in questions], questions,
                               split))
    return model, history, metrics


def record(config, threads, tokenizer, longest, model, history, metrics, seconds, argv,
           stop_after=None):
    """What training.json holds: how the model was made and what it reached."""
    return {
        "command": " ".join(["python scripts/train_generation.py", *argv]),
        "seed": config["seed"], "threads": threads, "stop_after": stop_after, "config": config,
        "versions": versions("torch", "transformers", "tokenizers"),
        "vocab_size": len(tokenizer), "max_combined_length": longest,
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": metrics, "seconds": round(seconds, 1),
        "train_seconds": round(history["seconds"][-1], 1),
        "history": {"step": history["step"], "loss": history["loss"], "eval": history["eval"]},
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints",
                        help="folder for reader/ and closed_book/ (default: checkpoints/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as the committed checkpoints were trained)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop each model after N steps of its configured run (its start, to "
                             "compare with a recorded run's history; tests/test_generation.py does)")
    parser.add_argument("--only", choices=("reader", "closed_book"),
                        help="train one of the two models (default: both)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    config = copy.deepcopy(CONFIG)
    seed = set_seed(config["seed"])
    entities, passages, splits = load_knowledge_base()
    tokenizer, longest = build_tokenizer(entities, passages, splits, config["tokenizer"], seed,
                                         config["model"]["max_positions"], config["typed"])
    print(f"tokenizer: {len(tokenizer)} tokens; longest passage + question: {longest} tokens",
          flush=True)
    jobs = {
        "reader": lambda: train_reader(
            tokenizer, passages, splits, config["reader"], config["model"], seed,
            reader_batches(entities, config["reader"]["batch_size"], seed, config["typed"],
                           config["invented"]),
            args.stop_after),
        "closed_book": lambda: train_closed_book(tokenizer, entities, splits, config["closed_book"],
                                                 config["model"], seed, args.stop_after),
    }
    for name, train in jobs.items():
        if args.only not in (None, name):
            continue
        start = time.perf_counter()
        model, history, metrics = train()
        seconds = time.perf_counter() - start
        print(f"{name}: {json.dumps(metrics)} in {seconds:.0f} s", flush=True)
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_manifest(folder)  # load_checkpoint verifies every file against it
        entry = record(config, args.threads, tokenizer, longest, model, history, metrics, seconds,
                       argv, args.stop_after)
        (folder / "training.json").write_text(json.dumps(entry, indent=1) + "\n")


if __name__ == "__main__":
    main()
