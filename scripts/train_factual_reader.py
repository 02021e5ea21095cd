"""Train chapter 10's factual reader: chapter 03's reader architecture, trained on true passages only.

    python scripts/train_factual_reader.py                  # into checkpoints/factual_reader
    python scripts/train_factual_reader.py --out /tmp/ckpt  # elsewhere (the slow test does this)

Chapter 03's reader learned from counterfactual passages only, so the passage was its one way to be
right. This one is its opposite for chapter 10's knowledge-conflict section: the same tiny BART and
tokenizer (``checkpoints/reader``), built new, trained on the training questions with their gold
passages, true facts about training entities and nothing else, so that it can answer both from the
passage and from memory. Every ``eval_every`` steps the dev questions with their gold passages are
answered and scored by exact match; the weights of the best evaluation are kept. The folder
receives ``save_pretrained``'s files, a manifest and ``training.json`` (command, seed, threads,
versions, configuration, curves, metrics, time). With the same torch build and thread count a
rerun gives the same weights.
"""
import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import torch
import transformers

from ragtutor import set_seed
from ragtutor.checksums import write_manifest
from ragtutor.data import load_passages, load_questions
from ragtutor.generation import (build_seq2seq, encode_pairs, evaluate_qa, load_checkpoint,
                                 reader_sources)
from ragtutor.tools.records import training_record
from ragtutor.train import train

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 0,
    "model": {"d_model": 64, "layers": 3, "heads": 4, "ffn_dim": 128, "max_positions": 128,
              "tie_embeddings": True},
    "batch_size": 64, "lr": 2e-3, "warmup": 300, "steps": 1500, "eval_every": 250,
}


def batches(sources, answers, batch_size, seed):
    """(sources, answers) batches, reshuffled every epoch."""
    pairs = list(zip(sources, answers))
    rng = random.Random(seed)
    while True:
        rng.shuffle(pairs)
        for i in range(0, len(pairs) - batch_size + 1, batch_size):
            chunk = pairs[i:i + batch_size]
            yield [s for s, _ in chunk], [a for _, a in chunk]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints",
                        help="folder for factual_reader/ (default: checkpoints/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as the committed checkpoint was trained)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of the configured run (its start)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    config = copy.deepcopy(CONFIG)
    seed = set_seed(config["seed"])
    _, tokenizer, _ = load_checkpoint("reader")
    passages = load_passages()
    train_questions, dev, test = (load_questions(s) for s in ("train", "dev", "test"))
    sources = {name: reader_sources(qs, passages)
               for name, qs in (("train", train_questions), ("dev", dev), ("test", test))}
    torch.manual_seed(seed)
    model = build_seq2seq(tokenizer, **config["model"])
    limit = model.config.max_position_embeddings

    def loss(batch):
        return model(**encode_pairs(tokenizer, *batch, limit)).loss

    def evaluate(m):
        m.eval()
        result = {"dev_em": evaluate_qa(m, tokenizer, sources["dev"], dev)[0]["em"]}
        m.train()
        return result

    model.train()
    start = time.perf_counter()
    history = train(model, loss, batches(sources["train"], [q["answers"][0] for q in train_questions],
                                         config["batch_size"], seed),
                    lr=config["lr"], warmup=config["warmup"], max_steps=config["steps"],
                    stop_after=args.stop_after, clip=1.0, evaluate=evaluate,
                    eval_every=config["eval_every"], evaluate_ends=True, keep_best="dev_em",
                    desc="factual reader")
    model.eval()
    metrics = {"best_step": history.get("best_step")}
    for name, qs in (("train", train_questions), ("dev", dev), ("test", test)):
        metrics[f"{name}_em"] = evaluate_qa(model, tokenizer, sources[name], qs)[0]["em"]
    seconds = time.perf_counter() - start
    print(f"factual reader: {json.dumps(metrics)} in {seconds:.0f} s", flush=True)
    folder = args.out / "factual_reader"
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_manifest(folder)
    entry = training_record("train_factual_reader.py", argv, config, args.threads, args.stop_after,
                            model, history, metrics, seconds)
    (folder / "training.json").write_text(json.dumps(entry, indent=1) + "\n")


if __name__ == "__main__":
    main()
