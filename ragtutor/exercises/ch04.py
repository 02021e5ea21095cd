"""The checks of chapter 04's exercises (the RAG likelihood)."""
import copy

import numpy as np

from ragtutor.exercises.checks import (ExerciseFailed, _show, check, check_close, check_equal,
                                       check_function, exercise)

__all__ = ["ch04_rag_sequence_log_likelihood", "ch04_rag_token_score_gradient", "ch04_fast_decode"]


def _log_prior(scores):
    """log p(d_k|x) = s_k - log Σ_j exp(s_j), written out for the checks (NumPy, float64)."""
    scores = np.asarray(scores, dtype=float)
    return scores - np.logaddexp.reduce(scores)


def _rag_sequence_ll(token_logprobs, scores):
    """log Σ_k p(d_k|x) Π_t p(y_t|x,d_k,y_<t) from per-token log-probs ``[K, T]``."""
    return float(np.logaddexp.reduce(_log_prior(scores) + np.asarray(token_logprobs).sum(1)))


def _ch04_problems(seed):
    """Per-token log-probs ``[K, T]`` and scores ``[K]`` as float64 tensors: an ordinary problem, a
    long answer whose probability underflows, scores of ±1e4, and a single document."""
    import torch

    rng = np.random.default_rng(seed)

    def log_softmax_rows(k, t):
        logits = 2 * rng.normal(size=(k, t, 6))
        return (logits - np.logaddexp.reduce(logits, axis=2, keepdims=True))[:, :, 0]

    problems = [(log_softmax_rows(3, 4), rng.normal(size=3)),
                (np.full((2, 400), np.log(0.05)) + 0.01 * rng.normal(size=(2, 400)),
                 np.array([0.5, -0.2])),
                (log_softmax_rows(3, 5), np.array([1e4, -1e4, 1e4 - 1.0])),
                (log_softmax_rows(1, 3), np.array([2.0]))]
    return [(torch.tensor(lp), torch.tensor(s)) for lp, s in problems]


@exercise("4.1")
def ch04_rag_sequence_log_likelihood(rag_sequence_log_likelihood):
    """Exercise 4.1: RAG-Sequence log p(y|x) from per-token log-probs, in log space."""
    problems = _ch04_problems(41)
    cases = [((lp, s), _rag_sequence_ll(lp.numpy(), s.numpy())) for lp, s in problems]
    for (lp, s), expected in cases:
        try:
            got = float(rag_sequence_log_likelihood(lp.clone(), s.clone()))
        except Exception:
            break  # check_function reports the exception, or an answer that is not a number
        if np.isclose(got, expected):
            continue
        lp_np, s_np = lp.numpy(), s.numpy()
        shape = f"token_logprobs of shape {list(lp.shape)}, doc_scores {s_np.round(2).tolist()}"
        check(np.isfinite(got), f"rag_sequence_log_likelihood({shape}) is not finite",
              expected=expected, got=got,
              hint="exp() of a sum of 400 log-probabilities underflows to 0, and exp(1e4) "
                   "overflows: stay in log space, log p(y|x) = logsumexp_k(log p(d_k|x) + "
                   "Σ_t log p(y_t|...)), with torch.logsumexp and torch.log_softmax.")
        slips = [
            (float(np.logaddexp.reduce(s_np + lp_np.sum(1))),
             "the scores are not log-probabilities: the prior is log p(d_k|x) = log_softmax(s)_k."),
            (float(np.sum(np.logaddexp.reduce(_log_prior(s_np)[:, None] + lp_np, axis=0))),
             "that is RAG-Token (a mixture for every token); RAG-Sequence mixes whole answers: "
             "sum over t inside, logsumexp over k outside."),
            (float(np.max(_log_prior(s_np) + lp_np.sum(1))),
             "the marginal sums over documents (logsumexp), it does not take the best one (max)."),
        ]
        for slip, hint in slips:
            if np.isclose(got, slip):
                raise ExerciseFailed(f"rag_sequence_log_likelihood({shape}) is wrong",
                                     expected=expected, got=got, hint=hint)
        break
    check_function(rag_sequence_log_likelihood, cases, compare=check_close,
                   hint="log p(y|x) = logsumexp_k( log_softmax(s)_k + Σ_t token_logprobs[k, t] ).")
    return (f"log p(y|x) is right on {len(cases)} problems, a 400-token answer and scores of "
            "±1e4 included.")


def _rag_token_ll_torch(token_logprobs, scores):
    import torch

    prior = torch.log_softmax(scores, dim=0)
    return torch.logsumexp(prior[:, None] + token_logprobs, dim=0).sum()


@exercise("4.2")
def ch04_rag_token_score_gradient(rag_token_score_gradient):
    """Exercise 4.2: ∂ log p(y|x) / ∂ s_k for RAG-Token, without autograd."""
    import torch

    cases = []
    for lp, s in _ch04_problems(42):
        s = s.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(_rag_token_ll_torch(lp, s), s)
        cases.append(((lp, s.detach()), gradient.numpy()))
    lp, s = cases[0][0]
    try:
        got = rag_token_score_gradient(lp.clone(), s.clone())
        got = np.asarray(got.detach() if hasattr(got, "detach") else got, dtype=float)
    except Exception:
        got = None  # check_function reports the exception with its input
    if got is not None and got.shape == cases[0][1].shape and not np.allclose(got, cases[0][1]):
        lp_np, s_np = lp.numpy(), s.numpy()
        prior = np.exp(_log_prior(s_np))
        joint = np.log(prior)[:, None] + lp_np  # [K, T]
        per_token = np.exp(joint - np.logaddexp.reduce(joint, axis=0))  # p(z_t = k | x, y)
        whole = np.exp(np.log(prior) + lp_np.sum(1) - _rag_sequence_ll(lp_np, s_np))
        slips = [(whole - prior, "that is RAG-Sequence's gradient, posterior minus prior over "
                                 "whole answers; RAG-Token has one latent document per token."),
                 (per_token.sum(1) - prior, "each of the T tokens contributes its own "
                                            "-p(d_k|x): the prior term is T * p(d_k|x)."),
                 (per_token.sum(1), "differentiate log p(d_k|x) = s_k - logsumexp(s) too: it "
                                    "brings -p(d_k|x) for every token.")]
        for slip, hint in slips:
            if np.allclose(got, slip):
                raise ExerciseFailed("rag_token_score_gradient(token_logprobs of shape [3, 4], "
                                     "doc_scores) is wrong", expected=cases[0][1], got=got,
                                     hint=hint)
    check_function(rag_token_score_gradient, cases, compare=check_close,
                   hint="∂/∂s_k Σ_t log Σ_j p(d_j|x) p(y_t|x,d_j,y_<t) = Σ_t [p(z_t=k|x,y) - "
                        "p(d_k|x)], with p(z_t=k|x,y) the softmax over k of log p(d_k|x) + "
                        "token_logprobs[k, t].")
    return ("your gradient equals autograd's on 4 problems: the retriever moves toward the "
            "documents that explain each token.")


def _fast_decode(beams, scores, use_prior=True, combine="sum"):
    """Fast decoding written out: the best answer and its score log Σ_{k: y in beam k} p(d_k|x)
    p(y|x,d_k), and the slips it diagnoses (no prior, max over documents)."""
    log_prior = _log_prior(scores) if use_prior else np.zeros(len(beams))
    terms = {}
    for k, beam in enumerate(beams):
        for answer, log_p in beam.items():
            terms.setdefault(answer, []).append(log_prior[k] + log_p)
    reduce = np.logaddexp.reduce if combine == "sum" else np.max
    totals = {answer: float(reduce(values)) for answer, values in terms.items()}
    best = min(totals, key=lambda a: (-totals[a], a))
    return best, totals[best]


@exercise("4.3")
def ch04_fast_decode(fast_decode):
    """Exercise 4.3: RAG-Sequence fast decoding from each document's beam."""
    problems = [  # (each document's beam as {answer: p(answer|x,d_k)}, the doc scores)
        ([{"Paris": 0.5, "Lyon": 0.4}, {"Lyon": 0.3, "Nice": 0.6}], [0.0, 0.0]),
        ([{"Paris": 0.5, "Lyon": 0.1}, {"Rome": 0.9, "Lyon": 0.2}], [float(np.log(4.0)), 0.0]),
        ([{"Bern": 0.7}], [3.0]),
        ([{"Rome": 0.2, "Milan": 0.1}, {"Milan": 0.3}, {"Turin": 0.45}], [0.0, 0.5, -0.5]),
    ]
    problems = [([{answer: float(np.log(p)) for answer, p in beam.items()} for beam in beams],
                 scores) for beams, scores in problems]
    cases = [((beams, scores), _fast_decode(beams, scores)) for beams, scores in problems]
    slips = [({"use_prior": False}, "weight each document's p(y|x,d_k) by its prior p(d_k|x) = "
                                    "softmax(doc_scores)_k."),
             ({"combine": "max"}, "fast decoding *sums* p(d_k|x) p(y|x,d_k) over the documents "
                                  "whose beam holds y (logsumexp in log space), not the max.")]
    for (beams, scores), expected in cases:
        try:
            got = fast_decode(copy.deepcopy(beams), list(scores))
        except Exception:
            break  # check_function reports the exception with its input
        check(isinstance(got, tuple) and len(got) == 2,
              f"fast_decode should return a pair (answer, log score), got {_show(got)}")
        if got[0] == expected[0]:
            continue
        for options, hint in slips:
            if got[0] == _fast_decode(beams, scores, **options)[0]:
                raise ExerciseFailed(f"fast_decode({beams}, {list(scores)}) picks the wrong answer",
                                     expected=expected, got=got, hint=hint)
        break

    def compare(got, expected, what, hint):
        __tracebackhide__ = True
        check(isinstance(got, tuple) and len(got) == 2,
              f"{what} should return a pair (answer, log score)", expected=expected, got=got)
        check_equal(got[0], expected[0], what=f"the answer of {what}", hint=hint)
        check_close(got[1], expected[1], what=f"the log score of {what}", hint=hint)

    check_function(fast_decode, cases, compare=compare,
                   hint="score(y) = logsumexp over the documents k whose beam holds y of "
                        "log_softmax(doc_scores)_k + beams[k][y]; an answer missing from a beam "
                        "gets nothing from that document.")
    return f"fast_decode picks the right answer, with its score, on {len(cases)} problems."
