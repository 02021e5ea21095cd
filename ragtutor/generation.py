"""Sequence-to-sequence generation (chapter 03): tokenizer, a tiny BART, training and decoding.

The reader maps Hugging Face RAG's combined input string to an answer:

    source = title + " / " + text + " // " + question        target = answer

so that chapter 06 can run the same weights inside ``RagTokenForGeneration`` unchanged. The
closed-book model maps the question alone to the answer. Both are a ``BartForConditionalGeneration``
built from a small config with random weights, trained with teacher forcing: for a target
y = (y_1..y_T) the loss is the mean over target tokens of -log p(y_t | source, y_<t).
"""
import itertools
import math
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "TITLE_SEP", "DOC_SEP", "train_tokenizer", "combined_input",
           "build_seq2seq", "encode_pairs", "train_seq2seq", "generate_answers"]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3 in every course tokenizer
# Hugging Face's RagConfig defaults: the generator reads title + TITLE_SEP + text + DOC_SEP + question.
TITLE_SEP, DOC_SEP = " / ", " // "


def train_tokenizer(texts, kind="word", vocab_size=8000, min_frequency=1):
    """Train a tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    kind="word": one token per word and per punctuation mark (every word of ``texts`` is kept).
    kind="bpe": byte-pair-encoding subwords, at most ``vocab_size`` tokens.
    Both split on spaces the SentencePiece way (a space becomes the mark "▁" on the next word) and
    split off punctuation, so ``decode(encode(s)) == s`` for any text made of known tokens:
    "Guinea-Bissau" comes back as "Guinea-Bissau", not "Guinea - Bissau".
    """
    if kind not in ("word", "bpe"):
        raise ValueError(f"kind must be 'word' or 'bpe', got {kind!r}")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("train_tokenizer needs a non-empty list of strings")
    if kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=min_frequency)
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(special_tokens=SPECIAL_TOKENS, vocab_size=vocab_size,
                                      min_frequency=min_frequency)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, unk_token=UNK)


def combined_input(title, text, question):
    """The generator's input exactly as Hugging Face's ``RagRetriever`` builds it.

    ``RagRetriever.postprocess_docs`` strips surrounding double quotes from the title, joins
    title / text // question and collapses double spaces; doing the same here means a reader trained
    on these strings needs no change inside ``RagTokenForGeneration``.
    """
    for name, value in (("title", title), ("text", text), ("question", question)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if title.startswith('"'):
        title = title[1:]
    if title.endswith('"'):
        title = title[:-1]
    return (title + TITLE_SEP + text + DOC_SEP + question).replace("  ", " ")


def build_seq2seq(tokenizer, d_model=64, layers=3, heads=4, ffn_dim=256, max_positions=128,
                  tie_embeddings=True, init_std=0.02, dropout=0.0):
    """A tiny ``BartForConditionalGeneration`` with random weights, sized for a CPU.

    ``max_positions`` is the longest input in tokens (and the ``max_combined_length`` chapter 06
    exports); ``tie_embeddings`` shares the input embedding with the output projection, so a name
    token learns from being read and from being written.
    """
    config = BartConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn_dim,
        decoder_ffn_dim=ffn_dim, max_position_embeddings=max_positions, dropout=dropout,
        attention_dropout=0.0, activation_dropout=0.0, init_std=init_std,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=None, forced_eos_token_id=None, tie_word_embeddings=tie_embeddings,
        scale_embedding=False)
    return BartForConditionalGeneration(config)


def encode_pairs(tokenizer, sources, targets=None, max_source_length=128, max_target_length=32):
    """Tokenise a batch: ``input_ids``/``attention_mask`` ``[B, S]`` and ``labels`` ``[B, T]``.

    Targets end with </s>; label padding is -100 (ignored by the loss). An input longer than the
    limit is an error, never silently cut: a truncated passage may have lost the answer.
    """
    sources = list(sources)
    batch = tokenizer(sources, padding=True, return_tensors="pt")
    if batch.input_ids.shape[1] > max_source_length:
        lengths = batch.attention_mask.sum(1)
        worst = int(lengths.argmax())
        raise ValueError(f"an input is {int(lengths[worst])} tokens long, more than max_source_length="
                         f"{max_source_length}: {sources[worst][:80]!r}... Shorten it or build the "
                         "model with a larger max_positions.")
    if targets is None:
        return batch
    targets = list(targets)
    if len(targets) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    labels = tokenizer([t + EOS for t in targets], padding=True, return_tensors="pt").input_ids
    if labels.shape[1] > max_target_length:
        raise ValueError(f"a target is longer than max_target_length={max_target_length} tokens")
    labels[labels == tokenizer.pad_token_id] = -100
    batch["labels"] = labels
    return batch


def _learning_rate(step, lr, warmup):
    """Linear warm-up to ``lr`` over ``warmup`` steps, then constant."""
    return lr * min(1.0, (step + 1) / max(1, warmup))


def train_seq2seq(model, tokenizer, batches, lr=1e-3, warmup=300, max_steps=None, max_seconds=None,
                  clip=1.0, weight_decay=0.01, log_every=50, max_source_length=None,
                  progress=True):
    """Teacher-forced training with AdamW, warm-up and gradient clipping.

    ``batches`` yields ``(sources, targets)`` pairs of string lists (for instance fresh
    counterfactual examples each step). Training stops after ``max_steps`` steps or ``max_seconds``
    seconds, whichever comes first (at least one must be given). Returns the history:
    ``{"step": [...], "loss": [...], "seconds": [...]}`` with the mean loss over each ``log_every``
    steps.
    """
    if max_steps is None and max_seconds is None:
        raise ValueError("give max_steps or max_seconds, or training would never stop")
    max_source_length = max_source_length or model.config.max_position_embeddings
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = {"step": [], "loss": [], "seconds": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_steps, desc="training", leave=False)
    model.train()
    start, running = time.perf_counter(), []
    steps = range(max_steps) if max_steps is not None else itertools.count()
    for step in steps:
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
        sources, targets = next(batches)
        batch = encode_pairs(tokenizer, sources, targets, max_source_length)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, lr, warmup)
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        running.append(loss.item())
        if not math.isfinite(running[-1]):
            raise FloatingPointError(f"the loss became {running[-1]} at step {step}: lower lr")
        if (step + 1) % log_every == 0:
            history["step"].append(step + 1)
            history["loss"].append(sum(running) / len(running))
            history["seconds"].append(time.perf_counter() - start)
            running = []
            if bar is not None:
                bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    return history


@torch.no_grad()
def generate_answers(model, tokenizer, sources, num_beams=1, max_new_tokens=16, batch_size=64):
    """Decode an answer for each source string: greedy (``num_beams=1``) or beam search."""
    model.eval()
    answers = []
    sources = list(sources)
    for i in range(0, len(sources), batch_size):
        batch = encode_pairs(tokenizer, sources[i:i + batch_size],
                             max_source_length=model.config.max_position_embeddings)
        out = model.generate(**batch, num_beams=num_beams, do_sample=False,
                             max_new_tokens=max_new_tokens, early_stopping=num_beams > 1)
        answers += [a.strip() for a in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return answers
