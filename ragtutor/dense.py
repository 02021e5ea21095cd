r"""Dense retrieval (chapter 02): a DPR bi-encoder trained from scratch, with in-batch negatives.

A question x and a passage d are each mapped to a vector by a Transformer encoder, and a passage's
score is their dot product (Karpukhin et al., 2020, *Dense Passage Retrieval for Open-Domain
Question Answering*)::

    q(x) = BERT_Q(<s> x </s>)[0]            e(d) = BERT_P(<s> title </s> text </s>)[0]
    s(x, d) = q(x) · e(d)

where [0] takes the output vector of the first token, <s> (DPR's [CLS] pooling). The two encoders
are Hugging Face's ``DPRQuestionEncoder`` and ``DPRContextEncoder`` built from a small ``DPRConfig``
with random weights, so that chapter 06 can hand them to ``RagRetriever``/``RagTokenForGeneration``
unchanged. Trained from scratch on a CPU, two *separate* encoders learn nothing in minutes (the
loss stays at chance); one encoder *shared* by questions and passages (tied weights) learns, so
training starts tied and :meth:`BiEncoder.untie` gives each side its own copy afterwards (chapter
05 trains the question encoder alone against a frozen passage index, starting from
:func:`cold_question_encoder`, optionally warmed up with labels by :func:`train_question_encoder`).

Training (:func:`train_biencoder`) minimises the in-batch-negatives loss
(:func:`in_batch_negatives_loss`): in a batch of B questions with their gold passages, every other
question's passage is a negative, and optionally one BM25 *hard negative* per question is added
(:func:`bm25_hard_negatives`). Training material (:func:`training_examples`) mixes the training
split's questions with counterfactual examples (``ragtutor.counterfactual``), in which every entity's name
occurs — the names of held-out dev and test entities included, with false facts — so that no name
token of the knowledge base is left untrained.

:class:`DenseRetriever` puts a trained :class:`BiEncoder` behind the course's retriever interface
(``fit``, ``score``, ``search``), searching a ``ragtutor.index.VectorIndex``; :class:`HybridRetriever`
fuses any two retrievers by reciprocal rank fusion (Cormack, Clarke & Büttcher, 2009).
"""
import copy
import itertools
import json
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import processors
from transformers import AutoTokenizer, DPRConfig, DPRContextEncoder, DPRQuestionEncoder
from transformers.utils import logging as transformers_logging

from ragtutor.checksums import load_weights, verify_manifest, write_manifest
from ragtutor.index import VectorIndex
from ragtutor.retrieval import (HybridRetriever, Retriever, evaluate_retriever,
                                reciprocal_rank_fusion, unknown_to_tokenizer, warn_unknown)
from ragtutor.sparse import BM25Retriever
from ragtutor.tokenization import BOS, EOS, SPECIAL_TOKENS, train_tokenizer
from ragtutor.train import train

__all__ = ["POOLINGS", "build_tokenizer", "BiEncoder", "in_batch_negatives_loss",
           "training_examples", "bm25_hard_negatives", "biencoder_batches", "train_biencoder",
           "cold_question_encoder", "train_question_encoder", "DenseRetriever",
           "reciprocal_rank_fusion", "HybridRetriever", "evaluate_retriever"]

POOLINGS = ("first", "mean")
_CONFIG_FILE = "biencoder.json"


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------
def build_tokenizer(passages, questions, examples=(), kind="word", vocab_size=8000, lowercase=False):
    """The bi-encoder's tokenizer (word-level, or ``kind="bpe"`` subwords), trained on every text
    it will see.

    ``passages`` (title and text), ``questions`` (question text; the wording of dev and test
    questions is no answer leak) and counterfactual ``examples`` (title, text and question). Built
    with :func:`ragtutor.tokenization.train_tokenizer`, so decoding is lossless, and given DPR's two
    templates: a question is ``<s> x </s>`` and a (title, text) pair ``<s> title </s> text </s>``;
    the first token <s> is the one whose output vector is pooled. Hugging Face's ``RagRetriever``
    tokenises questions with this tokenizer directly and decodes them back to text, so both
    properties must hold in the saved tokenizer too (``AutoTokenizer.from_pretrained``).
    """
    examples = list(examples)
    texts = [p["title"] for p in itertools.chain(passages, examples)]
    texts += [p["text"] for p in itertools.chain(passages, examples)]
    texts += [q["question"] for q in itertools.chain(questions, examples)]
    tokenizer = train_tokenizer(texts, kind=kind, vocab_size=vocab_size, lowercase=lowercase)
    specials = [(token, SPECIAL_TOKENS.index(token)) for token in (BOS, EOS)]
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B:1 {EOS}:1", special_tokens=specials)
    # DPR's segment ids are all zero (Karpukhin et al.'s code); the model falls back to zeros.
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    return tokenizer


def _as_pairs(passages):
    """Passages as (title, text) pairs: from dicts with "title" and "text", (title, text) pairs,
    or plain strings (no title)."""
    if isinstance(passages, (str, Mapping)) or not hasattr(passages, "__len__"):
        raise TypeError(f"passages must be a list of passages, got {type(passages).__name__}; "
                        "wrap a single passage in a list")
    pairs = []
    for i, p in enumerate(passages):
        if isinstance(p, Mapping):
            if "title" not in p or "text" not in p:
                raise ValueError(f"passages[{i}] needs the keys 'title' and 'text', got {sorted(p)}")
            pairs.append((p["title"], p["text"]))
        elif isinstance(p, str):
            pairs.append(("", p))
        elif isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(s, str) for s in p):
            pairs.append(tuple(p))
        else:
            raise TypeError(f"passages[{i}] must be a dict with 'title' and 'text', a (title, text) "
                            f"pair or a string, got {type(p).__name__}: {p!r}")
    return pairs


# ----------------------------------------------------------------------------------------------
# The bi-encoder
# ----------------------------------------------------------------------------------------------
class BiEncoder(torch.nn.Module):
    """A question encoder and a passage encoder (Hugging Face DPR classes) with their tokenizer.

    ``pooling="first"`` takes the first token's output vector, as DPR does and as Hugging Face's
    RAG expects (``DPRQuestionEncoder(...).pooler_output``); ``pooling="mean"`` averages the
    output vectors of the non-padding tokens — a measured experiment only: RAG cannot use it.

    Build one with :meth:`build`; :meth:`save_pretrained` writes ``question_encoder/`` and
    ``context_encoder/`` (each loadable on its own with ``DPRQuestionEncoder.from_pretrained`` /
    ``DPRContextEncoder.from_pretrained``), ``tokenizer/`` and ``biencoder.json``;
    :meth:`from_pretrained` reads them back.
    """

    def __init__(self, question_encoder, context_encoder, tokenizer, pooling="first"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.question_encoder = question_encoder
        self.context_encoder = context_encoder
        self.tokenizer = tokenizer
        self.pooling = pooling

    @classmethod
    def build(cls, tokenizer, hidden_size=64, layers=2, heads=4, intermediate_size=128,
              max_positions=128, tied=True, pooling="first"):
        """A bi-encoder with random weights from a small ``DPRConfig`` (a BERT of ``layers``
        layers, vectors of ``hidden_size``, DPR's dropout of 0.1 while training). ``tied=True``
        makes the passage encoder use the question encoder's BERT, so both sides share every
        weight."""
        config = DPRConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                           num_hidden_layers=layers, num_attention_heads=heads,
                           intermediate_size=intermediate_size, max_position_embeddings=max_positions,
                           pad_token_id=tokenizer.pad_token_id, projection_dim=0)
        question_encoder, context_encoder = DPRQuestionEncoder(config), DPRContextEncoder(config)
        if tied:
            context_encoder.ctx_encoder.bert_model = question_encoder.question_encoder.bert_model
        return cls(question_encoder, context_encoder, tokenizer, pooling)

    @property
    def tied(self):
        """Whether both encoders share one BERT (the same module, not merely equal weights)."""
        return self.question_encoder.question_encoder.bert_model is \
            self.context_encoder.ctx_encoder.bert_model

    def untie(self):
        """Give the passage encoder its own copy of the shared weights, so that each side can be
        trained (or frozen) on its own from here on. Returns ``self``."""
        if self.tied:
            shared = self.question_encoder.question_encoder.bert_model
            self.context_encoder.ctx_encoder.bert_model = copy.deepcopy(shared)
        return self

    @property
    def max_positions(self):
        return self.question_encoder.config.max_position_embeddings

    # -- tokenising -----------------------------------------------------------------------------
    def tokenize_questions(self, questions):
        """``<s> x </s>`` for each question, padded: ``input_ids``, ``attention_mask`` ``[B, L]``."""
        if isinstance(questions, str) or not all(isinstance(q, str) for q in questions):
            raise TypeError("questions must be a list of strings; wrap a single question in a list")
        return self._checked(self.tokenizer(list(questions), padding=True, return_tensors="pt"))

    def tokenize_passages(self, passages):
        """``<s> title </s> text </s>`` for each passage, padded: ``[B, L]`` tensors."""
        titles, texts = zip(*_as_pairs(passages))
        return self._checked(self.tokenizer(list(titles), list(texts), padding=True,
                                            return_tensors="pt"))

    def _checked(self, batch):
        # Never cut an input silently: a truncated passage may have lost its answer.
        if batch.input_ids.shape[1] > self.max_positions:
            raise ValueError(f"an input is {batch.input_ids.shape[1]} tokens long, more than the "
                             f"model's max_position_embeddings={self.max_positions}: shorten it "
                             "or build the model with a larger max_positions")
        return batch

    # -- encoding -------------------------------------------------------------------------------
    def question_vectors(self, batch):
        """q(x) for a tokenised batch: ``[B, hidden]``, differentiable."""
        return self._pool(self.question_encoder, self.question_encoder.question_encoder, batch)

    def passage_vectors(self, batch):
        """e(d) for a tokenised batch: ``[B, hidden]``, differentiable."""
        return self._pool(self.context_encoder, self.context_encoder.ctx_encoder, batch)

    def _pool(self, model, dpr_encoder, batch):
        if self.pooling == "first":
            return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).pooler_output
        hidden = dpr_encoder.bert_model(input_ids=batch.input_ids,
                                        attention_mask=batch.attention_mask).last_hidden_state
        mask = batch.attention_mask[..., None].to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)

    @torch.no_grad()
    def encode_questions(self, questions, batch_size=256):
        """q(x) for every question, as a float32 array ``[n, hidden]`` (in eval mode)."""
        return self._encode(questions, self.tokenize_questions, self.question_vectors, batch_size)

    @torch.no_grad()
    def encode_passages(self, passages, batch_size=256):
        """e(d) for every passage (dicts with title and text, pairs or strings): ``[n, hidden]``."""
        return self._encode(_as_pairs(passages), self.tokenize_passages, self.passage_vectors,
                            batch_size)

    def _encode(self, items, tokenize, vectors, batch_size):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        items = list(items)
        if not items:
            raise ValueError("nothing to encode: the list is empty")
        was_training = self.training
        self.eval()
        chunks = [vectors(tokenize(items[i:i + batch_size])).numpy()
                  for i in range(0, len(items), batch_size)]
        self.train(was_training)
        return np.concatenate(chunks).astype(np.float32)

    # -- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, folder):
        """Write both encoders (safetensors), the tokenizer, ``biencoder.json`` and the folder's
        checksums (``MANIFEST.sha256``, verified by :meth:`from_pretrained`) to ``folder``.

        Tied encoders are written as two DPR encoders with identical weights, each complete."""
        folder = Path(folder)
        self.question_encoder.save_pretrained(folder / "question_encoder")
        self.context_encoder.save_pretrained(folder / "context_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        (folder / _CONFIG_FILE).write_text(
            json.dumps({"tied": self.tied, "pooling": self.pooling}, indent=2) + "\n")
        write_manifest(folder)

    @classmethod
    def from_pretrained(cls, folder):
        """Load what :meth:`save_pretrained` wrote; encoders saved tied are tied again."""
        folder = Path(folder)
        if not (folder / _CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder / _CONFIG_FILE} is missing: is {folder} a folder "
                                    "written by BiEncoder.save_pretrained?")
        verify_manifest(folder)  # folders saved before manifests existed load unchecked
        settings = json.loads((folder / _CONFIG_FILE).read_text())
        if not isinstance(settings, dict) or set(settings) != {"tied", "pooling"}:
            raise ValueError(f"{folder / _CONFIG_FILE} must hold exactly 'tied' and 'pooling', got "
                             f"{settings!r}: save the bi-encoder again with save_pretrained")
        # Two small files load in milliseconds: no progress bars for them.
        bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            model = cls(load_weights(DPRQuestionEncoder, folder / "question_encoder", folder),
                        load_weights(DPRContextEncoder, folder / "context_encoder", folder),
                        AutoTokenizer.from_pretrained(folder / "tokenizer"), settings["pooling"])
        finally:
            if bars:
                transformers_logging.enable_progress_bar()
        if settings["tied"]:
            question = model.question_encoder.question_encoder.bert_model
            context = model.context_encoder.ctx_encoder.bert_model
            if any(not torch.equal(a, b) for a, b in zip(question.state_dict().values(),
                                                         context.state_dict().values())):
                raise ValueError(f"{folder} says its encoders are tied, but their weights differ")
            model.context_encoder.ctx_encoder.bert_model = question
        model.eval()
        return model


# ----------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------
def in_batch_negatives_loss(q, p):
    r"""DPR's loss: each question against its own passage and every other passage in the batch.

    ``q`` ``[B, H]`` are the question vectors q(x_i); ``p`` ``[B + M, H]`` the passage vectors,
    whose first B rows are the gold passages (row i for question i) and whose M further rows are
    extra negatives shared by all questions (e.g. one BM25 hard negative per question, M = B).
    With the score matrix :math:`S = q\,p^\top` of shape ``[B, B + M]``,

    .. math::
        L = -\frac{1}{B} \sum_{i=1}^{B} \log \frac{\exp S_{ii}}{\sum_{j=1}^{B+M} \exp S_{ij}},

    the cross-entropy of each row with the diagonal as the target class.
    """
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
        raise ValueError(f"q must be [B, H] and p [B + M, H] with the same H, got {list(q.shape)} "
                         f"and {list(p.shape)}")
    if p.shape[0] < q.shape[0]:
        raise ValueError(f"p has {p.shape[0]} rows, fewer than the {q.shape[0]} questions: its "
                         "first B rows must be the questions' gold passages")
    scores = q @ p.T
    return F.cross_entropy(scores, torch.arange(q.shape[0], device=q.device))


# ----------------------------------------------------------------------------------------------
# Training data
# ----------------------------------------------------------------------------------------------
def training_examples(passages, questions, counterfactual=()):
    """Training pairs ``{"question", "title", "text", "passage_id", "group"}``.

    Each of ``questions`` (normally the training split) with its gold passage from ``passages``,
    then each counterfactual example with its own passage. ``group`` is (entity id, aspect): two
    passages of one group answer the same questions, so they must never be each other's negatives.
    """
    by_id = {p["id"]: p for p in passages}
    examples = []
    for q in questions:
        if q["passage_id"] not in by_id:
            raise KeyError(f"question {q['id']} names the passage {q['passage_id']!r}, which is "
                           "not among the passages given")
        gold = by_id[q["passage_id"]]
        examples.append({"question": q["question"], "title": gold["title"], "text": gold["text"],
                         "passage_id": gold["id"], "group": (gold["entity_id"], gold["aspect"])})
    for e in counterfactual:
        examples.append({"question": e["question"], "title": e["title"], "text": e["text"],
                         "passage_id": e["passage_id"], "group": (e["entity_id"], e["aspect"])})
    return examples


def bm25_hard_negatives(examples, depth=100):
    """One BM25 hard negative per example, as in DPR: the passage BM25 ranks highest for the
    question among the examples' passages, leaving out those of the gold passage's group.

    BM25 (``ragtutor.sparse``, title + text) indexes the distinct passages of ``examples``. Returns
    a list aligned with ``examples``: a passage ``{"title", "text", "passage_id", "group"}``, or
    None when the top ``depth`` hold only the gold passage's group.
    """
    passages = {}
    for e in examples:
        passages.setdefault(e["passage_id"], {key: e[key] for key in
                                              ("title", "text", "passage_id", "group")})
    passages = list(passages.values())
    bm25 = BM25Retriever().fit([f"{p['title']} {p['text']}" for p in passages])
    _, ids = bm25.search([e["question"] for e in examples], min(depth, len(passages)))
    negatives = []
    for e, row in zip(examples, ids):
        negatives.append(next((passages[i] for i in row if passages[i]["group"] != e["group"]), None))
    return negatives


def biencoder_batches(examples, batch_size=64, seed=0, hard_negatives=None):
    """Endless training batches ``(questions, positives, negatives)``, reshuffled every epoch.

    ``questions`` is a list of B strings, ``positives`` their B gold passages and ``negatives``
    their B hard negatives (``hard_negatives`` aligned with ``examples``), or None without them.
    No passage group occurs twice in a batch — neither among the gold passages nor among the hard
    negatives — so no question ever meets a passage of its own group as a negative. An example
    that would repeat a group waits for a later batch; examples without a hard negative are left
    out when hard negatives are used.
    """
    examples = list(examples)
    pool = list(range(len(examples)))
    if hard_negatives is not None:
        if len(hard_negatives) != len(examples):
            raise ValueError(f"{len(hard_negatives)} hard negatives for {len(examples)} examples")
        pool = [i for i in pool if hard_negatives[i] is not None]
    if not 0 < batch_size <= len(pool):
        raise ValueError(f"batch_size must be between 1 and the number of examples ({len(pool)}), "
                         f"got {batch_size}")
    rng = random.Random(seed)
    waiting, idle = [], 0
    while True:
        queue = waiting + rng.sample(pool, len(pool))
        waiting = []
        batch, groups = [], set()
        idle += 1  # passes over the examples without a batch: two in a row means none can be made
        if idle > 2:
            raise ValueError(f"no batch of {batch_size} examples with distinct passage groups can "
                             f"be made from these {len(pool)} examples (they span "
                             f"{len({examples[i]['group'] for i in pool})} groups): lower batch_size")
        for i in queue:
            new = {examples[i]["group"]}
            if hard_negatives is not None:
                new.add(hard_negatives[i]["group"])
            if groups & new:
                waiting.append(i)
                continue
            batch.append(i)
            groups |= new
            if len(batch) == batch_size:
                yield _batch(examples, hard_negatives, batch)
                batch, groups, idle = [], set(), 0
        waiting += batch  # an incomplete batch starts the next epoch


def _batch(examples, hard_negatives, indices):
    questions = [examples[i]["question"] for i in indices]
    positives = [(examples[i]["title"], examples[i]["text"]) for i in indices]
    negatives = None if hard_negatives is None else [
        (hard_negatives[i]["title"], hard_negatives[i]["text"]) for i in indices]
    return questions, positives, negatives


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train_biencoder(model, batches, lr=1e-3, warmup=200, max_steps=None, max_seconds=None,
                    weight_decay=0.01, log_every=50, evaluate=None, eval_every=None, progress=True):
    """Train ``model`` (a :class:`BiEncoder`) with :func:`in_batch_negatives_loss` and AdamW.

    ``batches`` yields ``(questions, positives, negatives)`` as :func:`biencoder_batches` does.
    The learning rate rises linearly from 0 to ``lr`` over ``warmup`` steps, then stays. Training
    stops after ``max_steps`` steps or ``max_seconds`` seconds of training, whichever comes first
    (one of them must be given). Every ``eval_every`` steps ``evaluate(model)`` returns a dict of
    metrics (its time is not counted as training).

    Returns the history: ``{"step", "loss", "seconds"}`` lists with the mean loss over each
    ``log_every`` steps (and over the steps after the last full window) and the training time so
    far, and ``"eval"``, a list of ``{"step", "seconds", **metrics}``.
    """
    def loss(batch):
        questions, positives, negatives = batch
        q = model.question_vectors(model.tokenize_questions(questions))
        p = model.passage_vectors(model.tokenize_passages(positives + (negatives or [])))
        return in_batch_negatives_loss(q, p)

    # parameters() lists a shared (tied) weight once, so it gets one update per step.
    return train(model, loss, batches, lr=lr, warmup=warmup, max_steps=max_steps,
                 max_seconds=max_seconds, weight_decay=weight_decay, log_every=log_every,
                 evaluate=evaluate, eval_every=eval_every, progress=progress)


def cold_question_encoder(model, seed=0):
    """An untied copy of ``model`` (a :class:`BiEncoder`) whose question encoder has fresh random
    Transformer layers: it keeps the trained embeddings (word, position, their layer norm) and the
    passage encoder, so its passage index is the trained one, but its question vectors point
    nowhere. Chapter 05's cold start; :func:`train_question_encoder` warms it up."""
    if not isinstance(model, BiEncoder):
        raise TypeError(f"model must be a BiEncoder, got {type(model).__name__}")
    cold = copy.deepcopy(model).untie()
    torch.manual_seed(seed)
    fresh = DPRQuestionEncoder(cold.question_encoder.config)
    old = cold.question_encoder.question_encoder.bert_model
    fresh.question_encoder.bert_model.embeddings.load_state_dict(old.embeddings.state_dict())
    cold.question_encoder = fresh
    return cold.eval()


def train_question_encoder(model, passages, questions, max_steps, lr=1e-3, batch_size=16, seed=0,
                           freeze_embeddings=True):
    r"""Train ``model``'s question encoder alone, with retrieval labels, against its frozen passage
    index: for each question the loss is the cross-entropy of its gold passage among *all*
    ``passages`` (scores q(x)·e(d) for every d, the e(d) computed once and fixed). The passage
    encoder must be untied (:meth:`BiEncoder.untie`) so that it stays as it is.

    ``questions`` are dicts with ``question`` and ``passage_id``; batches of ``batch_size`` are
    drawn at random (with ``seed``) for ``max_steps`` steps of AdamW at ``lr``; the question
    encoder's word embeddings stay frozen unless ``freeze_embeddings=False``. Chapter 05 makes a
    *weak* start this way (a few dozen steps). Returns the loss of every step.
    """
    if not isinstance(model, BiEncoder):
        raise TypeError(f"model must be a BiEncoder, got {type(model).__name__}")
    if model.tied:
        raise ValueError("the encoders are tied, so training the question encoder would move the "
                         "passage index too: call model.untie() first")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
    questions = list(questions)
    if not questions:
        raise ValueError("no training questions")
    pairs = _as_pairs(passages)
    if not all(isinstance(p, Mapping) and "id" in p for p in passages):
        raise ValueError("passages must be dicts with 'id', 'title' and 'text': the questions name "
                         "their gold passage by id")
    position = {p["id"]: i for i, p in enumerate(passages)}
    missing = [q["passage_id"] for q in questions if q["passage_id"] not in position]
    if missing:
        raise ValueError(f"{len(missing)} questions have a gold passage that is not among the "
                         f"passages, e.g. {missing[0]!r}: pass the corpus the questions were "
                         "written for")
    index = torch.from_numpy(model.encode_passages(pairs))  # [N, H], fixed
    encoder = model.question_encoder
    for p in encoder.parameters():
        p.requires_grad_(True)
    if freeze_embeddings:
        encoder.question_encoder.bert_model.embeddings.word_embeddings.weight.requires_grad_(False)
    rng = random.Random(seed)

    def draw():
        while True:
            yield [questions[rng.randrange(len(questions))] for _ in range(batch_size)]

    def loss(batch):
        q = model.question_vectors(model.tokenize_questions([x["question"] for x in batch]))
        gold = torch.tensor([position[x["passage_id"]] for x in batch])
        return F.cross_entropy(q @ index.T, gold)

    history = train(model, loss, draw(), lr=lr, max_steps=max_steps, log_every=1,
                    parameters=[p for p in encoder.parameters() if p.requires_grad],
                    progress=False)
    return history["loss"]


# ----------------------------------------------------------------------------------------------
# Retrievers
# ----------------------------------------------------------------------------------------------
class DenseRetriever(Retriever):
    """A trained :class:`BiEncoder` on the course's retriever contract
    (:mod:`ragtutor.retrieval`)::

        retriever = DenseRetriever(encoder).fit(passages)   # records with id, title and text
        retriever.score("What money is spent in France?")   # [n_docs] dot products q(x) · e(d)
        scores, ids = retriever.search(questions, k=20)     # [n_queries, k] each, best first
        retriever.add(new_passages)                         # encoded as the encoder is now

    ``index`` is a :class:`ragtutor.index.VectorIndex` whose kind and settings to search the
    passage vectors with (default: exact, ``VectorIndex("flat")``); ``fit`` builds a new one, and
    ``add`` / ``delete`` edit it (an IVF or PQ index keeps the quantizer it was trained with).
    Learned state: ``embeddings_`` ``[n_docs, hidden]``, ``index_``, ``doc_ids_``, ``n_docs_``.
    """

    _name = "DenseRetriever"

    def __init__(self, encoder, index=None, batch_size=256):
        self.encoder = encoder
        self.index = index
        self.batch_size = batch_size

    def fit(self, corpus):
        """Encode ``corpus`` (passage records; or bare documents: title/text pairs or strings)
        and index the vectors. Returns ``self``."""
        return super().fit(corpus)

    def _fit(self, corpus):
        self._check_batch_size()
        self.embeddings_ = self.encoder.encode_passages(corpus, self.batch_size)
        # A fresh index of the same class with the given settings (a VectorIndex, or chapter 09's
        # ShardedIndex): the one passed in stays as it was.
        index = self.index if self.index is not None else VectorIndex("flat")
        self.index_ = type(index)(**index.get_params()).fit(self.embeddings_)

    def _add(self, documents):
        vectors = self.encoder.encode_passages(documents, self.batch_size)
        self.embeddings_ = np.concatenate([self.embeddings_, vectors])
        self.index_.add(vectors)

    def _delete(self, rows):
        self.embeddings_ = np.delete(self.embeddings_, rows, axis=0)
        self.index_.reset().add(self.embeddings_)

    def score(self, query):
        """s(x, d) = q(x) · e(d) for one query string and every passage: ``[n_docs]``."""
        self._check_fitted()
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}; use search() "
                            "for a list of queries")
        return self.embeddings_ @ self.encoder.encode_questions([query])[0]

    def _scores_rows(self, queries, k):
        self._check_batch_size()
        warn_unknown(queries, unknown_to_tokenizer(self.encoder.tokenizer, queries),
                     "the question encoder")
        return self.index_.search(self.encoder.encode_questions(queries, self.batch_size), k)

    def _check_batch_size(self):
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
