"""The checks of chapter 07's exercises (a question-answering system you can trust)."""
import copy

import numpy as np

from ragtutor.exercises.checks import (ExerciseFailed, check, check_close, check_equal,
                                       check_function, exercise)

__all__ = ["ch07_choose_threshold", "ch07_edited_passage", "ch07_faithfulness"]


def _threshold(unanswerable, max_answered):
    u = np.sort(np.asarray(unanswerable, float))
    allowed = int(np.floor(max_answered * len(u)))
    return float(np.nextafter(u[len(u) - allowed - 1], np.inf))


@exercise("7.1")
def ch07_choose_threshold(choose_threshold):
    """Exercise 7.1: the abstention threshold that answers at most a share of the unanswerable
    questions and as many answerable ones as possible."""
    rng = np.random.default_rng(7)
    cases = []
    for n, share in ((20, 0.05), (60, 0.10), (40, 0.0), (7, 0.2)):
        unanswerable = np.round(rng.uniform(0, 1, n), 3)
        cases.append(((unanswerable.tolist(), share), _threshold(unanswerable, share)))
    for (unanswerable, share), _ in cases:
        try:
            t = float(choose_threshold(list(unanswerable), share))
        except Exception:
            break  # check_function below reports it with its input
        answered = int((np.asarray(unanswerable) >= t).sum())
        allowed = int(np.floor(share * len(unanswerable)))
        check(answered <= allowed,
              f"choose_threshold(..., {share}) gives {t:.4g}, at which {answered} of the "
              f"{len(unanswerable)} unanswerable questions would be answered; at most {allowed} may",
              hint="the system answers when confidence >= threshold: a threshold equal to an "
                   "unanswerable question's score answers it.")
        lower = [s for s in unanswerable if s < t]
        best = _threshold(unanswerable, share)
        check(t <= best + 1e-9 or not lower,
              f"choose_threshold(..., {share}) gives {t:.4g}: too strict — {best:.4g} would keep "
              "the same limit and answer more questions",
              hint="take the lowest threshold that keeps within the limit: just above the "
                   "highest unanswerable score that must not be answered.")
    check_function(choose_threshold, cases,
                   compare=lambda got, expected, what, hint: check(
                       float(got) > np.nextafter(expected, -np.inf) - 1e-12 and
                       float(got) <= expected + 1e-6, f"{what}: expected just above "
                       f"{np.nextafter(expected, -np.inf):.6g}, got {float(got):.6g}", hint=hint),
                   hint="sort the unanswerable scores; the k = floor(share * n) highest may be "
                        "answered; the threshold goes just above the next one (np.nextafter).")
    return "your threshold keeps within the limit and answers as much as it can, on 4 sets."


@exercise("7.2")
def ch07_edited_passage(edited_passage):
    """Exercise 7.2: a passage rewritten to state a new value, for a hot-swap of the index."""
    passage = {"id": "FRA/capital", "title": "France", "entity_id": "FRA",
               "text": "Paris is the capital of France. Paris lies on the Seine."}
    expected = {**passage, "text": "Velmarosk is the capital of France. Velmarosk lies on the Seine."}
    original = copy.deepcopy(passage)
    try:
        got = edited_passage(passage, "Paris", "Velmarosk")
    except Exception:
        got = None
    check(passage == original, "edited_passage changed the passage it was given",
          hint="build a new dict ({**passage, 'text': ...}): the old passage is what you put back "
               "to undo the edit.")
    if isinstance(got, dict) and got.get("text") == passage["text"].replace("Paris", "Velmarosk", 1):
        raise ExerciseFailed("edited_passage replaced only the first 'Paris'", expected=expected,
                             got=got, hint="str.replace replaces every occurrence unless told "
                                           "otherwise; a passage that names the old value twice "
                                           "would contradict itself.")
    check_function(edited_passage, [((passage, "Paris", "Velmarosk"), expected)],
                   hint="keep every field (id, title, ...) and change only the text.")
    try:
        edited_passage(passage, "Lyon", "Velmarosk")
    except ValueError:
        pass
    else:
        raise ExerciseFailed("edited_passage(passage, 'Lyon', 'Velmarosk') returned a passage, "
                             "but the passage does not state 'Lyon'",
                             hint="raise ValueError when the old value is not in the text: an "
                                  "edit that changes nothing would go unnoticed.")
    return "your edit replaces every occurrence, keeps the id and leaves the original intact."


@exercise("7.3")
def ch07_faithfulness(faithfulness):
    """Exercise 7.3: how often an answer changes when the passage it cites is removed:
    ``faithfulness(before, without_top, without_low)`` -> (share changed without the top-cited
    passage, share changed without a low-cited one)."""
    cases = [((["Paris", "yen", "Bern"], ["Lyon", "yen", "Zurich"], ["Paris", "yen", "Bern"]),
              (2 / 3, 0.0)),
             ((["a", "b"], ["a", "b"], ["c", "b"]), (0.0, 0.5)),
             ((["x"], [""], ["x"]), (1.0, 0.0))]
    check_function(faithfulness, cases,
                   compare=lambda got, expected, what, hint: check_close(
                       tuple(float(v) for v in got), expected, what=what, hint=hint),
                   hint="for each list of answers after a removal, the share of questions whose "
                        "answer differs from the one before (an empty answer differs too).")
    return ("your measure says how often the answer depends on the cited passage, and how often "
            "on an uncited one, on 3 cases.")
