"""Chapter 03's recipe search: what makes a tiny reader read, and how fast it learns.

    python benchmarks/generation_recipes.py                      # every recipe: over an hour
    python benchmarks/generation_recipes.py --only bpe untied    # some; the rest keep their results

Each recipe is the checkpoint recipe of ``scripts/train_generation.py`` with one thing changed,
trained with one torch thread by the same functions. For each it records

- the first evaluation step (every 250) at which dev exact match with the gold passage reached 0.9,
  and the training seconds until then (batch drawing and evaluation excluded);
- exact match and F1 on the test split with the gold passage after the whole run, greedy decoding;
- exact match on test questions whose entity name or answer contains a token the reader never saw
  during training, and on those whose answer was never a training target, and how many there are;
- for recipes that change the tokenizer or the model, the closed-book model trained the same way:
  exact match on the questions it was trained on and on the test split.

The recipe "checkpoint" is read from ``checkpoints/*/training.json`` (same code, config and seed).
Results accumulate in ``benchmarks/generation_recipes.json``; the table goes between the generation
markers of ``benchmarks/RESULTS.md`` (other sections are kept). Seconds depend on the machine and
on what else runs on it; steps do not.
"""
import argparse
import copy
import itertools
import json
import random
from pathlib import Path

import torch
import transformers

from ragtutor import set_seed
from ragtutor.generation import combined_input, reader_batches
from ragtutor.tools.records import load_script, write_section

ROOT = Path(__file__).resolve().parents[1]
recipe = load_script("train_generation")  # the checkpoint's recipe, which each run changes once

RESULTS_JSON = ROOT / "benchmarks" / "generation_recipes.json"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- generation:begin -->", "<!-- generation:end -->"

# name -> (what changes, overrides of recipe.CONFIG, reader training data, also train closed-book)
RECIPES = {
    "bpe": ("BPE subwords (2,000 tokens) instead of words",
            {"tokenizer": {"kind": "bpe", "vocab_size": 2000}}, "counterfactual", True),
    "untied": ("output layer not tied to the embeddings", {"model": {"tie_embeddings": False}},
               "counterfactual", True),
    "lr 1e-3": ("learning rate 1e-3", {"reader": {"lr": 1e-3}}, "counterfactual", False),
    "lr 3e-3, warm-up 100": ("learning rate 3e-3, 100 warm-up steps",
                             {"reader": {"lr": 3e-3, "warmup": 100}}, "counterfactual", False),
    "train names only": ("counterfactual passages name training entities only", {},
                         "counterfactual-train-names", False),
    "true facts": ("true passages and questions of the training split, recurring", {},
                   "true", False),
    "seed 1": ("seed 1", {"seed": 1}, "counterfactual", False),
    "seed 2": ("seed 2", {"seed": 2}, "counterfactual", False),
}


def merged(overrides):
    config = copy.deepcopy(recipe.CONFIG)
    for key, value in overrides.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def true_fact_batches(splits, passages, batch_size, seed):
    """The training split's questions with their gold passages, reshuffled every epoch."""
    by_id = {p["id"]: p for p in passages}
    rng = random.Random(seed)
    train = splits["train"]
    for _ in itertools.count():
        order = rng.sample(train, len(train))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            chunk = order[i:i + batch_size]
            yield ([combined_input(by_id[q["passage_id"]]["title"], by_id[q["passage_id"]]["text"],
                                   q["question"]) for q in chunk], [q["answers"][0] for q in chunk])


def summary(history, metrics):
    """The figures of one reader run."""
    first = next((e for e in history["eval"] if e["dev_em"] >= 0.9), None)
    return {"steps_to_dev_0.9": first and first["step"],
            "seconds_to_dev_0.9": first and round(first["seconds"]),
            "steps": history["step"][-1], "train_seconds": round(history["seconds"][-1]),
            **{k: metrics.get(k) for k in ("test_em", "test_f1", "test_beam4_em",
                                           "test_unseen_names", "test_unseen_names_em",
                                           "test_untrained_answers", "test_untrained_answers_em")}}


def run(name, entities, passages, splits):
    what, overrides, data, with_closed_book = RECIPES[name]
    config = merged(overrides)
    seed = set_seed(config["seed"])
    tokenizer, _ = recipe.build_tokenizer(entities, passages, splits, config["tokenizer"], seed,
                                          config["model"]["max_positions"])
    batch_size = config["reader"]["batch_size"]
    if data == "true":
        examples = true_fact_batches(splits, passages, batch_size, seed)
    else:
        names = (entities if data == "counterfactual"
                 else [e for e in entities if e["split"] == "train"])
        examples = reader_batches(names, batch_size, seed)
    _, history, metrics = recipe.train_reader(tokenizer, passages, splits, config["reader"],
                                              config["model"], seed, examples)
    result = {"what": what, "config": config, "vocab_size": len(tokenizer),
              "reader": summary(history, metrics),
              "dev_curve": [(e["step"], round(e["dev_em"], 3)) for e in history["eval"]]}
    if with_closed_book:
        _, _, closed = recipe.train_closed_book(tokenizer, entities, splits, config["closed_book"],
                                                config["model"], seed)
        result["closed_book"] = {k: closed[k] for k in ("train_em", "test_em")}
    return result


def from_checkpoints():
    """The committed recipe's figures, from the records beside its weights."""
    reader = json.loads((ROOT / "checkpoints" / "reader" / "training.json").read_text())
    closed = json.loads((ROOT / "checkpoints" / "closed_book" / "training.json").read_text())
    return {"what": "the committed recipe (scripts/train_generation.py)",
            "config": reader["config"], "vocab_size": reader["vocab_size"],
            "reader": summary(reader["history"] | {"seconds": [reader["train_seconds"]]},
                              reader["metrics"]),
            "dev_curve": [(e["step"], round(e["dev_em"], 3)) for e in reader["history"]["eval"]],
            "closed_book": {k: closed["metrics"][k] for k in ("train_em", "test_em")}}


def _cell(value, digits=3):
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"


def table(results):
    lines = [
        "## Chapter 03: the reader recipe search",
        "",
        "Written by `python benchmarks/generation_recipes.py` (one torch thread per run; other "
        "jobs shared the 2-core machine, so compare steps rather than seconds). Each row changes "
        "one thing in the committed recipe: word-level tokens, tied embeddings, d_model 64, 3+3 "
        "layers, 4 heads, FFN 128, batches of 64 counterfactual examples drawn fresh, AdamW at lr "
        "2e-3 with 300 warm-up steps, 2,000 steps, seed 0. *Dev 0.9 at*: first evaluation (every "
        "250 steps) with dev exact match >= 0.9, gold passage. *Test*: exact match / F1 on the "
        "test split with the gold passage after the whole run, greedy (beam: 4 beams). *Unseen "
        "names*: test questions whose entity name or answer has a token absent from every training "
        "input, and the reader's exact match on them. *Untrained answers*: test questions whose "
        "answer was never a training target. *Closed-book*: the same model trained on the training "
        "entities' true facts (question -> answer), exact match on its training questions / on "
        "test.",
        "",
        "| recipe | V | dev 0.9 at step (s) | test EM | test F1 | beam EM | unseen names: n, EM | "
        "untrained answers: n, EM | closed-book EM train / test |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        reader = r["reader"]
        reached = ("not reached" if reader["steps_to_dev_0.9"] is None else
                   f"{reader['steps_to_dev_0.9']:,} ({reader['seconds_to_dev_0.9']:,})")
        unseen = f"{reader['test_unseen_names']}, {_cell(reader['test_unseen_names_em'])}"
        untrained = (f"{reader['test_untrained_answers']}, "
                     f"{_cell(reader['test_untrained_answers_em'])}")
        closed = r.get("closed_book")
        closed_cell = f"{closed['train_em']:.3f} / {closed['test_em']:.3f}" if closed else "–"
        lines.append(f"| {name}: {r['what']} | {r['vocab_size']:,} | {reached} | "
                     f"{reader['test_em']:.3f} | {reader['test_f1']:.3f} | "
                     f"{_cell(reader['test_beam4_em'])} | {unseen} | {untrained} | {closed_cell} |")
    lines += ["", "Dev exact match every 250 steps:", ""]
    for name, r in results.items():
        lines.append(f"- {name}: " + ", ".join(f"{em:.2f}" for _, em in r["dev_curve"]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(RECIPES), metavar="RECIPE",
                        help=f"recipes to (re)run, among: {', '.join(RECIPES)}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else {}
    entities, passages, splits = recipe.load_knowledge_base()
    results["checkpoint"] = from_checkpoints()
    for name in args.only or RECIPES:
        print(f"recipe {name!r}", flush=True)
        results[name] = run(name, entities, passages, splits)
        print(json.dumps(results[name]["reader"]), flush=True)
        save(results)  # after each recipe, so that a failure later keeps what was measured
    write_section(RESULTS_MD, table(save(results)), BEGIN, END)


def save(results):
    ordered = {key: results[key] for key in ["checkpoint", *RECIPES] if key in results}
    RESULTS_JSON.write_text(json.dumps(ordered, indent=1) + "\n")
    return ordered


if __name__ == "__main__":
    main()
