"""Text normalisation and tokenisation shared by the retrievers (chapters 01 and 02).

One function turns a string into the tokens every sparse retriever indexes, so that chapter 01's
from-scratch BM25, the package's ``BM25Retriever`` and the peer libraries all see the same words:

    "São Tomé's capital?"  ->  ["sao", "tome", "s", "capital"]

Steps: Unicode NFKD with accents removed, case-folded, then runs of letters and digits.
"""
import re
import unicodedata

__all__ = ["STOPWORDS", "normalize_text", "tokenize", "content_words"]

_TOKEN = re.compile(r"[^\W_]+")

# A short English stop-word list: function words that carry no topic. Kept small and explicit so a
# learner can read it; question words ("what", "which") are included because every question has one.
STOPWORDS = frozenset(
    """a an the and or but if of at by for with about against between into through during before
    after above below to from up down in out on off over under again further then once here there
    when where why how all any both each few more most other some such no nor not only own same so
    than too very can will just should now is are was were be been being have has had having do does
    did doing i me my we our you your he him his she her it its they them their what which who whom
    this that these those am s t as also while one""".split()
)


def normalize_text(text):
    """Strip accents and case-fold: ``"Bogotá"`` -> ``"bogota"``."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}: {text!r}")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def tokenize(text, stopwords=None):
    """Split ``text`` into normalised word tokens (letters and digits), dropping ``stopwords``.

    ``stopwords`` is a set of already-normalised words, e.g. :data:`STOPWORDS`; None keeps every token.
    """
    tokens = _TOKEN.findall(normalize_text(text))
    if stopwords:
        tokens = [t for t in tokens if t not in stopwords]
    return tokens


def content_words(text):
    """The set of non-stop-word tokens of ``text``: what "sharing a word" means in the course."""
    return set(tokenize(text, STOPWORDS))
