"""Retrieve, then prompt: a decoder-only reader that reads its passages in its prompt.

Chapter 03's reader is an encoder-decoder: the encoder reads one passage and the question, the
decoder writes the answer. Most RAG systems today use a decoder-only language model instead and
put the retrieved passages into its prompt, numbered so that an answer can cite them:

    [1] France: The capital of France is Paris. ...
    [2] Spain: The capital of Spain is Madrid. ...
    Question: What is the capital of France?
    Answer:

The model reads ``<s> prompt`` and continues it with ``answer </s>``. It is trained on that
continuation only: a prompt token is given, never predicted, so its label is -100, which the loss
ignores. Everything the model reads and writes shares one context window of ``context_length``
tokens, so the number of passages it can read is limited by their length:
:func:`passages_that_fit` counts them. A prompt that does not fit is refused, never cut: a cut
prompt may have lost the passage that holds the answer, or the question itself.

:class:`DecoderOnlyReader` is a tiny GPT-2 with random weights, about as large as chapter 03's
reader, using the course's tokenizer (:mod:`ragtutor.tokenization`).
"""
import copy
import json
import numbers
import random
import re
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from ragtutor.checksums import load_weights, verify_manifest, write_manifest
from ragtutor.retrieval import check_texts
from ragtutor.train import train

__all__ = ["PromptTemplate", "PROMPT_TEMPLATE", "NEWLINE", "build_prompt", "passages_that_fit",
           "DecoderOnlyReader", "prompt_examples", "retrieved_examples", "train_decoder_reader",
           "CONFIG_FILE"]

PromptTemplate = namedtuple("PromptTemplate", ["passage", "separator", "question"])
PromptTemplate.__doc__ = """How a prompt is written: ``passage`` is formatted with ``n`` (1-based
rank), ``title`` and ``text`` for each passage, ``question`` with ``question``; the passages, then
the question part, are joined by ``separator``."""
# The numbered passages let an answer cite its source ("Paris [1]"); "Answer:" is where the
# model takes over.
PROMPT_TEMPLATE = PromptTemplate(passage="[{n}] {title}: {text}", separator="\n",
                                 question="Question: {question}\nAnswer:")
NEWLINE = "\n"
CONFIG_FILE = "decoder_reader.json"
# A line of a prompt that starts like "[3] " is a passage (how PROMPT_TEMPLATE writes them).
_PASSAGE_LINE = re.compile(r"\[\d+\] ")


def _check_question(question):
    if not isinstance(question, str):
        raise TypeError(f"question must be a string, got {type(question).__name__}: {question!r}")
    if not question.strip():
        raise ValueError(f"question is empty ({question!r}): there is nothing to answer")
    return question


def _check_passages(passages, allow_empty=False):
    if isinstance(passages, (str, bytes, Mapping)) or not hasattr(passages, "__len__"):
        raise TypeError(f"passages must be a list of passage records, got "
                        f"{type(passages).__name__}; wrap a single passage in a list")
    passages = list(passages)
    if not passages and not allow_empty:
        raise ValueError("passages is empty: a prompt needs at least one passage to read")
    for i, passage in enumerate(passages):
        if not isinstance(passage, Mapping):
            raise TypeError(f"passages[{i}] must be a record with 'title' and 'text', got "
                            f"{type(passage).__name__}: {passage!r}")
        for field in ("title", "text"):
            if not isinstance(passage.get(field), str):
                raise TypeError(f"passages[{i}][{field!r}] must be a string, got "
                                f"{type(passage.get(field)).__name__}")
    return passages


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def build_prompt(question, passages, template=PROMPT_TEMPLATE):
    """The prompt that asks ``question`` about ``passages`` (records with ``title`` and ``text``),
    best first, as one string.

    With the default template:

        "[1] <title>: <text>\\n[2] <title>: <text>\\nQuestion: <question>\\nAnswer:"

    Passages are numbered from 1 in the order given, so an answer can cite one as [n]. The prompt
    ends with "Answer:" and no space: the answer's first word brings its own (the tokenizer marks
    a space as "▁" on the word that follows it).
    """
    _check_question(question)
    passages = _check_passages(passages)
    parts = [template.passage.format(n=n, title=p["title"], text=p["text"])
             for n, p in enumerate(passages, start=1)]
    return template.separator.join(parts + [template.question.format(question=question)])


def _token_count(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def passages_that_fit(question, passages, tokenizer, context_length, reserve=16,
                      template=PROMPT_TEMPLATE):
    """How many of ``passages`` (best first) a prompt for ``question`` can hold: the largest n such
    that ``<s>`` + ``build_prompt(question, passages[:n])`` + ``reserve`` tokens left for the
    answer and its ``</s>`` fit in ``context_length`` tokens.

    Returns 0 when not even the first passage fits, and ``len(passages)`` when all do. This is the
    measurement behind "how many retrieved passages can a decoder-only reader read at once": the
    answer depends on the passages' lengths, not only on the model.
    """
    _check_question(question)
    passages = _check_passages(passages, allow_empty=True)
    context_length = _check_positive("context_length", context_length)
    if isinstance(reserve, bool) or not isinstance(reserve, numbers.Integral) or reserve < 0:
        raise ValueError(f"reserve must be a non-negative int, got {reserve!r}")
    fit = 0
    for n in range(1, len(passages) + 1):
        tokens = 1 + _token_count(tokenizer, build_prompt(question, passages[:n], template))
        if tokens + reserve > context_length:
            break
        fit = n
    return fit


class DecoderOnlyReader:
    """A tiny GPT-2 that reads ``<s> prompt`` and writes ``answer </s>``.

    ``tokenizer`` is a course tokenizer (chapter 03's reader's, say). The default prompt separates
    passages with a newline, which the course's tokenizers cannot spell (it would become <unk>), so
    a copy of the tokenizer with "\\n" added as one token is used when needed (``tokenizer`` itself
    is left unchanged); nothing else is added. ``model`` is a ``GPT2LMHeadModel`` to wrap (as
    :meth:`from_pretrained` does); without one, a new one with random weights is built from the
    sizes: ``n_embd`` (width), ``n_layer``, ``n_head``, ``n_inner`` (feed-forward width) and
    ``context_length`` (the longest ``<s> prompt answer </s>`` in tokens), with the input embedding
    shared with the output projection, as the chapter 03 reader does. The defaults give about the
    chapter 03 reader's number of parameters, with six layers where it has three and three.
    """

    def __init__(self, tokenizer, model=None, n_embd=64, n_layer=6, n_head=4, n_inner=176,
                 context_length=512, init_std=0.02):
        if NEWLINE in PROMPT_TEMPLATE.separator + PROMPT_TEMPLATE.question and \
                tokenizer.unk_token_id in tokenizer(NEWLINE, add_special_tokens=False).input_ids:
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.add_tokens([NEWLINE])
        self.tokenizer = tokenizer
        if model is None:
            config = GPT2Config(
                vocab_size=len(tokenizer), n_positions=context_length, n_embd=n_embd,
                n_layer=n_layer, n_head=n_head, n_inner=n_inner, resid_pdrop=0.0, embd_pdrop=0.0,
                attn_pdrop=0.0, initializer_range=init_std, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                tie_word_embeddings=True)
            model = GPT2LMHeadModel(config)
        if model.config.vocab_size != len(tokenizer):
            raise ValueError(f"the model has {model.config.vocab_size} token embeddings but the "
                             f"tokenizer has {len(tokenizer)} tokens: load both from one folder")
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        self.model = model.eval()

    @property
    def context_length(self):
        """The most tokens the model reads and writes in all: ``<s>``, prompt, answer, ``</s>``."""
        return self.model.config.n_positions

    def num_parameters(self):
        """The number of parameters (the shared embedding counted once)."""
        return sum(p.numel() for p in self.model.parameters())

    def _encode(self, texts):
        return self.tokenizer(texts, add_special_tokens=False).input_ids

    def fits(self, prompt, reserve=16):
        """Whether ``<s> prompt`` and ``reserve`` more tokens (the answer and its ``</s>``) fit in
        the context."""
        prompt = check_texts([prompt], "prompt")[0]
        return 1 + len(self._encode(prompt)) + reserve <= self.context_length

    def _too_long(self, prompt, length, reserve):
        """The error for a prompt of ``length`` tokens that does not fit, saying how many of its
        passages would."""
        lines = prompt.split(PROMPT_TEMPLATE.separator)
        count = next((i for i, line in enumerate(lines) if not _PASSAGE_LINE.match(line)),
                     len(lines))
        message = (f"the prompt is {length} tokens long; with <s> and {reserve} tokens for the "
                   f"answer and </s> it needs {1 + length + reserve}, more than the model's "
                   f"context_length={self.context_length}")
        if 0 < count < len(lines):
            tail = PROMPT_TEMPLATE.separator.join(lines[count:])
            fit = 0
            for n in range(1, count + 1):
                shorter = PROMPT_TEMPLATE.separator.join(lines[:n] + [tail])
                if 1 + len(self._encode(shorter)) + reserve > self.context_length:
                    break
                fit = n
            message += (f". Only the first {fit} of its {count} passages would fit: build the "
                        f"prompt from fewer passages (passages_that_fit counts them)")
        else:
            message += ". Shorten the prompt"
        return ValueError(message + "; nothing is cut, since a cut prompt may lose the answer "
                          "or the question.")

    def _check_prompts(self, prompts, reserve):
        prompts = check_texts(prompts, "prompts")
        encoded = self._encode(prompts)
        for prompt, ids in zip(prompts, encoded):
            if 1 + len(ids) + reserve > self.context_length:
                raise self._too_long(prompt, len(ids), reserve)
        return prompts, encoded

    def loss(self, prompts, answers):
        """The mean of -log p(y_t | <s> prompt, y_<t) over the answer's tokens y = answer </s>:
        a scalar tensor, with gradients.

        Each sequence is ``<s> prompt answer </s>``, padded on the right; the labels are -100 (not
        predicted) for ``<s>``, the prompt and the padding, so the model learns to answer, not to
        write prompts. The mean is over all answer tokens of the batch.
        """
        answers = check_texts(answers, "answers")
        if isinstance(prompts, (list, tuple)) and len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers: give one answer "
                             "per prompt")
        answer_ids = [ids + [self.tokenizer.eos_token_id] for ids in self._encode(answers)]
        prompts, prompt_ids = self._check_prompts(prompts, reserve=0)
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers: give one answer "
                             "per prompt")
        rows, labels = [], []
        for prompt, p, a in zip(prompts, prompt_ids, answer_ids):
            if 1 + len(p) + len(a) > self.context_length:
                raise self._too_long(prompt, len(p), len(a))
            rows.append([self.tokenizer.bos_token_id] + p + a)
            labels.append([-100] * (1 + len(p)) + a)
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        labels = torch.tensor([l + [-100] * (width - len(l)) for l in labels])
        return self.model(input_ids=input_ids, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens=16):
        """Greedy answers to ``prompts``: the most probable next token, one at a time, until
        ``</s>`` or ``max_new_tokens`` tokens. Returns one string per prompt, without special tokens
        and surrounding spaces.

        Each prompt must leave room for ``max_new_tokens`` in the context (or the error says how
        many of its passages would). Prompts are decoded one at a time, so no padding can change an
        answer.
        """
        max_new_tokens = _check_positive("max_new_tokens", max_new_tokens)
        prompts, encoded = self._check_prompts(prompts, reserve=max_new_tokens)
        self.model.eval()
        answers = []
        for ids in encoded:
            input_ids = torch.tensor([[self.tokenizer.bos_token_id] + ids])
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
            answers.append(self.tokenizer.decode(out[0, input_ids.shape[1]:],
                                                 skip_special_tokens=True).strip())
        return answers

    def save_pretrained(self, folder):
        """Write the model, the tokenizer, ``decoder_reader.json`` (sizes, template, parameter
        count) and ``MANIFEST.sha256`` to ``folder``; returns the folder as a ``Path``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        config = self.model.config
        (folder / CONFIG_FILE).write_text(json.dumps({
            "context_length": self.context_length, "n_embd": config.n_embd,
            "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.n_inner,
            "vocab_size": config.vocab_size, "parameters": self.num_parameters(),
            "template": PROMPT_TEMPLATE._asdict()}, indent=2) + "\n")
        write_manifest(folder)
        return folder

    @classmethod
    def from_pretrained(cls, folder):
        """Load what :meth:`save_pretrained` wrote, offline, after checking every file against the
        folder's manifest (a changed byte raises ``ragtutor.checksums.ChecksumError``)."""
        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{folder / CONFIG_FILE} is missing: {folder} was not written "
                                    "by DecoderOnlyReader.save_pretrained")
        verify_manifest(folder, required=True)
        model = load_weights(GPT2LMHeadModel, folder)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
        return cls(tokenizer, model=model)


def _check_examples(questions, passages, k):
    """The checks shared by :func:`prompt_examples` and :func:`retrieved_examples`: ``(questions
    as a list, passages, passages by id)``."""
    questions = list(questions) if not isinstance(questions, (str, Mapping)) else None
    if not questions:
        raise ValueError("questions must be a non-empty list of question records")
    passages = _check_passages(passages)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= len(passages):
        raise ValueError(f"k must be an int between 1 and the number of passages "
                         f"({len(passages)}), got {k!r}")
    by_id = {p["id"]: p for p in passages}
    missing = [q.get("passage_id") for q in questions if q.get("passage_id") not in by_id]
    if missing:
        raise KeyError(f"{len(missing)} questions name passages that are not given, "
                       f"e.g. {missing[0]!r}")
    return questions, passages, by_id


def prompt_examples(questions, passages, distractors="random", k=3, seed=0):
    """Training examples ``(prompt, answer)``: each question with its gold passage and ``k - 1``
    others, in a shuffled order, and its canonical answer.

    ``distractors`` chooses the others: "random" draws them uniformly from ``passages``; a fitted
    retriever (anything with ``search(queries, k)`` returning ``(scores, ids)``, such as
    ``BM25Retriever``) gives the best-ranked passages other than the gold one, the hard case a
    reader meets after retrieval. The order is then shuffled, so the gold passage's position
    varies and the model cannot learn to read only [1]. ``questions`` are question records with
    ``question``, ``answers`` and ``passage_id`` (``ragtutor.data.load_questions``); ``passages``
    the knowledge base (``load_passages``). ``seed`` fixes the draws and the order.
    """
    questions, passages, by_id = _check_examples(questions, passages, k)
    if not (distractors == "random" or hasattr(distractors, "search")):
        raise ValueError(f"distractors must be 'random' or a fitted retriever with a search "
                         f"method, got {distractors!r}")
    rng = random.Random(seed)
    if distractors == "random":
        others = []
        for q in questions:
            chosen = []
            while len(chosen) < k - 1:
                p = rng.choice(passages)
                if p["id"] != q["passage_id"] and p not in chosen:
                    chosen.append(p)
            others.append(chosen)
    else:
        # k results always hold k - 1 that are not the gold passage.
        _, ids = distractors.search([q["question"] for q in questions], k)
        others = [[by_id[i] for i in row if i != q["passage_id"]][:k - 1]
                  for q, row in zip(questions, ids)]
    examples = []
    for q, chosen in zip(questions, others):
        shown = [by_id[q["passage_id"]]] + chosen
        rng.shuffle(shown)
        examples.append((build_prompt(q["question"], shown), q["answers"][0]))
    return examples


def retrieved_examples(questions, passages, retriever, k=3, seed=0):
    """What a reader of ``k`` passages is given for each question: ``(question record, passages)``
    with the question's gold passage and the ``k - 1`` passages ``retriever`` ranks highest among
    the others, in an order shuffled by ``seed`` (chapter 10 gives both of its readers these).
    ``retriever`` is fitted on ``passages``; ``questions`` are question records with
    ``question`` and ``passage_id``."""
    questions, passages, by_id = _check_examples(questions, passages, k)
    _, ids = retriever.search([q["question"] for q in questions], k)
    rng = random.Random(seed)
    rows = []
    for q, row in zip(questions, ids):
        shown = [by_id[q["passage_id"]]] + [by_id[i] for i in row if i != q["passage_id"]][:k - 1]
        rng.shuffle(shown)
        rows.append((q, shown))
    return rows


def train_decoder_reader(reader, examples, steps, batch_size=16, lr=1e-3, seed=0, warmup=50,
                         clip=1.0, log_every=50, evaluate=None, eval_every=None, progress=True):
    """Train ``reader`` (a :class:`DecoderOnlyReader`) on ``(prompt, answer)`` pairs for ``steps``
    steps with :func:`ragtutor.train.train` (AdamW, warm-up, clipping), ``batch_size`` examples a
    step, the examples reshuffled every epoch (``seed``).

    Every example is checked to fit in the context before the first step, so a long run never
    stops at an example it cannot read. Returns the training history of ``train``.
    """
    if isinstance(examples, (str, Mapping)):
        raise TypeError("examples must be a list of (prompt, answer) pairs")
    examples = list(examples)
    if not examples:
        raise ValueError("examples is empty: give at least one (prompt, answer) pair")
    for i, example in enumerate(examples):
        if not (isinstance(example, (tuple, list)) and len(example) == 2
                and all(isinstance(s, str) for s in example)):
            raise TypeError(f"examples[{i}] must be a (prompt, answer) pair of strings, got "
                            f"{example!r}")
    steps = _check_positive("steps", steps)
    batch_size = _check_positive("batch_size", batch_size)
    prompts = [p for p, _ in examples]
    answer_lengths = [len(ids) + 1 for ids in reader._encode([a for _, a in examples])]
    for prompt, ids, need in zip(prompts, reader._encode(prompts), answer_lengths):
        if 1 + len(ids) + need > reader.context_length:
            raise reader._too_long(prompt, len(ids), need)

    def batches():
        rng = random.Random(seed)
        while True:
            order = rng.sample(examples, len(examples))
            for i in range(0, len(order), batch_size):
                chunk = order[i:i + batch_size]
                yield [p for p, _ in chunk], [a for _, a in chunk]

    def loss(batch):
        return reader.loss(*batch)

    return train(reader.model, loss, batches(), lr=lr, warmup=warmup, max_steps=steps, clip=clip,
                 log_every=log_every, evaluate=evaluate, eval_every=eval_every, progress=progress)
