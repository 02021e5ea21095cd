"""Run time and peak memory of every notebook, with two threads and with one, against the budgets in the README.

    python benchmarks/notebooks.py                                  # every chapter, 2 and 1 threads
    python benchmarks/notebooks.py notebooks/00_welcome.ipynb --repeat 3

Each run executes a notebook top to bottom in a fresh kernel of this Python, in the notebook's
folder, as a learner's "Run all" does:

- wall time runs from the first cell to the end of the last (kernel start-up excluded);
- peak memory is the largest sum, over the kernel and every process it started (Ray's processes
  and actors, data-parallel workers, their children), of each process's proportional set size
  (PSS: its private memory plus its share of the pages it shares with others, so that a library
  mapped by five processes counts once, as the machine's memory does), sampled every second while
  the notebook runs; the kernel's own maximum resident set (getrusage, read by one extra cell
  after the notebook's last) is a floor under it, for a peak shorter than a sample;
- the thread count goes to the kernel through OMP_NUM_THREADS, MKL_NUM_THREADS,
  OPENBLAS_NUM_THREADS and RAYON_NUM_THREADS, and the extra cell checks that torch uses it.

With ``--repeat N`` a figure is the median time and the largest peak over N runs. When every
chapter runs, the table goes between the markers of the notebooks section in benchmarks/RESULTS.md
(the rest of the file is kept); a run of some notebooks only prints its table (``--output`` writes
it to a file of your choice). Budgets: the time of each chapter with two threads (the 2-core development machine), and
1.5 GB of peak memory with any thread count. The exit status is 1 when a budget is exceeded.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import psutil

from ragtutor.tools.records import machine, write_section
from ragtutor.tools.testing import CurrentEnvNotebookClient

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- notebooks:begin -->", "<!-- notebooks:end -->"
BUDGET_MINUTES = {"00": 1, "01": 2, "02": 3, "03": 3, "04": 2, "05": 4, "06": 3, "07": 3, "08": 3,
                  "09": 3, "10": 3}
COURSE_BUDGET_MINUTES = 20
PEAK_BUDGET_BYTES = 1.5e9
BUDGET_THREADS = 2  # the time budgets are for the 2-core development machine
THREAD_VARIABLES = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "RAYON_NUM_THREADS"]

# Runs in the kernel after the notebook. Memory is read before torch is imported for the check.
PROBE = """\
import json, resource, sys
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import torch
print(json.dumps({"peak_bytes": maxrss * (1 if sys.platform == "darwin" else 1024),
                  "torch_threads": torch.get_num_threads()}))
"""


class TreeMemory:
    """Samples, in a thread, the summed PSS of a process and all its descendants; ``peak`` is
    the largest sum seen."""

    def __init__(self, pid, every=1.0):
        self.root, self.every, self.peak = psutil.Process(pid), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            total = 0
            try:
                tree = [self.root] + self.root.children(recursive=True)
            except psutil.Error:  # the kernel is gone
                return
            for process in tree:
                try:
                    total += process.memory_full_info().pss
                except psutil.Error:  # ended between the listing and the reading
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_once(path, threads, timeout):
    """Execute the notebook at ``path`` in a fresh kernel: (seconds, peak bytes)."""
    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}
    client = CurrentEnvNotebookClient(nb, timeout=timeout,
                                      resources={"metadata": {"path": str(path.parent)}})
    # The kernel's stderr carries only ipykernel's start-up warnings; a failing cell still raises.
    with client.setup_kernel(env=env, stderr=subprocess.DEVNULL):
        with TreeMemory(client.km.provisioner.process.pid) as memory:
            start = time.perf_counter()
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            seconds = time.perf_counter() - start
        probe = nbformat.v4.new_code_cell(PROBE)
        nb.cells.append(probe)  # nbclient stores each executed cell back into the notebook
        client.execute_cell(probe, len(nb.cells) - 1)
    # The probe's own line: the last stdout line that is JSON (a thread of the notebook's may still
    # print beside it).
    lines = [line for output in probe.outputs if output.get("name") == "stdout"
             for line in output["text"].splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{path.name}: the memory probe printed nothing: {probe.outputs!r}")
    report = json.loads(lines[-1])
    if report["torch_threads"] != threads:
        raise RuntimeError(f"{path.name}: asked for {threads} threads, but torch in the kernel "
                           f"uses {report['torch_threads']}")
    return seconds, max(memory.peak, report["peak_bytes"])


def duration(seconds):
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def table(notebooks, thread_counts, results, repeat, complete):
    """The markdown section, and whether every figure is within its budget."""
    within_all = True
    header = (["notebook", "time budget"] + [f"time, {t} thread{'s' * (t > 1)}" for t in thread_counts]
              + [f"peak memory, {t} thread{'s' * (t > 1)}" for t in thread_counts]
              + ["within budget"])
    rows = []
    for path in notebooks + [None]:
        if path is None:  # the whole course: times add up, the peak is the largest
            name = "**whole course**" if complete else (
                f"total ({len(notebooks)} notebook{'s' * (len(notebooks) > 1)})")
            budget = COURSE_BUDGET_MINUTES if complete else None
            times = {t: sum(results[p, t][0] for p in notebooks) for t in thread_counts}
            peaks = {t: max(results[p, t][1] for p in notebooks) for t in thread_counts}
        else:
            name, budget = path.stem, BUDGET_MINUTES.get(path.name[:2])
            times = {t: results[path, t][0] for t in thread_counts}
            peaks = {t: results[path, t][1] for t in thread_counts}
        within = all(peak <= PEAK_BUDGET_BYTES for peak in peaks.values())
        if budget is not None and BUDGET_THREADS in times:
            within &= times[BUDGET_THREADS] <= budget * 60
        within_all &= within
        rows.append([name, f"{budget} min" if budget else "—"]
                    + [duration(times[t]) for t in thread_counts]
                    + [f"{peaks[t] / 1e9:.2f} GB" for t in thread_counts]
                    + ["yes" if within else "**no**"])
    lines = ["## Notebooks: run time and peak memory", "",
             f"Measured on {datetime.date.today().isoformat()} with "
             f"`python benchmarks/notebooks.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`"
             f" on {machine()}.", "",
             "Each notebook runs top to bottom in a fresh kernel. Time: from the first cell to the "
             "end of the last" + (f", median of {repeat} runs" if repeat > 1 else "") + ". Peak "
             "memory: the largest sum of the proportional set sizes of the kernel and every "
             "process it started, sampled every second"
             + (f", the largest of {repeat} runs" if repeat > 1 else "") + ". Budgets: "
             f"each chapter's run time with {BUDGET_THREADS} threads (the README's chapter table), "
             f"{COURSE_BUDGET_MINUTES} min for the whole course, {PEAK_BUDGET_BYTES / 1e9} GB of "
             "peak memory for any notebook.", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines), within_all


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: every notebooks/*.ipynb)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per notebook and thread count")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                        help="thread counts to measure (default: 2 1)")
    parser.add_argument("--cell-timeout", type=int, default=600, help="seconds one cell may take")
    parser.add_argument("--output", type=Path,
                        help="file whose notebooks section gets the table (default: "
                             "benchmarks/RESULTS.md when every chapter runs; a partial run only "
                             "prints its table, so that it cannot replace the whole course's)")
    args = parser.parse_args()
    chapters = sorted((ROOT / "notebooks").glob("*.ipynb"))
    notebooks = [path.resolve() for path in args.notebooks] or chapters
    if not notebooks:
        parser.error("no notebooks given and none in notebooks/")
    if args.repeat < 1 or min(args.threads) < 1:
        parser.error("--repeat and --threads take positive numbers")

    results = {}
    for path in notebooks:
        for threads in args.threads:
            runs = [run_once(path, threads, args.cell_timeout) for _ in range(args.repeat)]
            results[path, threads] = (statistics.median(s for s, _ in runs), max(p for _, p in runs))
            print(f"{path.name}, {threads} thread(s): {duration(results[path, threads][0])}, "
                  f"peak {results[path, threads][1] / 1e9:.2f} GB", flush=True)
    complete = bool(chapters) and set(chapters) <= set(notebooks)
    section, within = table(notebooks, args.threads, results, args.repeat, complete)
    output = args.output or (ROOT / "benchmarks" / "RESULTS.md" if complete else None)
    if output is None:
        print(section)
        print("not all chapters ran: benchmarks/RESULTS.md is left as it is (pass --output to "
              "write this table somewhere)" + ("" if within else "; some figures are over budget"))
    else:
        write_section(output, section, BEGIN, END)
        print(f"wrote {output}" + ("" if within else "; some figures are over budget"))
    sys.exit(0 if within else 1)


if __name__ == "__main__":
    main()
