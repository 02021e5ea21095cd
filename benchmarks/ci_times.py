"""Where the time of `.ci/run` goes: the install, and the test run's unit tests, slow tests and notebooks.

    python benchmarks/ci_times.py summarize --install 180 --tests 900 --junit .ci/junit.xml \\
        --out .ci/times.json                       # .ci/run does this after its test run
    python benchmarks/ci_times.py report quiet.json busy.json   # the table into RESULTS.md

``summarize`` reads the JUnit report of the test run (pytest ``--junitxml``) and adds up the
durations of its tests in three groups: the notebooks (every cell nbval runs), the slow tests
(marked ``slow``; the ``ragtutor.tools.testing`` plugin records the marker in the report) and the unit
tests (the rest). pytest runs on every core (pytest-xdist), so these sums are worker time, not
wall time: on two workers the wall time of the test run is about half their total, or more when
one worker waits for the other's last long test. It prints the summary and saves it as JSON.

``report`` writes the table of one or more summaries (a quiet run and a run beside another heavy
process, say) between the CI markers of benchmarks/RESULTS.md, keeping the rest of the file.
CI's budget is 45 minutes for all of `.ci/run`, on the 2-core development machine, busy or not.
"""
import argparse
import datetime
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from ragtutor.tools.records import machine, write_section

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- ci:begin -->", "<!-- ci:end -->"
BUDGET_MINUTES = 45
GROUPS = ("unit tests", "slow tests", "notebooks")


def group_times(junit):
    """{group: [tests, seconds]} from the JUnit report at ``junit``."""
    totals = {group: [0, 0.0] for group in GROUPS}
    for case in ElementTree.parse(junit).iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        if (case.get("file") or case.get("classname", "")).startswith("notebooks"):
            group = "notebooks"
        elif properties.get("slow") == "true":
            group = "slow tests"
        else:
            group = "unit tests"
        totals[group][0] += 1
        totals[group][1] += float(case.get("time") or 0)
    return totals


def minutes(seconds):
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def summarize(args):
    summary = {"date": datetime.date.today().isoformat(), "label": args.label,
               "machine": machine(), "install_seconds": args.install,
               "tests_seconds": args.tests, "groups": group_times(args.junit)}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    total = args.install + args.tests
    print(f"install {minutes(args.install)}, tests {minutes(args.tests)}, "
          f"all {minutes(total)} (budget {BUDGET_MINUTES} min)")
    for group, (count, seconds) in summary["groups"].items():
        print(f"  {group:<11} {count:4d} tests  {minutes(seconds)} of worker time")


def report(args):
    runs = [json.loads(path.read_text()) for path in args.summaries]
    lines = ["## `.ci/run`: where the time goes", "",
             f"Measured with `bash .ci/run` on a fresh clone, {runs[0]['machine']}; summaries by "
             "`python benchmarks/ci_times.py`. Install: a fresh virtual environment and "
             "`python scripts/install.py` (pip on requirements.txt, then requirements-site.txt, and "
             "Debian's chromium where missing) on a machine where pip already had the "
             "packages (a first download adds its own time). Tests: the README's `pytest`, on "
             "both cores. The three groups add up each test's duration over "
             "the two workers (worker time), so they exceed the tests' wall time. Budget: "
             f"{BUDGET_MINUTES} min for the whole of `.ci/run`, busy machine or not.", "",
             "| run | date | install | tests (wall) | whole `.ci/run` | unit tests | slow tests "
             "| notebooks |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        groups = [f"{minutes(s)} ({n})" for n, s in (run["groups"][g] for g in GROUPS)]
        lines.append(f"| {run['label']} | {run['date']} | {minutes(run['install_seconds'])} | "
                     f"{minutes(run['tests_seconds'])} | "
                     f"{minutes(run['install_seconds'] + run['tests_seconds'])} | "
                     + " | ".join(groups) + " |")
    lines += ["", "In brackets: the number of tests (for the notebooks, of cells)."]
    write_section(args.output, "\n".join(lines), BEGIN, END)
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("summarize", help="sum one test run's JUnit report")
    one.add_argument("--install", type=float, required=True, help="seconds the install took")
    one.add_argument("--tests", type=float, required=True, help="seconds the test run took")
    one.add_argument("--junit", type=Path, required=True, help="pytest's --junitxml report")
    one.add_argument("--label", default="quiet machine", help="what else the machine was doing")
    one.add_argument("--out", type=Path, required=True, help="where to save the summary (JSON)")
    table = commands.add_parser("report", help="write summaries' table into RESULTS.md")
    table.add_argument("summaries", nargs="+", type=Path)
    table.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    (summarize if args.command == "summarize" else report)(args)


if __name__ == "__main__":
    main()
