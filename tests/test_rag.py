"""Chapter 04's package side: the RAG likelihoods, posteriors and decoding, checked against
brute-force enumeration, autograd and Hugging Face's RagSequenceForGeneration /
RagTokenForGeneration."""
import itertools
import math

import datasets
import pytest
import torch
from transformers import (BartConfig, BartForConditionalGeneration, DPRConfig, DPRContextEncoder,
                          DPRQuestionEncoder, RagConfig, RagRetriever, RagSequenceForGeneration,
                          RagTokenForGeneration)
from transformers.models.rag.retrieval_rag import CustomHFIndex

from ragtutor.generation import train_tokenizer
from ragtutor.rag import (EOS_ID, PAD_ID, START_ID, ToyGenerator, answer_logprobs, doc_log_prior,
                          doc_posterior, enumerate_answers, fast_decoding, generator_logprobs,
                          nll_inputs_from_hf, rag_generate, rag_sequence_candidates,
                          rag_sequence_nll, rag_token_beam_search, rag_token_nll,
                          seq2seq_generator, teacher_forcing, thorough_decoding, token_logprobs)

HF_TOLERANCE = 1e-5  # equality with Hugging Face, edge cases included; never loosened


def random_problem(seed, b=3, k=4, t=5, v=7, dtype=torch.float64, score_scale=2.0):
    """Random generator log-probs ``[B, K, T, V]``, scores ``[B, K]`` and right-padded targets
    ``[B, T]`` (pad id 0; lengths from 1 to T, the first row full)."""
    g = torch.Generator().manual_seed(seed)
    logprobs = torch.log_softmax(3 * torch.randn(b, k, t, v, generator=g, dtype=dtype), dim=-1)
    scores = score_scale * torch.randn(b, k, generator=g, dtype=dtype)
    target = torch.randint(1, v, (b, t), generator=g)
    lengths = [t] + torch.randint(1, t + 1, (b - 1,), generator=g).tolist()
    for row, length in enumerate(lengths):
        target[row, length:] = 0
    return logprobs, scores, target


def prior_of(scores_row):
    total = sum(math.exp(s) for s in scores_row)
    return [math.exp(s) / total for s in scores_row]


def brute_force_sequence(logprobs, scores, target, pad_id=0):
    """p(y|x) = Σ_k p(d_k|x) Π_t p(y_t|x,d_k,y_<t), in plain floats, one question at a time."""
    out = []
    for b in range(target.shape[0]):
        tokens = [(t, int(y)) for t, y in enumerate(target[b]) if y != pad_id]
        prior = prior_of(scores[b].tolist())
        out.append(sum(prior[k] * math.prod(math.exp(logprobs[b, k, t, y]) for t, y in tokens)
                       for k in range(len(prior))))
    return out


def brute_force_token(logprobs, scores, target, pad_id=0):
    """RAG-Token's p(y|x) by enumerating every assignment z = (z_1..z_T) of a document to each
    token: Σ_z Π_t p(z_t|x) p(y_t|x,d_{z_t},y_<t) (no factorisation used)."""
    out = []
    for b in range(target.shape[0]):
        tokens = [(t, int(y)) for t, y in enumerate(target[b]) if y != pad_id]
        prior = prior_of(scores[b].tolist())
        out.append(sum(math.prod(prior[k] * math.exp(logprobs[b, k, t, y])
                                 for k, (t, y) in zip(z, tokens))
                       for z in itertools.product(range(len(prior)), repeat=len(tokens))))
    return out


# --- the likelihoods against enumeration --------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_rag_sequence_nll_equals_enumeration(seed):
    logprobs, scores, target = random_problem(seed)
    expected = torch.tensor(brute_force_sequence(logprobs, scores, target), dtype=torch.float64)
    torch.testing.assert_close(rag_sequence_nll(logprobs, scores, target, 0), -expected.log(),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_rag_token_nll_equals_enumeration_over_document_assignments(seed):
    logprobs, scores, target = random_problem(seed, k=3, t=4)
    expected = torch.tensor(brute_force_token(logprobs, scores, target), dtype=torch.float64)
    torch.testing.assert_close(rag_token_nll(logprobs, scores, target, 0), -expected.log(),
                               rtol=1e-10, atol=1e-10)


def test_the_variants_agree_on_one_token_and_on_one_document():
    logprobs, scores, target = random_problem(7)
    one_token = target.clone()
    one_token[:, 1:] = 0
    torch.testing.assert_close(rag_sequence_nll(logprobs, scores, one_token, 0),
                               rag_token_nll(logprobs, scores, one_token, 0))
    one_doc = (logprobs[:, :1], scores[:, :1])
    expected = -token_logprobs(logprobs[:, :1], target, 0).sum(-1)[:, 0]
    torch.testing.assert_close(rag_sequence_nll(*one_doc, target, 0), expected)
    torch.testing.assert_close(rag_token_nll(*one_doc, target, 0), expected)
    assert not torch.allclose(rag_sequence_nll(logprobs, scores, target, 0),
                              rag_token_nll(logprobs, scores, target, 0))


def test_every_answer_of_an_enumerable_toy_shares_probability_one():
    toy = ToyGenerator.random(n_docs=3, n_words=3, max_new_tokens=4, seed=3)
    answers = enumerate_answers(toy.words, 4)
    assert len(answers) == 1 + 3 + 9 + 27
    torch.testing.assert_close(answer_logprobs(toy, answers, 3).exp().sum(0),
                               torch.ones(3, dtype=torch.float64))
    decoder_input_ids, target = teacher_forcing(answers)
    logprobs = generator_logprobs(toy, decoder_input_ids, 3)
    scores = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64).expand(len(answers), 3)
    for nll in (rag_sequence_nll, rag_token_nll):
        torch.testing.assert_close((-nll(logprobs, scores, target, PAD_ID)).exp().sum(),
                                   torch.tensor(1.0, dtype=torch.float64))


def test_doc_log_prior_is_a_log_softmax_unchanged_by_a_shift():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    expected = torch.tensor([prior_of([1, 2, 3]), [1 / 3] * 3], dtype=torch.float64)
    torch.testing.assert_close(doc_log_prior(scores).exp(), expected)
    torch.testing.assert_close(doc_log_prior(scores + 1e3), doc_log_prior(scores))


# --- stability -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_everything_stays_finite_for_scores_of_1e4(dtype):
    logprobs, _, target = random_problem(11, dtype=dtype)
    scores = torch.tensor([[1e4, -1e4, 1e4, -1e4], [-1e4, -1e4, -1e4, 1e4], [1e4, 1e4, 1e4, 1e4]],
                          dtype=dtype, requires_grad=True)
    assert torch.isinf(scores.detach().exp()).any()  # the naive softmax would overflow
    for nll in (rag_sequence_nll, rag_token_nll):
        loss = nll(logprobs, scores, target, 0)
        assert torch.isfinite(loss).all()
        (gradient,) = torch.autograd.grad(loss.sum(), scores)
        assert torch.isfinite(gradient).all()
    for variant in ("sequence", "token"):
        posterior = doc_posterior(logprobs, scores, target, 0, variant)
        torch.testing.assert_close(posterior.sum(-1), torch.ones(posterior.shape[:-1], dtype=dtype))


def test_a_long_answer_underflows_the_product_but_not_the_log_space_sum():
    logprobs = torch.full((1, 2, 200, 5), math.log(0.2), dtype=torch.float32)  # p(y_t) = 0.2 each
    target = torch.ones(1, 200, dtype=torch.long)
    scores = torch.zeros(1, 2)
    assert logprobs[0, :, :, 1].exp().prod(-1).sum() == 0  # 0.2**200 = 1.6e-140 is 0 in float32
    torch.testing.assert_close(rag_sequence_nll(logprobs, scores, target, 0),
                               torch.tensor([-200 * math.log(0.2)]))


# --- the gradient identity and the posteriors ----------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
def test_gradient_of_rag_sequence_log_likelihood_is_posterior_minus_prior(seed):
    logprobs, scores, target = random_problem(seed)
    scores.requires_grad_(True)
    log_likelihood = -rag_sequence_nll(logprobs, scores, target, 0)
    (gradient,) = torch.autograd.grad(log_likelihood.sum(), scores)
    expected = (doc_posterior(logprobs, scores, target, 0, "sequence")
                - doc_log_prior(scores).exp()).detach()
    torch.testing.assert_close(gradient, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_gradient_of_rag_token_log_likelihood_sums_the_per_token_gaps(seed):
    logprobs, scores, target = random_problem(seed)
    scores.requires_grad_(True)
    (gradient,) = torch.autograd.grad((-rag_token_nll(logprobs, scores, target, 0)).sum(), scores)
    prior = doc_log_prior(scores).exp()[:, None]
    gaps = doc_posterior(logprobs, scores, target, 0, "token") - prior  # [B, T, K]
    torch.testing.assert_close(gradient, gaps.sum(1).detach(), rtol=0, atol=1e-6)


def test_posteriors_are_bayes_rule_and_sum_to_one():
    logprobs, scores, target = random_problem(5)
    prior = torch.tensor([prior_of(row) for row in scores.tolist()], dtype=torch.float64)
    likelihood = token_logprobs(logprobs, target, 0).sum(-1).exp()  # p(y|x,d_k)
    joint = prior * likelihood
    sequence = doc_posterior(logprobs, scores, target, 0, "sequence")
    torch.testing.assert_close(sequence, joint / joint.sum(-1, keepdim=True))
    token = doc_posterior(logprobs, scores, target, 0, "token")
    assert token.shape == (3, 5, 4)
    torch.testing.assert_close(token.sum(-1), torch.ones(3, 5, dtype=torch.float64))
    padded = target == 0
    torch.testing.assert_close(token[padded], prior[:, None].expand(-1, 5, -1)[padded])
    b, t = 0, 2
    joint_t = prior[b] * logprobs[b, :, t, target[b, t]].exp()
    torch.testing.assert_close(token[b, t], joint_t / joint_t.sum())


# --- Hugging Face --------------------------------------------------------------------------------

PASSAGES = [
    ("France", "The capital city of France is Paris. Monaco has its capital at Monaco."),
    ("Italy", "The capital of Italy is Rome. Its currency is the euro."),
    ("Spain", "Madrid is the capital of Spain. France, a neighbour, has its capital at Paris."),
    ("Japan", "Japan is an island country in Asia. Its capital is Tokyo."),
    ("Peru", "The capital of Peru is Lima. People there speak Spanish."),
    ("Kenya", "Nairobi is the capital of Kenya, in Africa."),
]
QUESTIONS = ["What is the capital of France ?", "Which city is the capital of Japan ?"]
K = 3


@pytest.fixture(scope="module")
def hf_rag():
    """Tiny random DPR encoders and BART, the passages in a faiss-indexed in-memory Dataset behind
    a CustomHFIndex, and both Hugging Face RAG models sharing them. BART's init_std is large so
    that its output depends on the document (with the default 0.02 the K documents give almost
    the same log-probs, and RAG-Sequence and RAG-Token almost the same loss)."""
    torch.manual_seed(0)
    datasets.disable_progress_bars()
    tokenizer = train_tokenizer([f"{title} {text}" for title, text in PASSAGES] + QUESTIONS)
    special = {"pad_token_id": tokenizer.pad_token_id}
    encoder_config = DPRConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=32, initializer_range=0.5,
                               max_position_embeddings=128, **special)
    question_encoder = DPRQuestionEncoder(encoder_config).eval()
    context_encoder = DPRContextEncoder(encoder_config).eval()
    with torch.no_grad():
        embeddings = context_encoder(**tokenizer([f"{t} {x}" for t, x in PASSAGES], padding=True,
                                                 return_tensors="pt")).pooler_output
    dataset = datasets.Dataset.from_dict({"title": [t for t, _ in PASSAGES],
                                          "text": [x for _, x in PASSAGES],
                                          "embeddings": embeddings.numpy()})
    dataset.add_faiss_index("embeddings")  # exact inner-product search (faiss IndexFlatIP)
    generator = BartForConditionalGeneration(BartConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
        forced_eos_token_id=None, init_std=0.5, **special)).eval()
    config = RagConfig.from_question_encoder_generator_configs(
        encoder_config, generator.config, n_docs=K, index_name="custom", retrieval_vector_size=16,
        max_combined_length=64)
    assert config.label_smoothing == 0.0
    retriever = RagRetriever(config, question_encoder_tokenizer=tokenizer,
                             generator_tokenizer=tokenizer, index=CustomHFIndex(16, dataset))
    token_model = RagTokenForGeneration(config, question_encoder=question_encoder,
                                        generator=generator, retriever=retriever).eval()
    sequence_model = RagSequenceForGeneration(config, question_encoder=question_encoder,
                                              generator=generator, retriever=retriever).eval()
    return {"tokenizer": tokenizer, "token": token_model, "sequence": sequence_model,
            "generator": generator}


def hf_loss(model, **inputs):
    with torch.no_grad():
        return model(**inputs, reduce_loss=False, output_retrieved=True)


def ours(out, labels, pad_id, nll, **options):
    logprobs, target = nll_inputs_from_hf(out.logits, labels, K, pad_id, **options)
    return nll(logprobs, out.doc_scores, target, pad_id)


def labels_for(tokenizer, answers):
    """``<s> answer </s>``, right-padded: the labels Hugging Face RAG expects with this generator,
    whose decoder starts from <s>."""
    ids = [[tokenizer.bos_token_id] + tokenizer(a, add_special_tokens=False).input_ids
           + [tokenizer.eos_token_id] for a in answers]
    return teacher_forcing(ids, pad_id=tokenizer.pad_token_id)[1]


def test_both_losses_equal_hugging_face_through_its_retriever(hf_rag):
    tokenizer = hf_rag["tokenizer"]
    questions = tokenizer(QUESTIONS, padding=True, return_tensors="pt")
    labels = labels_for(tokenizer, ["Paris", "the capital is Tokyo"])
    losses = {}
    for variant, nll in (("token", rag_token_nll), ("sequence", rag_sequence_nll)):
        out = hf_loss(hf_rag[variant], input_ids=questions.input_ids,
                      attention_mask=questions.attention_mask, labels=labels)
        assert out.context_input_ids.shape[0] == len(QUESTIONS) * K
        losses[variant] = out.loss
        torch.testing.assert_close(ours(out, labels, tokenizer.pad_token_id, nll), out.loss,
                                   rtol=0, atol=HF_TOLERANCE)
    # The generator reads the documents: the two variants really differ here.
    assert (losses["token"] - losses["sequence"]).abs().max() > 0.01


@pytest.fixture(scope="module")
def contexts(hf_rag):
    """Generator inputs for K documents of 4 questions, and scores spread wide, passed directly."""
    g = torch.Generator().manual_seed(1)
    vocab_size = len(hf_rag["tokenizer"])
    ids = torch.randint(4, vocab_size, (4 * K, 12), generator=g)
    return {"context_input_ids": ids, "context_attention_mask": torch.ones_like(ids),
            "doc_scores": 4 * torch.randn(4, K, generator=g)}


def test_both_losses_equal_hugging_face_on_padded_labels(hf_rag, contexts):
    tokenizer = hf_rag["tokenizer"]
    labels = labels_for(tokenizer, ["Paris", "the capital is Tokyo", "Rome Lima", "euro"])
    assert (labels == tokenizer.pad_token_id).any(dim=1).sum() == 3
    for variant, nll in (("token", rag_token_nll), ("sequence", rag_sequence_nll)):
        out = hf_loss(hf_rag[variant], labels=labels, **contexts)
        torch.testing.assert_close(ours(out, labels, tokenizer.pad_token_id, nll), out.loss,
                                   rtol=0, atol=HF_TOLERANCE)


def test_hugging_face_rag_sequence_drops_the_prior_on_a_one_token_target(hf_rag, contexts):
    """Labels <s> </s>: the shifted target is </s> <pad>, so its position 1, where Hugging Face
    adds log p(d_k|x), is padding and is zeroed. It returns -log Σ_k p(y|x,d_k); ragtutor keeps
    the prior."""
    tokenizer = hf_rag["tokenizer"]
    pad = tokenizer.pad_token_id
    labels = labels_for(tokenizer, ["Paris", "", "Rome", ""])
    assert labels[1].tolist()[:3] == [tokenizer.bos_token_id, tokenizer.eos_token_id, pad]
    out = hf_loss(hf_rag["sequence"], labels=labels, **contexts)
    logprobs, target = nll_inputs_from_hf(out.logits, labels, K, pad)
    log_p_y_given_doc = token_logprobs(logprobs, target, pad).sum(-1)  # [B, K]
    short = torch.tensor([False, True, False, True])
    without_prior = -torch.logsumexp(log_p_y_given_doc, dim=-1)
    torch.testing.assert_close(out.loss[short], without_prior[short], rtol=0, atol=HF_TOLERANCE)
    mine = rag_sequence_nll(logprobs, out.doc_scores, target, pad)
    torch.testing.assert_close(mine[~short], out.loss[~short], rtol=0, atol=HF_TOLERANCE)
    with_prior = brute_force_sequence(logprobs.double(), out.doc_scores.double(), target, pad)
    torch.testing.assert_close(mine[short].double(),
                               -torch.tensor(with_prior, dtype=torch.float64)[short].log(),
                               rtol=0, atol=HF_TOLERANCE)
    assert (mine[short] - out.loss[short]).abs().min() > 0.1
    # RAG-Token has no such special position: it equals ragtutor on every row.
    out = hf_loss(hf_rag["token"], labels=labels, **contexts)
    torch.testing.assert_close(ours(out, labels, pad, rag_token_nll), out.loss,
                               rtol=0, atol=HF_TOLERANCE)


def test_an_all_padding_target_is_an_error_where_hugging_face_returns_a_number(hf_rag, contexts):
    tokenizer = hf_rag["tokenizer"]
    pad = tokenizer.pad_token_id
    labels = labels_for(tokenizer, ["Paris", "Rome", "Lima", "euro"])
    labels[2, 1:] = pad  # only the start token is left: nothing to predict
    sequence = hf_loss(hf_rag["sequence"], labels=labels, **contexts)
    token = hf_loss(hf_rag["token"], labels=labels, **contexts)
    torch.testing.assert_close(sequence.loss[2], torch.tensor(-math.log(K)))  # -log Σ_k exp(0)
    torch.testing.assert_close(token.loss[2], torch.tensor(0.0))
    for out, nll in ((sequence, rag_sequence_nll), (token, rag_token_nll)):
        with pytest.raises(ValueError, match="target row 2 is all padding"):
            ours(out, labels, pad, nll)


def test_exclude_bos_score_drops_the_first_target_position(hf_rag, contexts):
    """fairseq's BART convention: the decoder starts from </s> and the labels are </s> <s> y </s>,
    so every target begins with <s>; exclude_bos_score=True leaves its score out."""
    tokenizer = hf_rag["tokenizer"]
    pad, bos, eos = tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    answers = labels_for(tokenizer, ["Paris", "the capital is Tokyo", "Rome Lima", "euro"])
    labels = torch.cat([torch.full((4, 1), eos), answers], dim=1)
    for exclude in (False, True):
        out = hf_loss(hf_rag["sequence"], labels=labels, exclude_bos_score=exclude, **contexts)
        mine = ours(out, labels, pad, rag_sequence_nll, exclude_bos_score=exclude, bos_id=bos)
        torch.testing.assert_close(mine, out.loss, rtol=0, atol=HF_TOLERANCE)
    included = ours(out, labels, pad, rag_sequence_nll)
    assert (included - out.loss).min() > 0.01  # the <s> token's score was really left out


def test_seq2seq_generator_gives_hugging_faces_per_document_log_probs(hf_rag, contexts):
    tokenizer = hf_rag["tokenizer"]
    labels = labels_for(tokenizer, ["Paris", "the capital is Tokyo", "Rome Lima", "euro"])
    out = hf_loss(hf_rag["token"], labels=labels, **contexts)
    expected, _ = nll_inputs_from_hf(out.logits, labels, K, tokenizer.pad_token_id)
    for b in range(4):
        rows = slice(b * K, (b + 1) * K)
        generator = seq2seq_generator(hf_rag["generator"], contexts["context_input_ids"][rows],
                                      contexts["context_attention_mask"][rows])
        with torch.no_grad():
            got = generator_logprobs(generator, labels[b:b + 1], K)
        torch.testing.assert_close(got, expected[b:b + 1], rtol=0, atol=HF_TOLERANCE)


@pytest.mark.parametrize("decoding, variant", [("token", "token"), ("thorough", "sequence")])
def test_rag_generate_scores_its_answers_as_hugging_face_does(hf_rag, contexts, decoding, variant):
    """The decoded answer's score is its log-likelihood: minus the loss of Hugging Face's model on
    that answer (RAG-Sequence: where the answer has two tokens or more; a one-token answer loses
    the prior there, so it is compared with ragtutor's loss on Hugging Face's logits)."""
    pad = hf_rag["tokenizer"].pad_token_id
    answers = rag_generate(hf_rag["generator"], decoding=decoding, num_beams=3, max_new_tokens=5,
                           **contexts)
    assert len(answers) == 4 and all(a.tokens[-1] == EOS_ID for a in answers)
    labels = teacher_forcing([(START_ID,) + a.tokens for a in answers], pad_id=pad)[1]
    out = hf_loss(hf_rag[variant], labels=labels, **contexts)
    nll = rag_token_nll if variant == "token" else rag_sequence_nll
    scores = -torch.tensor([a.log_prob for a in answers], dtype=torch.float32)
    torch.testing.assert_close(ours(out, labels, pad, nll), scores, rtol=0, atol=HF_TOLERANCE)
    longer = torch.tensor([len(a.tokens) >= 2 or variant == "token" for a in answers])
    assert longer.any()
    torch.testing.assert_close(out.loss[longer], scores[longer], rtol=0, atol=HF_TOLERANCE)


def test_rag_generate_fast_never_beats_thorough(hf_rag, contexts):
    thorough = rag_generate(hf_rag["generator"], decoding="thorough", num_beams=2, max_new_tokens=5,
                            **contexts)
    fast = rag_generate(hf_rag["generator"], decoding="fast", num_beams=2, max_new_tokens=5,
                        **contexts)
    pad = hf_rag["tokenizer"].pad_token_id
    labels = teacher_forcing([(START_ID,) + a.tokens for a in fast], pad_id=pad)[1]
    out = hf_loss(hf_rag["sequence"], labels=labels, **contexts)
    true_fast = -ours(out, labels, pad, rag_sequence_nll)
    for t, f, exact in zip(thorough, fast, true_fast.tolist()):
        assert f.log_prob <= exact + 1e-5 and exact <= t.log_prob + 1e-5


# --- decoding against enumeration ----------------------------------------------------------------

def enumerated(toy, doc_scores, max_new_tokens):
    """Every answer of the toy with its exact RAG-Sequence and RAG-Token log p(y|x)."""
    answers = enumerate_answers(toy.words, max_new_tokens)
    decoder_input_ids, target = teacher_forcing(answers)
    logprobs = generator_logprobs(toy, decoder_input_ids, len(doc_scores))
    scores = doc_scores.expand(len(answers), -1)
    return (answers, dict(zip(answers, (-rag_sequence_nll(logprobs, scores, target, 0)).tolist())),
            dict(zip(answers, (-rag_token_nll(logprobs, scores, target, 0)).tolist())))


@pytest.mark.parametrize("seed", range(6))
def test_exhaustive_decoding_finds_the_enumerated_best_answers(seed):
    toy = ToyGenerator.random(n_docs=3, n_words=3, max_new_tokens=4, seed=seed)
    doc_scores = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    answers, sequence, token = enumerated(toy, doc_scores, 4)
    wide = {"num_beams": len(answers), "max_new_tokens": 4}  # every prefix survives: nothing pruned
    by_token = sorted(answers, key=lambda a: -token[a])
    beam = rag_token_beam_search(toy, doc_scores, **wide)
    assert [h.tokens for h in beam] == by_token
    assert [h.log_prob for h in beam] == pytest.approx([token[a] for a in by_token], abs=1e-10)
    by_sequence = sorted(answers, key=lambda a: -sequence[a])
    for decode in (thorough_decoding, fast_decoding):
        hypotheses = decode(toy, doc_scores, **wide)
        assert [h.tokens for h in hypotheses] == by_sequence
        assert [h.log_prob for h in hypotheses] == pytest.approx(
            [sequence[a] for a in by_sequence], abs=1e-10)


@pytest.mark.parametrize("seed", range(12))
def test_narrow_beams_thorough_is_exact_and_beats_fast(seed):
    toy = ToyGenerator.random(n_docs=4, n_words=4, max_new_tokens=4, seed=seed, sharpness=1.0)
    doc_scores = torch.randn(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    _, sequence, token = enumerated(toy, doc_scores, 4)
    thorough = thorough_decoding(toy, doc_scores, num_beams=2, max_new_tokens=4)
    fast = fast_decoding(toy, doc_scores, num_beams=2, max_new_tokens=4)
    candidates, table = rag_sequence_candidates(toy, doc_scores, num_beams=2, max_new_tokens=4)
    assert {h.tokens for h in thorough} == {h.tokens for h in fast} == set(candidates)
    assert (table > -math.inf).sum(0).tolist() == [2, 2, 2, 2]
    for h in thorough:
        assert h.log_prob == pytest.approx(sequence[h.tokens], abs=1e-10)
    for h in fast:
        assert h.log_prob <= sequence[h.tokens] + 1e-12
    assert sequence[thorough[0].tokens] >= sequence[fast[0].tokens]
    assert sequence[thorough[0].tokens] <= max(sequence.values())
    for h in rag_token_beam_search(toy, doc_scores, num_beams=2, max_new_tokens=4):
        assert h.log_prob == pytest.approx(token[h.tokens], abs=1e-10)


def test_fast_decoding_can_pick_a_worse_answer_than_thorough():
    """Prior 0.8 / 0.2. Document 0 says "a" (0.55) or "b" (0.45); document 1 almost surely "b". With
    one beam per document, "b" is missing from document 0's beam, so fast decoding credits it with
    0.2 * 0.99 only and prefers "a" (0.8 * 0.55); thorough decoding adds document 0's 0.8 * 0.45."""
    a, b = 3, 4
    toy = ToyGenerator.from_table([{(): {a: 0.55, b: 0.45}}, {(): {a: 0.01, b: 0.99}}], 5)
    assert toy.words == [a, b]
    scores = torch.tensor([math.log(4.0), 0.0], dtype=torch.float64)
    thorough = thorough_decoding(toy, scores, num_beams=1, max_new_tokens=3)
    fast = fast_decoding(toy, scores, num_beams=1, max_new_tokens=3)
    assert thorough[0] == ((b, EOS_ID), pytest.approx(math.log(0.8 * 0.45 + 0.2 * 0.99)))
    assert fast[0] == ((a, EOS_ID), pytest.approx(math.log(0.8 * 0.55)))


def test_two_beams_find_what_one_beam_misses():
    """One beam (greedy) takes "a" (0.6) and ends at 0.6 * 0.5; two beams keep "b" too, whose
    answer "b </s>" (0.4) beats every continuation of "a"."""
    a, b = 3, 4

    toy = ToyGenerator.from_table([{(): {a: 0.6, b: 0.4}, (a,): {a: 0.5, b: 0.5}}], 5)
    best = rag_token_beam_search(toy, torch.zeros(1), num_beams=2, max_new_tokens=4)[0]
    assert best == ((b, EOS_ID), pytest.approx(math.log(0.4)))
    greedy = rag_token_beam_search(toy, torch.zeros(1), num_beams=1, max_new_tokens=4)[0]
    assert greedy.tokens[0] == a and greedy.log_prob == pytest.approx(math.log(0.3))


# --- errors --------------------------------------------------------------------------------------

@pytest.fixture
def problem():
    return random_problem(0)


@pytest.mark.parametrize("change, message", [
    (lambda lp, s, t: (lp[0], s, t), r"logprobs must be a float tensor of shape \[B, K, T, V\]"),
    (lambda lp, s, t: (lp, s[:, :2], t),
     r"doc_scores has shape \[3, 2\], but logprobs .* needs \[B, K\] = \[3, 4\]"),
    (lambda lp, s, t: (lp, s, t[:, :3]),
     r"target has shape \[3, 3\], but logprobs .* needs \[B, T\] = \[3, 5\]"),
    (lambda lp, s, t: (lp, s[0], t), r"doc_scores must be a float tensor of shape \[B, K\]"),
    (lambda lp, s, t: (lp, s, t.double()), r"target must hold integer token ids"),
    (lambda lp, s, t: (lp, s, t.clone().fill_(7)),
     r"target\[0, 0\] = 7 is not a token id of the vocabulary \[0, 7\)"),
    (lambda lp, s, t: (lp, s, t.masked_fill(t == 0, -100)),
     r"If -100 marks padding, pass pad_id=-100"),
    (lambda lp, s, t: (lp, s, torch.cat([t[:2], torch.zeros_like(t[:1])])),
     r"target row 2 is all padding"),
    (lambda lp, s, t: (lp, s, torch.tensor([[1, 0, 2, 0, 0]] * 3)),
     r"target row 0 has a token at position 2 after padding"),
    (lambda lp, s, t: (lp, s.clone().fill_(float("nan")), t),
     r"doc_scores holds NaN or infinite values"),
    (lambda lp, s, t: (lp, s.clone().fill_(float("inf")), t),
     r"doc_scores holds NaN or infinite values"),
    (lambda lp, s, t: (lp.clone().fill_(float("nan")), s, t),
     r"logprobs\[0, 0, 0\] holds NaN or \+inf"),
    (lambda lp, s, t: (lp.exp() * 5, s, t),
     r"pass torch.log_softmax\(logits, dim=-1\), not the logits"),
    (lambda lp, s, t: (lp.numpy(), s, t), r"logprobs must be a torch tensor"),
])
@pytest.mark.parametrize("nll", [rag_sequence_nll, rag_token_nll])
def test_bad_inputs_raise_a_clear_message(problem, change, message, nll):
    with pytest.raises((ValueError, TypeError), match=message):
        nll(*change(*problem), 0)


def test_padding_positions_may_hold_anything(problem):
    """Only real target positions are read: a generator's output zeroed (or NaN) at padding, as a
    training loop may leave it, is accepted and changes nothing."""
    logprobs, scores, target = problem
    padded = logprobs.clone()
    padded.masked_fill_((target == 0)[:, None, :, None], float("nan"))
    for nll in (rag_sequence_nll, rag_token_nll):
        torch.testing.assert_close(nll(padded, scores, target, 0), nll(logprobs, scores, target, 0))


def test_pad_id_minus_100_is_accepted(problem):
    logprobs, scores, target = problem
    padded = target.masked_fill(target == 0, -100)
    torch.testing.assert_close(rag_token_nll(logprobs, scores, padded, -100),
                               rag_token_nll(logprobs, scores, target, 0))


def test_other_argument_errors(problem):
    logprobs, scores, target = problem
    with pytest.raises(ValueError, match="variant must be 'sequence' or 'token'"):
        doc_posterior(logprobs, scores, target, 0, variant="tokens")
    with pytest.raises(TypeError, match="pad_id must be an int"):
        rag_token_nll(logprobs, scores, target, None)
    with pytest.raises(ValueError, match=r"K = 0"):
        doc_log_prior(torch.zeros(2, 0))
    with pytest.raises(ValueError, match=r"logits has 6 rows, but labels \[3, 4\] with n_docs=4"):
        nll_inputs_from_hf(torch.zeros(6, 4, 9), torch.ones(3, 4, dtype=torch.long), 4, 0)
    with pytest.raises(ValueError, match="not -100"):
        nll_inputs_from_hf(torch.zeros(6, 4, 9), torch.full((3, 4), -100), 2, 0)
    with pytest.raises(ValueError, match=r"table\[0\]\[\(\)\] sums to 0.9, not 1"):
        ToyGenerator.from_table([{(): {3: 0.5, 4: 0.4}}], 5)
    toy = ToyGenerator.random(n_docs=2, n_words=2, max_new_tokens=3)
    with pytest.raises(ValueError, match=r"doc_scores must be a float tensor of shape \[K\]"):
        rag_token_beam_search(toy, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="num_beams must be a positive int"):
        thorough_decoding(toy, torch.zeros(2), num_beams=0)
    with pytest.raises(ValueError, match="decoding must be one of"):
        rag_generate(None, torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(1, 2),
                     decoding="greedy")
    with pytest.raises(ValueError, match=r"\[B\*K, S\] with B\*K = 1 \* 2"):
        rag_generate(None, torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(1, 2))
    never_ends = ToyGenerator(lambda doc, prefix: torch.tensor([0.0, 0.0, 0.0, 1.0]).log(), 4)
    with pytest.raises(ValueError, match="no answer ends with </s> within max_new_tokens"):
        rag_token_beam_search(never_ends, torch.zeros(1), max_new_tokens=3)
