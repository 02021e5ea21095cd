"""Does a reader trained on one domain read another? Countries-only readers asked about elements.

    python benchmarks/domain_transfer.py --arms countries both      # train and measure these arms
    python benchmarks/domain_transfer.py --arms mix05               # (arms may run in parallel)
    python benchmarks/domain_transfer.py --report                   # -> benchmarks/RESULTS.md

Each arm trains chapter 03's reader recipe (``scripts/train_generation.py``'s model, learning rate,
typed and invented shares, seed 0) for the same ``--steps`` (default 2500; the shipped reader
trains 10,000) on counterfactual examples (``ragtutor.counterfactual``) drawn from:

- ``both``: every entity, as the shipped reader (195 countries, 118 elements: 38% of the examples
  are about elements);
- ``countries``: the countries only — the reader never sees an element passage;
- ``mix05``, ``mix01``: the countries, with 5% (1%) of the examples drawn from the elements instead.

Every arm uses the shipped reader's tokenizer (``checkpoints/reader``), trained on the whole
knowledge base, so no arm meets an element name as unknown pieces: the experiment is about what the
model learns to read, not about its vocabulary. Each reader answers the test questions (seen
phrasings) with their gold passage; exact match per domain with 95% bootstrap intervals is saved,
per arm, in ``benchmarks/domain_transfer.json``, with the loss history (the mean of each 50 steps);
``--report`` writes the table to RESULTS.md. ``--stop-after N --out FILE`` trains the first N steps
only (tests/test_domain_transfer.py compares them with the recorded history).
"""
import argparse
import itertools
import json
import random
import time
from pathlib import Path

import torch
import transformers

from ragtutor import data, set_seed
from ragtutor.counterfactual import iter_counterfactual_examples
from ragtutor.generation import (build_seq2seq, combined_input, evaluate_qa, load_checkpoint,
                                 reader_sources, train_seq2seq)
from ragtutor.metrics import bootstrap_interval, exact_match
from ragtutor.templates import RELATIONS
from ragtutor.tools.records import load_script, machine, write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_JSON = ROOT / "benchmarks" / "domain_transfer.json"
ARMS = {"both": None, "countries": 0.0, "mix01": 0.01, "mix05": 0.05}  # name -> share of elements
DESCRIPTIONS = {
    "both": "every entity (38% of the examples about elements), as the shipped reader",
    "countries": "countries only",
    "mix01": "countries, 1% of the examples about elements",
    "mix05": "countries, 5% of the examples about elements",
}


def batches(entities, share, batch_size, seed, typed, invented):
    """Endless (sources, targets) batches; `share` of the examples about elements (None: all
    entities in one stream, as chapter 03's reader is trained)."""
    def stream(group, salt):
        return iter_counterfactual_examples(group, seed=seed + salt, typed=typed, invented=invented)

    if share is None:
        examples = stream(entities, 0)
    else:
        countries = stream([e for e in entities if e["domain"] == "country"], 0)
        elements = stream([e for e in entities if e["domain"] == "element"], 1) if share else None
        rng = random.Random(f"{seed}/domain-mix")
        examples = (next(elements) if share and rng.random() < share else next(countries)
                    for _ in itertools.count())
    while True:
        chunk = list(itertools.islice(examples, batch_size))
        yield ([combined_input(e["title"], e["text"], e["question"]) for e in chunk],
               [e["answers"][0] for e in chunk])


def run_arm(name, steps, threads, stop_after=None):
    """Train one arm for `steps` (only the first `stop_after` of them, when given: the learning
    rate is constant after warm-up, so they are the start of the full run) and score it."""
    config = load_script("train_generation").CONFIG
    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    seed = set_seed(config["seed"])
    entities, passages = data.load_entities(), data.load_passages()
    _, tokenizer, _ = load_checkpoint("reader")
    torch.manual_seed(seed)
    model = build_seq2seq(tokenizer, **config["model"])
    reader = config["reader"]
    start = time.perf_counter()
    history = train_seq2seq(model, tokenizer,
                  batches(entities, ARMS[name], reader["batch_size"], seed, config["typed"],
                          config["invented"]),
                  lr=reader["lr"], warmup=reader["warmup"],
                  max_steps=steps if stop_after is None else min(steps, stop_after), progress=False)
    model.eval()
    result = {"steps": steps, "stop_after": stop_after, "threads": threads,
              "train_seconds": round(time.perf_counter() - start, 1),
              "history": {"step": history["step"], "loss": history["loss"]}}
    test = data.load_questions("test")
    for domain in ("country", "element"):
        questions = [q for q in test if RELATIONS[q["relation"]][0] == domain]
        _, predictions = evaluate_qa(model, tokenizer, reader_sources(questions, passages), questions)
        hits = [float(exact_match(p, q["answers"])) for p, q in zip(predictions, questions)]
        low, high = bootstrap_interval(hits)
        result[domain] = {"em": sum(hits) / len(hits), "low": low, "high": high, "n": len(hits)}
    return result


def report():
    results = json.loads(RESULTS_JSON.read_text())
    rows = ["| trained on | test countries: exact match | test elements: exact match |",
            "| --- | --- | --- |"]
    for name in ARMS:
        if name in results:
            r = results[name]
            cells = [f"{r[d]['em']:.3f} [{r[d]['low']:.3f}, {r[d]['high']:.3f}]"
                     for d in ("country", "element")]
            rows.append(f"| {DESCRIPTIONS[name]} | {cells[0]} | {cells[1]} |")
    steps = {r["steps"] for r in results.values()}
    first = next(iter(results.values()))
    section = "\n".join([
        "## A held-out domain: readers trained on countries, asked about elements", "",
        f"Measured with `python benchmarks/domain_transfer.py` on {machine()}.", "",
        f"Chapter 03's reader recipe, {'/'.join(map(str, sorted(steps)))} steps per arm, the shipped "
        "reader's tokenizer; test questions (seen phrasings) with their gold passage "
        f"({first['country']['n']} about countries, {first['element']['n']} about elements); 95% "
        "bootstrap intervals in brackets:", "", *rows])
    write_section(RESULTS_MD, section, "<!-- domain:begin -->", "<!-- domain:end -->")
    print(section)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=[])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="write the saved arms to RESULTS.md")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="train only the first N steps of each arm (the start of its run, to "
                             "compare with the recorded loss history; the slow test does)")
    parser.add_argument("--out", type=Path, default=RESULTS_JSON,
                        help="the JSON file the arms are saved to (default: "
                             "benchmarks/domain_transfer.json)")
    args = parser.parse_args(argv)
    if not args.arms and not args.report:
        parser.error("name --arms to run, or --report")
    if args.stop_after is not None and args.out == RESULTS_JSON:
        parser.error("--stop-after trains only the start of a run: give --out, so that the "
                     "recorded results stay those of full runs")
    for name in args.arms:
        result = run_arm(name, args.steps, args.threads, args.stop_after)
        print(name, json.dumps({k: v for k, v in result.items() if k != "history"}), flush=True)
        saved = json.loads(args.out.read_text()) if args.out.exists() else {}
        saved[name] = result
        args.out.write_text(json.dumps(saved, indent=1) + "\n")
    if args.report:
        report()


if __name__ == "__main__":
    main()
