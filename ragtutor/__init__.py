"""ragtutor — the helper package of the course on Retrieval-Augmented Generation.

Each module holds one idea that a chapter builds in plain code first and later chapters reuse:
``text`` and ``metrics`` (every chapter), ``data`` (the knowledge base), ``templates`` and
``counterfactual`` (its text, and false facts to train a reader), ``retrieval`` (the retriever
contract), ``sparse`` (chapter 01), ``dense`` and ``index`` (chapter 02), ``tokenization`` and
``generation`` (chapter 03), ``train`` (the training loop), ``rag`` (chapter 04), ``rag_model``
(chapter 05), ``hf`` (chapter 06), ``environment`` (the set-up check and the seed), ``exercises``
(self-checks) and ``tools`` (the repository's own tooling: the test harness, the student-copy
builder, the benchmarks' records).
docs/design.md draws the map.
"""
from pathlib import Path

from ragtutor.environment import check_environment, set_seed

__version__ = "0.1.0"
__all__ = ["set_seed", "check_environment", "RAGModel", "REPOSITORY_DIR", "CHECKPOINT_DIR",
           "BENCHMARKS_DIR", "__version__"]

# The repository's folders, found from the package itself, so that a notebook (or a student copy
# of it, wherever it was written) reads the same files whatever its working directory.
REPOSITORY_DIR = Path(__file__).resolve().parent.parent
CHECKPOINT_DIR = REPOSITORY_DIR / "checkpoints"
BENCHMARKS_DIR = REPOSITORY_DIR / "benchmarks"


def __getattr__(name):
    # ``from ragtutor import RAGModel``, the course's final model, without importing torch and
    # transformers on ``import ragtutor`` (the environment check must run before they load).
    if name == "RAGModel":
        from ragtutor.rag_model import RAGModel
        return RAGModel
    raise AttributeError(f"module 'ragtutor' has no attribute {name!r}")
