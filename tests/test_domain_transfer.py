"""benchmarks/domain_transfer.py: the recorded arms (chapter 08's held-out-domain table) and the
start of their training, rerun."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reproduction import assert_same_start

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "domain_transfer.py"
RECORDED = json.loads((ROOT / "benchmarks" / "domain_transfer.json").read_text())


def test_every_arm_is_recorded_with_its_history_and_the_table_chapter_08_shows():
    assert set(RECORDED) == {"both", "countries", "mix01", "mix05"}
    for name, arm in RECORDED.items():
        assert arm["stop_after"] is None and arm["steps"] == 2500, name
        assert arm["history"]["step"][-1] == 2500 and len(arm["history"]["loss"]) == 50, name
        for domain, n in (("country", 387), ("element", 151)):
            result = arm[domain]
            assert result["n"] == n and result["low"] <= result["em"] <= result["high"], name
    # What chapter 08 says of them.
    assert RECORDED["countries"]["element"]["em"] == 0.0
    assert RECORDED["both"]["element"]["em"] == 1.0
    assert (RECORDED["countries"]["element"]["em"] < RECORDED["mix01"]["element"]["em"]
            < RECORDED["mix05"]["element"]["em"])


def test_a_partial_run_must_not_overwrite_the_recorded_arms():
    run = subprocess.run([sys.executable, str(SCRIPT), "--arms", "countries", "--stop-after", "10"],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0 and "give --out" in run.stderr


# As for the training scripts (tests/reproduction.py), the first steps of an arm are rerun and
# compared with its recorded loss windows. The two arms cover the two ways examples are drawn: one
# domain's stream, and two streams mixed at a share.
REPRODUCE_STEPS = 200
LOSS_TOLERANCE = 0.01


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["countries", "mix05"])
def test_an_arm_reproduces_the_start_of_its_recorded_run(arm, tmp_path):
    out = tmp_path / "arms.json"
    subprocess.run([sys.executable, str(SCRIPT), "--arms", arm, "--stop-after",
                    str(REPRODUCE_STEPS), "--out", str(out)], check=True, cwd=ROOT,
                   capture_output=True)
    fresh = json.loads(out.read_text())[arm]
    assert fresh["stop_after"] == REPRODUCE_STEPS and fresh["steps"] == RECORDED[arm]["steps"]
    assert_same_start(fresh["history"], RECORDED[arm]["history"], REPRODUCE_STEPS, LOSS_TOLERANCE)
