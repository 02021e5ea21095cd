r"""Re-ranking: a cross-encoder reads the question and a passage *together* and re-scores the
first stage's best passages.

A bi-encoder (chapter 02) encodes a question and a passage apart and compares two vectors, so a
passage's vector is computed once, before any question is asked: fast, but the question never
sees the passage. A cross-encoder (Nogueira & Cho, 2019, *Passage Re-ranking with BERT*) reads
one sequence holding both::

    <s> question </s> title text </s>          (segment 0: the question, segment 1: the passage)
    s(x, d) = w · BERT(<s> x </s> d </s>)[0] + b

where [0] is the output vector of the first token, <s> (BERT's [CLS]), and (w, b) a linear head.
Every layer's attention runs across question and passage, so word-for-word agreement, and what
the question asks of the passage, can count; but every (question, passage) pair costs a whole
Transformer pass, so a cross-encoder cannot search a corpus. It *re-ranks* instead: a first-stage
retriever (BM25, the dense retriever) finds the top ``depth`` passages, the cross-encoder scores
those ``depth`` pairs and the best ``k`` by its score are returned.

- :class:`CrossEncoder`: the model, a small BERT (Hugging Face ``BertModel`` from a ``BertConfig``,
  random weights — :meth:`CrossEncoder.build` — or chapter 02's bi-encoder weights —
  :meth:`CrossEncoder.from_biencoder`) with a linear head on the first token's output vector.
  It reads the course's tokenizers (<s> and </s> are its [CLS] and [SEP]).
- :func:`train_cross_encoder`: listwise training: for each question, a softmax over its gold
  passage and ``n_negatives`` hard negatives from the first stage's top ``depth``, the
  cross-entropy of the gold one, through the course's one training loop (``ragtutor.train``).
- :class:`Reranker`: a first stage and a cross-encoder on the retriever contract
  (:mod:`ragtutor.retrieval`): ``fit``, ``search``, ``add``, ``delete``.

Nothing is cut to fit: a (question, passage) pair longer than the model's
``max_position_embeddings`` is refused with an error that names it, because a truncated passage
may have lost exactly the sentence that answers the question.
"""
import json
import math
import numbers
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertConfig, BertModel

from ragtutor.checksums import ChecksumError, verify_manifest, write_manifest
from ragtutor.dense import BiEncoder, _as_pairs
from ragtutor.retrieval import (Retriever, check_k, check_queries, check_texts,
                                unknown_to_tokenizer, warn_unknown)
from ragtutor.train import train

__all__ = ["CrossEncoder", "listwise_loss", "cross_encoder_batches", "train_cross_encoder",
           "Reranker"]

_CONFIG_FILE = "rerank.json"
_WEIGHTS_FILE = "model.safetensors"
# What rerank.json records: how the model reads a pair and where its score comes from. A folder
# that says anything else was not written by this module's CrossEncoder.
_SETTINGS = {"kind": "cross-encoder", "input": "<s> question </s> title text </s>",
             "segments": "question 0, passage 1", "score": "linear head on the first token"}


def _passage_string(title, text):
    """What the cross-encoder reads of a passage: its title and its text, as one string."""
    return f"{title} {text}" if title else text


def _is_positive_int(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 1


# ----------------------------------------------------------------------------------------------
# The cross-encoder
# ----------------------------------------------------------------------------------------------
class CrossEncoder(torch.nn.Module):
    """A BERT that reads ``<s> question </s> title text </s>`` and gives one relevance score.

    ``bert`` is a Hugging Face ``BertModel`` without its pooler, ``tokenizer`` a course tokenizer
    (``ragtutor.tokenization``: <pad>, <s>, </s> and <unk>). The score is a linear head on the
    output vector of the first token, <s>, after BERT's dropout (active in training mode only).
    Segment (token type) ids are 0 for <s>, the question and the first </s>, and 1 for the passage
    and the last </s>, as BERT's are for a pair.

    Build one with :meth:`build` (random weights) or :meth:`from_biencoder` (chapter 02's trained
    encoder as the start); :meth:`save_pretrained` writes ``config.json``, ``model.safetensors``
    (every weight, the head's included), ``tokenizer/``, ``rerank.json`` and the folder's
    checksums, and :meth:`from_pretrained` reads them back after verifying the checksums.
    """

    def __init__(self, bert, tokenizer):
        super().__init__()
        if not isinstance(bert, BertModel):
            raise TypeError(f"bert must be a transformers BertModel, got {type(bert).__name__}")
        if bert.pooler is not None:
            raise ValueError("bert has a pooler, which the cross-encoder does not use (its head "
                             "reads the first token's output vector): build it with "
                             "BertModel(config, add_pooling_layer=False)")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(tokenizer, name, None) is None:
                raise ValueError(f"the tokenizer has no {name}: use a course tokenizer "
                                 "(ragtutor.tokenization.train_tokenizer), which has <pad>, <s> "
                                 "and </s>")
        if len(tokenizer) > bert.config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's "
                             f"vocabulary only {bert.config.vocab_size}: build the model for this "
                             "tokenizer")
        if bert.config.type_vocab_size < 2:
            raise ValueError("the model needs two segment (token type) embeddings, one for the "
                             f"question and one for the passage; its config has "
                             f"type_vocab_size={bert.config.type_vocab_size}")
        self.bert = bert
        self.dropout = torch.nn.Dropout(bert.config.hidden_dropout_prob)
        self.head = torch.nn.Linear(bert.config.hidden_size, 1)
        torch.nn.init.normal_(self.head.weight, std=bert.config.initializer_range)  # as BERT's
        torch.nn.init.zeros_(self.head.bias)
        self.tokenizer = tokenizer

    @classmethod
    def build(cls, tokenizer, hidden_size=64, layers=2, heads=4, intermediate_size=128,
              max_positions=128):
        """A cross-encoder with random weights: a BERT of ``layers`` layers and vectors of
        ``hidden_size`` (the sizes of chapter 02's bi-encoder by default), BERT's dropout of 0.1
        while training, and a vocabulary of ``len(tokenizer)`` tokens. Set the seed first
        (``ragtutor.set_seed``) for the same weights every time."""
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                            num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=intermediate_size,
                            max_position_embeddings=max_positions, type_vocab_size=2,
                            pad_token_id=tokenizer.pad_token_id)
        return cls(BertModel(config, add_pooling_layer=False), tokenizer)

    @classmethod
    def from_biencoder(cls, biencoder):
        """A cross-encoder that starts from a trained :class:`ragtutor.dense.BiEncoder`: a copy of
        its question encoder's BERT (same sizes, same tokenizer) and a fresh linear head.

        The bi-encoder already knows every token of the knowledge base — the names of dev and
        test entities included, from its counterfactual training — which a cross-encoder trained
        on the train split alone would leave as random vectors. (The bi-encoder never used the
        second segment embedding, so the passage's segment starts from its random value.)"""
        if not isinstance(biencoder, BiEncoder):
            raise TypeError(f"biencoder must be a ragtutor.dense.BiEncoder, got "
                            f"{type(biencoder).__name__}")
        source = biencoder.question_encoder.question_encoder.bert_model
        c = source.config
        config = BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                            num_hidden_layers=c.num_hidden_layers,
                            num_attention_heads=c.num_attention_heads,
                            intermediate_size=c.intermediate_size, hidden_act=c.hidden_act,
                            hidden_dropout_prob=c.hidden_dropout_prob,
                            attention_probs_dropout_prob=c.attention_probs_dropout_prob,
                            max_position_embeddings=c.max_position_embeddings,
                            type_vocab_size=c.type_vocab_size,
                            initializer_range=c.initializer_range, layer_norm_eps=c.layer_norm_eps,
                            pad_token_id=c.pad_token_id)
        bert = BertModel(config, add_pooling_layer=False)
        bert.load_state_dict(source.state_dict())
        return cls(bert, biencoder.tokenizer)

    @property
    def max_positions(self):
        """The longest input the model reads, in tokens, the three special tokens included."""
        return self.bert.config.max_position_embeddings

    # -- tokenising -----------------------------------------------------------------------------
    def tokenize(self, questions, passages):
        """``<s> question </s> title text </s>`` for each (question, passage) pair, padded:
        ``input_ids``, ``token_type_ids`` and ``attention_mask``, each ``[B, L]``.

        ``questions`` is a list of strings and ``passages`` a list of the same length of passage
        records (dicts with ``title`` and ``text``), (title, text) pairs or strings (no title).
        A pair longer than :attr:`max_positions` tokens is refused (ValueError), never cut.
        """
        questions = check_texts(questions, "questions")
        pairs = _as_pairs(passages)
        if len(pairs) != len(questions):
            raise ValueError(f"{len(questions)} questions and {len(pairs)} passages: the "
                             "cross-encoder scores pairs, so pass one passage per question "
                             "(repeat a question to score it against several passages)")
        tokenizer = self.tokenizer
        question_ids = tokenizer(questions, add_special_tokens=False).input_ids
        passage_ids = tokenizer([_passage_string(*p) for p in pairs],
                                add_special_tokens=False).input_ids
        lengths = [len(q) + len(p) + 3 for q, p in zip(question_ids, passage_ids)]
        longest = int(np.argmax(lengths))
        if lengths[longest] > self.max_positions:
            over = sum(n > self.max_positions for n in lengths)
            raise ValueError(
                f"{over} of the {len(lengths)} (question, passage) pairs are longer than the "
                f"model's max_position_embeddings={self.max_positions} tokens, e.g. pair "
                f"{longest} ({lengths[longest]} tokens: question {questions[longest]!r}, passage "
                f"titled {pairs[longest][0]!r}). Nothing is cut, because a truncated passage may "
                "have lost its answer: split long passages into chunks (ragtutor.chunking) or "
                "build the model with a larger max_positions")
        bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
        width = max(lengths)
        input_ids = torch.full((len(lengths), width), pad, dtype=torch.long)
        token_type_ids = torch.zeros((len(lengths), width), dtype=torch.long)
        attention_mask = torch.zeros((len(lengths), width), dtype=torch.long)
        for i, (q, p) in enumerate(zip(question_ids, passage_ids)):
            first = [bos, *q, eos]
            ids = first + [*p, eos]
            input_ids[i, :len(ids)] = torch.tensor(ids)
            token_type_ids[i, len(first):len(ids)] = 1
            attention_mask[i, :len(ids)] = 1
        return {"input_ids": input_ids, "token_type_ids": token_type_ids,
                "attention_mask": attention_mask}

    # -- scoring --------------------------------------------------------------------------------
    def forward(self, batch):
        """The scores of a tokenised batch (:meth:`tokenize`): ``[B]``, differentiable."""
        hidden = self.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                           attention_mask=batch["attention_mask"]).last_hidden_state
        return self.head(self.dropout(hidden[:, 0])).squeeze(-1)

    @torch.no_grad()
    def score(self, questions, passages, batch_size=256):
        """s(x_i, d_i) for each pair of ``questions`` and ``passages`` (as :meth:`tokenize` takes
        them): a float32 tensor ``[n]``, computed in eval mode (no dropout), so the same pairs
        always get the same scores. ``batch_size`` pairs go through the model at a time."""
        if not _is_positive_int(batch_size):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        questions = check_texts(questions, "questions")
        pairs = _as_pairs(passages)
        if len(pairs) != len(questions):
            raise ValueError(f"{len(questions)} questions and {len(pairs)} passages: pass one "
                             "passage per question")
        was_training = self.training
        self.eval()
        try:
            scores = [self(self.tokenize(questions[i:i + batch_size], pairs[i:i + batch_size]))
                      for i in range(0, len(questions), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(scores).float()

    # -- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, folder):
        """Write ``config.json`` (the ``BertConfig``), ``model.safetensors`` (every weight),
        ``tokenizer/``, ``rerank.json`` and the folder's checksums (``MANIFEST.sha256``, verified
        by :meth:`from_pretrained`) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.bert.config.save_pretrained(folder)
        weights = {name: tensor.detach().contiguous() for name, tensor in self.state_dict().items()}
        save_file(weights, folder / _WEIGHTS_FILE, metadata={"format": "pt"})
        self.tokenizer.save_pretrained(folder / "tokenizer")
        (folder / _CONFIG_FILE).write_text(json.dumps(_SETTINGS, indent=2) + "\n")
        write_manifest(folder)

    @classmethod
    def from_pretrained(cls, folder):
        """Load what :meth:`save_pretrained` wrote, in eval mode, after checking every file
        against the folder's checksums (``ChecksumError`` names a changed, missing or added file)
        and every weight against the configuration (none missing, unexpected, of another shape,
        NaN or infinite)."""
        folder = Path(folder)
        if not (folder / _CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder / _CONFIG_FILE} is missing: is {folder} a folder "
                                    "written by CrossEncoder.save_pretrained?")
        verify_manifest(folder, required=True)
        settings = json.loads((folder / _CONFIG_FILE).read_text())
        if settings != _SETTINGS:
            raise ValueError(f"{folder / _CONFIG_FILE} describes another model ({settings!r}, "
                             f"expected {_SETTINGS!r}): save the cross-encoder again with "
                             "save_pretrained")
        config = BertConfig.from_pretrained(folder)
        model = cls(BertModel(config, add_pooling_layer=False),
                    AutoTokenizer.from_pretrained(folder / "tokenizer"))
        state = load_file(folder / _WEIGHTS_FILE)
        expected = model.state_dict()
        problems = [f"missing: {name}" for name in expected if name not in state]
        problems += [f"unexpected: {name}" for name in state if name not in expected]
        problems += [f"{name} has shape {list(state[name].shape)}, the config asks for "
                     f"{list(tensor.shape)}" for name, tensor in expected.items()
                     if name in state and state[name].shape != tensor.shape]
        problems += [f"{name} holds NaN or infinite values" for name, tensor in state.items()
                     if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
        if problems:
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            raise ChecksumError(f"{folder / _WEIGHTS_FILE}: the weights do not fit config.json "
                                f"({'; '.join(problems[:3])}{more}): save the cross-encoder again")
        model.load_state_dict(state)
        return model.eval()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def listwise_loss(scores):
    r"""The listwise softmax loss of a batch of candidate lists whose first entry is the gold one.

    ``scores`` ``[B, 1 + n]``: row i holds s(x_i, d) for question i's gold passage (column 0) and
    its n negatives. The loss is the mean cross-entropy of column 0 under each row's softmax,

    .. math:: L = -\frac{1}{B} \sum_i \log \frac{\exp s_{i0}}{\sum_j \exp s_{ij}},

    so the gold passage must beat its own negatives (not other questions' passages, as in
    chapter 02's in-batch loss). Chance is :math:`\log(1 + n)`.
    """
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be [B, 1 + n] with n >= 1 negatives, got "
                         f"{list(scores.shape)}")
    return F.cross_entropy(scores, torch.zeros(scores.shape[0], dtype=torch.long,
                                               device=scores.device))


def _check_training_data(questions, passages):
    if isinstance(questions, (str, Mapping)) or not hasattr(questions, "__len__"):
        raise ValueError(f"questions must be a list of question records, got "
                         f"{type(questions).__name__}")
    questions = list(questions)
    if not questions:
        raise ValueError("questions is empty: pass the training questions")
    for i, q in enumerate(questions):
        if not isinstance(q, Mapping) or "question" not in q or "passage_id" not in q:
            raise ValueError(f"questions[{i}] must be a dict with 'question' and 'passage_id' "
                             f"(ragtutor.data.load_questions gives such records), got {q!r}")
    if isinstance(passages, (str, Mapping)) or not hasattr(passages, "__len__"):
        raise ValueError(f"passages must be a list of passage records, got "
                         f"{type(passages).__name__}")
    passages = list(passages)
    if not passages or not all(isinstance(p, Mapping) and {"id", "title", "text"} <= p.keys()
                               for p in passages):
        raise ValueError("passages must be a non-empty list of dicts with 'id', 'title' and "
                         "'text' (ragtutor.data.load_passages): the questions name their gold "
                         "passage by id")
    by_id = {p["id"]: p for p in passages}
    missing = [q["passage_id"] for q in questions if q["passage_id"] not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} questions have a gold passage that is not among the "
                         f"passages, e.g. {missing[0]!r}: pass the passages the questions were "
                         "written for")
    return questions, by_id


def cross_encoder_batches(questions, passages, candidates, batch_size=16, n_negatives=7, seed=0):
    """Endless training batches, reshuffled every epoch: lists of ``batch_size`` pairs
    ``(question text, [gold passage, negative, ...])``, each with ``1 + n_negatives`` passage
    records.

    ``candidates[i]`` is the first stage's ranking of passage ids for ``questions[i]``. The
    negatives of a question are drawn anew each time it comes up: ``n_negatives`` of its
    candidates other than the gold passage, at random (with ``seed``), and when there are fewer
    than that, the rest drawn from all other ``passages`` — every negative is distinct and none
    is the gold passage.
    """
    questions, by_id = _check_training_data(questions, passages)
    if len(candidates) != len(questions):
        raise ValueError(f"{len(candidates)} candidate lists for {len(questions)} questions")
    if not _is_positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not _is_positive_int(n_negatives) or n_negatives >= len(by_id):
        raise ValueError(f"n_negatives must be a positive int smaller than the number of passages "
                         f"({len(by_id)}), got {n_negatives!r}")
    unknown = [i for row in candidates for i in row if i not in by_id]
    if unknown:
        raise ValueError(f"the first stage answered with passage id {unknown[0]!r}, which is not "
                         "among the passages: fit it on the same passages")
    if batch_size > len(questions):
        raise ValueError(f"batch_size={batch_size} is larger than the {len(questions)} training "
                         "questions: lower it")
    hard = [[i for i in dict.fromkeys(row) if i != q["passage_id"]]
            for q, row in zip(questions, candidates)]
    return _batches(questions, by_id, hard, batch_size, n_negatives, random.Random(seed))


def _batches(questions, by_id, hard, batch_size, n_negatives, rng):
    all_ids = list(by_id)

    def negatives(i):
        chosen = rng.sample(hard[i], min(n_negatives, len(hard[i])))
        taken = set(chosen) | {questions[i]["passage_id"]}
        while len(chosen) < n_negatives:
            extra = all_ids[rng.randrange(len(all_ids))]
            if extra not in taken:
                chosen.append(extra)
                taken.add(extra)
        return chosen

    while True:
        order = rng.sample(range(len(questions)), len(questions))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [(questions[i]["question"],
                    [by_id[questions[i]["passage_id"]]] + [by_id[j] for j in negatives(i)])
                   for i in order[start:start + batch_size]]


def train_cross_encoder(model, questions, passages, first_stage, steps, batch_size=16, lr=5e-4,
                        n_negatives=7, seed=0, depth=20, warmup=100, schedule="constant",
                        stop_after=None, log_every=50, evaluate=None, eval_every=None,
                        evaluate_ends=False, keep_best=None, progress=False):
    """Train ``model`` (a :class:`CrossEncoder`) by :func:`listwise_loss` and AdamW.

    ``questions`` are records with ``question`` and ``passage_id`` (the gold passage), and
    ``passages`` the passage records (``id``, ``title``, ``text``) they and the negatives come
    from. ``first_stage`` is a fitted retriever on the contract (``search(queries, k)``), fitted
    on ``passages``: its top ``depth`` for each question, searched once before training, are the
    hard negatives — the passages the cross-encoder will have to tell apart from the gold one
    when it re-ranks that retriever's results (:func:`cross_encoder_batches` draws them). Each
    step scores ``batch_size`` questions against ``1 + n_negatives`` passages each.

    ``steps``, ``lr``, ``warmup``, ``schedule``, ``stop_after``, ``log_every``, ``evaluate``,
    ``eval_every``, ``evaluate_ends`` and ``keep_best`` are :func:`ragtutor.train.train`'s
    (``steps`` is its ``max_steps``). ``seed`` fixes the batch order and the negatives; dropout
    draws from torch's generator, so set the seed first (``ragtutor.set_seed``) for a
    reproducible run. Returns the history :func:`ragtutor.train.train` returns.
    """
    if not isinstance(model, CrossEncoder):
        raise TypeError(f"model must be a CrossEncoder, got {type(model).__name__}")
    if not hasattr(first_stage, "search"):
        raise TypeError(f"first_stage must be a retriever with search(queries, k), got "
                        f"{type(first_stage).__name__}")
    if not _is_positive_int(depth):
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    questions, by_id = _check_training_data(questions, passages)
    _, candidates = first_stage.search([q["question"] for q in questions], min(depth, len(by_id)))
    batches = cross_encoder_batches(questions, list(by_id.values()),
                                    [list(row) for row in candidates], batch_size, n_negatives,
                                    seed)

    def loss(batch):
        texts = [question for question, group in batch for _ in group]
        group_passages = [p for _, group in batch for p in group]
        scores = model(model.tokenize(texts, group_passages))
        return listwise_loss(scores.view(len(batch), -1))

    return train(model, loss, batches, lr=lr, warmup=warmup, schedule=schedule, max_steps=steps,
                 stop_after=stop_after, log_every=log_every, evaluate=evaluate,
                 eval_every=eval_every, evaluate_ends=evaluate_ends, keep_best=keep_best,
                 progress=progress, desc="cross-encoder")


# ----------------------------------------------------------------------------------------------
# The re-ranker
# ----------------------------------------------------------------------------------------------
class Reranker(Retriever):
    """A first-stage retriever whose top ``depth`` a :class:`CrossEncoder` re-scores, on the
    course's retriever contract (:mod:`ragtutor.retrieval`)::

        reranker = Reranker(BM25Retriever(), cross_encoder).fit(passages)
        scores, ids = reranker.search(questions, k=5)       # [n_queries, k], best first
        scores, ids = reranker.search(questions, k=5, depth=50)

    ``first_stage`` is an unfitted retriever on the contract: :meth:`fit` fits it on the corpus,
    and ``add`` / ``delete`` edit it with the re-ranker's own copy of the passages' text. The
    corpus may be passage records (``id``, ``title``, ``text``) or bare documents the first stage
    takes that the cross-encoder can read too: strings or (title, text) pairs.

    ``search(queries, k)`` asks the first stage for its top ``max(depth, k)`` (at most the whole
    corpus), scores each of them with the cross-encoder and returns the ``k`` best by that score:
    the scores are the cross-encoder's (float32), the ids the first stage's, and equal scores
    keep the first stage's order. The re-ranker can only reorder what the first stage found, so
    its Recall@depth is the first stage's. ``batch_size`` pairs go through the cross-encoder at a
    time.

    ``mix`` mixes the two stages' scores instead: each candidate's score is its first-stage score
    plus ``mix`` times its cross-encoder score, so ``mix=0`` keeps the first stage's ranking and a
    large ``mix`` approaches the cross-encoder's alone (``None``, the default). A re-ranker that
    is worse than the first stage on its own can still add to it this way; choose ``mix`` on dev
    questions. Learned state: ``doc_ids_``, ``n_docs_`` and ``passages_``, the (title, text) pairs
    in row order.
    """

    _name = "Reranker"

    def __init__(self, first_stage, cross_encoder, depth=20, batch_size=256, mix=None):
        self.first_stage = first_stage
        self.cross_encoder = cross_encoder
        self.depth = depth
        self.batch_size = batch_size
        self.mix = mix

    def fit(self, corpus):
        """Fit the first stage on ``corpus`` and keep the passages' text for the cross-encoder.
        Returns ``self``."""
        return super().fit(corpus)

    def _check_params(self):
        if not isinstance(self.cross_encoder, CrossEncoder):
            raise TypeError(f"cross_encoder must be a CrossEncoder, got "
                            f"{type(self.cross_encoder).__name__}")
        if not all(hasattr(self.first_stage, name) for name in ("fit", "search")):
            raise TypeError(f"first_stage must be a retriever (fit, search), got "
                            f"{type(self.first_stage).__name__}")
        if not _is_positive_int(self.depth):
            raise ValueError(f"depth must be a positive int, got {self.depth!r}")
        if not _is_positive_int(self.batch_size):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.mix is not None and (isinstance(self.mix, bool) or not isinstance(
                self.mix, numbers.Real) or not math.isfinite(self.mix) or self.mix < 0):
            raise ValueError(f"mix must be None (the cross-encoder's scores alone) or a finite "
                             f"number >= 0 (first-stage score + mix * cross-encoder score), got "
                             f"{self.mix!r}")

    @staticmethod
    def _readable(documents):
        # (title, text) pairs, checked before the first stage sees anything.
        try:
            return _as_pairs(documents)
        except TypeError as error:
            raise TypeError(f"{error}; the cross-encoder reads passage records, strings or "
                            "(title, text) pairs") from None

    def _fit(self, corpus):
        self._check_params()
        pairs = self._readable(corpus)
        self.first_stage.fit(corpus)
        self.passages_ = pairs

    def _add(self, documents):
        pairs = self._readable(documents)
        self.first_stage.add(documents)
        self.passages_ = self.passages_ + pairs

    def _delete(self, rows):
        self.first_stage.delete(self.doc_ids_[rows].tolist())
        gone = set(rows.tolist())
        self.passages_ = [p for row, p in enumerate(self.passages_) if row not in gone]

    def search(self, queries, k, depth=None):
        """The ``k`` best passages for each query after re-ranking: ``(scores, ids)``, both
        ``[n_queries, k]``, best first; scores are the cross-encoder's (or, with ``mix``, the
        mixed scores), ids ``doc_ids_`` entries.

        ``depth`` (default: the re-ranker's ``depth``, raised to ``k`` when ``k`` is larger) is
        how many of the first stage's best passages are re-scored; a ``depth`` given here must be
        at least ``k``. A depth beyond the corpus re-scores the whole corpus."""
        self._check_fitted()
        queries = check_queries(queries)
        k = check_k(k, self.n_docs_)
        return self._rerank(queries, k, depth)

    def _scores_rows(self, queries, k):
        return self._rerank(queries, k, None, rows=True)

    def _rerank(self, queries, k, depth, rows=False):
        self._check_params()
        queries = check_texts(queries, "queries")
        if depth is None:
            depth = max(self.depth, k)
        elif not _is_positive_int(depth):
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        elif depth < k:
            raise ValueError(f"depth={depth} is smaller than k={k}: the re-ranker returns k of the "
                             "first stage's top depth passages, so ask for depth >= k")
        depth = min(depth, self.n_docs_)
        warn_unknown(queries, unknown_to_tokenizer(self.cross_encoder.tokenizer, queries),
                     "the cross-encoder")
        first_scores, first_ids = self.first_stage.search(queries, depth)
        row_of = {doc_id: row for row, doc_id in enumerate(self.doc_ids_.tolist())}
        missing = [i for i in np.ravel(first_ids).tolist() if i not in row_of]
        if missing:
            raise ValueError(f"the first stage answered with id {missing[0]!r}, which the "
                             "re-ranker does not hold: fit and edit the index through the "
                             "Reranker, not through its first stage")
        first_rows = np.array([[row_of[i] for i in row] for row in np.asarray(first_ids).tolist()],
                              dtype=np.int64).reshape(len(queries), depth)
        texts = [q for q in queries for _ in range(depth)]
        scores = self.cross_encoder.score(texts, [self.passages_[r] for r in first_rows.ravel()],
                                          self.batch_size).numpy().reshape(len(queries), depth)
        if np.isnan(scores).any():
            raise ValueError("the cross-encoder's scores contain NaN, which has no rank: its "
                             "weights are broken; load or train it again")
        if self.mix is not None:
            scores = np.asarray(first_scores, dtype=np.float64).reshape(scores.shape) \
                + self.mix * scores.astype(np.float64)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # ties: the first stage's order
        top_scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
        top_rows = np.take_along_axis(first_rows, order, axis=1)
        return (top_scores, top_rows) if rows else (top_scores, self.doc_ids_[top_rows])
