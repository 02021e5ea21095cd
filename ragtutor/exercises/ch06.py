"""The checks of chapter 06's exercises (RAG with Hugging Face Transformers)."""
import copy

import numpy as np

from ragtutor.exercises.checks import (ExerciseFailed, check_close, check_equal, check_function,
                                       exercise)

__all__ = ["ch06_rag_labels", "ch06_rag_token_loss"]


def _ch06_labels(answer_ids, start_id, end_id, pad_id):
    """Hugging Face RAG's labels written out: <s> y_1 .. y_T </s>, right-padded with pad_id."""
    rows = [[start_id, *ids, end_id] for ids in answer_ids]
    width = max(map(len, rows))
    return np.array([row + [pad_id] * (width - len(row)) for row in rows], dtype=np.int64)


@exercise("6.1")
def ch06_rag_labels(make_labels):
    """Exercise 6.1: the ``labels`` tensor of Hugging Face's RAG models."""
    cases = [(([[17, 4], [9]], 1, 2, 0), _ch06_labels([[17, 4], [9]], 1, 2, 0)),
             (([[5, 6, 7]], 1, 2, 0), _ch06_labels([[5, 6, 7]], 1, 2, 0)),
             (([[3], [8, 8, 8], [4, 5]], 0, 2, 1), _ch06_labels([[3], [8, 8, 8], [4, 5]], 0, 2, 1))]
    args, expected = cases[0]
    try:
        got = make_labels(*copy.deepcopy(args))
        got = np.asarray(got.detach() if hasattr(got, "detach") else got)
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and got.shape == expected.shape and not np.array_equal(got, expected):
        slips = [(np.where(expected == 0, -100, expected),
                  "Hugging Face's RAG models feed the labels to the decoder, so they cannot hold "
                  "-100: pad with pad_id (the loss skips pad_id positions)."),
                 (np.array([[1, 17, 4, 2], [0, 1, 9, 2]]),
                  "pad on the right: the decoder reads the labels from the left, so padding must "
                  "come after the answer.")]
        for slip, hint in slips:
            if got.shape == slip.shape and np.array_equal(got, slip):
                raise ExerciseFailed("make_labels([[17, 4], [9]], 1, 2, 0) is wrong",
                                     expected=expected, got=got, hint=hint)
    if got is not None and got.ndim == 2 and got.shape[1] == expected.shape[1] - 1:
        first_is_start = got.shape[0] == 2 and got[0, 0] == 1
        raise ExerciseFailed("make_labels([[17, 4], [9]], 1, 2, 0) is one position too short",
                             expected=expected, got=got,
                             hint="the labels end with </s> (end_id) — it is what tells the model "
                                  "to stop." if first_is_start else
                                  "the labels begin with the decoder's start token (start_id): "
                                  "Hugging Face's RAG uses them as the decoder's input, unshifted.")
    check_function(make_labels, cases,
                   compare=lambda got, expected, what, hint: check_equal(
                       np.asarray(got.detach() if hasattr(got, "detach") else got).tolist(),
                       expected.tolist(), what=what, hint=hint),
                   hint="each row is [start_id] + answer + [end_id], then pad_id up to the "
                        "longest row.")
    return ("your labels are what RagTokenForGeneration and RagSequenceForGeneration train on, "
            "on 3 batches.")


def _ch06_problems(seed):
    """Per-document logits ``[B*K, T, V]``, scores ``[B, K]`` and right-padded labels ``[B, T]``
    (start id 1, pad id 0) as float64/int64 tensors."""
    import torch

    rng = np.random.default_rng(seed)
    problems = []
    for b, k, t, v in ((2, 3, 5, 7), (3, 2, 4, 6), (1, 4, 6, 9)):
        logits = torch.tensor(2 * rng.normal(size=(b * k, t, v)))
        scores = torch.tensor(rng.normal(size=(b, k)))
        labels = torch.zeros(b, t, dtype=torch.long)
        for row in range(b):
            length = t if row == 0 else int(rng.integers(3, t + 1))
            labels[row, 0] = 1
            labels[row, 1:length] = torch.tensor(rng.integers(2, v, size=length - 1))
        problems.append((logits, scores, labels))
    return problems


def _ch06_token_loss(logits, scores, labels, pad_id=0, shift=True, mask=True, prior=True):
    """RAG-Token's loss the way Hugging Face computes it, written out in NumPy (float64), with
    switches for the slips the check diagnoses."""
    logits, scores, labels = logits.numpy(), scores.numpy(), labels.numpy()
    b, k = scores.shape
    target = np.concatenate([labels[:, 1:], np.full((b, 1), pad_id)], axis=1) if shift else labels
    logprobs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    logprobs = logprobs.reshape(b, k, *logits.shape[1:])
    log_prior = (scores - np.logaddexp.reduce(scores, axis=1, keepdims=True) if prior
                 else np.full((b, k), -np.log(k)))
    losses = []
    for row in range(b):
        total = 0.0
        for t, y in enumerate(target[row]):
            if mask and y == pad_id:
                continue
            total += np.logaddexp.reduce(log_prior[row] + logprobs[row, :, t, y])
        losses.append(-total)
    return np.array(losses)


@exercise("6.2")
def ch06_rag_token_loss(rag_token_loss):
    """Exercise 6.2: RagTokenForGeneration's loss from its per-document logits."""
    cases = [((logits, scores, labels, 0), _ch06_token_loss(logits, scores, labels))
             for logits, scores, labels in _ch06_problems(62)]
    (logits, scores, labels, _), expected = cases[0]
    try:
        got = rag_token_loss(logits.clone(), scores.clone(), labels.clone(), 0)
        got = np.asarray(got.detach() if hasattr(got, "detach") else got, dtype=float)
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and got.shape == expected.shape and not np.allclose(got, expected):
        slips = [(dict(shift=False), "the labels begin with <s>: the logits at position t "
                                     "predict labels[:, t + 1], so shift the labels left by one "
                                     "(and append a pad) to make the target."),
                 (dict(mask=False), "positions where the target is pad_id are padding: leave "
                                    "them out of the sum."),
                 (dict(prior=False), "weigh each document by its prior p(d_k|x) = "
                                     "softmax(doc_scores)_k, not uniformly.")]
        for options, hint in slips:
            if np.allclose(got, _ch06_token_loss(logits, scores, labels, **options)):
                raise ExerciseFailed("rag_token_loss(logits [6, 5, 7], doc_scores [2, 3], labels "
                                     "[2, 5], 0) is wrong", expected=expected, got=got, hint=hint)
        b, k = scores.shape
        target = np.concatenate([labels.numpy()[:, 1:], np.zeros((b, 1), dtype=np.int64)], axis=1)
        lp = logits.numpy() - np.logaddexp.reduce(logits.numpy(), axis=-1, keepdims=True)
        lp = lp.reshape(b, k, *lp.shape[1:])
        per_doc = np.array([[sum(lp[row, d, t, y] for t, y in enumerate(target[row]) if y != 0)
                             for d in range(k)] for row in range(b)])
        log_prior = scores.numpy() - np.logaddexp.reduce(scores.numpy(), axis=1, keepdims=True)
        if np.allclose(got, -np.logaddexp.reduce(log_prior + per_doc, axis=1)):
            raise ExerciseFailed("rag_token_loss(...) gives RAG-Sequence's loss", expected=expected,
                                 got=got, hint="RAG-Token mixes the documents at every token: "
                                               "logsumexp over k inside, sum over t outside.")
    check_function(rag_token_loss, cases, compare=check_close,
                   hint="target = labels shifted left (pad appended); loss = -Σ_t over non-pad "
                        "targets of logsumexp_k( log_softmax(doc_scores)[k] + "
                        "log_softmax(logits)[b*K + k, t, target_t] ).")
    return ("your loss equals RagTokenForGeneration's formula on 3 batches, padding and the "
            "start token handled.")
