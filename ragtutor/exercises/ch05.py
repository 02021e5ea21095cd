"""The checks of chapter 05's exercises (joint training)."""
import numbers

import numpy as np

from ragtutor.exercises.ch04 import _log_prior
from ragtutor.exercises.checks import (ExerciseFailed, _as_array, check_close, check_function,
                                       exercise)

__all__ = ["ch05_retriever_gradient", "ch05_stale_top_k"]


def _ch05_gradient_problems(seed):
    """Per-document answer log-likelihoods log p(y|x,d_k) and scores s_k, both ``[B, K]``."""
    import torch

    rng = np.random.default_rng(seed)
    return [(torch.tensor(-3 * rng.random((b, k))), torch.tensor(2 * rng.normal(size=(b, k))))
            for b, k in ((2, 3), (4, 5), (1, 4))]


def _ch05_gradient(answer_logliks, doc_scores):
    """d/ds of the batch's mean RAG-Sequence loss, by autograd."""
    import torch

    scores = doc_scores.clone().requires_grad_(True)
    loss = -torch.logsumexp(torch.log_softmax(scores, 1) + answer_logliks, 1).mean()
    (gradient,) = torch.autograd.grad(loss, scores)
    return gradient.numpy()


@exercise("5.1")
def ch05_retriever_gradient(retriever_gradient):
    """Exercise 5.1: the gradient a batch's RAG-Sequence loss sends to the document scores."""
    cases = [((lp, s), _ch05_gradient(lp, s)) for lp, s in _ch05_gradient_problems(51)]
    (lp, s), expected = cases[0]
    try:
        got = _as_array(retriever_gradient(lp.clone(), s.clone())).astype(float)
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and got.shape == expected.shape and not np.allclose(got, expected):
        b = s.shape[0]
        prior = np.exp(_log_prior(s.numpy().T).T)
        joint = np.log(prior) + lp.numpy()
        posterior = np.exp(joint - np.logaddexp.reduce(joint, axis=1, keepdims=True))
        likelihood = np.exp(lp.numpy() - np.logaddexp.reduce(lp.numpy(), axis=1, keepdims=True))
        slips = [((posterior - prior) / b, "that is the gradient of the log-likelihood; the loss "
                                           "is its negative, so the sign flips."),
                 (prior - posterior, "the loss is the mean over the batch: divide by B."),
                 ((prior - likelihood) / b, "the posterior weighs each document's likelihood by "
                                            "its prior: p(d_k|x,y) ∝ p(d_k|x) p(y|x,d_k).")]
        for slip, hint in slips:
            if np.allclose(got, slip):
                raise ExerciseFailed(f"retriever_gradient(answer_logliks [{b}, {s.shape[1]}], "
                                     "doc_scores) is wrong", expected=expected, got=got, hint=hint)
    check_function(retriever_gradient, cases, compare=check_close,
                   hint="∂L/∂s_bk = (p(d_k|x_b) - p(d_k|x_b,y_b)) / B, prior = softmax over k of "
                        "doc_scores, posterior = softmax over k of log prior + answer_logliks.")
    return ("your gradient equals autograd's on 3 batches: ∂L/∂s_k is prior minus posterior, "
            "so a descent step moves each score by posterior minus prior, and a document that "
            "explains the answer better than the retriever expected is pulled up.")


def _stale(question_vectors, old, new, k, as_sets=True):
    q, old, new = (np.asarray(a, dtype=float) for a in (question_vectors, old, new))
    top_old = np.argsort(-(q @ old.T), axis=1, kind="stable")[:, :k]
    top_new = np.argsort(-(q @ new.T), axis=1, kind="stable")[:, :k]
    if as_sets:
        return float(np.mean([set(a) != set(b) for a, b in zip(top_old, top_new)]))
    return float(np.mean([list(a) != list(b) for a, b in zip(top_old, top_new)]))


def _ch05_stale_problems(seed):
    rng = np.random.default_rng(seed)
    problems = []
    for n_q, n_p, h, k, drift in ((6, 8, 4, 3, 0.3), (20, 30, 5, 5, 0.2), (10, 12, 3, 1, 0.5)):
        old = rng.normal(size=(n_p, h))
        problems.append((rng.normal(size=(n_q, h)), old, old + drift * rng.normal(size=(n_p, h)),
                         k))
    return problems


@exercise("5.2")
def ch05_stale_top_k(stale_top_k):
    """Exercise 5.2: how many questions' top-k sets change when the index is rebuilt."""
    cases = [((q, old, new, k), _stale(q, old, new, k)) for q, old, new, k in
             _ch05_stale_problems(52)]
    (q, old, new, k), expected = cases[1]
    try:
        got = stale_top_k(q.copy(), old.copy(), new.copy(), k)
    except Exception:
        got = None  # check_function reports the exception with its input
    if isinstance(got, numbers.Number) and not np.isclose(got, expected):
        slips = [(_stale(q, old, new, k, as_sets=False),
                  "compare the top-k *sets*: RAG marginalises over the K documents, so a "
                  "reordering among them is not a different retrieval."),
                 (_stale(q, old, new, 1),
                  "compare all k documents, not only the best one."),
                 (expected * len(q), "return the share of questions (a number between 0 and 1), "
                                     "not the count.")]
        for slip, hint in slips:
            if np.isclose(got, slip):
                raise ExerciseFailed(f"stale_top_k(20 questions, 30 passages, k={k}) is wrong",
                                     expected=expected, got=got, hint=hint)
    check_function(stale_top_k, cases, compare=check_close,
                   hint="score every passage with q @ vectors.T under each index, take each "
                        "question's k best under each, and count the questions whose two sets "
                        "differ; divide by the number of questions.")
    return ("your count matches on 3 problems: it says how stale an index has become once the "
            "passage encoder has moved.")
