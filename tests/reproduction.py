"""Comparing the start of a rerun of a training script with the run its checkpoint recorded.

Every checkpoint's ``training.json`` keeps its run's history: the mean training loss over each
logging window (50 steps, or 10 for joint RAG training) and the evaluations made along the way.
The slow tests rerun a script for the *start* of that run (``--stop-after N``; the schedule is
the full run's) and compare the rerun's history with the recorded one, window by window.

Why the start, and why a small tolerance rather than none. With the same code, seed and data, two
machines differ only in the order of floating-point sums (vector width, BLAS kernels, thread
count), and training amplifies those differences over time. Measured on the retriever
(``scripts/train_retriever.py``, seed 0), its recording machine against a rerun on another machine
with 1 and with 2 threads: the 50-step loss windows agree to four decimals up to step 200, differ
by at most 1e-4 up to step 650, by 4e-3 at step 800 and by 1e-2 at step 1,000 — the middle of the
jump in dev Recall@1 from 0.3 to 0.7, where one step more or less of progress moves the metric by
0.05 and a comparison of Recall@1 at step 1,000 failed on a new machine. Early in a run, before
such a jump, the curves are the same curve; a change to the model, the loss, the data, the batch
order or the schedule moves them far more than the tolerance (each test names what it catches).
"""
import math

__all__ = ["assert_same_start"]


def assert_same_start(rerun, recorded, until, loss_tolerance, eval_tolerance=None):
    """Assert that ``rerun``'s history is ``recorded``'s up to step ``until``.

    ``rerun`` and ``recorded`` are history dicts with ``step`` and ``loss`` lists (the mean loss of
    each logging window, ending at that step) and optionally ``eval``, a list of dicts with a
    ``step`` and metric values. Every loss window that ends at or before ``until`` must agree
    within ``loss_tolerance``; with ``eval_tolerance`` (``{metric: tolerance}``), every recorded
    evaluation at or before ``until`` must be in the rerun and agree on those metrics.
    """
    expected = [(s, l) for s, l in zip(recorded["step"], recorded["loss"]) if s <= until]
    got = [(s, l) for s, l in zip(rerun["step"], rerun["loss"]) if s <= until]
    assert expected, f"the recorded history has no loss window up to step {until}"
    assert [s for s, _ in got] == [s for s, _ in expected], (
        "the rerun logged the loss at other steps than the recorded run: "
        f"{[s for s, _ in got]} vs {[s for s, _ in expected]}")
    gaps = [(s, a, b, abs(a - b)) for (s, a), (_, b) in zip(got, expected)]
    worst = max(gaps, key=lambda g: g[3] if math.isfinite(g[3]) else math.inf)
    departed = [g for g in gaps if not g[3] <= loss_tolerance]
    assert not departed, (
        f"the loss curve departs from the recorded one (tolerance {loss_tolerance}) first at step "
        f"{departed[0][0]}: {departed[0][1]:.4f} vs recorded {departed[0][2]:.4f}; windows "
        f"(step, rerun, recorded): {[(s, round(a, 4), round(b, 4)) for s, a, b, _ in gaps]}")
    for row in recorded.get("eval", []) if eval_tolerance else []:
        if row["step"] > until:
            continue
        match = [r for r in rerun.get("eval", []) if r["step"] == row["step"]]
        assert match, f"the rerun has no evaluation at step {row['step']}"
        for name, tolerance in eval_tolerance.items():
            assert abs(match[0][name] - row[name]) <= tolerance, (
                f"{name} at step {row['step']}: {match[0][name]} vs recorded {row[name]} "
                f"(tolerance {tolerance})")
    return worst
