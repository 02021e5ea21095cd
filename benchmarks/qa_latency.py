"""How long chapter 07's question-answering system takes to answer: cold and warm.

    python benchmarks/qa_latency.py [--repeat 5]

Cold: the wall time of ``python -m ragtutor ask "<question>"`` in a fresh process — starting
Python, importing torch and transformers, loading ``checkpoints/rag_token`` and its calibrated
rule, answering one question — the median of ``--repeat`` runs per question. Warm: inside one
process with the system loaded, ``QASystem.ask`` on 100 test questions one at a time, the median
and 90th percentile, with one torch thread and with two. Writes the latency section of
``benchmarks/RESULTS.md``. (Kept out of the notebook: a second Python with torch loaded would
add its memory to the chapter's.)
"""
import argparse
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ragtutor import data
from ragtutor.generation import CHECKPOINT_DIR
from ragtutor.qa import QASystem
from ragtutor.tools.records import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
QUESTIONS = ("What is the capital of France?", "What is the capital of Atlantis?")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    cold = {}
    for question in QUESTIONS:
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ragtutor", "ask", question], check=True,
                           capture_output=True, cwd=ROOT)
            times.append(time.perf_counter() - start)
        cold[question] = statistics.median(times)
        print(f"cold {question!r}: {cold[question]:.2f} s (median of {args.repeat})")
    warnings.simplefilter("ignore")
    qa = QASystem.from_pretrained(CHECKPOINT_DIR / "rag_token")
    questions = [q["question"] for q in data.load_questions("test")[:100]]
    warm = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        qa.ask(questions[0])
        times = []
        for question in questions:
            start = time.perf_counter()
            qa.ask(question)
            times.append(time.perf_counter() - start)
        warm[threads] = (float(np.median(times)), float(np.percentile(times, 90)))
        print(f"warm, {threads} thread(s): median {warm[threads][0] * 1000:.0f} ms, "
              f"90th percentile {warm[threads][1] * 1000:.0f} ms")
    rows = [f"| cold: `python -m ragtutor ask {q!r}` | {t:.1f} s (median of {args.repeat}) |"
            for q, t in cold.items()]
    rows += [f"| warm, {threads} torch thread{'s' if threads > 1 else ''}: one test question at a "
             f"time (100) | median {m * 1000:.0f} ms, 90th percentile {p * 1000:.0f} ms |"
             for threads, (m, p) in warm.items()]
    section = "\n".join([
        "## Question answering: how long an answer takes (chapter 07)", "",
        f"Measured with `python benchmarks/qa_latency.py` on {machine()}. Cold: a fresh Python "
        "process (imports, model and rule loaded, one question). Warm: the system loaded, "
        "`QASystem.ask` — generation and the scoring pass — on one question at a time.", "",
        "| what | time |", "| --- | --- |", *rows])
    write_section(RESULTS_MD, section, "<!-- latency:begin -->", "<!-- latency:end -->")
    print(f"-> {RESULTS_MD}")


if __name__ == "__main__":
    main()
