"""Tokenisation for the course's neural models: one tokenizer recipe and its special tokens.

Chapter 02's bi-encoder and chapter 03's reader both use :func:`train_tokenizer`; every tokenizer
it makes has the same four special tokens with the same ids, which chapter 04's decoders and the
Hugging Face export rely on:

    <pad> = 0   <s> = 1 (also the decoder's start)   </s> = 2   <unk> = 3

(Chapter 01's sparse retrievers split text with :mod:`ragtutor.text` instead: they need words,
not ids.)
"""
import string

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["PAD", "BOS", "EOS", "UNK", "SPECIAL_TOKENS", "PAD_ID", "START_ID", "EOS_ID",
           "ALPHABET", "train_tokenizer"]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]  # ids 0, 1, 2, 3 in every course tokenizer
PAD_ID, START_ID, EOS_ID = (SPECIAL_TOKENS.index(token) for token in (PAD, BOS, EOS))
# Every character a BPE tokenizer can spell whether or not its training texts hold it: printable
# ASCII and the Latin letters with accents (U+00C0 to U+017F), so that a name typed or added
# later ("Curaçao", "Łódź") is spelt from pieces instead of becoming <unk>.
ALPHABET = sorted(set(string.printable.strip())
                  | {chr(c) for c in range(0xC0, 0x180) if chr(c).isalpha()})


def train_tokenizer(texts, kind="word", vocab_size=8000, min_frequency=1, lowercase=False):
    """Train a tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    kind="word": one token per word and per punctuation mark (every word of ``texts`` is kept;
    any other word becomes <unk>).
    kind="bpe": byte-pair-encoding subwords, at most ``vocab_size`` tokens, text first put in
    Unicode normal form NFKC; a word it has never seen is spelt from smaller pieces, down to single
    characters of :data:`ALPHABET` or of the training texts (other characters become <unk>);
    ``lowercase=True`` also lower-cases every text first, as an uncased BERT does (a question
    encoder then reads "germany" and "Germany" alike).
    Both split on spaces the SentencePiece way (a space becomes the mark "▁" on the next word) and
    split off punctuation, so ``decode(encode(s), skip_special_tokens=True) == s`` for any text
    made of known characters (and, for "word", known words): "Guinea-Bissau" comes back as
    "Guinea-Bissau", not "Guinea - Bissau". Every encoded text is wrapped as ``<s> ... </s>``.
    """
    if kind not in ("word", "bpe"):
        raise ValueError(f"kind must be 'word' or 'bpe', got {kind!r}")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("train_tokenizer needs a non-empty list of strings")
    if kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS,
                                            min_frequency=min_frequency, show_progress=False)
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(special_tokens=SPECIAL_TOKENS, vocab_size=vocab_size,
                                      min_frequency=min_frequency, show_progress=False,
                                      initial_alphabet=ALPHABET)
        tokenizer.normalizer = (normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
                                if lowercase else normalizers.NFKC())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS)),
                                                  (EOS, SPECIAL_TOKENS.index(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, unk_token=UNK)
