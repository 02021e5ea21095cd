"""Train chapter 08's profile generators: Fusion-in-Decoder and RAG-Token, from chapter 03's reader.

    python scripts/train_profiles.py                      # both, into checkpoints/
    python scripts/train_profiles.py --out /tmp/ckpt      # elsewhere (the slow test does this)

Each generator starts from the reader's weights and tokenizer (``checkpoints/reader``) and learns
to write "Tell me about X" profiles from counterfactual examples drawn fresh for every batch
(``ragtutor.summaries.iter_profile_examples``): an entity's passages rewritten with false facts,
some left out, other entities' passages mixed in; the target states the kept passages' facts about
X and nothing else. The two differ only in how the decoder reads the K passages
(``fid_loss``: all at once; ``rag_token_loss``: one at a time, mixed per token). Every
``eval_every`` steps the profiles of the dev entities, written from the passages
``Profiler`` retrieves, are scored (fact precision, recall and their harmonic mean ``dev_f``); the
weights of the best ``dev_f`` are kept. Test entities are scored once, at the end.

Each folder receives ``save_pretrained``'s files and ``training.json`` (command, seed, threads,
versions, configuration, loss and evaluation curves, metrics, time). With the same torch build and
thread count a rerun gives the same weights.
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
from ragtutor.checksums import write_manifest
from ragtutor.data import load_entities
from ragtutor.generation import load_checkpoint
from ragtutor.rag_model import RAGModel
from ragtutor.summaries import (Profiler, fid_loss, iter_profile_examples, profile_scores,
                                rag_token_loss)
from ragtutor.tools.records import training_record
from ragtutor.train import train

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 0,
    "examples": {"keep": 0.8, "max_distractors": 2},
    "retrieval": {"per_relation": 1},
    "fid": {"batch_size": 16, "lr": 1e-3, "warmup": 100, "steps": 1500, "eval_every": 250},
    "rag_token": {"batch_size": 16, "lr": 1e-3, "warmup": 100, "steps": 1500, "eval_every": 250},
}
LOSSES = {"fid": fid_loss, "rag_token": rag_token_loss}


def batches(entities, config, batch_size, seed):
    """(queries, passage lists, targets) batches of fresh counterfactual profile examples."""
    stream = iter_profile_examples(entities, seed, **config["examples"])
    while True:
        chunk = [next(stream) for _ in range(batch_size)]
        yield ([x["query"] for x in chunk], [x["passages"] for x in chunk],
               [x["target"] for x in chunk])


def scores(profiler, entities, index, prefix):
    """Fact precision, recall and their harmonic mean for ``entities``' profiles."""
    result = profile_scores([p.text for p in profiler.profile_many([e["name"] for e in entities])],
                            entities, index)
    p, r = result["precision"], result["recall"]
    return {f"{prefix}_precision": p, f"{prefix}_recall": r,
            f"{prefix}_f": 2 * p * r / (p + r) if p + r else 0.0}


def train_profiler(method, entities, rag, config, seed, stop_after=None, reader_folder=None):
    """Train one profile generator; returns (model, tokenizer, history, metrics)."""
    index = {e["id"]: e for e in entities}
    settings = config[method]
    torch.manual_seed(seed)
    model, tokenizer, _ = load_checkpoint("reader", reader_folder)
    profiler = Profiler(model, tokenizer, rag, method, **config["retrieval"])
    dev = [e for e in entities if e["split"] == "dev"]
    loss = LOSSES[method]
    steps = settings["steps"]
    history = train(model, lambda b: loss(model, tokenizer, *b),
                    batches(entities, config, settings["batch_size"], seed), lr=settings["lr"],
                    warmup=settings["warmup"], max_steps=steps, stop_after=stop_after, clip=1.0,
                    evaluate=lambda m: scores(profiler, dev, index, "dev"),
                    eval_every=settings["eval_every"], evaluate_ends=True, keep_best="dev_f",
                    desc=method)
    metrics = {"best_step": history.get("best_step")}
    for split in ("dev", "test"):
        metrics.update(scores(profiler, [e for e in entities if e["split"] == split], index, split))
    return model, tokenizer, history, metrics


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints",
                        help="folder for profile_fid/ and profile_rag_token/ (default: checkpoints/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as the committed checkpoints were trained)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of the configured run (its start, to compare with "
                             "the recorded history; tests/test_summaries.py does)")
    parser.add_argument("--only", choices=tuple(LOSSES), help="train one of the two (default: both)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    config = copy.deepcopy(CONFIG)
    seed = set_seed(config["seed"])
    entities = load_entities()
    rag = RAGModel.from_pretrained(ROOT / "checkpoints" / "rag_token", n_docs=5)
    for method in LOSSES:
        if args.only not in (None, method):
            continue
        start = time.perf_counter()
        model, tokenizer, history, metrics = train_profiler(method, entities, rag, config, seed,
                                                            args.stop_after)
        seconds = time.perf_counter() - start
        print(f"{method}: {json.dumps(metrics)} in {seconds:.0f} s", flush=True)
        folder = args.out / f"profile_{method}"
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_manifest(folder)
        entry = training_record("train_profiles.py", argv, config, args.threads, args.stop_after,
                                model, history, metrics, seconds, method=method)
        (folder / "training.json").write_text(json.dumps(entry, indent=1) + "\n")


if __name__ == "__main__":
    main()
