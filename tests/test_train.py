"""ragtutor.train: the one training loop behind every model of the course."""
import itertools

import pytest
import torch

from ragtutor import train as train_module
from ragtutor.train import learning_rate, train


def tiny():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def squared_error(model):
    def loss(batch):
        x, y = batch
        return ((model(x) - y) ** 2).mean()
    return loss


def batches(seed=0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(8, 3, generator=generator)
        yield x, x.sum(1, keepdim=True)


def recorded_rates(monkeypatch):
    rates = []
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return rates


def test_learning_rate_warms_up_then_stays_or_falls_to_zero():
    assert [learning_rate(s, 1.0, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [learning_rate(s, 1.0, 2, "linear", 6) for s in range(6)] == \
        [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert learning_rate(0, 1.0, 0) == 1.0  # no warm-up


def test_train_lowers_the_loss_and_logs_windows():
    model = tiny()
    history = train(model, squared_error(model), batches(), lr=0.05, max_steps=200, log_every=50,
                    progress=False)
    assert history["step"] == [50, 100, 150, 200]
    assert history["loss"][-1] < history["loss"][0] / 10
    assert not model.training


def test_stop_after_is_the_start_of_the_longer_run(monkeypatch):
    rates = recorded_rates(monkeypatch)
    full, start = tiny(), tiny()
    whole = train(full, squared_error(full), batches(), lr=0.1, warmup=2, schedule="linear",
                  max_steps=10, log_every=2, progress=False)
    full_rates = list(rates)
    rates.clear()
    first = train(start, squared_error(start), batches(), lr=0.1, warmup=2, schedule="linear",
                  max_steps=10, stop_after=4, log_every=2, progress=False)
    assert rates == full_rates[:4]
    assert first["loss"] == whole["loss"][:2]


def test_the_time_limit_counts_training_seconds_only(monkeypatch):
    # A clock that advances one second per reading: each step's two readings add one second of
    # training, so a 3-second limit allows three steps, whatever the machine is doing.
    clock = itertools.count()
    monkeypatch.setattr(train_module.time, "perf_counter", lambda: float(next(clock)))
    model = tiny()
    history = train(model, squared_error(model), batches(), lr=0.1, max_seconds=3, log_every=1,
                    progress=False)
    assert history["step"] == [1, 2, 3]


def test_training_ends_when_the_batches_run_out():
    model = tiny()
    history = train(model, squared_error(model), itertools.islice(batches(), 7), lr=0.1,
                    max_steps=100, log_every=5, progress=False)
    assert history["step"] == [5, 7]


def test_evaluations_and_keep_best_put_back_the_best_weights():
    model = tiny()
    scores = iter([0.1, 0.5, 0.3, 0.2])
    snapshots = {}

    def evaluate(m):
        snapshots[len(snapshots) * 2] = m.weight.detach().clone()
        return {"score": next(scores)}

    history = train(model, squared_error(model), batches(), lr=0.1, max_steps=6, eval_every=2,
                    evaluate=evaluate, evaluate_ends=True, keep_best="score", log_every=2,
                    progress=False)
    assert [e["step"] for e in history["eval"]] == [0, 2, 4, 6]
    assert history["best_step"] == 2
    assert torch.equal(model.weight, snapshots[2])


def test_clipping_bounds_the_gradient_norm(monkeypatch):
    norms = []
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        norms.append(torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for group in self.param_groups for p in group["params"]])).item())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    model = tiny()
    train(model, lambda b: 1e3 * squared_error(model)(b), batches(), lr=0.01, max_steps=5,
          clip=1.0, progress=False)
    assert max(norms) <= 1.0 + 1e-6


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give max_steps or max_seconds"),
    ({"max_steps": 0}, "max_steps must be a positive"),
    ({"max_steps": 5, "stop_after": 0}, "stop_after must be a positive"),
    ({"max_steps": 5, "schedule": "cosine"}, "schedule must be"),
    ({"max_seconds": 5, "schedule": "linear"}, "give max_steps"),
    ({"max_steps": 5, "eval_every": 2}, "evaluate and eval_every go together"),
    ({"max_steps": 5, "keep_best": "em"}, "keep_best chooses"),
    ({"max_steps": 5, "parameters": []}, "nothing to train"),
])
def test_bad_settings_get_a_clear_error(kwargs, message):
    model = tiny()
    with pytest.raises(ValueError, match=message):
        train(model, squared_error(model), batches(), lr=0.1, progress=False, **kwargs)


def test_a_loss_that_is_not_a_number_stops_training():
    model = tiny()
    with pytest.raises(FloatingPointError, match="at step 1: lower lr"):
        train(model, lambda batch: squared_error(model)(batch) * float("nan"), batches(), lr=0.1,
              max_steps=3, progress=False)
