"""What the training scripts and the benchmarks record, written once: the versions a run used,
the machine it ran on, and a section of ``benchmarks/RESULTS.md`` between its markers; and
:func:`load_script`, for a benchmark that varies a training script's recipe."""
import importlib.metadata
import importlib.util
import os
import platform
from pathlib import Path

__all__ = ["versions", "cpu_name", "machine", "write_section", "load_script", "training_record"]

ROOT = Path(__file__).resolve().parents[2]


def versions(*packages):
    """``{"python": ..., package: version, ...}`` — the ``versions`` of a ``training.json``."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def cpu_name():
    """The processor's model name where Linux says it, else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(packages=("torch", "transformers", "faiss-cpu", "numpy")):
    """One line on where, and with what, figures were measured."""
    import psutil

    listed = ", ".join(f"{name} {version}" for name, version in versions(*packages).items()
                       if name != "python")
    return (f"{os.cpu_count()} cores ({cpu_name()}), {psutil.virtual_memory().total / 1e9:.0f} GB "
            f"of memory, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, {listed}")


def write_section(path, section, begin, end):
    """Put ``section`` between the markers ``begin`` and ``end`` in the file at ``path`` (added at
    the end, with its markers, if they are not there yet), keeping everything outside them."""
    path = Path(path)
    block = f"{begin}\n{section}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def load_script(name):
    """The training script ``scripts/<name>.py`` as a module (its ``CONFIG`` and functions), not run.

    A benchmark that changes one thing of a checkpoint's recipe imports the recipe itself, so the
    two cannot drift apart; ``scripts/`` is a folder of programs, not a package.
    """
    path = ROOT / "scripts" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no training script {path}: scripts/ holds "
                                f"{sorted(p.stem for p in path.parent.glob('*.py'))}")
    spec = importlib.util.spec_from_file_location(f"scripts.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_record(script, argv, config, threads, stop_after, model, history, metrics, seconds,
                    **extra):
    """The ``training.json`` a training script writes beside its checkpoint, as a dict: the command
    (``python scripts/<script>`` and ``argv``), seed, thread count, ``stop_after``, any ``extra``
    fields (the method, say), the configuration, library versions, the model's parameter count,
    the metrics reached, the time taken in all and in training, and the history of
    ``ragtutor.train.train`` (loss windows, evaluations, best step)."""
    return {"command": " ".join([f"python scripts/{script}", *argv]), "seed": config["seed"],
            "threads": threads, "stop_after": stop_after, **extra, "config": config,
            "versions": versions("torch", "transformers", "tokenizers"),
            "parameters": sum(p.numel() for p in model.parameters()),
            "metrics": metrics, "seconds": round(seconds, 1),
            "train_seconds": round(history["seconds"][-1], 1),
            "history": {"step": history["step"], "loss": history["loss"],
                        "eval": history["eval"], "best_step": history.get("best_step")}}
