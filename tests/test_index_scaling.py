"""benchmarks/index_scaling.py on a small synthetic set: the table's rows, exact Flat, the
Wikipedia calculation."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "index_scaling.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("index_scaling", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(bench):
    return bench.measure(5000, threads=1, n_latency=5, nlist=32, log=lambda *a, **k: None)


def test_synthetic_vectors_are_unit_length_and_reproducible(bench):
    vectors, queries = bench.make_vectors(2000, n_queries=50)
    assert vectors.shape == (2000, bench.DIM) and queries.shape == (50, bench.DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(bench.make_vectors(2000, n_queries=50)[0], vectors)


def test_every_index_and_setting_has_a_row(results):
    settings = [(r["index"].split(" ")[0], r["setting"]) for r in results["rows"]]
    assert settings == [
        ("Flat", "exact"), ("IVF-Flat", "nprobe=1"), ("IVF-Flat", "nprobe=8"),
        ("IVF-Flat", "nprobe=32"), ("HNSW-Flat", "efSearch=16"), ("HNSW-Flat", "efSearch=64"),
        ("HNSW-Flat", "efSearch=256"), ("PQ", "m=8, 8 bits"), ("PQ", "m=16, 8 bits"),
        ("IVF-PQ", "nprobe=8"), ("IVF-PQ", "nprobe=32")]
    for row in results["rows"]:
        assert 0 <= row["recall_at_10"] <= 1
        assert row["bytes"] > 0 and row["batch1_median_ms"] > 0 and row["batch1000_qps"] > 0
        assert row["bytes_per_vector"] == pytest.approx(row["bytes"] / 5000)


def test_flat_is_exact_and_nprobe_over_every_cell_is_too(results, bench):
    rows = {(r["index"].split(" ")[0], r["setting"]): r for r in results["rows"]}
    assert rows[("Flat", "exact")]["recall_at_10"] == 1.0
    assert rows[("Flat", "exact")]["bytes_per_vector"] == pytest.approx(4 * 64, abs=1)
    assert rows[("IVF-Flat", "nprobe=32")]["recall_at_10"] == pytest.approx(1.0, abs=0.01)
    codes = rows[("PQ", "m=8, 8 bits")]["bytes"] - bench.codebook_bytes(64)
    assert codes / 5000 == pytest.approx(8, abs=0.1)


def test_wikipedia_calculation_starts_from_64_5_gb_for_flat(results, bench):
    estimates = {e["index"]: e for e in results["extrapolation"]["indexes"]}
    assert estimates["Flat"]["gb"] == pytest.approx(4 * 768 * 21e6 / 1e9, abs=0.01)
    hnsw = next(e for name, e in estimates.items() if name.startswith("HNSW"))
    assert estimates["Flat"]["gb"] < hnsw["gb"] < 1.2 * estimates["Flat"]["gb"]
    assert estimates["PQ, 64 bytes"]["gb"] == pytest.approx(64 * 21e6 / 1e9, abs=0.01)
    section = bench.report(results)
    assert section.count("\n| ") == 2 * 2 + len(results["rows"]) + len(estimates)
