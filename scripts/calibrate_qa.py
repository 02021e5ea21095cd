"""Choose chapter 07's abstention rule on dev questions: checkpoints/qa_calibration.json.

    python scripts/calibrate_qa.py
    python scripts/calibrate_qa.py --max-answered 0.10 --out /tmp/calibration.json

For each final model (``checkpoints/rag_token``, ``checkpoints/rag_sequence``), every signal of
``ragtutor.qa.SIGNALS`` is computed on the answerable dev questions (seen, new and typed phrasings)
and on the hand-written unanswerable dev questions (``data.load_unanswerable("dev")``). For each signal the
threshold is the lowest at which at most ``--max-answered`` of the unanswerable dev questions are
answered (``ragtutor.qa.threshold_for``); the rule uses the signal whose threshold answers the most
answerable dev questions (how well it separates the two groups over every threshold,
``ragtutor.qa.separation``, the area under the ROC curve, breaks a tie). No test question is read. The file also
records, per model and signal, the separation and what the rule does on dev. Deterministic: the
same checkpoints give the same file.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from ragtutor import data
from ragtutor.metrics import exact_match
from ragtutor.qa import CALIBRATION_FILE, SIGNALS, QASystem, separation, threshold_for
from ragtutor.tools.records import versions

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("rag_token", "rag_sequence")


def calibrate(folder, answerable, unanswerable, max_answered):
    qa = QASystem.from_pretrained(folder, threshold=None)
    a_signals, drafts = qa.signals([q["question"] for q in answerable])
    u_signals, _ = qa.signals([q["question"] for q in unanswerable])
    right = [exact_match(d, q["answers"]) for d, q in zip(drafts, answerable)]
    per_signal = {}
    for name in SIGNALS:
        threshold = threshold_for(u_signals[name], max_answered)
        answered = a_signals[name] >= threshold
        per_signal[name] = {
            "separation": round(separation(a_signals[name], u_signals[name]), 4),
            "threshold": threshold,
            "dev_answerable_answered": round(float(answered.mean()), 4),
            "dev_accuracy_when_answered": round(float(sum(r for r, a in zip(right, answered) if a)
                                                      / max(1, answered.sum())), 4),
            "dev_unanswerable_answered": round(float((u_signals[name] >= threshold).mean()), 4)}
    # The rule's job is to answer as many answerable questions as it can within the limit: the
    # signal that does so on dev wins (separation, over every threshold, breaks a tie).
    best = max(SIGNALS, key=lambda name: (per_signal[name]["dev_answerable_answered"],
                                          per_signal[name]["separation"]))
    return {"signal": best, "threshold": per_signal[best]["threshold"],
            "dev_exact_match_without_abstaining": round(sum(right) / len(right), 4),
            "signals": per_signal}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-answered", type=float, default=0.05,
                        help="the share of unanswerable dev questions the rule may answer (0.05)")
    parser.add_argument("--out", type=Path, default=ROOT / "checkpoints" / CALIBRATION_FILE)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    answerable = [q for phrasing in ("seen", "new", "typed")
                  for q in data.load_questions("dev", phrasing=phrasing)]
    unanswerable = data.load_unanswerable("dev")
    record = {"command": " ".join(["python scripts/calibrate_qa.py", *argv]),
              "versions": versions("torch", "transformers"),
              "max_answered": args.max_answered,
              "dev_questions": {"answerable": len(answerable), "unanswerable": len(unanswerable)},
              "models": {}}
    for name in MODELS:
        record["models"][name] = calibrate(ROOT / "checkpoints" / name, answerable, unanswerable,
                                           args.max_answered)
        rule = record["models"][name]
        chosen = rule["signals"][rule["signal"]]
        print(f"{name}: {rule['signal']} >= {rule['threshold']:.4g} (separation "
              f"{chosen['separation']:.3f}); on dev it answers {chosen['dev_answerable_answered']:.3f}"
              f" of the answerable questions ({chosen['dev_accuracy_when_answered']:.3f} right) and "
              f"{chosen['dev_unanswerable_answered']:.3f} of the unanswerable ones")
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
