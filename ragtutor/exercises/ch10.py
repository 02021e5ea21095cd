"""The checks of chapter 10's exercises (RAG in practice)."""
import functools
import math

import numpy as np

from ragtutor.exercises.checks import check_close, check_equal, check_function, exercise

__all__ = ["ch10_word_windows", "ch10_mixed_ranking", "ch10_mcnemar"]


@exercise("10.1")
def ch10_word_windows(word_windows):
    """Exercise 10.1: fixed windows of words with overlap."""
    words = "a b c d e f g".split()
    cases = [
        ((words, 3, 0), [["a", "b", "c"], ["d", "e", "f"], ["g"]]),
        ((words, 3, 1), [["a", "b", "c"], ["c", "d", "e"], ["e", "f", "g"]]),
        ((words, 4, 2), [["a", "b", "c", "d"], ["c", "d", "e", "f"], ["e", "f", "g"]]),
        ((words, 7, 3), [words]),
        ((words[:2], 5, 0), [["a", "b"]]),
        (([], 3, 0), []),
    ]
    check_function(word_windows, cases,
                   compare=lambda got, want, what, hint: check_equal(
                       [list(w) for w in got] if got is not None else got, want, what=what,
                       hint=hint),
                   hint="each window starts size - overlap words after the one before; stop "
                        "once a window reaches the last word, so that no window holds only words "
                        "the one before already has.")
    return "the windows are right with and without overlap, and for a text shorter than a window."


@exercise("10.2")
def ch10_mixed_ranking(mixed_ranking):
    """Exercise 10.2: the order of candidates by first-stage score + mix x cross-encoder score."""
    first = [3.0, 2.5, 2.0, 1.0]
    cross = [-1.0, 4.0, 0.0, 4.0]
    cases = [
        ((first, cross, 0.0), [0, 1, 2, 3]),
        ((first, cross, 0.5), [1, 3, 0, 2]),    # 2.5, 4.5, 2.0, 3.0
        ((first, cross, 100.0), [1, 3, 2, 0]),  # the cross-encoder decides, nearly alone
        (([1.0, 1.0], [0.0, 0.0], 0.3), [0, 1]),  # a tie keeps the first stage's order
    ]
    check_function(mixed_ranking, cases,
                   compare=lambda got, want, what, hint: check_equal(
                       np.asarray(got).tolist() if got is not None else got, want, what=what,
                       hint=hint),
                   hint="score each candidate by first[i] + mix * cross[i], sort the positions by "
                        "that score, highest first, and on a tie keep the lower position (a "
                        "stable sort of the negated scores).")
    return "the mixed ranking is right for mix 0, 0.5 and 100, and on a tie."


def _mcnemar(a, b):
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@exercise("10.3")
def ch10_mcnemar(mcnemar_p):
    """Exercise 10.3: the exact McNemar test of two systems on the same questions."""
    cases = [
        (([1, 1, 0, 0], [1, 1, 0, 0]), 1.0),            # no question tells them apart
        (([1] * 10, [0] * 10), 2 / 2 ** 10),            # A wins all 10 discordant questions
        (([1, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 0]), _mcnemar([1, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 0])),
        (([1] * 7 + [0] * 2 + [1] * 50, [0] * 7 + [1] * 2 + [1] * 50), _mcnemar(
            [1] * 7 + [0] * 2 + [1] * 50, [0] * 7 + [1] * 2 + [1] * 50)),
    ]
    check_function(mcnemar_p, cases, compare=functools.partial(check_close, rtol=1e-9),
                   hint="count the questions only A gets right (b) and only B gets right (c); "
                        "the questions both get right or both miss say nothing. Under 'equally "
                        "good', b is Binomial(b + c, 1/2): the p-value is twice the probability of "
                        "a count as far from (b + c)/2 as min(b, c), at most 1.")
    return "the p-value is right with no, one-sided and mixed discordant questions."
