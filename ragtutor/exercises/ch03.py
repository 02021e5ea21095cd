"""The checks of chapter 03's exercises (seq2seq generation)."""
import functools

import numpy as np

from ragtutor.exercises.checks import (ExerciseFailed, _as_array, check, check_close,
                                       check_function, exercise)

__all__ = ["ch03_shift_right", "ch03_beam_step", "ch03_sequence_log_prob"]


def _ch03_labels():
    """Label batches with -100 padding, as ragtutor.generation.encode_pairs makes them."""
    import torch

    return [torch.tensor([[17, 42, 2]]), torch.tensor([[5, 2, -100, -100], [7, 8, 9, 2]]),
            torch.tensor([[2], [2]])]


@exercise("3.1")
def ch03_shift_right(shift_right):
    """Exercise 3.1: teacher forcing's decoder input, the labels shifted one step to the right."""
    import torch

    def expected(labels, start_id, pad_id):  # written out here, independent of the chapter
        shifted = torch.cat([torch.full_like(labels[:, :1], start_id), labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, pad_id)

    cases = [(labels, 1, 0) for labels in _ch03_labels()] + [(_ch03_labels()[1], 2, 9)]
    for labels, start_id, pad_id in cases:
        right = expected(labels, start_id, pad_id)
        try:
            got = shift_right(labels.clone(), start_id, pad_id)
            values = _as_array(got)
        except Exception:
            break  # check_function reports it with its input
        if values.shape != tuple(labels.shape) or np.array_equal(values, right.numpy()):
            continue
        if (values == -100).any():
            raise ExerciseFailed("the decoder input still holds -100", expected=right, got=got,
                                 hint="-100 only tells the loss to skip a position; it is not a "
                                      "token id. Replace it by pad_id after shifting.")
        if np.array_equal(values[:, -1], labels[:, -1].numpy()):
            raise ExerciseFailed("the last label is still in the decoder input", expected=right,
                                 got=got, hint="shift to the right: the decoder reads the start "
                                               "token first and never reads the last label, which "
                                               "it only predicts.")
        break
    check_function(shift_right, [((labels, start_id, pad_id), expected(labels, start_id, pad_id))
                                 for labels, start_id, pad_id in cases],
                   hint="put start_id in front, drop the last column, then replace -100 by pad_id.")
    return ("shift_right builds the decoder input of teacher forcing, the same as Hugging Face's "
            "shift_tokens_right.")


@exercise("3.2")
def ch03_beam_step(beam_step):
    """Exercise 3.2: one step of beam search over n beams and a vocabulary of V tokens."""
    import torch

    generator = torch.Generator().manual_seed(3)
    cases = []
    for n, vocab, k in [(1, 6, 3), (3, 5, 3), (2, 7, 4)]:
        scores = -torch.rand(n, generator=generator) * 3
        log_probs = torch.log_softmax(torch.randn(n, vocab, generator=generator) * 2, dim=-1)
        cases.append((scores, log_probs, k))

    def expected(scores, log_probs, k):
        totals = (scores[:, None] + log_probs).flatten()
        best, index = totals.topk(k)
        return [divmod(int(i), log_probs.shape[1]) + (float(s),) for s, i in zip(best, index)]

    def as_triples(got):
        return [(int(b), int(t), float(s)) for b, t, s in zip(*got)]

    for scores, log_probs, k in cases:
        try:
            got = as_triples(beam_step(scores.clone(), log_probs.clone(), k))
        except Exception:
            break
        right = expected(scores, log_probs, k)
        if [g[:2] for g in got] == [r[:2] for r in right]:
            continue
        per_beam = [(b, t) for b in range(len(scores))
                    for t in log_probs[b].topk(k).indices.tolist()]
        unscored = expected(torch.zeros_like(scores), log_probs, k)
        if [g[:2] for g in got] == [r[:2] for r in unscored]:
            hint = ("a candidate's score is its beam's score plus the token's log-probability: "
                    "add scores[:, None] before ranking.")
        elif set(g[:2] for g in got) <= set(per_beam) and len(scores) > 1:
            hint = ("rank all n * V candidates together (flatten them), not the top k of each beam "
                    "separately.")
        else:
            hint = ("flatten the [n, V] totals, take topk(k), and recover beam = i // V and "
                    "token = i % V.")
        raise ExerciseFailed(f"beam_step picks the wrong candidates for {len(scores)} beams and "
                             f"k={k}", expected=[r[:2] for r in right], got=[g[:2] for g in got],
                             hint=hint)
    for scores, log_probs, k in cases:
        got = beam_step(scores.clone(), log_probs.clone(), k)
        check(isinstance(got, tuple) and len(got) == 3,
              "beam_step must return three things: (beam ids, token ids, scores)", got=got)
        check_close([s for *_, s in as_triples(got)],
                    [s for *_, s in expected(scores, log_probs, k)],
                    what="the scores beam_step returns", rtol=1e-5,
                    hint="return the summed scores of the chosen candidates, best first.")
    return "beam_step ranks all n x V extensions by their summed log-probability."


@exercise("3.3")
def ch03_sequence_log_prob(sequence_log_prob):
    """Exercise 3.3: log p(y | x) = sum_t log p(y_t | x, y_<t) from logits [B, T, V] and labels."""
    import torch

    generator = torch.Generator().manual_seed(0)
    cases = []
    for labels in _ch03_labels():
        logits = torch.randn(*labels.shape, 50, generator=generator) * 3
        log_probs = torch.log_softmax(logits, dim=-1)
        mask = labels != -100
        picked = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        cases.append((logits, labels, (picked * mask).sum(1), (picked * mask).sum(1) / mask.sum(1),
                      (logits.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask).sum(1),
                      picked.sum(1)))
    for logits, labels, right, mean, raw, unmasked in cases:
        try:
            got = _as_array(sequence_log_prob(logits.clone(), labels.clone())).astype(float)
        except Exception:
            break
        if got.shape != tuple(right.shape) or np.allclose(got, right.numpy(), rtol=1e-4):
            continue
        for slip, hint in [(mean, "sum over the answer's tokens; the model's loss takes the mean, "
                                  "but log p(y | x) is a sum."),
                           (raw, "turn the logits into log-probabilities first: "
                                 "torch.log_softmax(logits, dim=-1)."),
                           (unmasked, "the positions where labels == -100 are padding, not part "
                                      "of the answer: leave them out of the sum.")]:
            if np.allclose(got, slip.numpy(), rtol=1e-4):
                raise ExerciseFailed("sequence_log_prob is wrong", expected=right, got=got,
                                     hint=hint)
        break
    check_function(sequence_log_prob,
                   [((logits, labels), right) for logits, labels, right, *_ in cases],
                   compare=functools.partial(check_close, rtol=1e-4, atol=1e-5),
                   hint="log_softmax over V, gather each label's log-probability, zero the "
                        "positions where labels == -100, and sum over T.")
    return ("sequence_log_prob gives log p(y | x), the quantity chapter 04 sums over retrieved "
            "documents.")
