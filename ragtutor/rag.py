"""The RAG likelihood (chapter 04): the generator marginalised over the retrieved documents.

Notation (docs/notation.md): question x, answer y = (y_1..y_T), retrieved documents d_1..d_K with
retrieval scores s_k = q(x)·e(d_k), prior p(d_k|x) = softmax_k(s_k), posterior
p(d_k|x,y) ∝ p(d_k|x) p(y|x,d_k); B questions in a batch, vocabulary size V. Lewis et al. (2020),
*Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks*, §2.1, define two models:

    RAG-Sequence   p(y|x) = Σ_k p(d_k|x) Π_t p(y_t | x, d_k, y_<t)     one document for the answer
    RAG-Token      p(y|x) = Π_t Σ_k p(d_k|x) p(y_t | x, d_k, y_<t)     one document per token

Both sums run over the top K documents only, with the prior renormalised over them (softmax over
s_1..s_K). Everything here is computed in log space with log-sum-exp, so scores of ±1e4 and answers
of any length stay finite.

The likelihood functions take the generator's output for every document, teacher-forced:

    logprobs   [B, K, T, V]   logprobs[b, k, t, v] = log p(y_t = v | x_b, d_k, y_<t), a log-softmax
    doc_scores [B, K]         s_k, the retriever's score of document k for question b
    target     [B, T]         y_1..y_T token ids, right-padded with pad_id; padding does not count
                              (and logprobs at padding positions are never read)

Hugging Face's ``RagSequenceForGeneration`` / ``RagTokenForGeneration`` compute the same losses
(``reduce_loss=False``, ``label_smoothing=0.0``) with these conventions, which
:func:`nll_inputs_from_hf` translates:

- Its ``labels`` ``[B, T]`` begin with the decoder's start token and double as the decoder's input;
  ``get_nll`` shifts them left and appends a pad to make the target, so logits position t (after
  reading labels_0..labels_t) is scored on labels_{t+1}. Its logits are ``[B*K, T, V]``, rows
  b*K .. b*K+K-1 holding question b's documents. Padding is ``config.generator.pad_token_id``
  (``labels`` cannot use -100: they are fed to the decoder).
- RAG-Sequence adds log p(d_k|x) to the log-probs at target position 1, not 0 (in fairseq's BART
  convention position 0 is a <s> that ``exclude_bos_score`` may leave out), *then* zeroes the pad
  positions. A target whose position 1 is padding, a one-token target, therefore loses the prior:
  Hugging Face returns -log Σ_k p(y|x,d_k), not -log Σ_k p(d_k|x) p(y|x,d_k). ragtutor always
  counts the prior, so the two differ on such rows and only there.
- A target that is all padding gets the loss -log K (RAG-Sequence: -log Σ_k e^0) or 0 (RAG-Token)
  from Hugging Face; ragtutor refuses it: an empty answer has no likelihood to compute.
- ``exclude_bos_score=True`` (RAG-Sequence only; its ``generate`` uses it) leaves target position 0
  out of the sum, but only when *every* row's target begins with the bos token: the same as
  dropping column 0 of ``logprobs`` and ``target``.

Decoding (Lewis et al. §2.5) works with any *generator function*

    generator(decoder_input_ids [N, t], docs [N]) -> [N, t, V]

the log-probs of the next token at every position of row n given document ``docs[n]`` (an index
0..K-1 into one question's documents): :class:`ToyGenerator` for problems small enough to enumerate,
:func:`seq2seq_generator` for a Hugging Face encoder-decoder such as BART. RAG-Token's per-token
mixture is an ordinary next-token distribution, searched with beam search
(:func:`rag_token_beam_search`); RAG-Sequence's p(y|x) does not factorise over tokens, so it runs a
beam search per document and rescores the union of the beams (:func:`thorough_decoding`), or
skips the rescoring by taking p(y|x,d_k) = 0 wherever y is not in d_k's beam
(:func:`fast_decoding`).
:func:`rag_generate` does either for a batch of questions with a Hugging Face model.
"""
import itertools
import math
from collections import namedtuple

import numpy as np
import torch

from ragtutor.tokenization import EOS_ID, PAD_ID, START_ID

__all__ = ["doc_log_prior", "token_logprobs", "rag_sequence_nll", "rag_token_nll",
           "doc_posterior", "nll_inputs_from_hf", "teacher_forcing", "generator_logprobs",
           "answer_logprobs", "enumerate_answers", "ToyGenerator", "seq2seq_generator",
           "Hypothesis", "rag_token_beam_search", "rag_sequence_candidates", "thorough_decoding",
           "fast_decoding", "rag_generate", "VARIANTS", "PAD_ID", "START_ID",
           "EOS_ID"]


Hypothesis = namedtuple("Hypothesis", ["tokens", "log_prob"])
Hypothesis.__doc__ = """A decoded answer: ``tokens`` (a tuple of ids, without the start token,
ending with </s>) and ``log_prob``, its score (log p(y|x) under the model that decoded it, except
for :func:`fast_decoding`, whose score is a lower bound)."""


# ---------------------------------------------------------------------------------------------
# Checks at the boundary
# ---------------------------------------------------------------------------------------------

def _tensor(value, name):
    if not torch.is_tensor(value):
        raise TypeError(f"{name} must be a torch tensor, got {type(value).__name__}")
    return value


def _check_scores(doc_scores, ndim=2):
    shape = "[B, K]" if ndim == 2 else "[K]"
    _tensor(doc_scores, "doc_scores")
    if doc_scores.dim() != ndim or not doc_scores.is_floating_point():
        raise ValueError(f"doc_scores must be a float tensor of shape {shape} (one retrieval score "
                         f"per document), got {doc_scores.dtype} of shape {list(doc_scores.shape)}")
    if doc_scores.shape[-1] == 0:
        raise ValueError("doc_scores has no documents (K = 0): retrieve at least one")
    if not torch.isfinite(doc_scores).all():
        raise ValueError("doc_scores holds NaN or infinite values; retrieval scores must be finite "
                         "(any finite size is fine: the prior is a log-softmax)")


def _check_target(target, pad_id, vocab_size):
    """Integer ids, right-padded, with at least one real token per row and every real token in
    the vocabulary. Returns the mask of real tokens, ``[B, T]``."""
    _tensor(target, "target")
    if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must hold integer token ids, got {target.dtype}")
    if not isinstance(pad_id, int) or isinstance(pad_id, bool):
        raise TypeError(f"pad_id must be an int, got {pad_id!r}")
    real = target != pad_id
    outside = real & ((target < 0) | (target >= vocab_size))
    if outside.any():
        b, t = outside.nonzero()[0].tolist()
        hint = (f" If {int(target[b, t])} marks padding, pass pad_id={int(target[b, t])}."
                if target[b, t] < 0 else "")
        raise ValueError(f"target[{b}, {t}] = {int(target[b, t])} is not a token id of the "
                         f"vocabulary [0, {vocab_size}) and not pad_id={pad_id}.{hint}")
    empty = ~real.any(dim=1)
    if empty.any():
        b = int(empty.nonzero()[0])
        raise ValueError(f"target row {b} is all padding (pad_id={pad_id}): an empty answer has no "
                         "likelihood to compute. Every answer needs at least one token, e.g. </s>.")
    after_pad = real[:, 1:] & ~real[:, :-1]
    if after_pad.any():
        b, t = after_pad.nonzero()[0].tolist()
        raise ValueError(f"target row {b} has a token at position {t + 1} after padding: pad only "
                         f"at the end of a target (right padding). Is pad_id={pad_id} right?")
    return real


def _check_logprobs(logprobs):
    _tensor(logprobs, "logprobs")
    if logprobs.dim() != 4 or not logprobs.is_floating_point():
        raise ValueError("logprobs must be a float tensor of shape [B, K, T, V] (the generator's "
                         f"log-softmax for each of the K documents), got {logprobs.dtype} of shape "
                         f"{list(logprobs.shape)}")


def _check_normalised(logprobs, real):
    """At every real target position, each document's row must be a log-softmax: no NaN or +inf,
    log-sum-exp 0 over the vocabulary (-inf, a zero probability, is fine). Padding positions are
    not read, so they may hold anything."""
    with torch.no_grad():
        total = torch.logsumexp(logprobs, dim=-1)  # [B, K, T]
        tolerance = max(1e-3, 100 * torch.finfo(logprobs.dtype).eps)
        bad = ~(total.abs() <= tolerance) & real[:, None, :]
        if bad.any():
            b, k, t = bad.nonzero()[0].tolist()
            value = float(total[b, k, t])
            if math.isnan(value) or value == math.inf:
                raise ValueError(f"logprobs[{b}, {k}, {t}] holds NaN or +inf values")
            raise ValueError(f"logprobs must be log-probabilities over the vocabulary (log-sum-exp "
                             f"0 over the last dimension), but logprobs[{b}, {k}, {t}] has "
                             f"log-sum-exp {value:.4g}: pass torch.log_softmax(logits, dim=-1), "
                             "not the logits.")


def _check_nll_inputs(logprobs, doc_scores, target, pad_id):
    """Validate the inputs together (``doc_scores`` may be None); returns the real-token mask
    ``[B, T]``."""
    _check_logprobs(logprobs)
    b, k, t, v = logprobs.shape
    if doc_scores is not None:
        _check_scores(doc_scores)
        if tuple(doc_scores.shape) != (b, k):
            raise ValueError(f"doc_scores has shape {list(doc_scores.shape)}, but logprobs "
                             f"{list(logprobs.shape)} = [B, K, T, V] needs [B, K] = [{b}, {k}]")
    _tensor(target, "target")
    if tuple(target.shape) != (b, t):
        raise ValueError(f"target has shape {list(target.shape)}, but logprobs "
                         f"{list(logprobs.shape)} = [B, K, T, V] needs [B, T] = [{b}, {t}]")
    real = _check_target(target, pad_id, v)
    _check_normalised(logprobs, real)
    return real


# ---------------------------------------------------------------------------------------------
# The likelihoods
# ---------------------------------------------------------------------------------------------

def doc_log_prior(doc_scores):
    """log p(d_k|x) = s_k - log Σ_j exp(s_j), the retriever's prior over the top K documents.

    ``doc_scores`` ``[B, K]`` (s_k = q(x)·e(d_k)) -> ``[B, K]``. A log-softmax: finite for any
    finite scores, and unchanged by adding a constant to a row.
    """
    _check_scores(doc_scores)
    return torch.log_softmax(doc_scores, dim=-1)


def token_logprobs(logprobs, target, pad_id):
    """log p(y_t | x, d_k, y_<t) of each target token under each document: ``[B, K, T]``.

    ``logprobs`` ``[B, K, T, V]``, ``target`` ``[B, T]`` (right-padded with ``pad_id``). Padding
    positions hold 0 (probability 1), so sums over t count only the answer's tokens.
    """
    real = _check_nll_inputs(logprobs, None, target, pad_id)
    return _picked(logprobs, target, real)


def _picked(logprobs, target, real):
    ids = target.masked_fill(~real, 0)  # any valid id: padded positions are zeroed below
    picked = logprobs.gather(-1, ids[:, None, :, None].expand(-1, logprobs.shape[1], -1, 1))
    return picked.squeeze(-1).masked_fill(~real[:, None, :], 0.0)


def rag_sequence_nll(logprobs, doc_scores, target, pad_id):
    """RAG-Sequence negative log-likelihood of each answer: ``[B]``.

        -log p(y|x) = -log Σ_k p(d_k|x) Π_t p(y_t | x, d_k, y_<t)
                    = -logsumexp_k( log p(d_k|x) + Σ_t log p(y_t | x, d_k, y_<t) )

    (Lewis et al. 2020, §2.1, "RAG-Sequence Model"), the sum over t skipping padding.
    ``logprobs`` ``[B, K, T, V]``, ``doc_scores`` ``[B, K]``, ``target`` ``[B, T]``. Equals Hugging
    Face's ``RagSequenceForGeneration`` loss (``reduce_loss=False``) on the inputs of
    :func:`nll_inputs_from_hf`, except for one-token targets, where Hugging Face drops the prior
    (module docstring).
    """
    real = _check_nll_inputs(logprobs, doc_scores, target, pad_id)
    log_p_y_given_doc = _picked(logprobs, target, real).sum(-1)  # [B, K]
    return -torch.logsumexp(torch.log_softmax(doc_scores, dim=-1) + log_p_y_given_doc, dim=-1)


def rag_token_nll(logprobs, doc_scores, target, pad_id):
    """RAG-Token negative log-likelihood of each answer: ``[B]``.

        -log p(y|x) = -Σ_t log Σ_k p(d_k|x) p(y_t | x, d_k, y_<t)
                    = -Σ_t logsumexp_k( log p(d_k|x) + log p(y_t | x, d_k, y_<t) )

    (Lewis et al. 2020, §2.1, "RAG-Token Model"), the sum over t skipping padding.
    ``logprobs`` ``[B, K, T, V]``, ``doc_scores`` ``[B, K]``, ``target`` ``[B, T]``. Equals Hugging
    Face's ``RagTokenForGeneration`` loss (``reduce_loss=False``) on the inputs of
    :func:`nll_inputs_from_hf`.
    """
    real = _check_nll_inputs(logprobs, doc_scores, target, pad_id)
    prior = torch.log_softmax(doc_scores, dim=-1)[:, :, None]  # [B, K, 1]
    mixture = torch.logsumexp(prior + _picked(logprobs, target, real), dim=1)  # [B, T]
    return -mixture.masked_fill(~real, 0.0).sum(-1)


def doc_posterior(logprobs, doc_scores, target, pad_id, variant="sequence"):
    """The posterior over documents after seeing the answer.

    variant="sequence": p(d_k|x,y) = p(d_k|x) p(y|x,d_k) / Σ_j p(d_j|x) p(y|x,d_j), shape
    ``[B, K]``. Its gap to the prior is the gradient of RAG-Sequence's log-likelihood with respect
    to the scores: ∂ log p(y|x) / ∂ s_k = p(d_k|x,y) - p(d_k|x).

    variant="token": for each target token, the posterior of the document that produced it,
    p(z_t = k | x, y) = p(d_k|x) p(y_t|x,d_k,y_<t) / Σ_j p(d_j|x) p(y_t|x,d_j,y_<t), shape
    ``[B, T, K]`` (RAG-Token draws z_t for each token independently from the prior, so y_t alone
    updates it). At padding positions, where there is no token, it is the prior.

    ``logprobs`` ``[B, K, T, V]``, ``doc_scores`` ``[B, K]``, ``target`` ``[B, T]``. Each
    distribution sums to 1 over k; it is NaN where the answer (or token) has probability 0 under
    every document.
    """
    if variant not in ("sequence", "token"):
        raise ValueError(f"variant must be 'sequence' or 'token', got {variant!r}")
    real = _check_nll_inputs(logprobs, doc_scores, target, pad_id)
    prior = torch.log_softmax(doc_scores, dim=-1)  # [B, K]
    picked = _picked(logprobs, target, real)  # [B, K, T]
    if variant == "sequence":
        return torch.softmax(prior + picked.sum(-1), dim=-1)
    return torch.softmax(prior[:, :, None] + picked, dim=1).transpose(1, 2)


def nll_inputs_from_hf(logits, labels, n_docs, pad_id, exclude_bos_score=False, bos_id=None):
    """``(logprobs [B, K, T, V], target [B, T])`` from a Hugging Face RAG model's output.

    ``logits`` ``[B*K, T, V]`` are the ``logits`` of ``RagSequenceForGeneration`` /
    ``RagTokenForGeneration`` called with ``labels`` ``[B, T]`` (which begin with the decoder's
    start token), ``n_docs`` = K, ``pad_id`` = ``config.generator.pad_token_id``. The target is the
    labels shifted left with a pad appended, as Hugging Face's ``get_nll`` makes it. With
    ``exclude_bos_score=True`` and every target beginning with ``bos_id``, position 0 is dropped,
    as ``RagSequenceForGeneration(exclude_bos_score=True)`` does. Then ``rag_token_nll(logprobs,
    doc_scores, target, pad_id)`` equals Hugging Face's RAG-Token loss and ``rag_sequence_nll``
    its RAG-Sequence loss on every row whose target has at least two tokens (module docstring).
    """
    _tensor(logits, "logits")
    _tensor(labels, "labels")
    if logits.dim() != 3 or labels.dim() != 2:
        raise ValueError(f"logits must be [B*K, T, V] and labels [B, T], got shapes "
                         f"{list(logits.shape)} and {list(labels.shape)}")
    rows, length, vocab_size = logits.shape
    if not isinstance(n_docs, int) or n_docs < 1 or rows != labels.shape[0] * n_docs:
        raise ValueError(f"logits has {rows} rows, but labels {list(labels.shape)} with "
                         f"n_docs={n_docs} needs B*K = {labels.shape[0]} * {n_docs}")
    if labels.shape[1] != length:
        raise ValueError(f"labels has {labels.shape[1]} positions but logits {length}: the logits "
                         "must come from the decoder reading the labels (teacher forcing)")
    if (labels < 0).any():
        raise ValueError("labels hold negative ids: Hugging Face RAG feeds the labels to the "
                         "decoder, so pad them with the generator's pad_token_id, not -100")
    logprobs = torch.log_softmax(logits, dim=-1).view(-1, n_docs, length, vocab_size)
    target = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), pad_id)], dim=1)
    if exclude_bos_score and bos_id is not None and (target[:, 0] == bos_id).all():
        logprobs, target = logprobs[:, :, 1:], target[:, 1:]
    return logprobs, target


# ---------------------------------------------------------------------------------------------
# Generators: a toy one to enumerate, and Hugging Face's encoder-decoders
# ---------------------------------------------------------------------------------------------

def teacher_forcing(answers, start_id=START_ID, pad_id=PAD_ID):
    """The decoder's inputs and targets for a list of answers: ``(decoder_input_ids, target)``.

    Each answer is a sequence of token ids y_1..y_T (normally ending with </s>). The decoder reads
    <start> y_1..y_{T-1} and is scored on y_1..y_T; both tensors are ``[N, T_max]``, right-padded
    with ``pad_id`` (a causal decoder never looks ahead, so the padding changes nothing before it).
    """
    answers = [list(map(int, answer)) for answer in answers]
    if not answers or not all(answers):
        raise ValueError("teacher_forcing needs a non-empty list of non-empty answers")
    length = max(map(len, answers))
    target = torch.full((len(answers), length), pad_id, dtype=torch.long)
    decoder_input_ids = torch.full((len(answers), length), pad_id, dtype=torch.long)
    for n, answer in enumerate(answers):
        target[n, :len(answer)] = torch.tensor(answer)
        decoder_input_ids[n, :len(answer)] = torch.tensor([start_id] + answer[:-1])
    return decoder_input_ids, target


def generator_logprobs(generator, decoder_input_ids, n_docs):
    """Every document's teacher-forced log-probs for each row: ``[N, K, t, V]``.

    ``generator(decoder_input_ids, docs)`` is called once on the rows repeated K times, so the
    result is the ``logprobs`` argument of the likelihood functions.
    """
    n = decoder_input_ids.shape[0]
    docs = torch.arange(n_docs).repeat(n)
    out = generator(decoder_input_ids.repeat_interleave(n_docs, dim=0), docs)
    return out.view(n, n_docs, *out.shape[1:])


def answer_logprobs(generator, answers, n_docs, start_id=START_ID, pad_id=PAD_ID):
    """log p(y|x,d_k) = Σ_t log p(y_t | x, d_k, y_<t) for each answer and document: ``[N, K]``."""
    decoder_input_ids, target = teacher_forcing(answers, start_id, pad_id)
    logprobs = generator_logprobs(generator, decoder_input_ids, n_docs)
    return token_logprobs(logprobs, target, pad_id).sum(-1)


def enumerate_answers(words, max_new_tokens, eos_id=EOS_ID):
    """Every answer of at most ``max_new_tokens`` tokens: 0 .. max_new_tokens-1 of ``words`` (ids)
    followed by </s>. There are Σ_{L<max_new_tokens} |words|^L of them, shortest first."""
    words = list(words)
    return [tuple(body) + (eos_id,) for length in range(max_new_tokens)
            for body in itertools.product(words, repeat=length)]


class ToyGenerator:
    """A generator small enough to enumerate, defined by its next-token distributions.

    ``next_token_logprobs(doc, prefix) -> [V]`` gives log p(· | x, d_doc, prefix) for one document
    index and one prefix (a tuple of ids that begins with the start token); calling the generator
    evaluates it at every position of every row, so it follows the generator protocol
    ``generator(decoder_input_ids [N, t], docs [N]) -> [N, t, V]``. Computed in float64.
    ``words``: the ids it may produce before </s>, for :func:`enumerate_answers`.
    """

    def __init__(self, next_token_logprobs, vocab_size, words=None):
        self.next_token_logprobs = next_token_logprobs
        self.vocab_size = vocab_size
        self.words = list(words) if words is not None else None

    def __call__(self, decoder_input_ids, docs):
        rows = decoder_input_ids.tolist()
        out = torch.empty(len(rows), decoder_input_ids.shape[1], self.vocab_size,
                          dtype=torch.float64)
        for n, (row, doc) in enumerate(zip(rows, docs.tolist())):
            for t in range(len(row)):
                out[n, t] = torch.as_tensor(self.next_token_logprobs(doc, tuple(row[:t + 1])),
                                            dtype=torch.float64)
        return out

    @classmethod
    def from_table(cls, table, vocab_size, eos_id=EOS_ID):
        """Next-token probabilities written by hand: ``table[doc][prefix] = {token: probability}``.

        A prefix is a tuple of the answer's tokens so far, without the start token (``()`` for the
        first token); after a prefix the table does not list, </s> is certain. Each listed
        distribution must sum to 1.
        """
        for doc, rows in enumerate(table):
            for prefix, probs in rows.items():
                if not math.isclose(sum(probs.values()), 1.0, abs_tol=1e-9):
                    raise ValueError(f"table[{doc}][{prefix}] sums to {sum(probs.values())}, not 1")
        words = sorted({token for rows in table for probs in rows.values() for token in probs}
                       - {eos_id})

        def next_token_logprobs(doc, prefix):
            probs = table[doc].get(prefix[1:], {eos_id: 1.0})
            return torch.tensor([probs.get(v, 0.0) for v in range(vocab_size)],
                                dtype=torch.float64).log()

        return cls(next_token_logprobs, vocab_size, words=words)

    @classmethod
    def random(cls, n_docs, n_words, max_new_tokens, seed=0, sharpness=2.0):
        """Random next-token distributions, a fixed one for each (document, prefix).

        The vocabulary is <pad>, <s>, </s> (ids 0, 1, 2) and ``n_words`` words (ids 3..); the logits
        of the words and of </s> are ``sharpness`` times standard normal draws seeded by (seed,
        document, prefix), <pad> and <s> are never produced, and after ``max_new_tokens - 1`` tokens
        </s> is certain, so that the answers of :func:`enumerate_answers` carry all the probability.
        ``n_docs`` documents: larger sharpness makes the documents disagree more.
        """
        vocab_size = 3 + n_words

        def next_token_logprobs(doc, prefix):
            if not 0 <= doc < n_docs:
                raise IndexError(f"document {doc} of a toy generator with {n_docs} documents")
            logits = torch.full((vocab_size,), -math.inf, dtype=torch.float64)
            if len(prefix) >= max_new_tokens:  # prefix = <s> and max_new_tokens - 1 tokens
                logits[EOS_ID] = 0.0
            else:
                draws = np.random.default_rng([seed, doc, *prefix]).normal(size=n_words + 1)
                logits[EOS_ID:] = torch.from_numpy(sharpness * draws)
            return torch.log_softmax(logits, dim=0)

        return cls(next_token_logprobs, vocab_size, words=range(3, vocab_size))


def seq2seq_generator(model, context_input_ids, context_attention_mask):
    """The generator protocol for a Hugging Face encoder-decoder (BART, T5) and one question.

    ``context_input_ids`` / ``context_attention_mask`` ``[K, S]`` are the generator inputs for the
    question's K documents (in Hugging Face RAG, one question's rows of the retriever's
    ``context_input_ids``). The encoder runs once here; the returned function maps
    ``decoder_input_ids [N, t]`` and ``docs [N]`` to ``log_softmax(logits)`` ``[N, t, V]``. It keeps
    gradients unless called under ``torch.no_grad()`` (the decoding functions do that).
    """
    encoder_states = model.get_encoder()(input_ids=context_input_ids,
                                         attention_mask=context_attention_mask).last_hidden_state

    def generator(decoder_input_ids, docs):
        logits = model(encoder_outputs=(encoder_states[docs],),
                       attention_mask=context_attention_mask[docs],
                       decoder_input_ids=decoder_input_ids, use_cache=False).logits
        return torch.log_softmax(logits, dim=-1)

    return generator


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------

def _beam_search(next_token_logprobs, n_groups, num_beams, max_new_tokens, start_id, eos_id,
                 pad_id):
    """Beam search in ``n_groups`` independent groups at once, one model call per step.

    ``next_token_logprobs(prefixes [N, t], groups [N]) -> [N, V]``. In each group, every open
    prefix is extended by every token: an extension by </s> is a finished answer, the best
    ``num_beams`` other extensions stay open. A group stops when its ``num_beams`` best finished
    answers can no longer change: a log-probability only falls as tokens are added, so no open
    prefix can beat a finished answer scoring at least as much as the best open extension. With
    ``num_beams`` at least the number of prefixes of each length, nothing is pruned and the search
    is exact. <pad> is never produced. Returns, per group, up to ``num_beams`` Hypotheses, best
    first.
    """
    prefixes = torch.full((n_groups, 1), start_id, dtype=torch.long)
    groups = torch.arange(n_groups)
    scores = torch.zeros(n_groups, dtype=torch.float64)
    finished = [[] for _ in range(n_groups)]
    for step in range(max_new_tokens):
        candidates = scores[:, None] + next_token_logprobs(prefixes, groups).to(torch.float64)
        if pad_id is not None and pad_id != eos_id:
            candidates[:, pad_id] = -math.inf
        for prefix, group, score in zip(prefixes[:, 1:].tolist(), groups.tolist(),
                                        candidates[:, eos_id].tolist()):
            if score > -math.inf:
                finished[group].append(Hypothesis(tuple(prefix) + (eos_id,), score))
        candidates[:, eos_id] = -math.inf
        vocab_size = candidates.shape[1]
        kept = []  # (rows of `prefixes`, tokens, scores, group) of each group's open extensions
        for group in range(n_groups):
            finished[group] = sorted(finished[group], key=lambda h: -h.log_prob)[:num_beams]
            rows = (groups == group).nonzero().squeeze(1)
            if step == max_new_tokens - 1 or len(rows) == 0:
                continue
            flat = candidates[rows].flatten()
            best, index = flat.topk(min(num_beams, flat.numel()))
            index = index[best > -math.inf]
            settled = len(finished[group]) == num_beams and finished[group][-1].log_prob >= best[0]
            if len(index) and not settled:
                kept.append((rows[index // vocab_size], index % vocab_size, flat[index], group))
        if not kept:
            break
        prefixes = torch.cat([torch.cat([prefixes[rows], tokens[:, None]], dim=1)
                              for rows, tokens, _, _ in kept])
        scores = torch.cat([s for _, _, s, _ in kept])
        groups = torch.cat([torch.full((len(s),), g) for _, _, s, g in kept])
    return finished


def _check_decoding(doc_scores, num_beams, max_new_tokens):
    _check_scores(doc_scores, ndim=1)
    for name, value in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _no_answer(where):
    return ValueError(f"no answer ends with </s> within max_new_tokens in {where}: raise "
                      "max_new_tokens, or check eos_id")


@torch.no_grad()
def rag_token_beam_search(generator, doc_scores, num_beams=4, max_new_tokens=16, start_id=START_ID,
                          eos_id=EOS_ID, pad_id=PAD_ID):
    """RAG-Token decoding: beam search over the per-token mixture (Lewis et al. 2020, §2.5).

    RAG-Token's next-token distribution is itself a distribution over the vocabulary,

        p'(y_t | x, y_<t) = Σ_k p(d_k|x) p(y_t | x, d_k, y_<t),

    so an ordinary beam search finds answers with a high p(y|x) = Π_t p'(y_t | x, y_<t).
    ``generator`` follows the protocol ``(decoder_input_ids [N, t], docs [N]) -> [N, t, V]``;
    ``doc_scores`` ``[K]`` are one question's scores. Returns up to ``num_beams`` Hypotheses, best
    first, each with its RAG-Token log p(y|x). Scores are plain log-probabilities, not divided by
    the length as Hugging Face's ``generate`` does by default (``length_penalty=1.0``), so a short
    answer is not favoured or penalised beyond its probability.
    """
    _check_decoding(doc_scores, num_beams, max_new_tokens)
    n_docs = doc_scores.shape[0]
    prior = torch.log_softmax(doc_scores.to(torch.float64), dim=0)

    def mixture(prefixes, groups):
        logprobs = generator_logprobs(generator, prefixes, n_docs)[:, :, -1]  # [N, K, V]
        return torch.logsumexp(prior[None, :, None] + logprobs.to(torch.float64), dim=1)

    (answers,) = _beam_search(mixture, 1, num_beams, max_new_tokens, start_id, eos_id, pad_id)
    if not answers:
        raise _no_answer("RAG-Token beam search")
    return answers


@torch.no_grad()
def rag_sequence_candidates(generator, doc_scores, num_beams=4, max_new_tokens=16,
                            start_id=START_ID, eos_id=EOS_ID, pad_id=PAD_ID):
    """The first step of RAG-Sequence decoding: a beam search for each document, on its own.

    Document k's beam search ranks answers by log p(y|x,d_k). Returns ``(candidates,
    beam_logprobs)``: the union Y of the K beams' answers (in order of first appearance) and a
    ``[|Y|, K]`` float64 tensor holding log p(y|x,d_k) where answer y is in document k's beam and
    -inf where it is not.
    """
    _check_decoding(doc_scores, num_beams, max_new_tokens)
    n_docs = doc_scores.shape[0]
    beams = _beam_search(lambda prefixes, docs: generator(prefixes, docs)[:, -1], n_docs,
                         num_beams, max_new_tokens, start_id, eos_id, pad_id)
    candidates = list(dict.fromkeys(h.tokens for beam in beams for h in beam))
    if not candidates:
        raise _no_answer("any document's beam search")
    position = {answer: i for i, answer in enumerate(candidates)}
    table = torch.full((len(candidates), n_docs), -math.inf, dtype=torch.float64)
    for doc, beam in enumerate(beams):
        for hypothesis in beam:
            table[position[hypothesis.tokens], doc] = hypothesis.log_prob
    return candidates, table


def _ranked(candidates, log_probs):
    order = sorted(range(len(candidates)), key=lambda i: -log_probs[i])
    return [Hypothesis(candidates[i], float(log_probs[i])) for i in order]


@torch.no_grad()
def thorough_decoding(generator, doc_scores, num_beams=4, max_new_tokens=16, start_id=START_ID,
                      eos_id=EOS_ID, pad_id=PAD_ID):
    """RAG-Sequence "Thorough Decoding" (Lewis et al. 2020, §2.5).

    RAG-Sequence's p(y|x) = Σ_k p(d_k|x) p(y|x,d_k) does not factorise over tokens, so no single
    beam search can rank it. Instead: a beam search for each document gives a candidate set Y
    (:func:`rag_sequence_candidates`); for each y in Y and each document whose beam missed y, one
    more teacher-forced pass computes p(y|x,d_k); then every candidate gets its exact RAG-Sequence
    log p(y|x) = logsumexp_k(log p(d_k|x) + log p(y|x,d_k)). Returns all candidates as Hypotheses,
    best first. ``generator`` and ``doc_scores`` ``[K]`` as in :func:`rag_token_beam_search`.
    """
    candidates, table = rag_sequence_candidates(generator, doc_scores, num_beams, max_new_tokens,
                                                start_id, eos_id, pad_id)
    missing = (table == -math.inf).nonzero().tolist()  # (candidate, document) pairs to score
    if missing:
        decoder_input_ids, target = teacher_forcing([candidates[i] for i, _ in missing], start_id,
                                                    pad_id)
        logprobs = generator(decoder_input_ids, torch.tensor([k for _, k in missing]))
        scored = token_logprobs(logprobs[:, None].to(torch.float64), target, pad_id).sum(-1)
        table[tuple(torch.tensor(missing).T)] = scored[:, 0]
    prior = torch.log_softmax(doc_scores.to(torch.float64), dim=0)
    return _ranked(candidates, torch.logsumexp(prior + table, dim=1))


@torch.no_grad()
def fast_decoding(generator, doc_scores, num_beams=4, max_new_tokens=16, start_id=START_ID,
                  eos_id=EOS_ID, pad_id=PAD_ID):
    """RAG-Sequence "Fast Decoding" (Lewis et al. 2020, §2.5).

    As :func:`thorough_decoding`, but with no extra passes: p(y|x,d_k) is taken to be 0 wherever y
    is not in document k's beam, so each candidate scores

        log Σ_{k : y in beam k} p(d_k|x) p(y|x,d_k)   <=   log p(y|x).

    The score is a lower bound, exact when y is in every beam; the answer it picks is never more
    likely under RAG-Sequence than the one thorough decoding picks from the same candidates.
    Returns all candidates as Hypotheses (with that lower bound), best first.
    """
    candidates, table = rag_sequence_candidates(generator, doc_scores, num_beams, max_new_tokens,
                                                start_id, eos_id, pad_id)
    prior = torch.log_softmax(doc_scores.to(torch.float64), dim=0)
    return _ranked(candidates, torch.logsumexp(prior + table, dim=1))


VARIANTS = ("sequence", "token")  # the two marginal likelihoods, by the name of their latent
_DECODERS = {"token": rag_token_beam_search, "thorough": thorough_decoding, "fast": fast_decoding}


@torch.no_grad()
def rag_generate(model, context_input_ids, context_attention_mask, doc_scores, decoding="token",
                 num_beams=4, max_new_tokens=16):
    """Decode one answer per question with a Hugging Face encoder-decoder generator.

    ``model`` is the generator (e.g. ``BartForConditionalGeneration``; for a Hugging Face RAG model,
    its ``.generator``); ``context_input_ids`` / ``context_attention_mask`` ``[B*K, S]`` hold the
    generator inputs of each question's K documents, question b in rows b*K .. b*K+K-1 (the layout
    of Hugging Face's ``RagRetriever``); ``doc_scores`` ``[B, K]``. ``decoding`` is "token"
    (:func:`rag_token_beam_search`), "thorough" (:func:`thorough_decoding`) or "fast"
    (:func:`fast_decoding`). The start, end and pad ids come from ``model.config``.

    Returns B Hypotheses: each question's best answer (token ids ending with </s>, without the start
    token) and its score.
    """
    if decoding not in _DECODERS:
        raise ValueError(f"decoding must be one of {sorted(_DECODERS)}, got {decoding!r}")
    _check_scores(doc_scores)
    n_questions, n_docs = doc_scores.shape
    if context_input_ids.shape[0] != n_questions * n_docs or (
            context_attention_mask.shape != context_input_ids.shape):
        raise ValueError(f"context_input_ids {list(context_input_ids.shape)} and "
                         f"context_attention_mask {list(context_attention_mask.shape)} must both "
                         f"be [B*K, S] with B*K = {n_questions} * {n_docs} (doc_scores is [B, K])")
    config = model.config
    ids = {"start_id": config.decoder_start_token_id, "eos_id": config.eos_token_id,
           "pad_id": config.pad_token_id}
    was_training = model.training
    model.eval()
    answers = []
    for b in range(n_questions):
        rows = slice(b * n_docs, (b + 1) * n_docs)
        generator = seq2seq_generator(model, context_input_ids[rows], context_attention_mask[rows])
        answers.append(_DECODERS[decoding](generator, doc_scores[b], num_beams=num_beams,
                                           max_new_tokens=max_new_tokens, **ids)[0])
    model.train(was_training)
    return answers
