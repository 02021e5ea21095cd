"""Train chapter 10's two-fact readers: Fusion-in-Decoder, RAG-Sequence and RAG-Token, from chapter
03's reader, on questions that need two passages (``data/kb/two_fact_questions.jsonl``).

    python scripts/train_two_fact.py                      # all three, into checkpoints/
    python scripts/train_two_fact.py --only fid           # one of them
    python scripts/train_two_fact.py --out /tmp/ckpt      # elsewhere (the slow test does this)

Every reader starts from the reader's weights and tokenizer (``checkpoints/reader``) and sees the
same inputs (``ragtutor.multihop.reader_inputs``): a question's gold passages and the two passages
BM25 ranks highest among the others, in an order drawn afresh for every batch. In ``rename`` of the
training examples (drawn afresh for every batch) the entities the question depends on are renamed
everywhere in the example -- passages, question and answer -- after other entities of their domain,
test entities included: trained on the training entities' true names only, a reader learns to
answer with those names (asked about Togo and Bhutan, it says "Finland"), as chapter 03's reader
would without its counterfactual examples. The three differ
only in how the decoder reads the K passages:

- ``fid``: all K encodings at once (``ragtutor.summaries.fid_loss``);
- ``rag_sequence``: the whole answer from one passage, the K answers' probabilities averaged
  (``rag_sequence_loss``);
- ``rag_token``: one passage per token, the K next-token distributions averaged
  (``rag_token_loss``).

Every ``eval_every`` steps the dev questions are answered (greedy decoding; RAG-Sequence's
thorough decoding) and scored by exact match; the weights of the best dev EM are kept. Test
questions are answered once, at the end. Each folder, ``two_fact_<method>/``, receives
``save_pretrained``'s files, a manifest and ``training.json`` (command, seed, threads, versions,
configuration, loss and evaluation curves, metrics, time). With the same torch build and thread
count a rerun gives the same weights.
"""
import argparse
import copy
import json
import random
import re
import sys
import time
from pathlib import Path

import torch
import transformers

from ragtutor import set_seed
from ragtutor.checksums import write_manifest
from ragtutor.data import load_entities, load_passages
from ragtutor.generation import load_checkpoint
from ragtutor.metrics import exact_match
from ragtutor.multihop import load_two_fact_questions, reader_inputs
from ragtutor.sparse import BM25Retriever
from ragtutor.summaries import (fid_generate, fid_loss, rag_sequence_generate, rag_sequence_loss,
                                rag_token_generate, rag_token_loss)
from ragtutor.tools.records import training_record
from ragtutor.train import train

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {
    "seed": 0,
    "n_distractors": 2,
    "rename": 0.75,
    "batch_size": 16, "lr": 1e-3, "warmup": 100, "steps": 1500, "eval_every": 250,
}
LOSSES = {"fid": fid_loss, "rag_sequence": rag_sequence_loss, "rag_token": rag_token_loss}
GENERATE = {"fid": fid_generate, "rag_sequence": rag_sequence_generate,
            "rag_token": rag_token_generate}


def inputs(split, seed=0, n_distractors=2, passages=None, retriever=None):
    """The reader inputs of one split's two-fact questions (gold passages + BM25's distractors),
    with each question's record under ``record``."""
    passages = load_passages() if passages is None else passages
    retriever = BM25Retriever().fit(passages) if retriever is None else retriever
    questions = load_two_fact_questions(split)
    rows = reader_inputs(questions, passages, retriever, n_distractors=n_distractors, seed=seed)
    for row, q in zip(rows, questions):
        row["record"] = q
    return rows


def answer(method, model, tokenizer, rows, batch_size=32):
    """Greedy answers of one reader for ``rows`` (from :func:`inputs`)."""
    model.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        out += GENERATE[method](model, tokenizer, [r["question"] for r in chunk],
                                [r["passages"] for r in chunk], max_new_tokens=16)
    return out


def scores(method, model, tokenizer, rows, prefix):
    """Exact match overall and per kind of question."""
    predictions = answer(method, model, tokenizer, rows)
    hits = [exact_match(p, r["answers"]) for p, r in zip(predictions, rows)]
    result = {f"{prefix}_em": sum(hits) / len(hits)}
    for kind in ("bridge", "chain", "comparison"):
        kept = [h for h, r in zip(hits, rows) if r["record"]["kind"] == kind]
        result[f"{prefix}_{kind}_em"] = sum(kept) / len(kept)
    return result


def renamed(row, entities, rng):
    """``(question, passages, answer)`` of ``row`` with every entity the question depends on (the
    ones it names, its answer, a bridge's and a comparison's options) renamed everywhere after a
    different entity of the same domain, drawn by ``rng``."""
    by_name = {e["name"]: e for e in entities}
    record = row["record"]
    ids = dict.fromkeys(record["entity_ids"] + record["mentioned_entity_ids"]
                        + [by_name[o]["id"] for o in record["options"] or () if o in by_name])
    index = {e["id"]: e for e in entities}
    taken = set(ids)
    mapping = {}
    for i in ids:
        pool = [e for e in entities if e["domain"] == index[i]["domain"] and e["id"] not in taken]
        new = rng.choice(pool)
        taken.add(new["id"])
        for old in [index[i]["name"], *index[i]["aliases"]]:
            mapping[old] = new["name"]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True)))
                         + r")\b", re.IGNORECASE)
    folded = {old.casefold(): new for old, new in mapping.items()}

    def replace(match):
        # an element is named in lower case inside a sentence ("zinc"): keep that case
        new = folded[match.group(1).casefold()]
        return new[0].lower() + new[1:] if match.group(1)[0].islower() else new

    def swap(text):
        return pattern.sub(replace, text)

    passages = [dict(p, title=swap(p["title"]), text=swap(p["text"])) for p in row["passages"]]
    return swap(row["question"]), passages, swap(row["answers"][0])


def batches(rows, batch_size, seed, entities=None, rename=0.0):
    """(questions, passage lists, answers) batches, the examples reshuffled every epoch, each
    example's passages in a fresh order, and a share ``rename`` of them renamed (:func:`renamed`)."""
    rng = random.Random(seed)
    while True:
        for i in range(0, len(rows) - batch_size + 1, batch_size):
            if i == 0:
                rng.shuffle(rows)
            chunk = [renamed(r, entities, rng) if rng.random() < rename
                     else (r["question"], r["passages"], r["answers"][0])
                     for r in rows[i:i + batch_size]]
            yield ([q for q, _, _ in chunk], [rng.sample(ps, len(ps)) for _, ps, _ in chunk],
                   [a for _, _, a in chunk])


def train_reader(method, train_rows, dev_rows, config, seed, stop_after=None, reader_folder=None):
    """Train one reader; returns (model, tokenizer, history)."""
    torch.manual_seed(seed)
    model, tokenizer, _ = load_checkpoint("reader", reader_folder)
    loss = LOSSES[method]

    def evaluate(m):
        result = scores(method, m, tokenizer, dev_rows, "dev")
        m.train()
        return result

    model.train()
    history = train(model, lambda b: loss(model, tokenizer, *b),
                    batches(list(train_rows), config["batch_size"], seed, load_entities(),
                            config["rename"]), lr=config["lr"],
                    warmup=config["warmup"], max_steps=config["steps"], stop_after=stop_after,
                    clip=1.0, evaluate=evaluate, eval_every=config["eval_every"],
                    evaluate_ends=True, keep_best="dev_em", desc=method)
    return model, tokenizer, history


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints",
                        help="folder for two_fact_<method>/ (default: checkpoints/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as the committed checkpoints were trained)")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of the configured run (its start, to compare with "
                             "the recorded history)")
    parser.add_argument("--only", choices=tuple(LOSSES), help="train one reader (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    config = copy.deepcopy(CONFIG)
    seed = set_seed(config["seed"])
    passages = load_passages()
    bm25 = BM25Retriever().fit(passages)
    rows = {split: inputs(split, seed, config["n_distractors"], passages, bm25)
            for split in ("train", "dev", "test")}
    for method in LOSSES:
        if args.only not in (None, method):
            continue
        start = time.perf_counter()
        model, tokenizer, history = train_reader(method, rows["train"], rows["dev"], config, seed,
                                                 args.stop_after)
        metrics = {"best_step": history.get("best_step")}
        for split in ("dev", "test"):
            metrics.update(scores(method, model, tokenizer, rows[split], split))
        seconds = time.perf_counter() - start
        print(f"{method}: {json.dumps(metrics)} in {seconds:.0f} s", flush=True)
        folder = args.out / f"two_fact_{method}"
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_manifest(folder)
        entry = training_record("train_two_fact.py", argv, config, args.threads, args.stop_after,
                                model, history, metrics, seconds, method=method)
        (folder / "training.json").write_text(json.dumps(entry, indent=1) + "\n")


if __name__ == "__main__":
    main()
