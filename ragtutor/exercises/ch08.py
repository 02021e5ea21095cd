"""The checks of chapter 08's exercises (summaries and recommendations)."""
import functools

import numpy as np
import torch

from ragtutor.exercises.checks import check, check_close, check_function, exercise

__all__ = ["ch08_fact_scores", "ch08_mixture_step", "ch08_hit_at_k"]


def _fact_scores(stated, truth):
    stated, truth = set(stated), set(truth)
    right = len(stated & truth)
    return (right / len(stated) if stated else 0.0, right / len(truth))


@exercise("8.1")
def ch08_fact_scores(fact_scores):
    """Exercise 8.1: fact precision and fact recall of one profile."""
    truth = [("capital", "kabul"), ("continent", "asia"), ("language", "pashto"),
             ("language", "dari")]
    cases = [
        ((truth[:2], truth), (1.0, 0.5)),
        (([("capital", "herat"), ("continent", "asia")], truth), (0.5, 0.25)),
        # a fact stated twice is one fact
        (([("capital", "kabul"), ("capital", "kabul"), ("continent", "europe")], truth),
         (0.5, 0.25)),
        (([], truth), (0.0, 0.0)),
        (([("language", "dari"), ("language", "pashto"), ("capital", "kabul"),
           ("continent", "asia")], truth), (1.0, 1.0)),
    ]
    check_function(fact_scores, cases, compare=functools.partial(check_close, atol=1e-9),
                   hint="precision divides the right stated facts by the distinct stated facts "
                        "(0 when nothing is stated); recall divides them by the true facts. Sets "
                        "make a repeated fact count once.")
    return "precision and recall are right on 5 profiles, repeats and an empty one included."


@exercise("8.2")
def ch08_mixture_step(mixture_step):
    """Exercise 8.2: one step of RAG-Token decoding, the next-token mixture over passages."""
    generator = torch.Generator().manual_seed(8)
    cases = []
    for k, v in ((3, 6), (1, 4), (5, 10)):
        logprobs = torch.log_softmax(torch.randn(k, v, generator=generator), -1)
        log_prior = torch.log_softmax(torch.randn(k, generator=generator), -1)
        expected = torch.logsumexp(log_prior[:, None] + logprobs, 0)
        cases.append(((logprobs, log_prior), expected))
    logprobs, log_prior = cases[0][0]
    got = mixture_step(logprobs.clone(), log_prior.clone())
    got = torch.as_tensor(got, dtype=torch.float32)
    geometric = (log_prior.exp()[:, None] * logprobs).sum(0)
    check(not torch.allclose(got, geometric, atol=1e-5),
          "mixture_step averages the log-probabilities: that multiplies the passages' "
          "distributions (a product), not a mixture",
          hint="mix probabilities: log Σ_k p(d_k|x) p(y|x,d_k) = logsumexp_k(log p(d_k|x) + "
               "log p(y|x,d_k)).")
    check(torch.allclose(got.exp().sum(), torch.tensor(1.0), atol=1e-4),
          f"exp(mixture_step(...)) sums to {got.exp().sum().item():.4f} over the vocabulary, "
          "not to 1: a mixture of distributions is a distribution",
          hint="weight each passage's probabilities by its prior probability, exp(log_prior), "
               "before summing over passages.")
    check_function(mixture_step, cases, compare=functools.partial(check_close, atol=1e-5),
                   hint="torch.logsumexp(log_prior[:, None] + logprobs, dim=0).")
    return "the mixture is right for 1, 3 and 5 passages."


@exercise("8.3")
def ch08_hit_at_k(hit_at_k):
    """Exercise 8.3: hit@k, the share of users whose held-out item is among their first k."""
    rankings = [["ESP", "MEX", "PER"], ["FRA", "DEU"], [], ["Ne", "Ar", "Kr", "Xe"]]
    held_out = ["PER", "ITA", "ARG", "Ne"]
    cases = [((rankings, held_out, 1), 0.25), ((rankings, held_out, 3), 0.5),
             ((rankings, held_out, 2), 0.25), ((rankings[:1], held_out[:1], 5), 1.0)]
    check_function(hit_at_k, cases, compare=functools.partial(check_close, atol=1e-9),
                   hint="a user counts as a hit when the held-out item is in ranking[:k]; divide "
                        "by the number of users (an empty ranking is a miss).")
    return "hit@k is right for k = 1, 2, 3 and 5, an empty ranking included."
