"""The whole RAG model, trained end to end (chapter 05): :class:`RAGModel` and :func:`train_rag`.

Chapter 04 (:mod:`ragtutor.rag`) derives the marginal likelihoods, the document posteriors and the
decoders on tensors; this module puts them to work on real parts — a retriever (chapter 02's
bi-encoder, or any retriever on the course's contract, such as chapter 01's BM25), chapter 03's
reader and the knowledge base's passages — and trains them by the marginal likelihood with the
course's one training loop (:mod:`ragtutor.train`). A trained model saves and loads as one folder::

    model = RAGModel.from_pretrained("checkpoints/rag_token")
    model.generate(["What is the capital of France?"])        # ['Paris']
    scores, ids = model.retrieve(["What is the capital of France?"])   # [1, K] each, passage ids
"""
import copy
import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np
import torch

from ragtutor.rag import (VARIANTS, doc_posterior, rag_sequence_nll, rag_token_beam_search,
                          rag_token_nll, seq2seq_generator, teacher_forcing, thorough_decoding,
                          token_logprobs)
from ragtutor.checksums import load_weights, verify_manifest, write_manifest
from ragtutor.retrieval import check_texts, unknown_to_tokenizer, warn_unknown
from ragtutor.train import train

__all__ = ["RAGModel", "train_rag", "VARIANTS"]

_RAG_CONFIG_FILE = "rag.json"
_RESCORE_ROWS = 256  # (candidate, document) pairs scored per forward pass in RAG-Sequence decoding


class RAGModel(torch.nn.Module):
    """Retriever + generator, trained end to end by the RAG marginal likelihood (chapter 05).

    Lewis et al. (2020) train the question encoder q(·) and the generator by the marginal likelihood
    of the answer, keeping the passage encoder e(·) and its index fixed: re-encoding every passage
    after each step would cost a pass over the whole corpus. A forward pass for B questions:

    1. retrieve: q(x) for each question, its top ``n_docs`` = K passages in the frozen index of
       passage vectors e(d), and the scores s_k = q(x)·e(d_k) — recomputed in torch from the stored
       vectors, so that the gradient reaches the question encoder through them (the index's search
       itself is a discrete choice, with no gradient);
    2. read: the generator reads ``title / text // question`` (Hugging Face's combined input,
       :func:`ragtutor.generation.combined_input`) for each of the K documents;
    3. marginalise: chapter 04's :func:`rag_sequence_nll` or :func:`rag_token_nll` (``variant``).

    ``retriever`` is a ``ragtutor.dense.BiEncoder`` (dense retrieval; the model keeps an untied
    copy, as it keeps a copy of the generator, so the caller's models are never changed) or any
    fitted retriever on the course's contract (:mod:`ragtutor.retrieval`) over the same
    ``passages`` — answering with their ids, or with positions in the same order — such as
    chapter 01's BM25: its scores become the document logits, as in the paper's RAG-BM25 ablation,
    and nothing flows back into it. ``passages`` are dicts with ``id``, ``title`` and ``text``.

    What is trained (``requires_grad``) is chosen by ``train_question_encoder``,
    ``train_generator`` and ``train_context_encoder``; ``freeze_question_embeddings`` keeps the
    question encoder's word embeddings fixed while the rest of it trains, so that the names of
    entities no training question mentions keep the vectors they share with the frozen index.
    With ``train_context_encoder=True`` the retrieved passages are re-encoded with gradient at every
    step (the index still returns the passages by their stale vectors) and :meth:`reindex`
    re-encodes the whole corpus.
    """

    def __init__(self, retriever, generator, generator_tokenizer, passages, n_docs=5,
                 variant="sequence", train_question_encoder=True, train_generator=False,
                 train_context_encoder=False, freeze_question_embeddings=True,
                 retriever_dropout=False, passage_vectors=None):
        super().__init__()
        # Imported here, so that `from ragtutor import RAGModel` stays light until a model is built.
        from ragtutor.dense import BiEncoder
        from ragtutor.index import VectorIndex

        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.passages = _checked_passages(passages)
        if not isinstance(n_docs, int) or isinstance(n_docs, bool) or n_docs < 1:
            raise ValueError(f"n_docs must be a positive int, got {n_docs!r}")
        if n_docs > len(self.passages):
            raise ValueError(f"n_docs={n_docs} is more than the {len(self.passages)} passages of the "
                             f"corpus: retrieve at most {len(self.passages)}")
        self.n_docs, self.variant = n_docs, variant
        # Copies, so that training this model never changes the caller's generator or retriever.
        self.generator, self.generator_tokenizer = copy.deepcopy(generator), generator_tokenizer
        self.position = {p["id"]: i for i, p in enumerate(self.passages)}
        self.dense = isinstance(retriever, BiEncoder)
        if self.dense:
            self.biencoder = copy.deepcopy(retriever).untie()
            self.biencoder.eval()
            self.index = VectorIndex("flat")
            self.register_buffer("passage_vectors", torch.empty(0))
            if passage_vectors is None:
                self.reindex()
            else:
                self._use_vectors(passage_vectors)
        else:
            if not hasattr(retriever, "search"):
                raise TypeError("retriever must be a ragtutor.dense.BiEncoder or a fitted retriever "
                                f"with search(queries, k), got {type(retriever).__name__}")
            self._check_fixed_retriever(retriever)
            self.fixed_retriever = retriever
        self.train_question_encoder = bool(train_question_encoder) and self.dense
        self.train_context_encoder = bool(train_context_encoder) and self.dense
        self.train_generator = bool(train_generator)
        self.freeze_question_embeddings = bool(freeze_question_embeddings)
        self.retriever_dropout = bool(retriever_dropout)
        self._set_trainable()

    def train(self, mode=True):
        """As ``torch.nn.Module.train``, but the bi-encoder keeps its dropout off unless
        ``retriever_dropout``: the scores s_k = q(x)·e(d_k) are tens of units large, and dropout's
        noise on q(x) moves the prior more than a training step does."""
        super().train(mode)
        if self.dense and not self.retriever_dropout:
            self.biencoder.eval()
        return self

    # -- set-up ---------------------------------------------------------------------------------
    def _set_trainable(self):
        for p in self.generator.parameters():
            p.requires_grad_(self.train_generator)
        if self.dense:
            for p in self.biencoder.question_encoder.parameters():
                p.requires_grad_(self.train_question_encoder)
            if self.freeze_question_embeddings:
                bert = self.biencoder.question_encoder.question_encoder.bert_model
                bert.embeddings.word_embeddings.weight.requires_grad_(False)
            for p in self.biencoder.context_encoder.parameters():
                p.requires_grad_(self.train_context_encoder)

    def trainable_parameters(self):
        """The parameters a training step updates (``requires_grad``), each once."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def reindex(self):
        """Encode every passage with the current passage encoder and rebuild the index; returns the
        seconds it took (the cost of letting the document encoder move)."""
        if not self.dense:
            raise ValueError("only a dense retriever has an index to rebuild")
        start = time.perf_counter()
        vectors = self.biencoder.encode_passages(self.passages)
        self.passage_vectors = torch.from_numpy(vectors)
        self.index.fit(vectors)
        return time.perf_counter() - start

    def _use_vectors(self, vectors):
        """Index the given passage vectors ``[n_passages, hidden]`` as they are (the index an
        export or a checkpoint saved), instead of encoding the passages again."""
        vectors = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        hidden = self.biencoder.question_encoder.config.hidden_size
        if tuple(vectors.shape) != (len(self.passages), hidden):
            raise ValueError(f"passage_vectors must have shape [{len(self.passages)}, {hidden}] (one "
                             f"vector per passage), got {list(vectors.shape)}")
        self.passage_vectors = vectors
        self.index.fit(vectors.numpy())

    # -- editing what the model knows (chapter 07) -----------------------------------------------
    @torch.no_grad()
    def add_passages(self, passages):
        """Add passages (dicts with ``id``, ``title``, ``text``; ids not in the model yet) to what
        the model retrieves from, without touching a weight: the passage encoder encodes them as it
        is and the index takes their vectors (a fixed retriever gets them through its ``add``).
        Returns the number of passages now held."""
        new = _checked_passages(passages)
        clash = [p["id"] for p in new if p["id"] in self.position]
        if clash:
            raise ValueError(f"{len(clash)} passage id(s) are already in the model, e.g. {clash[0]!r}: "
                             "delete_passages(ids) first to replace a passage")
        self._check_editable()
        if self.dense:
            was_training = self.biencoder.training
            self.biencoder.eval()
            vectors = torch.from_numpy(self.biencoder.encode_passages(new))
            self.biencoder.train(was_training)
            self.passages = self.passages + new
            self._use_vectors(torch.cat([self.passage_vectors, vectors]))
        else:
            if not hasattr(self.fixed_retriever, "add"):
                raise TypeError(f"{type(self.fixed_retriever).__name__} has no add(): this retriever "
                                "cannot take new passages; build the model again with them")
            self.fixed_retriever.add(new)
            self.passages = self.passages + new
        self.position = {p["id"]: i for i, p in enumerate(self.passages)}
        return len(self.passages)

    def _check_editable(self):
        if not self.dense and np.asarray(getattr(self.fixed_retriever, "doc_ids_", [])).dtype != object:
            raise TypeError("this model's retriever was fitted on bare documents, whose positions "
                            "an edit would shift: fit it on the passage records to edit the index")

    @torch.no_grad()
    def delete_passages(self, ids):
        """Remove the passages with these ids from what the model retrieves from (no weight
        changes). Returns the removed passage records, in the order of ``ids`` (keep them to put
        them back with :meth:`add_passages`)."""
        ids = check_texts(ids, "ids")
        missing = [i for i in ids if i not in self.position]
        if missing:
            raise ValueError(f"{len(missing)} id(s) are not passages of the model, e.g. "
                             f"{missing[0]!r}: nothing was deleted")
        if len(set(ids)) != len(ids):
            raise ValueError("ids names a passage twice: nothing was deleted")
        if len(self.passages) - len(ids) < self.n_docs:
            raise ValueError(f"deleting {len(ids)} of {len(self.passages)} passages would leave fewer "
                             f"than n_docs={self.n_docs}: nothing was deleted")
        self._check_editable()
        rows = sorted(self.position[i] for i in ids)
        removed = [self.passages[self.position[i]] for i in ids]
        keep = np.setdiff1d(np.arange(len(self.passages)), rows)
        if self.dense:
            self.passages = [self.passages[i] for i in keep]
            self._use_vectors(self.passage_vectors[torch.as_tensor(keep)])
        else:
            if not hasattr(self.fixed_retriever, "delete"):
                raise TypeError(f"{type(self.fixed_retriever).__name__} has no delete(): build the "
                                "model again without those passages")
            self.fixed_retriever.delete(ids)
            self.passages = [self.passages[i] for i in keep]
        self.position = {p["id"]: i for i, p in enumerate(self.passages)}
        return removed

    @property
    def max_source_length(self):
        return self.generator.config.max_position_embeddings

    # -- the forward pass -----------------------------------------------------------------------
    @torch.no_grad()
    def retrieve(self, questions):
        """The top K passages for each question: ``(scores, ids)``, NumPy arrays ``[B, K]``, best
        first, with passage ids — the course's retriever contract. :meth:`forward` reads these
        passages, through :meth:`retrieve_rows`."""
        self._flag_unknown(check_texts(questions))
        scores, rows = self.retrieve_rows(questions)
        ids = np.empty(tuple(rows.shape), dtype=object)
        ids[:] = [[self.passages[i]["id"] for i in row] for row in rows.tolist()]
        return scores.numpy(), ids

    def _check_fixed_retriever(self, retriever):
        """A fitted retriever must index these very passages: otherwise its results name passages
        the model cannot read (a KeyError or IndexError deep in retrieval, or the wrong text)."""
        doc_ids = getattr(retriever, "doc_ids_", None)
        if doc_ids is None:
            return  # not a ragtutor Retriever: its search is trusted to return positions
        doc_ids = np.asarray(doc_ids)
        if doc_ids.dtype == object:
            missing = [i for i in doc_ids.tolist() if i not in self.position]
            if missing:
                raise ValueError(f"the retriever indexes {len(missing)} passage(s) that are not among "
                                 f"the model's passages (e.g. {missing[0]!r}): fit the retriever "
                                 "on the same passages you give the model")
        elif len(doc_ids) != len(self.passages) or (doc_ids != np.arange(len(doc_ids))).any():
            raise ValueError(f"the retriever was fitted on {len(doc_ids)} bare documents but the model "
                             f"has {len(self.passages)} passages: its positions would point at the "
                             "wrong passages; fit it on the passage records themselves")

    def _flag_unknown(self, questions):
        """Warn (``UnknownQueryWarning``) about questions the question encoder reads as nothing but
        unknown tokens: what comes back for them is a guess. A fixed retriever flags its own."""
        if not self.dense:
            return
        warn_unknown(questions, unknown_to_tokenizer(self.biencoder.tokenizer, questions),
                     "the question encoder")

    def retrieve_rows(self, questions):
        """``(doc_scores [B, K], doc_ids [B, K])``: the top K passages (positions in ``passages``)
        for each question and their scores, differentiable with respect to the question encoder
        (and to the passage encoder when it trains)."""
        questions = check_texts(questions)
        k = self.n_docs
        if not self.dense:
            scores, ids = self.fixed_retriever.search(questions, k)
            ids = np.asarray(ids)
            if ids.dtype == object:  # passage ids (a retriever fitted on passage records)
                ids = np.vectorize(self.position.__getitem__, otypes=[np.int64])(ids)
            return (torch.as_tensor(np.asarray(scores), dtype=torch.float32),
                    torch.as_tensor(ids, dtype=torch.long))
        encoder = self.biencoder
        q = encoder.question_vectors(encoder.tokenize_questions(questions))  # [B, H]
        _, ids = self.index.search(q.detach().float().numpy(), k)
        ids = torch.as_tensor(ids, dtype=torch.long)
        if self.train_context_encoder and torch.is_grad_enabled():
            batch = encoder.tokenize_passages([self.passages[i] for i in ids.flatten().tolist()])
            e = encoder.passage_vectors(batch).view(*ids.shape, -1)
        else:
            e = self.passage_vectors[ids]
        # s_k = q(x)·e(d_k) as one batched matrix product, as Hugging Face's RAG computes it, so
        # that the two agree to the last float (chapter 06).
        return torch.bmm(q[:, None, :], e.transpose(1, 2))[:, 0], ids

    def questions_as_read(self, questions):
        """The questions as the question encoder's tokenizer reads them back: lower-cased by an
        uncased tokenizer, unknown pieces dropped. This is what the generator reads, as in Hugging
        Face's ``RagRetriever``, which decodes the question encoder's input ids to build the
        generator's input. A fixed retriever (BM25) has no tokenizer: the questions as given."""
        if not self.dense:
            return list(questions)
        tokenizer = self.biencoder.tokenizer
        return tokenizer.batch_decode(tokenizer(list(questions)).input_ids, skip_special_tokens=True)

    def generator_inputs(self, questions, doc_ids, texts=None):
        """The generator's ``input_ids`` and ``attention_mask`` ``[B*K, S]``: ``title / text //
        question`` for each question's K documents, question b in rows b*K .. b*K+K-1 (the
        question as :meth:`questions_as_read` gives it). ``texts`` (``[B][K]`` strings) replaces
        the passages' texts (counterfactual training, :meth:`forward`'s ``edits``)."""
        from ragtutor.generation import combined_input

        doc_ids = doc_ids.tolist()
        if texts is None:
            texts = [[self.passages[i]["text"] for i in row] for row in doc_ids]
        sources = [combined_input(self.passages[i]["title"], text, q)
                   for q, row, row_texts in zip(self.questions_as_read(questions), doc_ids, texts)
                   for i, text in zip(row, row_texts)]
        batch = self.generator_tokenizer(sources, padding=True, return_tensors="pt")
        if batch.input_ids.shape[1] > self.max_source_length:
            longest = int(batch.attention_mask.sum(1).argmax())
            raise ValueError(
                f"the generator's input for question {longest // self.n_docs} is "
                f"{batch.input_ids.shape[1]} tokens long, more than the generator's "
                f"max_position_embeddings={self.max_source_length}: shorten the question")
        return batch.input_ids, batch.attention_mask

    def _answer_ids(self, answers):
        if isinstance(answers, str) or not hasattr(answers, "__len__"):
            raise TypeError("answers must be a list of strings, one per question")
        answers = list(answers)
        for i, a in enumerate(answers):
            if not isinstance(a, str) or not a.strip():
                raise ValueError(f"answers[{i}] must be a non-empty string, got {a!r}")
        # <s> y </s> without the <s>: the decoder starts from <s> itself (teacher_forcing).
        return [ids[1:] for ids in self.generator_tokenizer(answers).input_ids]

    def _apply_edits(self, edits, doc_ids, answers):
        """The passages' texts ``[B][K]`` and the answers after counterfactual ``edits``."""
        if len(edits) != len(answers):
            raise ValueError(f"{len(answers)} answers but {len(edits)} edits")
        texts, edited = [], list(answers)
        for b, (edit, row) in enumerate(zip(edits, doc_ids.tolist())):
            row_texts = [self.passages[i]["text"] for i in row]
            if edit is not None:
                old, new = edit
                pattern = re.compile(r"\b" + re.escape(old) + r"\b")
                if any(pattern.search(t) for t in row_texts):
                    row_texts = [pattern.sub(new, t) for t in row_texts]
                    edited[b] = new
            texts.append(row_texts)
        return texts, edited

    def forward(self, questions, answers, edits=None):
        """The RAG negative log-likelihood of each answer, with what produced it.

        Returns a dict: ``loss`` (the mean over the batch), ``nll`` ``[B]``, ``doc_scores`` and
        ``doc_ids`` ``[B, K]``, ``logprobs`` ``[B, K, T, V]`` and ``target`` ``[B, T]`` (chapter 04's
        inputs: ``rag_sequence_nll(logprobs, doc_scores, target, pad_id)`` is ``nll``).

        ``edits`` (counterfactual training, :func:`train_rag`'s ``counterfactual``): for each
        question None or a pair ``(old, new)``; when one of its retrieved passages states ``old`` (a
        whole word), the generator reads every retrieved passage with ``new`` in place of ``old``
        and the target is ``new``: a knowledge base in which the fact is different. The scores stay
        those of the stored passage vectors. With no retrieved passage stating ``old``, the
        question trains on its answer as given.
        """
        questions = check_texts(questions)
        self._answer_ids(answers)  # checks the answers before anything is computed
        answers = list(answers)
        if len(answers) != len(questions):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        doc_scores, doc_ids = self.retrieve_rows(questions)
        texts = None
        if edits is not None:
            texts, answers = self._apply_edits(list(edits), doc_ids, answers)
        answer_ids = self._answer_ids(answers)
        input_ids, attention_mask = self.generator_inputs(questions, doc_ids, texts)
        config = self.generator.config
        decoder_input_ids, target = teacher_forcing(answer_ids, config.decoder_start_token_id,
                                                    config.pad_token_id)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_generator):
            logits = self.generator(input_ids=input_ids, attention_mask=attention_mask,
                                    decoder_input_ids=decoder_input_ids.repeat_interleave(
                                        self.n_docs, dim=0), use_cache=False).logits
            logprobs = torch.log_softmax(logits, dim=-1).view(len(questions), self.n_docs,
                                                               *logits.shape[1:])
        nll_function = rag_sequence_nll if self.variant == "sequence" else rag_token_nll
        nll = nll_function(logprobs, doc_scores, target, config.pad_token_id)
        return {"loss": nll.mean(), "nll": nll, "doc_scores": doc_scores, "doc_ids": doc_ids,
                "logprobs": logprobs, "target": target}

    def nll(self, questions, answers, variant=None):
        """-log p(y|x) of each answer, ``[B]``, by ``variant``'s likelihood (default: the model's
        own), from the same retrieval and the same teacher-forced log-probs as :meth:`forward`:
        what Hugging Face's ``RagTokenForGeneration`` / ``RagSequenceForGeneration`` return as
        ``loss`` (chapter 06)."""
        variant = self.variant if variant is None else variant
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        out = self.forward(questions, answers)
        if variant == self.variant:
            return out["nll"]
        nll_function = rag_sequence_nll if variant == "sequence" else rag_token_nll
        return nll_function(out["logprobs"], out["doc_scores"], out["target"],
                            self.generator.config.pad_token_id)

    # -- decoding -------------------------------------------------------------------------------
    @torch.no_grad()
    def _greedy(self, encoder_states, attention_mask, prior, max_new_tokens):
        """Greedy decoding for B questions at once. With ``prior`` ``[B, K]`` (RAG-Token) each
        step takes the argmax of the mixture Σ_k p(d_k|x) p(y_t|x,d_k,y_<t); with ``prior`` None
        each of the B*K rows is decoded on its own. Returns answers as lists of ids ending with
        </s> (or cut at ``max_new_tokens``)."""
        config = self.generator.config
        start, eos, pad = config.decoder_start_token_id, config.eos_token_id, config.pad_token_id
        k = self.n_docs if prior is not None else 1
        rows = encoder_states.shape[0] // k
        prefix = torch.full((rows, 1), start, dtype=torch.long)
        done = torch.zeros(rows, dtype=torch.bool)
        for _ in range(max_new_tokens):
            # Only the unfinished rows are decoded: a finished row only appends padding.
            active = (~done).nonzero().squeeze(1)
            states = (active[:, None] * k + torch.arange(k)).flatten()
            logits = self.generator(encoder_outputs=(encoder_states[states],),
                                    attention_mask=attention_mask[states],
                                    decoder_input_ids=prefix[active].repeat_interleave(k, 0),
                                    use_cache=False).logits[:, -1]
            logprobs = torch.log_softmax(logits.double(), dim=-1)
            if prior is not None:
                logprobs = torch.logsumexp(prior[active, :, None].double()
                                           + logprobs.view(len(active), k, -1), dim=1)
            logprobs[:, pad] = -math.inf
            token = torch.full((rows,), pad, dtype=torch.long)
            token[active] = logprobs.argmax(-1)
            prefix = torch.cat([prefix, token[:, None]], dim=1)
            done |= token == eos
            if done.all():
                break
        return [[t for t in row if t != pad] for row in prefix[:, 1:].tolist()]

    @torch.no_grad()
    def _decode_batch(self, questions, max_new_tokens):
        doc_scores, doc_ids = self.retrieve_rows(questions)
        input_ids, attention_mask = self.generator_inputs(questions, doc_ids)
        states = self.generator.get_encoder()(input_ids=input_ids,
                                              attention_mask=attention_mask).last_hidden_state
        prior = torch.log_softmax(doc_scores, dim=-1)
        if self.variant == "token":
            return self._greedy(states, attention_mask, prior, max_new_tokens), doc_scores, doc_ids
        # RAG-Sequence: each document's greedy answer is a candidate; every candidate is then
        # scored under every document and ranked by Σ_k p(d_k|x) p(y|x,d_k) (thorough decoding
        # with one beam per document).
        per_doc = self._greedy(states, attention_mask, None, max_new_tokens)
        k, config = self.n_docs, self.generator.config
        candidates = [list(dict.fromkeys(tuple(a) for a in per_doc[b * k:(b + 1) * k]))
                      for b in range(len(questions))]
        pairs = [(b, c, d) for b, cands in enumerate(candidates) for c in range(len(cands))
                 for d in range(k)]
        decoder_input_ids, target = teacher_forcing([candidates[b][c] for b, c, _ in pairs],
                                                    config.decoder_start_token_id, config.pad_token_id)
        rows = torch.tensor([b * k + d for b, _, d in pairs])
        scored = []
        # In chunks: the log-probs of every (candidate, document) pair at once, [pairs, T, V] in
        # float64, would take over a gigabyte for 64 questions.
        for c in range(0, len(pairs), _RESCORE_ROWS):
            part = slice(c, c + _RESCORE_ROWS)
            logits = self.generator(encoder_outputs=(states[rows[part]],),
                                    attention_mask=attention_mask[rows[part]],
                                    decoder_input_ids=decoder_input_ids[part], use_cache=False).logits
            scored.append(token_logprobs(torch.log_softmax(logits.double(), -1)[:, None],
                                         target[part], config.pad_token_id)[:, 0].sum(-1))
        scored = torch.cat(scored)
        answers, n = [], 0
        for b, cands in enumerate(candidates):
            table = scored[n:n + len(cands) * k].view(len(cands), k)
            n += len(cands) * k
            best = int(torch.logsumexp(prior[b].double() + table, dim=1).argmax())
            answers.append(list(cands[best]))
        return answers, doc_scores, doc_ids

    def generate(self, questions, max_new_tokens=16, batch_size=64, num_beams=1):
        """Answers, as strings, for a list of questions.

        ``num_beams=1`` decodes greedily, a batch at a time: RAG-Token takes the argmax of the
        per-token mixture; RAG-Sequence takes the best of the K documents' greedy answers under
        the exact RAG-Sequence p(y|x). With more beams each question goes through chapter 04's
        decoders: :func:`ragtutor.rag.rag_token_beam_search` (RAG-Token) or
        :func:`ragtutor.rag.thorough_decoding` (RAG-Sequence)."""
        questions = check_texts(questions)
        self._flag_unknown(questions)
        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size),
                            ("num_beams", num_beams)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        was_training = self.training
        self.eval()
        answers = []
        for i in range(0, len(questions), batch_size):
            batch = questions[i:i + batch_size]
            if num_beams == 1:
                ids, _, _ = self._decode_batch(batch, max_new_tokens)
            else:
                ids = self._beam_decode(batch, num_beams, max_new_tokens)
            answers += self.generator_tokenizer.batch_decode(ids, skip_special_tokens=True)
        self.train(was_training)
        return answers

    @torch.no_grad()
    def _beam_decode(self, questions, num_beams, max_new_tokens):
        """Chapter 04's decoder for the model's variant, question by question: answers as ids."""
        doc_scores, doc_ids = self.retrieve_rows(questions)
        input_ids, attention_mask = self.generator_inputs(questions, doc_ids)
        config, k = self.generator.config, self.n_docs
        decode = rag_token_beam_search if self.variant == "token" else thorough_decoding
        answers = []
        for b in range(len(questions)):
            rows = slice(b * k, (b + 1) * k)
            generator = seq2seq_generator(self.generator, input_ids[rows], attention_mask[rows])
            best = decode(generator, doc_scores[b], num_beams=num_beams,
                          max_new_tokens=max_new_tokens, start_id=config.decoder_start_token_id,
                          eos_id=config.eos_token_id, pad_id=config.pad_token_id)[0]
            answers.append(list(best.tokens))
        return answers

    @torch.no_grad()
    def answer(self, question, max_new_tokens=16):
        """Answer one question: ``{"answer", "passages"}``, the passages retrieved for it, best
        first, each with its ``prior`` p(d_k|x) and its ``posterior`` p(d_k|x,y) given the answer
        (RAG-Sequence's; for RAG-Token also ``token_posteriors``, one distribution per answer
        token)."""
        if not isinstance(question, str):
            raise TypeError(f"question must be a string, got {type(question).__name__}; for many "
                            "questions use generate(questions)")
        answer = self.generate([question], max_new_tokens)[0]
        was_training = self.training
        self.eval()
        out = self.forward([question], [answer if answer.strip() else "?"])
        self.train(was_training)
        args = (out["logprobs"].double(), out["doc_scores"].double(), out["target"],
                self.generator.config.pad_token_id)
        prior = torch.softmax(out["doc_scores"][0].double(), dim=-1)
        posterior = doc_posterior(*args, variant="sequence")[0]
        token_post = doc_posterior(*args, variant="token")[0]
        target = out["target"][0].tolist()
        tokens = self.generator_tokenizer.convert_ids_to_tokens(target)
        passages = []
        for k, i in enumerate(out["doc_ids"][0].tolist()):
            passages.append({**self.passages[i], "score": float(out["doc_scores"][0, k]),
                             "prior": float(prior[k]), "posterior": float(posterior[k]),
                             "token_posteriors": [float(token_post[t, k])
                                                  for t in range(len(target))]})
        return {"question": question, "answer": answer, "tokens": tokens, "passages": passages}

    def evaluate(self, questions, max_new_tokens=16, batch_size=64):
        """Exact match, F1 and Recall@1 / Recall@K of the gold passage on a list of question dicts
        (``question``, ``answers``, ``passage_id``), with the predictions."""
        from ragtutor.metrics import qa_scores

        texts = check_texts([q["question"] for q in questions])
        unknown = [q["passage_id"] for q in questions if q["passage_id"] not in self.position]
        if unknown:
            raise ValueError(f"{len(unknown)} questions name a gold passage that is not among the "
                             f"model's passages, e.g. {unknown[0]!r}: Recall would count them as "
                             "misses. Evaluate on questions about the model's own passages")
        was_training = self.training
        self.eval()
        predictions, hits1, hitsk = [], [], []
        for i in range(0, len(texts), batch_size):
            ids, _, doc_ids = self._decode_batch(texts[i:i + batch_size], max_new_tokens)
            predictions += self.generator_tokenizer.batch_decode(ids, skip_special_tokens=True)
            for q, row in zip(questions[i:i + batch_size], doc_ids.tolist()):
                gold = self.position.get(q["passage_id"])
                hits1.append(row[0] == gold)
                hitsk.append(gold in row)
        self.train(was_training)
        scores = qa_scores(predictions, [q["answers"] for q in questions])
        return {"em": scores["em"], "f1": scores["f1"], "recall@1": float(np.mean(hits1)),
                f"recall@{self.n_docs}": float(np.mean(hitsk)), "n": len(texts),
                "predictions": predictions}

    # -- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, folder):
        """Write the whole model to ``folder``: ``retriever/`` (the bi-encoder), ``generator/``
        (model and tokenizer), ``passages.jsonl``, ``passage_vectors.npy`` (the index's vectors)
        and ``rag.json`` (K, the variant, what trains), with the folder's checksums
        (``MANIFEST.sha256``, verified by :meth:`from_pretrained`)."""
        if not self.dense:
            raise ValueError("only a RAGModel with a dense retriever can be saved; a fixed "
                             "retriever such as BM25 is rebuilt from the passages in seconds")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.biencoder.save_pretrained(folder / "retriever")
        self.generator.save_pretrained(folder / "generator")
        self.generator_tokenizer.save_pretrained(folder / "generator")
        with open(folder / "passages.jsonl", "w", encoding="utf-8") as f:
            for p in self.passages:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        np.save(folder / "passage_vectors.npy", self.passage_vectors.numpy())
        settings = {"n_docs": self.n_docs, "variant": self.variant,
                    "train_question_encoder": self.train_question_encoder,
                    "train_generator": self.train_generator,
                    "train_context_encoder": self.train_context_encoder,
                    "freeze_question_embeddings": self.freeze_question_embeddings}
        (folder / _RAG_CONFIG_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        write_manifest(folder)

    @classmethod
    def from_pretrained(cls, folder, **overrides):
        """Load what :meth:`save_pretrained` wrote (offline). ``overrides`` replace saved settings,
        e.g. ``n_docs=10`` or ``variant="token"``."""
        from transformers import AutoTokenizer, BartForConditionalGeneration

        from ragtutor.dense import BiEncoder

        folder = Path(folder)
        if not (folder / _RAG_CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder / _RAG_CONFIG_FILE} is missing: is {folder} a folder "
                                    "written by RAGModel.save_pretrained?")
        verify_manifest(folder)  # folders saved before manifests existed load unchecked
        settings = {**json.loads((folder / _RAG_CONFIG_FILE).read_text()), **overrides}
        with open(folder / "passages.jsonl", encoding="utf-8") as f:
            passages = [json.loads(line) for line in f]
        model = cls(BiEncoder.from_pretrained(folder / "retriever"),
                    load_weights(BartForConditionalGeneration, folder / "generator", folder),
                    AutoTokenizer.from_pretrained(folder / "generator"), passages,
                    # The index is what was saved, even if the passage encoder would now say
                    # otherwise.
                    passage_vectors=np.load(folder / "passage_vectors.npy"), **settings)
        model.eval()
        return model


def _checked_passages(passages):
    if isinstance(passages, (str, dict)) or not hasattr(passages, "__len__"):
        raise TypeError("passages must be a list of dicts with 'id', 'title' and 'text'")
    passages = list(passages)
    if not passages:
        raise ValueError("passages is empty: RAG needs a corpus to retrieve from")
    seen = {}
    for i, p in enumerate(passages):
        if not isinstance(p, dict) or not {"id", "title", "text"} <= set(p):
            raise ValueError(f"passages[{i}] must be a dict with 'id', 'title' and 'text', got {p!r}")
        if p["id"] in seen:
            raise ValueError(f"passages[{i}] repeats the id {p['id']!r} of passages[{seen[p['id']]}]: "
                             "every passage needs its own id (retrieval returns ids)")
        seen[p["id"]] = i
    return passages


def train_rag(model, questions, max_steps=None, max_seconds=None, batch_size=16, lr=5e-4,
              warmup=20, schedule="constant", weight_decay=0.0, dev=None, eval_every=None,
              keep_best=None, reindex_every=None, seed=0, log_every=10, stop_after=None,
              counterfactual=0.0, word_dropout=0.0, progress=True):
    """Train a :class:`RAGModel` by its marginal likelihood on question dicts (``question`` and
    ``answers``; the first answer is the target). Uses no retrieval labels.

    AdamW on the model's trainable parameters, the learning rate rising linearly over ``warmup``
    steps, then constant (``schedule="constant"``) or falling linearly to 0 at ``max_steps``
    (``schedule="linear"``, which needs ``max_steps``). Stops after ``max_steps`` steps or
    ``max_seconds`` of training (one is required). Every ``eval_every`` steps,
    ``model.evaluate(dev)`` (exact match, F1, Recall@1/@K), not counted as training time; step 0 is
    evaluated too. ``keep_best`` (a metric name such as ``"recall@1"``) puts back, at the end, the
    weights of the evaluation where that metric was highest, the latest on a tie (early stopping on
    dev). Every ``reindex_every`` steps (only when the passage encoder trains) the corpus is
    re-encoded and the index rebuilt, its cost recorded. ``stop_after`` ends training after that
    many steps of the run that ``max_steps`` describes, its schedule unchanged: the start of a
    longer run, as the tests that reproduce a recorded run use it.

    ``counterfactual`` (a share, 0 by default) is counterfactual training: each time a question
    about a capital, currency, demonym or symbol is drawn, with this probability its answer is
    replaced by an invented value (``ragtutor.reading.invent_for_training``, an inventory the
    evaluations' invented values never come from) in every retrieved passage that states it and in
    the target (``RAGModel.forward``'s ``edits``): a generator that has to write what the passage
    says, not what it remembers — as Longpre et al. (2021) train readers on substituted answers.

    ``word_dropout`` (a probability, 0 by default) leaves each word of a drawn question that is
    not part of its entity's name (``entity``) out with this probability, at least one word kept
    (:func:`ragtutor.templates.drop_words`): questions that say what they ask in fewer words than
    the templates do.

    Returns the history: ``step``, ``loss`` (mean over each ``log_every`` steps), ``seconds``,
    ``eval`` (a list of dicts with ``step`` and the metrics), ``reindex_seconds`` and, with
    ``keep_best``, ``best_step``.
    """
    if (dev is None) != (eval_every is None):
        raise ValueError("dev and eval_every go together: give both or neither")
    if keep_best is not None and dev is None:
        raise ValueError("keep_best chooses among dev evaluations: give dev and eval_every too")
    if reindex_every is not None and not model.train_context_encoder:
        raise ValueError("reindex_every needs a model whose passage encoder trains "
                         "(train_context_encoder=True): a frozen encoder's index never goes stale")
    questions = list(questions)
    if not questions:
        raise ValueError("no training questions")
    for i, q in enumerate(questions):
        if not q.get("answers"):
            raise ValueError(f"questions[{i}] has no answers to train on: {q!r}")
    if isinstance(counterfactual, bool) or not 0.0 <= counterfactual <= 1.0:
        raise ValueError(f"counterfactual is a probability in [0, 1], got {counterfactual!r}")
    if isinstance(word_dropout, bool) or not 0.0 <= word_dropout < 1.0:
        raise ValueError(f"word_dropout is a probability in [0, 1), got {word_dropout!r}")
    if word_dropout:
        missing = [i for i, q in enumerate(questions) if not q.get("entity")]
        if missing:
            raise ValueError(f"word_dropout keeps the entity's name, but questions[{missing[0]}] "
                             "has no 'entity' field: give each question its entity's name")
        from ragtutor.templates import drop_words
    rng = random.Random(seed)
    edit_rng = random.Random(seed + 1)
    drop_rng = random.Random(seed + 2)
    if counterfactual:
        from ragtutor.reading import counterfactual_edit, known_words, name_pieces
        texts = [p["title"] + " " + p["text"] for p in model.passages]
        texts += [q["question"] for q in questions] + [a for q in questions for a in q["answers"]]
        known, pieces = known_words(), name_pieces(model.generator_tokenizer, texts)

    def draw():
        order = []
        while True:
            if len(order) < batch_size:
                order += rng.sample(range(len(questions)), len(questions))
            yield [questions[i] for i in order[:batch_size]]
            order = order[batch_size:]

    def loss(batch):
        edits = None
        if counterfactual:
            edits = [counterfactual_edit(q, edit_rng, known, pieces)
                     if edit_rng.random() < counterfactual else None for q in batch]
        texts = [q["question"] for q in batch]
        if word_dropout:
            texts = [drop_words(t, q["entity"], word_dropout, drop_rng) for t, q in zip(texts, batch)]
        return model(texts, [q["answers"][0] for q in batch], edits=edits)["loss"]

    def evaluate(model):
        metrics = model.evaluate(dev)
        metrics.pop("predictions")
        return metrics

    reindex_seconds = []

    def after_step(step):
        if reindex_every is not None and step % reindex_every == 0:
            reindex_seconds.append(model.reindex())

    history = train(model, loss, draw(), lr=lr, parameters=model.trainable_parameters(),
                    warmup=warmup, schedule=schedule, max_steps=max_steps,
                    max_seconds=max_seconds, stop_after=stop_after, weight_decay=weight_decay,
                    log_every=log_every, evaluate=None if dev is None else evaluate,
                    eval_every=eval_every, evaluate_ends=True, keep_best=keep_best,
                    after_step=after_step, progress=progress, desc="joint training")
    history["reindex_seconds"] = reindex_seconds
    if keep_best is not None and model.dense:  # the index must hold the restored passage vectors
        model.index.fit(model.passage_vectors.numpy())
    return history
