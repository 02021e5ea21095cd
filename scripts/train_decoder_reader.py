"""Train chapter 10's retrieve-then-prompt comparison: a decoder-only reader and an encoder-decoder
reader of the same size, from random weights, on the same examples for the same number of steps.

    python scripts/train_decoder_reader.py                    # both, into checkpoints/
    python scripts/train_decoder_reader.py --only decoder     # one of them
    python scripts/train_decoder_reader.py --out /tmp/ckpt    # elsewhere (the slow test does this)

Examples (``ragtutor.decoder_only.prompt_examples``): each training question of the knowledge base
with its gold passage and the two passages BM25 ranks highest among the others, shuffled.

- ``decoder``: a tiny GPT-2 (``DecoderOnlyReader``) reads the three passages numbered in one prompt,
  then "Question: ... Answer:", and continues with the answer;
- ``encoder_decoder``: chapter 03's tiny BART architecture, built new, reads each passage with the
  question in its encoder and attends to the three encodings at once in its decoder
  (Fusion-in-Decoder, ``ragtutor.summaries.fid_loss``).

Both use chapter 03's tokenizer, the same batches, learning rate and steps. Every ``eval_every``
steps the dev questions (in the knowledge base's wordings) are answered by greedy decoding and
scored by exact match; the weights of the best dev EM are kept. Test questions are answered once,
at the end. Each folder, ``prompt_<method>/``, receives the model's files, a manifest and
``training.json`` (command, seed, threads, versions, configuration, curves, metrics, time).
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
from ragtutor.decoder_only import DecoderOnlyReader, build_prompt, retrieved_examples
from ragtutor.generation import build_seq2seq, load_checkpoint
from ragtutor.metrics import exact_match
from ragtutor.sparse import BM25Retriever
from ragtutor.summaries import fid_generate, fid_loss
from ragtutor.tools.records import training_record
from ragtutor.train import train

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 0,
    "k": 3,
    "decoder": {"n_embd": 64, "n_layer": 6, "n_head": 4, "n_inner": 176, "context_length": 512},
    "encoder_decoder": {"d_model": 64, "layers": 3, "heads": 4, "ffn_dim": 128,
                        "max_positions": 128},
    "batch_size": 16, "lr": 1e-3, "warmup": 100, "steps": 1500, "eval_every": 500,
}
METHODS = ("decoder", "encoder_decoder")


def examples(split, k=3, seed=0, passages=None, retriever=None, phrasing="seen"):
    """``(question record, passages shown)`` for one split (``retrieved_examples``)."""
    passages = load_passages() if passages is None else passages
    retriever = BM25Retriever().fit(passages) if retriever is None else retriever
    return retrieved_examples(load_questions(split, phrasing=phrasing), passages, retriever, k, seed)


class Readers:
    """One interface over the two readers: ``loss(questions, passage lists, answers)`` and
    ``answer(questions, passage lists)``."""

    def __init__(self, method, tokenizer, config):
        self.method = method
        if method == "decoder":
            self.reader = DecoderOnlyReader(tokenizer, **config["decoder"])
            self.model = self.reader.model
        else:
            self.tokenizer = tokenizer
            self.model = build_seq2seq(tokenizer, **config["encoder_decoder"])

    def loss(self, questions, passage_lists, answers):
        if self.method == "decoder":
            return self.reader.loss([build_prompt(q, ps) for q, ps in zip(questions, passage_lists)],
                                    answers)
        return fid_loss(self.model, self.tokenizer, questions, passage_lists, answers)

    @torch.no_grad()
    def answer(self, questions, passage_lists, batch_size=32):
        self.model.eval()
        out = []
        if self.method == "decoder":
            out = self.reader.generate([build_prompt(q, ps)
                                        for q, ps in zip(questions, passage_lists)])
        else:
            for i in range(0, len(questions), batch_size):
                out += fid_generate(self.model, self.tokenizer, questions[i:i + batch_size],
                                    passage_lists[i:i + batch_size], max_new_tokens=16)
        self.model.train()
        return out

    def save(self, folder):
        if self.method == "decoder":
            self.reader.save_pretrained(folder)
        else:
            self.model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
            write_manifest(folder)


def em(readers, rows):
    predictions = readers.answer([q["question"] for q, _ in rows], [ps for _, ps in rows])
    return sum(exact_match(p, q["answers"]) for p, (q, _) in zip(predictions, rows)) / len(rows)


def batches(rows, batch_size, seed):
    rng = random.Random(seed)
    rows = list(rows)
    while True:
        rng.shuffle(rows)
        for i in range(0, len(rows) - batch_size + 1, batch_size):
            chunk = rows[i:i + batch_size]
            yield ([q["question"] for q, _ in chunk], [ps for _, ps in chunk],
                   [q["answers"][0] for q, _ in chunk])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints",
                        help="folder for prompt_<method>/ (default: checkpoints/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as the committed checkpoints were trained)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of the configured run (its start)")
    parser.add_argument("--only", choices=METHODS, help="train one reader (default: both)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    config = copy.deepcopy(CONFIG)
    seed = set_seed(config["seed"])
    _, tokenizer, _ = load_checkpoint("reader")
    passages = load_passages()
    bm25 = BM25Retriever().fit(passages)
    rows = {split: examples(split, config["k"], seed, passages, bm25)
            for split in ("train", "dev", "test")}
    rows["test_new"] = examples("test", config["k"], seed, passages, bm25, phrasing="new")
    for method in METHODS:
        if args.only not in (None, method):
            continue
        torch.manual_seed(seed)
        readers = Readers(method, tokenizer, config)
        readers.model.train()
        start = time.perf_counter()
        history = train(readers.model, lambda b: readers.loss(*b),
                        batches(rows["train"], config["batch_size"], seed), lr=config["lr"],
                        warmup=config["warmup"], max_steps=config["steps"],
                        stop_after=args.stop_after, clip=1.0,
                        evaluate=lambda m: {"dev_em": em(readers, rows["dev"])},
                        eval_every=config["eval_every"], evaluate_ends=True, keep_best="dev_em",
                        desc=method)
        metrics = {"best_step": history.get("best_step")}
        for split in ("dev", "test", "test_new"):
            metrics[f"{split}_em"] = em(readers, rows[split])
        seconds = time.perf_counter() - start
        print(f"{method}: {json.dumps(metrics)} in {seconds:.0f} s", flush=True)
        folder = args.out / f"prompt_{method}"
        folder.mkdir(parents=True, exist_ok=True)
        readers.save(folder)
        entry = training_record("train_decoder_reader.py", argv, config, args.threads, args.stop_after,
                                readers.model, history, metrics, seconds, method=method)
        (folder / "training.json").write_text(json.dumps(entry, indent=1) + "\n")


if __name__ == "__main__":
    main()
