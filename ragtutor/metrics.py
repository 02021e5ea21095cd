"""Evaluation metrics.

Question answering (every chapter): exact match and token F1 with SQuAD's answer normalisation
(Rajpurkar et al., 2016): lower-case, drop punctuation and the articles a/an/the, squeeze spaces.
A question may have several acceptable answers (aliases); a prediction scores the best over them.
"""
import collections
import re
import string

__all__ = ["normalize_answer", "exact_match", "f1_score", "qa_scores"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text):
    """SQuAD normalisation: ``"The  Euro."`` -> ``"euro"``."""
    if not isinstance(text, str):
        raise TypeError(f"an answer must be a string, got {type(text).__name__}: {text!r}")
    text = "".join(c for c in text.lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _answer_list(answers):
    if isinstance(answers, str):
        return [answers]
    answers = list(answers)
    if not answers:
        raise ValueError("no acceptable answers were given: pass a non-empty list of strings")
    for a in answers:
        if not isinstance(a, str):
            raise TypeError(f"acceptable answers must be strings, got {type(a).__name__}: {a!r}")
    return answers


def _f1(prediction_tokens, answer_tokens):
    common = collections.Counter(prediction_tokens) & collections.Counter(answer_tokens)
    overlap = sum(common.values())
    if not prediction_tokens or not answer_tokens:
        # SQuAD convention: two empty answers agree, an empty one against a non-empty one scores 0.
        return float(prediction_tokens == answer_tokens)
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(answer_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction, answers):
    """1.0 if the normalised prediction equals any normalised acceptable answer, else 0.0.

    ``answers`` is one string or a non-empty list of strings (all acceptable aliases).
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in _answer_list(answers)))


def f1_score(prediction, answers):
    """Token-overlap F1 between prediction and answer, the best over all acceptable answers."""
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(a).split()) for a in _answer_list(answers))


def qa_scores(predictions, answers):
    """Mean exact match and F1 over a data set: ``{"em": ..., "f1": ..., "n": ...}``.

    ``predictions`` is a list of strings, ``answers`` a list of the same length whose items are each a
    string or a list of acceptable strings.
    """
    predictions, answers = list(predictions), list(answers)
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answer lists: "
                         "pass one list of acceptable answers per prediction")
    if not predictions:
        raise ValueError("no predictions to score: the lists are empty")
    em = sum(exact_match(p, a) for p, a in zip(predictions, answers)) / len(predictions)
    f1 = sum(f1_score(p, a) for p, a in zip(predictions, answers)) / len(predictions)
    return {"em": em, "f1": f1, "n": len(predictions)}
