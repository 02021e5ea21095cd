r"""RAG with Hugging Face Transformers (chapter 06): the course's own models in its RAG classes.

Chapters 02-04 built every part of RAG (Lewis et al. 2020) from Hugging Face building blocks on
purpose: the question encoder q(·) and passage encoder e(·) are ``DPRQuestionEncoder`` /
``DPRContextEncoder`` pooled at the first token, the reader is a ``BartForConditionalGeneration``
trained on Hugging Face's combined input ``title / text // question``, and the likelihoods are
Hugging Face's. :func:`export_rag` writes those parts into one folder that the standard calls load,
with no network::

    tokenizer = RagTokenizer.from_pretrained(folder)
    retriever = RagRetriever.from_pretrained(folder, index_name="custom",
                                             passages_path=exported.passages_path,
                                             index_path=exported.index_path)
    model = RagTokenForGeneration.from_pretrained(folder, retriever=retriever)
    input_ids = tokenizer("What is the capital of France?", return_tensors="pt").input_ids
    tokenizer.decode(model.generate(input_ids)[0], skip_special_tokens=True)   # 'Paris'

(``RagSequenceForGeneration.from_pretrained(folder, ...)`` loads the same weights.) The folder::

    config.json                   RagConfig: n_docs, max_combined_length, retrieval_vector_size,
                                  index_name="custom", passages_path, index_path, token ids
    model.safetensors             question encoder (rag.question_encoder.*) and generator
                                  (rag.generator.*)
    question_encoder_tokenizer/   the bi-encoder's tokenizer    (RagTokenizer reads both)
    generator_tokenizer/          the reader's tokenizer
    passages/                     datasets.Dataset: title, text, embeddings e(d)
    passages.faiss                exact inner-product faiss index of the embeddings
    context_encoder/              the passage encoder e(·), to embed new passages

Chapter 05's :class:`ragtutor.rag_model.RAGModel`, built from the same parts, computes the same
model with the course's own code (retrieval by ``ragtutor.index``, teacher-forced log-probs of the
reader, chapter 04's likelihoods and decoders), so that a notebook or a test can show that the two
agree: same documents, same scores, same loss, same answers.

Three details of Transformers 5 shape the export:

- ``RagTokenForGeneration.from_pretrained(folder, retriever=retriever)`` passes ``retriever`` on to
  ``GenerationConfig``, which fails ("Object of type RagRetriever is not JSON serializable") on
  an ordinary ``generation_config.json`` — one saved after setting, say,
  ``model.generation_config.num_beams = 4``. Only a generation config marked
  ``"_from_model_config": true`` ignores the stray argument, so the export writes that kind. Pass
  other settings to ``generate`` itself rather than saving them.
- ``RagTokenForGeneration.generate`` ignores ``max_new_tokens``: it stops at ``max_length``, which
  counts the decoder's start token (default 20, so 19 new tokens), and a model config can no
  longer carry generation settings. The export's generation config sets
  ``max_length = max_new_tokens + 1``.
- ``RagTokenizer`` has no ``encode`` in Transformers 5: tokenise with
  ``tokenizer(question, return_tensors="pt").input_ids``.

Greedy decoding is the same in both: ``generate(num_beams=1)`` and ``RAGModel.generate`` take the
most probable next token of the per-token mixture until </s>. (Chapter 04's one-beam search,
:func:`ragtutor.rag.rag_token_beam_search` with ``num_beams=1``, follows the same path but also
keeps, at every step, the answer that stopping there would give, and returns the most probable of
them; it differs only when the path ends less probably than it could have stopped earlier — a
sign of an unsure reader.)
"""
import contextlib
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ragtutor.dense import BiEncoder
from ragtutor.generation import combined_input
from ragtutor.retrieval import check_texts

__all__ = ["PASSAGES_DIR", "INDEX_FILE", "CONTEXT_ENCODER_DIR", "ExportedRag", "as_biencoder",
           "passages_dataset", "export_rag", "rag_labels"]

PASSAGES_DIR = "passages"
INDEX_FILE = "passages.faiss"
CONTEXT_ENCODER_DIR = "context_encoder"

ExportedRag = namedtuple("ExportedRag", ["folder", "passages_path", "index_path"])
ExportedRag.__doc__ = """Where :func:`export_rag` wrote the model: ``folder`` (for every
``from_pretrained``), ``passages_path`` and ``index_path`` (for ``RagRetriever.from_pretrained``),
all as strings."""


# ----------------------------------------------------------------------------------------------
# Checks at the boundary
# ----------------------------------------------------------------------------------------------
def as_biencoder(retriever):
    """The retriever as a :class:`ragtutor.dense.BiEncoder`.

    ``retriever`` is a ``BiEncoder`` (chapter 02's, or chapter 05's with a jointly trained question
    encoder) or a triple ``(question_encoder, context_encoder, tokenizer)`` of a
    ``DPRQuestionEncoder``, a ``DPRContextEncoder`` and the tokenizer both read. Hugging Face's RAG
    takes the question vector from ``DPRQuestionEncoder(...).pooler_output``, the first token's
    output, so a bi-encoder trained with ``pooling="mean"`` cannot be exported.
    """
    from transformers import DPRContextEncoder, DPRQuestionEncoder

    if isinstance(retriever, BiEncoder):
        biencoder = retriever
    elif isinstance(retriever, (tuple, list)) and len(retriever) == 3:
        biencoder = BiEncoder(*retriever)
    else:
        raise TypeError("retriever must be a ragtutor.dense.BiEncoder or a triple "
                        f"(question_encoder, context_encoder, tokenizer), got "
                        f"{type(retriever).__name__}")
    if biencoder.pooling != "first":
        raise ValueError(f"the bi-encoder pools with {biencoder.pooling!r}, but Hugging Face's RAG "
                         "uses the first token's vector (DPR's pooler_output): export a bi-encoder "
                         "trained with pooling='first'")
    for name, model, cls in (("question_encoder", biencoder.question_encoder, DPRQuestionEncoder),
                             ("context_encoder", biencoder.context_encoder, DPRContextEncoder)):
        if not isinstance(model, cls):
            raise TypeError(f"{name} must be a transformers.{cls.__name__}, got "
                            f"{type(model).__name__}")
    sizes = (biencoder.question_encoder.config.hidden_size,
             biencoder.context_encoder.config.hidden_size)
    if sizes[0] != sizes[1]:
        raise ValueError(f"the question vectors ({sizes[0]}) and passage vectors ({sizes[1]}) have "
                         "different sizes: their dot product is undefined")
    if not callable(biencoder.tokenizer) or not hasattr(biencoder.tokenizer, "save_pretrained"):
        raise TypeError("the retriever's tokenizer must be a Hugging Face tokenizer (with "
                        f"save_pretrained), got {type(biencoder.tokenizer).__name__}")
    return biencoder


def _check_passages(passages):
    if isinstance(passages, (str, Mapping)) or not hasattr(passages, "__len__"):
        raise TypeError(f"passages must be a list of dicts with 'title' and 'text', got "
                        f"{type(passages).__name__}")
    passages = list(passages)
    if not passages:
        raise ValueError("passages is empty: the knowledge base needs at least one passage")
    for i, p in enumerate(passages):
        if not isinstance(p, Mapping) or not isinstance(p.get("title"), str) \
                or not isinstance(p.get("text"), str):
            raise ValueError(f"passages[{i}] must be a dict with the string fields 'title' and "
                             f"'text' (as ragtutor.data.load_passages gives), got {p!r:.120}")
    return passages


def _check_generator(generator, tokenizer):
    config = getattr(generator, "config", None)
    if config is None or not getattr(config, "is_encoder_decoder", False):
        raise TypeError("generator must be a Hugging Face encoder-decoder such as "
                        f"BartForConditionalGeneration, got {type(generator).__name__}")
    ids = {"pad": (tokenizer.pad_token_id, config.pad_token_id),
           "eos": (tokenizer.eos_token_id, config.eos_token_id),
           "bos": (tokenizer.bos_token_id, config.decoder_start_token_id)}
    for name, (from_tokenizer, from_model) in ids.items():
        if from_tokenizer is None or from_tokenizer != from_model:
            what = "decoder_start_token_id" if name == "bos" else f"{name}_token_id"
            raise ValueError(f"the generator tokenizer's {name} id is {from_tokenizer} but the "
                             f"generator's {what} is {from_model}: Hugging Face RAG feeds labels "
                             "that begin with the tokenizer's <s> to the decoder, so the tokenizer "
                             "and the generator must agree (pass the tokenizer the reader was "
                             "trained with)")
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"the generator tokenizer has {len(tokenizer)} tokens but the generator "
                         f"only {config.vocab_size}: pass the tokenizer the reader was trained "
                         "with")


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------
# The export
# ----------------------------------------------------------------------------------------------
def passages_dataset(passages, retriever, embeddings=None, batch_size=256):
    """The knowledge base as ``RagRetriever`` reads it: a ``datasets.Dataset`` with the columns
    ``title``, ``text`` and ``embeddings`` (e(d), float32 ``[hidden]`` per passage), and an exact
    inner-product faiss index on ``embeddings`` (``IndexFlatIP``, the course's "flat" index).

    ``passages``: dicts with ``title`` and ``text``. ``embeddings`` ``[n_passages, hidden]``, when
    given, are used as they are (e.g. a ``DenseRetriever``'s ``embeddings_``); otherwise the
    retriever's passage encoder computes them.
    """
    import datasets
    import faiss

    passages = _check_passages(passages)
    biencoder = as_biencoder(retriever)
    if embeddings is None:
        embeddings = biencoder.encode_passages(passages, batch_size)
    embeddings = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
    hidden = biencoder.question_encoder.config.hidden_size
    if embeddings.shape != (len(passages), hidden):
        raise ValueError(f"embeddings must have shape [n_passages, hidden] = [{len(passages)}, "
                         f"{hidden}], got {list(embeddings.shape)}")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings hold NaN or infinite values")
    dataset = datasets.Dataset.from_dict({"title": [p["title"] for p in passages],
                                          "text": [p["text"] for p in passages],
                                          "embeddings": embeddings})
    index = faiss.IndexFlatIP(hidden)
    dataset.add_faiss_index("embeddings", custom_index=index)
    return dataset


def export_rag(folder, retriever, generator, generator_tokenizer, passages, n_docs=5,
               max_combined_length=None, max_new_tokens=16, embeddings=None):
    """Write the course's retriever, generator and knowledge base as a Hugging Face RAG model.

    ``folder`` must be new or empty. ``retriever``: a :class:`ragtutor.dense.BiEncoder` or a triple
    ``(question_encoder, context_encoder, tokenizer)`` (:func:`as_biencoder`); ``generator`` and
    ``generator_tokenizer``: the reader and its tokenizer (``ragtutor.generation.load_checkpoint``);
    ``passages``: the knowledge base (dicts with ``title`` and ``text``), with their
    ``embeddings`` if already computed. ``n_docs`` is K, the documents retrieved per question.

    ``max_combined_length`` is the length, in tokens, to which ``RagRetriever`` pads — and
    *silently truncates* — each ``title / text // question`` input; it defaults to the generator's
    ``max_position_embeddings``, the longest input the reader can read. ``max_new_tokens`` caps
    ``generate``'s answers (the course's decoders default to 16 too).

    Returns an :class:`ExportedRag` with the paths ``RagRetriever.from_pretrained`` wants. The
    config also records them, as absolute paths, so ``RagRetriever.from_pretrained(folder)`` works
    too as long as the folder stays where it is.
    """
    from transformers import GenerationConfig, RagConfig, RagTokenForGeneration, RagTokenizer

    biencoder = as_biencoder(retriever)
    _check_generator(generator, generator_tokenizer)
    passages = _check_passages(passages)
    n_docs = _positive_int(n_docs, "n_docs")
    if n_docs > len(passages):
        raise ValueError(f"n_docs={n_docs} is more than the {len(passages)} passages: retrieve at "
                         f"most {len(passages)}")
    max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
    longest = generator.config.max_position_embeddings
    if max_combined_length is None:
        max_combined_length = longest
    max_combined_length = _positive_int(max_combined_length, "max_combined_length")
    if max_combined_length > longest:
        raise ValueError(f"max_combined_length={max_combined_length} is more than the generator's "
                         f"max_position_embeddings={longest}: the reader cannot read that far; "
                         f"use at most {longest}")
    # RagRetriever cuts every longer input to max_combined_length without a word: refuse a budget
    # that cannot hold the longest passage and a one-word question.
    parts = generator_tokenizer([combined_input(p["title"], p["text"], "").rstrip(" ")
                                 for p in passages], add_special_tokens=False).input_ids
    widest = max(range(len(parts)), key=lambda i: len(parts[i]))
    needed = len(parts[widest]) + 1 + generator_tokenizer.num_special_tokens_to_add()
    if max_combined_length < needed:
        raise ValueError(f"max_combined_length={max_combined_length} cannot hold passage "
                         f"{widest} ({passages[widest]['title']!r}) with even a one-word question: "
                         f"that takes {needed} tokens, and RagRetriever would silently cut every "
                         f"longer input. Use at least {needed} (the default, "
                         f"{longest}, is the longest input the reader can read)")
    folder = Path(folder).resolve()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an empty folder: export into a new "
                              "folder (e.g. tempfile.mkdtemp()) so that no old file is mixed in")
    with _quiet():
        dataset = passages_dataset(passages, biencoder, embeddings)
    folder.mkdir(parents=True, exist_ok=True)

    passages_path, index_path = folder / PASSAGES_DIR, folder / INDEX_FILE
    with _quiet():
        dataset.get_index("embeddings").save(str(index_path))
        dataset.drop_index("embeddings")
        dataset.save_to_disk(str(passages_path))

    ids = {"bos_token_id": generator_tokenizer.bos_token_id,
           "eos_token_id": generator_tokenizer.eos_token_id,
           "pad_token_id": generator_tokenizer.pad_token_id,
           "decoder_start_token_id": generator.config.decoder_start_token_id}
    config = RagConfig.from_question_encoder_generator_configs(
        biencoder.question_encoder.config, generator.config, n_docs=n_docs,
        max_combined_length=max_combined_length,
        retrieval_vector_size=biencoder.question_encoder.config.hidden_size,
        index_name="custom", passages_path=str(passages_path), index_path=str(index_path),
        # Tying input and output embeddings is the generator's own choice.
        tie_word_embeddings=generator.config.tie_word_embeddings,
        **ids)
    model = RagTokenForGeneration(config, question_encoder=biencoder.question_encoder,
                                  generator=generator)
    model.generation_config = GenerationConfig(max_length=max_new_tokens + 1, **ids)
    # The Transformers 5 quirk of the module docstring: only a generation config marked as derived
    # from the model config loads with from_pretrained(folder, retriever=...).
    model.generation_config._from_model_config = True
    with _quiet():
        model.save_pretrained(folder)
        biencoder.context_encoder.save_pretrained(folder / CONTEXT_ENCODER_DIR)
    RagTokenizer(question_encoder=biencoder.tokenizer,
                 generator=generator_tokenizer).save_pretrained(str(folder))
    return ExportedRag(str(folder), str(passages_path), str(index_path))


@contextlib.contextmanager
def _quiet():
    """No progress bars from datasets or transformers for steps that take milliseconds."""
    import datasets
    from transformers.utils import logging as transformers_logging

    bars = (datasets.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            transformers_logging.enable_progress_bar()


def rag_labels(generator_tokenizer, answers):
    """Hugging Face RAG's ``labels`` for a list of answers: ``<s> y_1 .. y_T </s>``, right-padded
    with the pad id, ``[B, T]``.

    Hugging Face's RAG models feed the labels to the decoder as they are, so they begin with the
    decoder's start token <s> and are padded with the pad id, never -100. The course's tokenizers
    wrap every text in ``<s> ... </s>``, so the tokenizer's output is the labels.
    """
    answers = check_texts(answers, "answers")
    batch = generator_tokenizer(answers, padding=True, return_tensors="pt")
    labels = batch.input_ids
    start, end = generator_tokenizer.bos_token_id, generator_tokenizer.eos_token_id
    if not (labels[:, 0] == start).all() or not (labels.gather(
            1, batch.attention_mask.sum(1, keepdim=True) - 1) == end).all():
        raise ValueError("the generator tokenizer does not wrap texts in <s> ... </s>: build the "
                         "labels as [bos] + answer ids + [eos] yourself")
    return labels
