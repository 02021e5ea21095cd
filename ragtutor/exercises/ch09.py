"""The checks of chapter 09's exercises (scaling out)."""
import functools

import numpy as np

from ragtutor.exercises.checks import check, check_close, check_equal, check_function, exercise

__all__ = ["ch09_merge_shards", "ch09_length_byte", "ch09_weighted_average"]


@exercise("9.1")
def ch09_merge_shards(merge_shards):
    """Exercise 9.1: the k best of several shards' own k best, with global ids."""
    cases = [
        # two shards, ids already global
        ((([0.9, 0.5], [0.8, 0.7]), ([4, 1], [10, 12]), 3), [4, 10, 12]),
        # the best three all sit in one shard
        ((([0.9, 0.8, 0.7], [0.1, 0.0, -1.0]), ([0, 1, 2], [3, 4, 5]), 3), [0, 1, 2]),
        # three shards, one of them holding fewer than k
        ((([2.0], [3.0, 1.0], [2.5, 0.5]), ([7], [8, 9], [20, 21]), 2), [8, 20]),
    ]
    def same_ids(got, want, what, hint):
        got = np.asarray(got).tolist() if hasattr(got, "__len__") else got
        check_equal(got, want, what=what, hint=hint)

    check_function(merge_shards, cases, compare=same_ids,
                   hint="put every shard's scores and ids side by side, sort by score, highest "
                        "first, and keep the first k ids.")
    return "the merge is right for 2 and 3 shards, one of them shorter than k."


def _int4(i):
    bits = i & 0x07
    shift = (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


def _length_byte(length):
    if length < 24:
        return length
    value = length - 24
    n_bits = value.bit_length()
    if n_bits < 4:
        return 24 + value
    shift = n_bits - 4
    return 24 + (((value >> shift) & 0x07) | ((shift + 1) << 3))


@exercise("9.2")
def ch09_length_byte(length_byte):
    """Exercise 9.2: Lucene's one-byte document length (SmallFloat.intToByte4)."""
    lengths = [0, 5, 23, 24, 31, 40, 41, 100, 212, 1000]
    cases = [(n, _length_byte(n)) for n in lengths]
    check_function(length_byte, cases, hint="below 24 the byte is the length itself; above, "
                   "v = length - 24 keeps its 4 highest bits: with shift = v.bit_length() - 4 "
                   "(when that is >= 0), the byte is 24 + ((v >> shift) & 7 | (shift + 1) << 3).")
    decoded = [24 + _int4(_length_byte(n) - 24) if n >= 24 else n for n in lengths]
    return ("the byte is right for 10 lengths; decoded, they read as "
            f"{dict(zip(lengths, decoded))}.")


@exercise("9.3")
def ch09_weighted_average(batch_gradient):
    """Exercise 9.3: the whole batch's mean-loss gradient from unequal shares."""
    rng = np.random.default_rng(9)
    gradients = [rng.standard_normal(3) for _ in range(3)]
    sizes = [4, 2, 2]
    expected = sum(n * g for n, g in zip(sizes, gradients)) / sum(sizes)
    got = np.asarray(batch_gradient([g.copy() for g in gradients], list(sizes)), dtype=float)
    plain = np.mean(gradients, axis=0)
    check(not np.allclose(got, plain), "batch_gradient takes the plain mean of the processes' "
          "gradients: with shares of 4, 2 and 2 questions that gives the first process's "
          "questions the same weight in total as the others', not twice as much",
          hint="each process's gradient is that of the mean over its own share: weight it by "
               "the share's size, then divide by the batch size.")
    cases = [((gradients, sizes), expected), (([gradients[0], gradients[1]], [3, 3]),
                                              (gradients[0] + gradients[1]) / 2)]
    check_function(batch_gradient, cases, compare=functools.partial(check_close, atol=1e-9),
                   hint="sum of size_w * gradient_w over the processes, divided by the sum of "
                        "the sizes.")
    return "the weighted average is right for equal and for unequal shares."
