"""Data-parallel RAG training (ragtutor.distributed): W processes' averaged gradient is one
process's gradient on the whole batch."""
import pytest
import torch

from ragtutor.data import load_questions
from ragtutor.distributed import DEFAULTS, _load, batch_gradient, launch, run_data_parallel, share


def test_share_splits_evenly_and_in_order():
    items = list(range(8))
    assert [share(items, r, 4) for r in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        share(items, 0, 3)


@pytest.fixture(scope="module")
def one_process_gradient():
    model = _load(DEFAULTS["folder"], 1)
    return batch_gradient(model, load_questions("train")[:8])


def _assert_equal(gradient, expected):
    assert set(gradient) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(gradient[name], value, rtol=0, atol=1e-6, msg=name)


def test_two_processes_average_to_the_batch_gradient(one_process_gradient):
    result = run_data_parallel("gradient", world_size=2, batch_size=8)
    assert result["world_size"] == 2
    _assert_equal(result["by_hand"], one_process_gradient)
    _assert_equal(result["ddp"], one_process_gradient)


@pytest.mark.slow
def test_torchrun_gives_the_same_gradient(one_process_gradient, tmp_path):
    launch("gradient", nproc=2, out=tmp_path / "gradient.pt", batch_size=8)
    result = torch.load(tmp_path / "gradient.pt")
    _assert_equal(result["ddp"], one_process_gradient)


def test_a_failing_worker_is_reported():
    with pytest.raises((RuntimeError, ValueError), match="multiple of the number of processes"):
        run_data_parallel("gradient", world_size=2, batch_size=7)


def test_unknown_options_are_refused():
    with pytest.raises((RuntimeError, TypeError), match="unknown options"):
        run_data_parallel("gradient", world_size=1, batchsize=8)
