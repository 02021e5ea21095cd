"""Chapter 10's checkpoints: each training script reproduces the start of the run its checkpoint
recorded (tests/reproduction.py says why the start), and every checkpoint loads, checked against
its manifest."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reproduction import assert_same_start

ROOT = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 0.01

# (script, arguments, checkpoint folder, steps rerun, {metric: tolerance} at step 0)
RUNS = {
    "reranker": ("train_reranker.py", [], "reranker", 100, {"dev_pooled_recall@1": 0.01}),
    "two_fact_fid": ("train_two_fact.py", ["--only", "fid"], "two_fact_fid", 100,
                     {"dev_em": 0.01}),
    "two_fact_rag_sequence": ("train_two_fact.py", ["--only", "rag_sequence"],
                              "two_fact_rag_sequence", 100, {"dev_em": 0.01}),
    "prompt_encoder_decoder": ("train_decoder_reader.py", ["--only", "encoder_decoder"],
                               "prompt_encoder_decoder", 100, {"dev_em": 0.01}),
    "prompt_decoder": ("train_decoder_reader.py", ["--only", "decoder"], "prompt_decoder", 50,
                       {"dev_em": 0.01}),
    "factual_reader": ("train_factual_reader.py", [], "factual_reader", 100, {"dev_em": 0.01}),
}


@pytest.mark.slow
@pytest.mark.parametrize("run", sorted(RUNS))
def test_script_reproduces_the_start_of_its_recorded_run(run, tmp_path):
    script, arguments, name, steps, evaluations = RUNS[run]
    out = tmp_path / name if script == "train_reranker.py" else tmp_path
    subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--out", str(out),
                    "--threads", "1", "--stop-after", str(steps), *arguments],
                   check=True, cwd=ROOT, capture_output=True)
    recorded = json.loads((ROOT / "checkpoints" / name / "training.json").read_text())
    fresh = json.loads((tmp_path / name / "training.json").read_text())
    assert fresh["config"] == recorded["config"] and fresh["stop_after"] == steps
    assert_same_start(fresh["history"], recorded["history"], steps, LOSS_TOLERANCE, evaluations)


def test_every_checkpoint_of_the_chapter_loads_after_its_manifest_check():
    from ragtutor.decoder_only import DecoderOnlyReader
    from ragtutor.generation import load_checkpoint
    from ragtutor.rerank import CrossEncoder

    CrossEncoder.from_pretrained(ROOT / "checkpoints" / "reranker")
    DecoderOnlyReader.from_pretrained(ROOT / "checkpoints" / "prompt_decoder")
    for name in ("two_fact_fid", "two_fact_rag_sequence", "two_fact_rag_token",
                 "prompt_encoder_decoder", "factual_reader"):
        model, _, record = load_checkpoint(name)
        assert record["parameters"] == sum(p.numel() for p in model.parameters())
