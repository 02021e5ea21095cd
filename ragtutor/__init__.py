"""ragtutor — the helper package of the course on Retrieval-Augmented Generation.

Each module holds one idea that a chapter builds in plain code first and later chapters reuse:
``text`` and ``metrics`` (every chapter), ``data`` and ``kb`` (the knowledge base), ``sparse``
(chapter 01), ``dense`` and ``index`` (chapter 02), ``generation`` (chapter 03), ``rag`` (chapters
04 and 05), ``hf`` (chapter 06), ``exercises`` (self-checks), ``testing`` and ``netguard`` (the
offline test harness).
"""
from ragtutor.utils import check_environment, set_seed

__version__ = "0.1.0"
__all__ = ["set_seed", "check_environment", "__version__"]
