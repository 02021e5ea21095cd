"""Can the reader write an answer it never saw? Gold passages rewritten to state invented values.

    python benchmarks/invented_values.py [--folder checkpoints]

For test questions about capitals, currencies, demonyms and chemical symbols, the gold passage is
rewritten: every occurrence of the true answer becomes an invented one ("Velmarosk", "Qz"), a
string made of syllables by a seeded generator and kept only if none of its words occurs anywhere
in the knowledge base (passages, questions, entity records) — so no training text holds it. The
reader (``checkpoints/reader``, oracle retrieval) then answers from the rewritten passage, and so do
the generators of the final RAG models (``checkpoints/rag_token``, ``checkpoints/rag_sequence``),
given the question as RAG hands it over (lower-cased by the question encoder's tokenizer); exact
match is against the invented value. Prints each figure and its 95% bootstrap interval, and writes
them to the invented-values section of ``benchmarks/RESULTS.md`` (not with ``--folder``).
"""
import argparse
from pathlib import Path

from ragtutor import RAGModel, data
from ragtutor.generation import CHECKPOINT_DIR, combined_input, generate_answers, load_checkpoint
from ragtutor.metrics import bootstrap_interval, exact_match
from ragtutor.reading import edited_passages
from ragtutor.tools.records import machine, write_section

RESULTS_MD = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def measure(model, tokenizer, cases, questions):
    """Exact match against the invented values: (hits, predictions)."""
    sources = [combined_input(c["title"], c["text"], q) for c, q in zip(cases, questions)]
    predictions = generate_answers(model, tokenizer, sources)
    return [float(exact_match(p, [c["answer"]])) for p, c in zip(predictions, cases)], predictions


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None,
                        help="parent of reader/, rag_token/ and rag_sequence/ (default checkpoints/)")
    args = parser.parse_args(argv)
    folder = args.folder or CHECKPOINT_DIR
    cases = edited_passages(data.load_questions("test"), data.load_passages(), seed=0)
    written = [c["question"]["question"] for c in cases]
    model, tokenizer, _ = load_checkpoint("reader", folder)
    rows = {"the reader (`checkpoints/reader`), the question as written":
            measure(model, tokenizer, cases, written)}
    for variant in ("token", "sequence"):  # the final models' generators, reading what RAG hands them
        rag = RAGModel.from_pretrained(folder / f"rag_{variant}")
        rows[f"the generator of `checkpoints/rag_{variant}`, the question as RAG hands it over"] = \
            measure(rag.generator, rag.generator_tokenizer, cases, rag.questions_as_read(written))
    lines = []
    for name, (hits, predictions) in rows.items():
        low, high = bootstrap_interval(hits)
        misses = [f"{c['answer']} -> {p}" for c, p, h in zip(cases, predictions, hits) if not h]
        print(f"{name}: exact match {sum(hits) / len(hits):.3f} (95% bootstrap interval "
              f"{low:.3f}-{high:.3f}) on {len(hits)} test questions")
        lines += [f"- {name}: exact match **{sum(hits) / len(hits):.3f}** (95% bootstrap interval "
                  f"{low:.3f}-{high:.3f}); the {len(misses)} misses: " + "; ".join(misses) + "."]
    if args.folder is None:
        section = "\n".join([
            "## Invented values: can the reader write an answer it never saw?", "",
            f"Measured with `python benchmarks/invented_values.py` on {machine()}.", "",
            f"The gold passage of {len(cases)} test questions about capitals, currencies, demonyms "
            "and symbols, rewritten to state an invented value whose words occur nowhere in the "
            "knowledge base (nor among the invented names the final models' generators were "
            "trained on: `ragtutor.reading.invent_for_training` draws from another inventory), "
            "given to:", "", *lines, "",
            "The final models' joint training was counterfactual (`scripts/train_rag.py`): every "
            "drawn question about a capital, currency, demonym or symbol had its answer swapped for "
            "an invented name in the retrieved passages and the target, names spelt from the "
            "tokenizer's rarely written pieces (chapter 05, section 5b)."])
        write_section(RESULTS_MD, section, "<!-- invented:begin -->", "<!-- invented:end -->")
        print(f"-> {RESULTS_MD}")


if __name__ == "__main__":
    main()
