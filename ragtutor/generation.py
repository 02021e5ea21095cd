"""Sequence-to-sequence generation (chapter 03): tokenizer, a tiny BART, training and decoding.

The reader maps Hugging Face RAG's combined input string to an answer:

    source = title + " / " + text + " // " + question        target = answer

so that chapter 06 can run the same weights inside ``RagTokenForGeneration`` unchanged. The
closed-book model maps the question alone to the answer. Both are a ``BartForConditionalGeneration``
built from a small config with random weights, trained with teacher forcing: for a target
y = (y_1..y_T) the loss is the mean over target tokens of -log p(y_t | source, y_<t).

Token conventions, chosen for Hugging Face RAG: the tokenizer wraps every text as ``<s> ... </s>``,
as BART's tokenizer does, and the decoder starts from ``<s>``. A target tokenised on its own,
``<s> y_1 .. y_T </s>``, is then exactly the ``labels`` tensor ``RagTokenForGeneration`` trains on
(it feeds the labels to the decoder, so their first token is the decoder's start), and dropping the
``<s>`` gives the ``labels`` of a plain ``BartForConditionalGeneration``, which prepends the start
token itself.
"""
import itertools
import json
import random
from pathlib import Path

import torch
from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast
from transformers.models.bart.modeling_bart import shift_tokens_right

from ragtutor.checksums import load_weights, verify_manifest
from ragtutor.counterfactual import iter_counterfactual_examples
from ragtutor.metrics import qa_scores
from ragtutor.retrieval import check_texts
from ragtutor.tokenization import SPECIAL_TOKENS, train_tokenizer
from ragtutor.train import train

__all__ = ["SPECIAL_TOKENS", "TITLE_SEP", "DOC_SEP", "CHECKPOINT_DIR", "train_tokenizer",
           "combined_input", "max_combined_length", "build_seq2seq", "encode_pairs",
           "train_seq2seq", "generate_answers", "sequence_log_probs", "beam_search",
           "reader_sources", "reader_batches", "closed_book_questions", "closed_book_batches",
           "evaluate_qa", "load_checkpoint"]

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"  # = ragtutor.CHECKPOINT_DIR
# Hugging Face's RagConfig defaults: the generator reads
# title + TITLE_SEP + text + DOC_SEP + question.
TITLE_SEP, DOC_SEP = " / ", " // "


def combined_input(title, text, question):
    """The generator's input exactly as Hugging Face's ``RagRetriever`` builds it.

    ``RagRetriever.postprocess_docs`` strips one double quote from each end of the title, joins
    title / text // question and replaces each double space by one; doing the same here means a
    reader trained on these strings needs no change inside ``RagTokenForGeneration``.
    """
    for name, value in (("title", title), ("text", text), ("question", question)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    title = title.removeprefix('"').removesuffix('"')
    return (title + TITLE_SEP + text + DOC_SEP + question).replace("  ", " ")


def max_combined_length(tokenizer, passages, questions):
    """The longest combined input, in tokens, over every passage paired with every question.

    The tokenizer splits at spaces before it looks inside a word, so a combined input's length is
    the length of its passage part plus that of its question; the maximum over all pairs is the
    longest passage part plus the longest question, computed without building the
    len(passages) x len(questions) strings. ``passages`` have ``title`` and ``text``,
    ``questions`` a ``question``.
    """
    # "title / text //" without the space that precedes the question: that space is the "▁" of
    # the question's first word, counted with the question.
    passage_part = tokenizer([combined_input(p["title"], p["text"], "").rstrip(" ")
                              for p in passages], add_special_tokens=False).input_ids
    question_part = tokenizer([q["question"] for q in questions],
                              add_special_tokens=False).input_ids
    specials = tokenizer.num_special_tokens_to_add()
    return max(map(len, passage_part)) + max(map(len, question_part)) + specials


def build_seq2seq(tokenizer, d_model=64, layers=3, heads=4, ffn_dim=128, max_positions=128,
                  tie_embeddings=True, init_std=0.02, dropout=0.0):
    """A tiny ``BartForConditionalGeneration`` with random weights, sized for a CPU.

    ``max_positions`` is the longest input in tokens (and the ``max_combined_length`` chapter 06
    exports); ``tie_embeddings`` shares the input embedding with the output projection, so a name
    token learns from being read and from being written. The decoder starts from <s>, and
    generation stops at </s> with nothing forced.
    """
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim, max_position_embeddings=max_positions, dropout=dropout,
        attention_dropout=0.0, activation_dropout=0.0, init_std=init_std,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
        forced_eos_token_id=None, tie_word_embeddings=tie_embeddings, scale_embedding=False)
    return BartForConditionalGeneration(config)


def encode_pairs(tokenizer, sources, targets=None, max_source_length=128, max_target_length=32):
    """Tokenise a batch: ``input_ids``/``attention_mask`` ``[B, S]`` and ``labels`` ``[B, T]``.

    Sources are ``<s> x </s>``; labels are ``y_1 .. y_T </s>`` (the model prepends the start token
    <s> to make the decoder's input), padded with -100, which the loss ignores. An input longer
    than the limit is an error, never silently cut: a truncated passage may have lost the answer.
    """
    sources = check_texts(sources, "sources")
    batch = tokenizer(sources, padding=True, return_tensors="pt")
    lengths = batch.attention_mask.sum(1)
    if int(lengths.max()) > max_source_length:
        worst = int(lengths.argmax())
        raise ValueError(f"an input is {int(lengths[worst])} tokens long, more than "
                         f"max_source_length={max_source_length}: {sources[worst][:80]!r}... "
                         "Shorten it or build the model with a larger max_positions.")
    if targets is None:
        return batch
    targets = list(targets)
    if len(targets) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    encoded = tokenizer(targets, padding=True, return_tensors="pt")
    labels = encoded.input_ids[:, 1:]  # drop <s>: the model adds the decoder start itself
    if labels.shape[1] > max_target_length:
        raise ValueError(f"a target is longer than max_target_length={max_target_length} tokens")
    labels = labels.masked_fill(encoded.attention_mask[:, 1:] == 0, -100)
    batch["labels"] = labels
    return batch


def train_seq2seq(model, tokenizer, batches, lr=2e-3, warmup=300, max_steps=None, max_seconds=None,
                  clip=1.0, weight_decay=0.01, log_every=50, evaluate=None, eval_every=None,
                  progress=True):
    """Teacher-forced training with AdamW, warm-up and gradient clipping.

    ``batches`` yields ``(sources, targets)`` pairs of string lists (for instance fresh
    counterfactual examples each step). Training stops after ``max_steps`` steps, after
    ``max_seconds`` seconds of training, or when ``batches`` runs out, whichever comes first
    (``max_steps`` or ``max_seconds`` must be given). Every ``eval_every`` steps
    ``evaluate(model)`` returns a dict of metrics (dev exact match, say) to record.

    Returns the history: ``{"step", "loss", "seconds"}`` lists with the mean loss over each
    ``log_every`` steps (the last entry over the steps that remain) and the training time so far
    (drawing batches and evaluation excluded), and ``"eval"``, a list of
    ``{"step", "seconds", **metrics}``.
    """
    max_source_length = model.config.max_position_embeddings

    def loss(batch):
        sources, targets = batch
        return model(**encode_pairs(tokenizer, sources, targets, max_source_length)).loss

    return train(model, loss, batches, lr=lr, warmup=warmup, max_steps=max_steps,
                 max_seconds=max_seconds, clip=clip, weight_decay=weight_decay,
                 log_every=log_every, evaluate=evaluate, eval_every=eval_every, progress=progress)


@torch.no_grad()
def generate_answers(model, tokenizer, sources, num_beams=1, max_new_tokens=16, batch_size=64):
    """Decode an answer for each source string: greedy (``num_beams=1``) or beam search.

    Beam search is :func:`beam_search`: answers ranked by their log-probability
    (``length_penalty=0.0``; Hugging Face's default would divide it by the answer's length).
    """
    for name, value in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens),
                        ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    sources = check_texts(sources, "sources")
    model.eval()
    beam_options = {"early_stopping": "never", "length_penalty": 0.0} if num_beams > 1 else {}
    answers = []
    for i in range(0, len(sources), batch_size):
        batch = encode_pairs(tokenizer, sources[i:i + batch_size],
                             max_source_length=model.config.max_position_embeddings)
        out = model.generate(**batch, num_beams=num_beams, do_sample=False,
                             max_new_tokens=max_new_tokens, **beam_options)
        answers += [a.strip() for a in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return answers


def sequence_log_probs(model, tokenizer, sources, targets):
    """log p(y | x) = sum_t log p(y_t | x, y_<t) for each (source x, target y) pair: ``[B]``.

    The target's tokens are y_1 .. y_T </s>, so the end of the answer counts too. Computed with
    teacher forcing in one forward pass, with gradients (chapter 04 marginalises it over documents
    and chapter 05 trains through it); wrap the call in ``torch.no_grad()`` to only evaluate.
    """
    batch = encode_pairs(tokenizer, sources, targets, model.config.max_position_embeddings)
    labels = batch.pop("labels")
    # Teacher forcing: the decoder reads <s> y_1 .. y_{T-1} and predicts y_1 .. y_T </s>.
    decoder_input_ids = shift_tokens_right(labels, model.config.pad_token_id,
                                           model.config.decoder_start_token_id)
    logits = model(**batch, decoder_input_ids=decoder_input_ids).logits
    log_probs = torch.log_softmax(logits, dim=-1)  # [B, T, V]
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # [B, T]
    return (picked * (labels != -100)).sum(1)


@torch.no_grad()
def beam_search(model, input_ids, attention_mask, num_beams=4, max_new_tokens=16):
    """Beam search written out: the ``num_beams`` most probable prefixes survive each step.

    For each source (a row of ``input_ids`` ``[B, S]``), a prefix's score is its log-probability
    sum_t log p(y_t | x, y_<t). Each step extends every surviving prefix by every token and ranks
    the ``2 * num_beams`` best extensions: those that end in </s> among the first ``num_beams`` are
    finished answers, the best ``num_beams`` others survive. A score can only go down as a prefix
    grows, so the search stops when ``num_beams`` answers are finished and no surviving prefix
    scores above the worst of them (or after ``max_new_tokens`` tokens, when the survivors
    compete too). This is Hugging Face's ``generate(num_beams=k, length_penalty=0.0,
    early_stopping="never")``; with one beam it is greedy decoding.

    Returns one ``(token ids, score)`` per source: the best answer, ending in </s> when finished,
    without the decoder's start token.
    """
    model.eval()
    start, eos = model.config.decoder_start_token_id, model.config.eos_token_id
    results = []
    for row in range(input_ids.shape[0]):
        encoder = model.get_encoder()(input_ids=input_ids[row:row + 1],
                                      attention_mask=attention_mask[row:row + 1])
        beams, finished = [([start], 0.0)], []
        for _ in range(max_new_tokens):
            n = len(beams)
            logits = model(encoder_outputs=(encoder.last_hidden_state.expand(n, -1, -1),),
                           attention_mask=attention_mask[row:row + 1].expand(n, -1),
                           decoder_input_ids=torch.tensor([seq for seq, _ in beams])).logits
            log_probs = torch.log_softmax(logits[:, -1], dim=-1)  # [n, V]
            scores = torch.tensor([score for _, score in beams])[:, None] + log_probs
            best, flat = scores.flatten().topk(2 * num_beams)
            survivors = []
            for rank, (score, index) in enumerate(zip(best.tolist(), flat.tolist())):
                beam, token = divmod(index, scores.shape[1])
                extended = (beams[beam][0] + [token], score)
                if token == eos:
                    if rank < num_beams:
                        finished.append(extended)
                elif len(survivors) < num_beams:
                    survivors.append(extended)
            beams = survivors
            finished = sorted(finished, key=lambda b: -b[1])[:num_beams]
            if len(finished) == num_beams and beams[0][1] <= finished[-1][1]:
                break
        else:
            finished += beams
        seq, score = max(finished, key=lambda b: b[1])
        results.append((seq[1:], score))
    return results


def reader_sources(questions, passages):
    """The reader's input for each question given its gold passage (oracle retrieval).

    ``passages`` is the list of passage records; each question's ``passage_id`` picks one.
    """
    by_id = {p["id"]: p for p in passages}
    missing = [q["passage_id"] for q in questions if q["passage_id"] not in by_id]
    if missing:
        raise KeyError(f"{len(missing)} questions name passages that are not given, "
                       f"e.g. {missing[0]!r}")
    return [combined_input(by_id[q["passage_id"]]["title"], by_id[q["passage_id"]]["text"],
                           q["question"]) for q in questions]


def reader_batches(entities, batch_size=64, seed=0, typed=0.0, invented=0.0):
    """Endless batches of counterfactual reader examples: ``(sources, targets)`` string lists.

    Each example is new (``ragtutor.counterfactual.iter_counterfactual_examples``): a knowledge-base passage
    template filled with a real name — test entities' names included — and false facts, with a
    question whose answer only the passage gives (``typed``: the share of questions asked as people
    type; ``invented``: the share of passages stating a made-up value, see
    ``iter_counterfactual_examples``). The target is the canonical answer.
    """
    stream = iter_counterfactual_examples(entities, seed=seed, typed=typed, invented=invented)
    while True:
        examples = list(itertools.islice(stream, batch_size))
        yield ([combined_input(e["title"], e["text"], e["question"]) for e in examples],
               [e["answers"][0] for e in examples])


def closed_book_batches(questions, batch_size=64, seed=0):
    """Endless batches of ``(questions, canonical answers)``, reshuffled every epoch.

    The closed-book model's whole training data: it sees the question and nothing else.
    """
    questions = list(questions)
    if not 0 < batch_size <= len(questions):
        raise ValueError(f"batch_size must be between 1 and the number of questions "
                         f"({len(questions)}), got {batch_size}")
    rng = random.Random(seed)
    while True:
        order = rng.sample(questions, len(questions))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            chunk = order[i:i + batch_size]
            yield [q["question"] for q in chunk], [q["answers"][0] for q in chunk]


def closed_book_questions(train_questions, entities):
    """The closed-book model's training data: true facts about training entities only.

    The train split's questions, minus those whose canonical answer is the name of a dev or test
    entity ("Which country borders Spain?" -> "Andorra", with Andorra held out): a border is a fact
    about both countries, and the test split asks about the held-out one.
    """
    held_out = {name for e in entities if e["split"] != "train"
                for name in [e["name"], *e["aliases"]]}
    return [q for q in train_questions if q["split"] == "train" and q["answers"][0] not in held_out]


def evaluate_qa(model, tokenizer, sources, questions, num_beams=1):
    """Exact match and F1 of the model's answers to ``sources`` against each question's answers.

    Returns ``(scores, predictions)`` with ``scores = {"em", "f1", "n"}`` (``ragtutor.metrics``).
    """
    predictions = generate_answers(model, tokenizer, sources, num_beams=num_beams)
    return qa_scores(predictions, [q["answers"] for q in questions]), predictions


def load_checkpoint(name, folder=None):
    """Load one of the course's trained models offline: ``(model, tokenizer, record)``.

    ``name`` is "reader" or "closed_book" (written by ``scripts/train_generation.py``) or a profile
    generator, "profile_fid" or "profile_rag_token" (``scripts/train_profiles.py``): a folder of
    ``folder`` (default :data:`CHECKPOINT_DIR`, ``checkpoints/`` in the repository). ``record`` is
    its ``training.json``: command, seed, configuration, curves and the metrics reached. Every file
    is checked against the folder's ``MANIFEST.sha256`` first (:mod:`ragtutor.checksums`).
    """
    path = Path(folder or CHECKPOINT_DIR) / name
    if not (path / "model.safetensors").is_file() or not (path / "training.json").is_file():
        from ragtutor.checksums import REMEDIES
        command = REMEDIES.get(name, "python scripts/train_generation.py")
        raise FileNotFoundError(f"no complete checkpoint in {path}: run `{command}` from the "
                                "repository root")
    verify_manifest(path, required=True)  # a changed byte would give wrong answers, not an error
    model = load_weights(BartForConditionalGeneration, path).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    return model, tokenizer, json.loads((path / "training.json").read_text())
