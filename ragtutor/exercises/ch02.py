"""The checks of chapter 02's exercises (dense retrieval)."""
import numpy as np

from ragtutor.exercises.checks import ExerciseFailed, check_close, check_function, exercise

__all__ = ["ch02_symmetric_loss", "ch02_rrf_scores", "ch02_mean_pool"]


def _in_batch_loss(q, p):
    """DPR's in-batch-negatives loss written out one question at a time, for the check."""
    losses = []
    for i in range(len(q)):
        scores = p @ q[i]
        losses.append(np.logaddexp.reduce(scores) - scores[i])
    return float(np.mean(losses))


@exercise("2.1")
def ch02_symmetric_loss(symmetric_loss):
    """Exercise 2.1: the in-batch loss in both directions, questions -> passages and back."""
    import torch

    rng = np.random.default_rng(21)
    cases = []
    for b, h in [(4, 3), (6, 5), (2, 2), (5, 4)]:
        q, p = rng.normal(size=(b, h)), 2 * rng.normal(size=(b, h))
        cases.append(((torch.tensor(q), torch.tensor(p)), (_in_batch_loss(q, p) + _in_batch_loss(p, q)) / 2))
    for (q, p), expected in cases:
        try:
            got = float(symmetric_loss(q.clone(), p.clone()))
        except Exception:
            break  # check_function reports the exception, or the answer that is not a number
        if np.isclose(got, expected):
            continue
        forward, backward = _in_batch_loss(q.numpy(), p.numpy()), _in_batch_loss(p.numpy(), q.numpy())
        for slip, hint in ((forward, "that is only the question -> passage direction (the rows "
                                     "of S); add the passage -> question one (the columns)."),
                           (backward, "that is only the passage -> question direction; add the "
                                      "question -> passage one."),
                           (forward + backward, "average the two directions: divide their sum by 2."),
                           (len(q) * (forward + backward) / 2,
                            "average the per-example losses over the batch; do not sum them.")):
            if np.isclose(got, slip):
                raise ExerciseFailed(f"symmetric_loss(q, p of shape {list(q.shape)}) is wrong",
                                     expected=expected, got=got, hint=hint)
        break
    check_function(symmetric_loss, cases, compare=check_close,
                   hint="with S = q @ p.T, average cross_entropy(S, targets) and "
                        "cross_entropy(S.T, targets), targets = 0..B-1.")
    return f"symmetric_loss is right on {len(cases)} batches."


def _rrf(rankings, n_docs, k):
    fused = np.zeros(n_docs)
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            fused[doc] += 1 / (k + rank)
    return fused


@exercise("2.2")
def ch02_rrf_scores(rrf_scores):
    """Exercise 2.2: reciprocal rank fusion of several rankings of one query."""
    cases = [([[2, 0, 1], [0, 3]], 5, 60), ([[1, 0]], 2, 60), ([[0, 1, 2], [2, 1, 0], [1]], 4, 1),
             ([[3], [3]], 4, 10)]
    for rankings, n_docs, k in cases:
        try:
            got = rrf_scores([list(r) for r in rankings], n_docs, k)
        except Exception:
            break
        expected = _rrf(rankings, n_docs, k)
        if np.shape(got) != expected.shape or np.allclose(got, expected):
            continue
        zero_based = np.zeros(n_docs)
        for ranking in rankings:
            for rank, doc in enumerate(ranking):
                zero_based[doc] += 1 / (k + rank)
        if np.allclose(got, zero_based):
            raise ExerciseFailed(f"rrf_scores({rankings}, {n_docs}, {k}) is wrong", expected=expected,
                                 got=got, hint="ranks count from 1: the first document of a "
                                               "ranking gets 1 / (k + 1), not 1 / k.")
        break
    check_function(rrf_scores, [((r, n, k), _rrf(r, n, k)) for r, n, k in cases],
                   compare=check_close,
                   hint="RRF(d) = sum over rankings of 1 / (k + rank of d), ranks counted from 1; "
                        "a document absent from a ranking gets nothing from it, and one absent "
                        "from all of them scores 0.")
    return f"rrf_scores fuses {len(cases)} sets of rankings correctly."


@exercise("2.3")
def ch02_mean_pool(mean_pool):
    """Exercise 2.3: mean pooling of token vectors that skips the padding."""
    import torch

    rng = np.random.default_rng(23)
    cases = []
    for lengths, width, h in [([3, 1], 4, 2), ([5, 5], 5, 3), ([2, 4, 1], 6, 4)]:
        hidden = rng.normal(size=(len(lengths), width, h))
        mask = np.array([[1] * n + [0] * (width - n) for n in lengths])
        expected = np.stack([hidden[i, :n].mean(axis=0) for i, n in enumerate(lengths)])
        cases.append(((torch.tensor(hidden), torch.tensor(mask)), expected))
    (hidden, mask), expected = cases[0]
    try:
        got = mean_pool(hidden.clone(), mask.clone())
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and hasattr(got, "shape") and tuple(got.shape) == expected.shape:
        got = np.asarray(got.detach() if hasattr(got, "detach") else got, dtype=float)
        everything = hidden.numpy().mean(axis=1)
        masked_sum_over_width = (hidden.numpy() * mask.numpy()[..., None]).sum(1) / mask.shape[1]
        for slip, hint in ((everything, "the padding positions are averaged in too: multiply by "
                                        "the mask before summing."),
                           (masked_sum_over_width, "divide by the number of real tokens "
                                                   "(mask.sum(1)), not by the padded length.")):
            if np.allclose(got, slip) and not np.allclose(got, expected):
                raise ExerciseFailed("mean_pool(hidden of shape [2, 4, 2], mask) is wrong",
                                     expected=expected, got=got, hint=hint)
    check_function(mean_pool, cases, compare=check_close,
                   hint="sum(hidden * mask[..., None], dim=1) / mask.sum(dim=1, keepdim=True): "
                        "the mean of each row's real tokens, of shape [B, H].")
    return f"mean_pool averages only the real tokens, on {len(cases)} padded batches."
