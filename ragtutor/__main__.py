"""The course's command line.

    python -m ragtutor ask "What is the capital of France?"
    python -m ragtutor ask "capital of atlantis" --model checkpoints/rag_sequence
    python -m ragtutor check                       # the environment check of chapter 00

``ask`` answers with the course's final model (``checkpoints/rag_token`` by default) and its
calibrated abstention rule (``ragtutor.qa``): the answer and the passages it cites, or "I don't
know" with the best guess it declined. Exit status 0 for an answer or an abstention, 2 for a
question it cannot take (empty, or a folder that is not a model).
"""
import argparse
import sys
import textwrap
import warnings
from pathlib import Path


def _ask(args):
    from ragtutor.generation import CHECKPOINT_DIR
    from ragtutor.qa import QASystem

    folder = Path(args.model) if args.model else CHECKPOINT_DIR / "rag_token"
    overrides = {} if args.threshold is None else {"threshold": args.threshold}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qa = QASystem.from_pretrained(folder, **overrides)
        reply = qa.ask(args.question)
    for warning in caught:
        if warning.category.__name__ == "UnknownQueryWarning":
            print(f"note: {warning.message}", file=sys.stderr)
    if reply.abstained:
        print(f"I don't know. ({reply.signal} {reply.confidence:.4f} is below the threshold "
              f"{reply.threshold:.4f}; the best guess, declined, was {reply.draft!r})")
    else:
        print(reply.answer)
    print(f"  confidence: {reply.signal} = {reply.confidence:.4f}"
          + ("" if qa.threshold is None else f" (answers at {qa.threshold:.4f} or more)"))
    label = "closest passages" if reply.abstained else "cited"
    for c in reply.citations[:args.citations]:
        text = textwrap.shorten(c["text"], 90, placeholder=" …")
        print(f"  {label}: {c['id']} ({c['title']}) posterior {c['posterior']:.2f}, prior "
              f"{c['prior']:.2f} — {text}")
    return 0


def _check(args):
    from ragtutor import check_environment

    check_environment()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ragtutor", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer a question with citations, or say 'I don't know'")
    ask.add_argument("question")
    ask.add_argument("--model", help="a RAGModel folder (default checkpoints/rag_token)")
    ask.add_argument("--threshold", type=float,
                     help="answer when the confidence reaches this (default: the calibrated one)")
    ask.add_argument("--citations", type=int, default=3, help="how many passages to show (default 3)")
    commands.add_parser("check", help="check the environment (chapter 00)")
    args = parser.parse_args(argv)
    if args.command == "ask":
        if not args.question.strip():
            parser.error("the question is empty: ask in words, e.g. "
                         "python -m ragtutor ask \"What is the capital of France?\"")
        if args.citations < 0:
            parser.error(f"--citations must be 0 or more, got {args.citations}")
        try:
            return _ask(args)
        except (FileNotFoundError, ValueError, TypeError) as error:
            print(f"python -m ragtutor ask: error: {error}", file=sys.stderr)
            return 2
    return _check(args)


if __name__ == "__main__":
    sys.exit(main())
