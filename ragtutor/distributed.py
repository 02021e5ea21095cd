"""Data-parallel training of the RAG model with ``torch.distributed`` (chapter 09).

Data parallelism: W processes each hold the whole model, each computes the gradient of the loss
on its own share of a batch of B questions, and before the optimiser steps they average their
gradients, so that every process takes the same step with

    g = (1/W) Σ_w ∇ L_w,   L_w = (W/B) Σ_{i in share w} ℓ_i   ⇒   g = ∇ (1/B) Σ_i ℓ_i,

the gradient of the whole batch's mean loss: one step on B questions, computed by W processes.
:func:`average_gradients` is that averaging in one collective call (``all_reduce``);
PyTorch's ``DistributedDataParallel`` (DDP) does the same in buckets, overlapped with the backward
pass. The retrieval index is replicated: each process loads the model with its passage vectors
(a corpus too large for that is served by shards, :mod:`ragtutor.sharding`).

The workers are started by ``torchrun`` (``python -m torch.distributed.run``), which gives each its
rank and the address of the others; :func:`launch` runs::

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m ragtutor.distributed \\
        gradient --folder checkpoints/rag_token --batch-size 8 --out grads.pt

and :func:`run_data_parallel` makes the calling process (a notebook's kernel) rank 0 itself and
starts the other ranks, which saves one process's memory.

``gradient`` writes the DDP-averaged gradient of one batch (and the hand-averaged one) for a test
against one process's gradient on the whole batch; ``train`` runs a few data-parallel training
steps and writes their losses and times. The backend is gloo, which all-reduces CPU tensors; on
GPUs each process would also have to move its model to its own GPU and use NCCL, which this module
does not do.
"""
import argparse
import os
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist

from ragtutor.generation import CHECKPOINT_DIR

__all__ = ["average_gradients", "batch_gradient", "share", "run_data_parallel", "launch", "main",
           "TASKS", "DEFAULTS"]


def share(items, rank, world_size):
    """Process ``rank``'s contiguous share of ``items``; the shares of ranks 0..W-1 are equal in
    size and, in order, make up ``items`` (so ``len(items)`` must be a multiple of W: the mean of
    the shares' mean losses is then the batch's mean loss)."""
    if len(items) % world_size:
        raise ValueError(f"a batch of {len(items)} cannot be split evenly over {world_size} "
                         "processes: use a batch size that is a multiple of the number of "
                         "processes")
    size = len(items) // world_size
    return items[rank * size:(rank + 1) * size]


def average_gradients(parameters):
    """Replace each parameter's gradient by its mean over all processes (``all_reduce`` of the
    sum, divided by the world size): what DDP does after ``backward``."""
    world_size = dist.get_world_size()
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world_size


def batch_gradient(model, questions):
    """The gradient of the mean RAG loss of ``questions`` (dicts with ``question`` and
    ``answers``; the first answer is the target) in one process: ``{name: tensor}`` over the
    trainable parameters. The model is put in eval mode (no dropout), so that the gradient is a
    function of the batch alone."""
    model.eval()
    model.zero_grad(set_to_none=True)
    model([q["question"] for q in questions], [q["answers"][0] for q in questions])["loss"].backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()
            if p.requires_grad and p.grad is not None}


def _load(folder, threads):
    from ragtutor.rag_model import RAGModel

    torch.set_num_threads(threads)
    return RAGModel.from_pretrained(folder, train_generator=True)


def _gradient(options, rank, world_size):
    """The averaged gradient of the first ``batch_size`` training questions, twice: averaged by
    :func:`average_gradients` and by DDP."""
    from torch.nn.parallel import DistributedDataParallel

    from ragtutor.data import load_questions

    model = _load(options["folder"], options["threads"])
    mine = share(load_questions("train")[:options["batch_size"]], rank, world_size)
    by_hand = batch_gradient(model, mine)
    for name, p in model.named_parameters():
        p.grad = by_hand.get(name)
    average_gradients(p for name, p in model.named_parameters() if name in by_hand)
    by_hand = {name: p.grad.detach().clone() for name, p in model.named_parameters()
               if name in by_hand}

    model.zero_grad(set_to_none=True)
    ddp = DistributedDataParallel(model)
    ddp([q["question"] for q in mine], [q["answers"][0] for q in mine])["loss"].backward()
    by_ddp = {name: p.grad.detach().clone() for name, p in model.named_parameters()
              if p.grad is not None}
    return {"world_size": world_size, "batch_size": options["batch_size"], "by_hand": by_hand,
            "ddp": by_ddp}


def _train(options, rank, world_size):
    """``steps`` data-parallel AdamW steps (DDP) on batches of ``batch_size`` training
    questions, each process reading its share: the batch's mean loss and each step's time."""
    import random

    from torch.nn.parallel import DistributedDataParallel

    from ragtutor.data import load_questions

    model = _load(options["folder"], options["threads"])
    model.train()
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=options["lr"],
                                  weight_decay=0.0)
    questions = load_questions("train")
    size = options["batch_size"]
    order = random.Random(options["seed"]).sample(range(len(questions)), len(questions))
    losses, seconds = [], []
    for step in range(options["steps"]):
        mine = share([questions[i] for i in order[step * size:(step + 1) * size]], rank,
                     world_size)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = ddp([q["question"] for q in mine], [q["answers"][0] for q in mine])["loss"]
        loss.backward()  # DDP averages the gradients over the processes here
        optimizer.step()
        seconds.append(time.perf_counter() - start)
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world_size)
    return {"world_size": world_size, "batch_size": size,
            "threads_per_process": options["threads"], "loss": losses, "step_seconds": seconds}


TASKS = {"gradient": _gradient, "train": _train}
DEFAULTS = {"folder": str(CHECKPOINT_DIR / "rag_token"), "batch_size": 8, "steps": 4, "lr": 5e-4,
            "seed": 0, "threads": 1}


def _run(task, options, backend):
    """``task`` in this process, a member of the process group already set up by the
    environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE): its result, with rank 0's."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}: choose among {sorted(DEFAULTS)}")
    options = {**DEFAULTS, **options}
    dist.init_process_group(backend)
    try:
        torch.manual_seed(options["seed"])
        result = TASKS[task](options, dist.get_rank(), dist.get_world_size())
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()


def main(argv=None):
    """The worker: run by ``torchrun`` in every process (rank 0 writes the result to ``--out``),
    or by :func:`run_data_parallel` in the processes it starts."""
    parser = argparse.ArgumentParser(prog="python -m ragtutor.distributed")
    parser.add_argument("task", choices=sorted(TASKS))
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--backend", default="gloo", help="torch.distributed backend (gloo: CPU)")
    parser.add_argument("--out", help="where rank 0 writes the result (torch.save)")
    args = vars(parser.parse_args(argv))
    task, backend, out = args.pop("task"), args.pop("backend"), args.pop("out")
    result = _run(task, args, backend)
    if out and int(os.environ["RANK"]) == 0:
        torch.save(result, out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_data_parallel(task, world_size=2, backend="gloo", timeout=600, **options):
    """Run ``task`` ("gradient" or "train") data-parallel over ``world_size`` processes on this
    machine, **this process being rank 0**: ranks 1..W-1 are started as ``python -m
    ragtutor.distributed`` workers, this process joins them, and rank 0's result is returned.
    (A notebook kernel that takes part itself saves the memory of one more process.)

    ``options`` are the task's settings (:data:`DEFAULTS`: ``folder``, ``batch_size``, ``steps``,
    ``lr``, ``seed``, ``threads``). The workers' output is raised with the error if one fails.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(world_size), "OMP_NUM_THREADS": "1"}
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    workers = [subprocess.Popen([sys.executable, "-m", "ragtutor.distributed", task, *flags,
                                 f"--backend={backend}"], env={**env, "RANK": str(rank)},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for rank in range(1, world_size)]
    saved = {name: os.environ.get(name) for name in ("MASTER_ADDR", "MASTER_PORT", "RANK",
                                                      "WORLD_SIZE")}
    threads = torch.get_num_threads()
    os.environ.update({name: env[name] for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE")},
                      RANK="0")
    try:
        result = _run(task, options, backend)
    except Exception as error:
        for worker in workers:
            worker.kill()
        output = "\n".join(worker.communicate()[0][-2000:] for worker in workers)
        raise RuntimeError(f"the data-parallel run failed: {error}\nworkers' output:\n"
                           f"{output}") from error
    finally:
        torch.set_num_threads(threads)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    for worker in workers:
        output = worker.communicate(timeout=timeout)[0]
        if worker.returncode:
            raise RuntimeError(f"a worker failed (exit {worker.returncode}):\n{output[-3000:]}")
    return result


def launch(task, nproc=2, timeout=600, out=None, **options):
    """Run :func:`main` in ``nproc`` processes started by ``torchrun`` (rank 0 writes its result
    to ``out``); returns the finished ``subprocess.CompletedProcess``, raising with the workers'
    output when one failed. This is how a script is started on one machine or, with torchrun's
    ``--nnodes`` and ``--rdzv-endpoint``, on several."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "ragtutor.distributed", task, *flags]
    if out is not None:
        command.append(f"--out={out}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise RuntimeError(f"the distributed run failed (exit {done.returncode}):\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


if __name__ == "__main__":
    main()
