"""Can the reader write an answer it never saw? Gold passages rewritten to state invented values.

    python benchmarks/invented_values.py [--folder checkpoints]

For test questions about capitals, currencies, demonyms and chemical symbols, the gold passage is
rewritten: every occurrence of the true answer becomes an invented one ("Velmarosk", "Qz"), a
string made of syllables by a seeded generator and kept only if none of its words occurs anywhere
in the knowledge base (passages, questions, entity records) — so no training text holds it. The
reader (``checkpoints/reader``, oracle retrieval) then answers from the rewritten passage; exact
match is against the invented value. Prints the figure and its 95% bootstrap interval, and writes
them to the invented-values section of ``benchmarks/RESULTS.md`` (not with ``--folder``).
"""
import argparse
from pathlib import Path

from ragtutor import data
from ragtutor.generation import combined_input, generate_answers, load_checkpoint
from ragtutor.metrics import bootstrap_interval, exact_match
from ragtutor.reading import edited_passages
from ragtutor.tools.records import machine, write_section

RESULTS_MD = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="parent of reader/ (default checkpoints/)")
    args = parser.parse_args(argv)
    model, tokenizer, _ = load_checkpoint("reader", args.folder)
    cases = edited_passages(data.load_questions("test"), data.load_passages(), seed=0)
    sources = [combined_input(c["title"], c["text"], c["question"]["question"]) for c in cases]
    targets = [c["answer"] for c in cases]
    predictions = generate_answers(model, tokenizer, sources)
    hits = [float(exact_match(p, [t])) for p, t in zip(predictions, targets)]
    low, high = bootstrap_interval(hits)
    print(f"invented values: exact match {sum(hits) / len(hits):.3f} (95% bootstrap interval "
          f"{low:.3f}-{high:.3f}) on {len(hits)} test questions")
    for source, p, t in list(zip(sources, predictions, targets))[:8]:
        print(f"  {t!r:14} <- {p!r:14} | {source.split(' // ')[-1]}")
    if args.folder is None:
        misses = [f"{t} -> {p}" for p, t, h in zip(predictions, targets, hits) if not h]
        section = "\n".join([
            "## Invented values: can the reader write an answer it never saw?", "",
            f"Measured with `python benchmarks/invented_values.py` on {machine()}.", "",
            f"The reader (`checkpoints/reader`) given the gold passage of {len(hits)} test questions "
            f"about capitals, currencies, demonyms and symbols, rewritten to state an invented value "
            f"whose words occur nowhere in the knowledge base: exact match "
            f"**{sum(hits) / len(hits):.3f}** (95% bootstrap interval {low:.3f}-{high:.3f}).", "",
            f"The {len(misses)} misses: " + "; ".join(misses) + "."])
        write_section(RESULTS_MD, section, "<!-- invented:begin -->", "<!-- invented:end -->")
        print(f"-> {RESULTS_MD}")


if __name__ == "__main__":
    main()
