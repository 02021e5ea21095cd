"""One training loop for every model of the course, in the spirit of minGPT's trainer.

Chapter 02's bi-encoder, chapter 03's seq2seq models and chapter 05's RAG model differ in what a
step computes — the loss of a batch — and in nothing else. :func:`train` is the rest: AdamW, the
learning-rate schedule, gradient clipping, the loss log, periodic evaluation, keeping the best
weights, the step and time limits, a progress bar and a guard against a loss that is no longer a
number. ``dense.train_biencoder``, ``generation.train_seq2seq``, ``rag_model.train_rag`` and
``dense.train_question_encoder`` are short wrappers that give it their loss.

Time limits (``max_seconds``) are for a learner's notebook; the scripts that make checkpoints and
the tests use step limits, because a busy machine trains fewer steps in the same seconds.
"""
import copy
import itertools
import math
import time

import torch

__all__ = ["SCHEDULES", "learning_rate", "train"]

SCHEDULES = ("constant", "linear")


def learning_rate(step, lr, warmup, schedule="constant", max_steps=None):
    """The learning rate of (0-based) ``step``: a linear rise over the first ``warmup`` steps to
    ``lr``, then ``lr`` (``schedule="constant"``) or a linear fall to 0 at step ``max_steps``
    (``schedule="linear"``)."""
    rate = lr * min(1.0, (step + 1) / max(1, warmup))
    if schedule == "linear" and step >= warmup:
        rate = lr * max(0.0, (max_steps - step) / max(1, max_steps - warmup))
    return rate


def _check_limits(max_steps, max_seconds, stop_after, schedule):
    if max_steps is None and max_seconds is None:
        raise ValueError("give max_steps or max_seconds, or training would never stop")
    for name, value in (("max_steps", max_steps), ("stop_after", stop_after)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive number of steps, got {value!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    if schedule == "linear" and max_steps is None:
        raise ValueError("schedule='linear' decays to 0 at max_steps: give max_steps")


def train(model, loss_fn, batches, *, lr, parameters=None, warmup=0, schedule="constant",
          max_steps=None, max_seconds=None, stop_after=None, weight_decay=0.01, clip=None,
          log_every=50, evaluate=None, eval_every=None, evaluate_ends=False, keep_best=None,
          after_step=None, progress=True, desc="training"):
    """Train ``model`` by AdamW on ``loss_fn(batch)`` for each batch that ``batches`` yields.

    Stops after ``max_steps`` steps, after ``max_seconds`` seconds of training (evaluation not
    counted), or when ``batches`` runs out, whichever comes first; one of the two limits is
    required. ``stop_after`` ends training after that many steps of the run that ``max_steps``
    describes, its schedule unchanged (the start of a longer run, as the tests that reproduce a
    recorded run use it). ``parameters`` (default: all of ``model``'s) are the ones AdamW updates;
    ``clip`` is the largest gradient norm (no clipping by default). The learning rate follows
    :func:`learning_rate`.

    Every ``eval_every`` steps, ``evaluate(model)`` returns a dict of metrics to record (with
    ``evaluate_ends``, also before the first step and after the last); ``keep_best`` (a metric's
    name) puts back, at the end, the weights of the evaluation where that metric was highest, the
    latest on a tie (early stopping). ``after_step(step)`` runs after each optimiser step (1-based
    ``step``), inside the timed part.

    Returns the history: ``step``, ``loss`` (the mean loss over each ``log_every`` steps, the last
    entry over the steps that remain) and ``seconds`` (training time so far) lists, ``eval`` (a
    list of ``{"step", "seconds", **metrics}``) and, with ``keep_best``, ``best_step``.
    """
    _check_limits(max_steps, max_seconds, stop_after, schedule)
    if (evaluate is None) != (eval_every is None):
        raise ValueError("evaluate and eval_every go together: give both or neither")
    if keep_best is not None and evaluate is None:
        raise ValueError("keep_best chooses among evaluations: give evaluate and eval_every too")
    parameters = list(model.parameters() if parameters is None else parameters)
    if not parameters:
        raise ValueError("nothing to train: every parameter of the model is frozen")
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    history = {"step": [], "loss": [], "seconds": [], "eval": []}
    best = {"value": -math.inf, "step": None, "state": None}

    def run_evaluation(step, trained):
        metrics = evaluate(model)
        history["eval"].append({"step": step, "seconds": trained, **metrics})
        if keep_best is not None:
            if keep_best not in metrics:
                raise ValueError(f"keep_best={keep_best!r} is not one of the metrics "
                                 f"{sorted(metrics)}")
            if metrics[keep_best] >= best["value"]:  # on a tie, the later weights
                best.update(value=metrics[keep_best], step=step,
                            state=copy.deepcopy(model.state_dict()))

    def log(step, losses, trained):
        history["step"].append(step)
        history["loss"].append(sum(losses) / len(losses))
        history["seconds"].append(trained)

    if evaluate is not None and evaluate_ends:
        run_evaluation(0, 0.0)
    limits = [n for n in (max_steps, stop_after) if n is not None]
    steps = range(min(limits)) if limits else itertools.count()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_steps, desc=desc, leave=False)
    model.train()
    trained, running, done = 0.0, [], 0
    batches = iter(batches)
    for step in steps:
        if max_seconds is not None and trained >= max_seconds:
            break
        batch = next(batches, None)
        if batch is None:
            break
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, lr, warmup, schedule, max_steps)
        loss = loss_fn(batch)
        optimizer.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, clip)
        optimizer.step()
        done = step + 1
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} at step {done}: lower lr")
        running.append(value)
        if after_step is not None:
            after_step(done)
        trained += time.perf_counter() - start
        if done % log_every == 0:
            log(done, running, trained)
            running = []
            if bar is not None:
                bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        if bar is not None:
            bar.update(1)
        if evaluate is not None and done % eval_every == 0:
            run_evaluation(done, trained)
            model.train()
    if running:
        log(done, running, trained)
    if evaluate is not None and evaluate_ends and (not history["eval"]
                                                   or history["eval"][-1]["step"] != done):
        run_evaluation(done, trained)
    if keep_best is not None:
        model.load_state_dict(best["state"])
        history["best_step"] = best["step"]
    if bar is not None:
        bar.close()
    model.eval()
    return history
