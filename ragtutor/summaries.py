"""Retrieval-augmented summaries: "Tell me about X" in, a short profile of X out.

A *profile* lists an entity's facts as ``relation: value`` fields, in a fixed order
(:data:`PROFILE_RELATIONS`)::

    capital: Kabul | continent: Asia | region: Southern Asia | currency: afghani | ...

so that each stated fact can be checked against the knowledge base's answers
(:func:`score_profile`): right, wrong, or missing. Fact precision is the share of stated facts that
are right, fact recall the share of the entity's facts stated rightly.

A profile needs several passages — the capital is in one, the currency in another — so writing one
is multi-document generation. Two ways to read K passages are built here, on the same tiny BART:

- **Fusion-in-Decoder** (Izacard & Grave 2021): the encoder reads each passage with the query on
  its own; the decoder attends to all K encodings at once, concatenated, and writes one profile
  (:func:`fid_loss`, :func:`fid_generate`);
- **RAG-Token** (Lewis et al. 2020): the decoder reads one passage at a time, and each next token
  comes from the mixture ``Σ_k p(d_k|x) p(y_t | x, d_k, y_<t)`` (:func:`rag_token_loss`,
  :func:`rag_token_generate`).

Both are trained by ``scripts/train_profiles.py`` on *counterfactual profiles*
(:func:`iter_profile_examples`): every passage of an entity rewritten with false facts
(:mod:`ragtutor.counterfactual`), some passages left out and other entities' passages mixed in, and
the target lists exactly the facts the kept passages state — so a model learns to copy what it
reads and to leave out what it was not shown. :class:`Profiler` retrieves the passages for a name
and writes its profile with either model.
"""
import random
from dataclasses import dataclass, field

import torch

from ragtutor.counterfactual import _fake_country, _fake_element, _Pools
from ragtutor.generation import TITLE_SEP, combined_input
from ragtutor.metrics import bootstrap_interval, normalize_answer
from ragtutor.retrieval import check_texts
from ragtutor.templates import (_calling_code_answers, ASPECTS, QUESTIONS, RELATIONS, RENDERERS,
                                relation_answers)

__all__ = ["PROFILE_RELATIONS", "QUERY", "profile_facts", "format_profile", "parse_profile",
           "score_profile", "profile_scores", "iter_profile_examples", "profile_examples",
           "fid_loss", "rag_token_loss", "rag_sequence_loss", "fid_generate", "rag_token_generate",
           "rag_sequence_generate", "value_token_votes", "Profile", "Profiler",
           "closed_book_profile"]

# The facts a profile states, per domain, in order. Neighbours are left out: a country has up to 14,
# and their names would make a profile longer than the model's 128 positions.
PROFILE_RELATIONS = {
    "country": ("capital", "continent", "region", "currency", "language", "demonym", "calling_code",
                "internet_domain"),
    "element": ("symbol", "atomic_number", "atomic_mass", "density", "period", "group"),
}
LABELS = {relation: relation.replace("_", " ") for rels in PROFILE_RELATIONS.values()
          for relation in rels}
_RELATION_OF_LABEL = {label: relation for relation, label in LABELS.items()}
FIELD_SEP, VALUE_SEP, LABEL_SEP = " | ", "; ", ": "
QUERY = "Tell me about {name}"


# ----------------------------------------------------------------------------------------------
# Profiles as text, and their facts
# ----------------------------------------------------------------------------------------------
def profile_facts(entity, index, aspect=None):
    """The entity's profile facts: ``(relation, value, answers)`` triples in profile order, one per
    value (a country with two official languages has two language facts); ``answers`` are every
    spelling that counts as right. ``entity`` has ``domain`` and ``facts`` (a knowledge-base record,
    or a counterfactual one); ``index`` maps entity ids to records; ``aspect`` keeps the facts of
    that passage aspect only."""
    if entity.get("domain") not in PROFILE_RELATIONS:
        raise ValueError(f"no profile for domain {entity.get('domain')!r}; domains: "
                         f"{sorted(PROFILE_RELATIONS)}")
    f = entity["facts"]
    facts = []
    for relation in PROFILE_RELATIONS[entity["domain"]]:
        if aspect is not None and RELATIONS[relation][1] != aspect:
            continue
        if relation == "currency":
            facts += [(relation, c["name"], (c["name"], c["code"], *c.get("aliases", [])))
                      for c in f["currencies"]]
        elif relation == "language":
            facts += [(relation, lang["name"], (lang["name"], *lang.get("aliases", [])))
                      for lang in f["languages"]]
        elif relation == "calling_code":
            facts.append((relation, f["calling_code"], tuple(_calling_code_answers(f["calling_code"]))))
        else:
            answers = relation_answers(entity, relation, index)
            if answers:
                facts.append((relation, answers[0], tuple(answers)))
    return facts


def format_profile(facts):
    """``relation: value`` fields joined by `` | ``, several values of one relation by ``; ``."""
    fields, values = [], {}
    for relation, value, _ in facts:
        if relation not in values:
            values[relation] = []
            fields.append(relation)
        values[relation].append(str(value))
    return FIELD_SEP.join(LABELS[r] + LABEL_SEP + VALUE_SEP.join(values[r]) for r in fields)


def parse_profile(text):
    """The ``(relation, value)`` pairs a profile states, in order. A field without a known label
    is kept as ``(None, field)``: a stated fact that cannot be right."""
    if not isinstance(text, str):
        raise TypeError(f"a profile is a string, got {type(text).__name__}")
    stated = []
    for part in text.split(FIELD_SEP.strip()):
        part = part.strip()
        if not part:
            continue
        label, sep, values = part.partition(LABEL_SEP.strip())
        relation = _RELATION_OF_LABEL.get(label.strip()) if sep else None
        if relation is None:
            stated.append((None, part))
            continue
        stated += [(relation, v.strip()) for v in values.split(VALUE_SEP.strip()) if v.strip()]
    return stated


def score_profile(text, entity, index):
    """Check each fact a profile states against the entity's: ``{"stated", "right", "wrong",
    "facts", "found", "missing"}`` — counts, plus ``"wrong_facts"`` and ``"missing_facts"`` lists.

    A stated ``(relation, value)`` is right when the value is, after exact match's normalisation,
    one spelling of one of the entity's values of that relation; a value stated twice counts once
    (``wrong_facts`` lists values as first written).
    A fact is found when some stated value of its relation is one of its spellings."""
    truth = profile_facts(entity, index)
    spellings = {}
    for relation, value, answers in truth:
        for a in answers:
            spellings.setdefault(relation, {})[normalize_answer(a)] = value
    stated = {}  # (relation, normalised value) -> the value as first written
    for r, v in parse_profile(text):
        stated.setdefault((r, normalize_answer(v)), v)
    wrong = [(r, v) for (r, key), v in stated.items() if key not in spellings.get(r, {})]
    found = {(r, spellings[r][key]) for r, key in stated if key in spellings.get(r, {})}
    missing = [(r, v) for r, v, _ in truth if (r, v) not in found]
    return {"stated": len(stated), "right": len(stated) - len(wrong), "wrong": len(wrong),
            "facts": len(truth), "found": len(truth) - len(missing), "missing": len(missing),
            "wrong_facts": wrong, "missing_facts": missing}


def profile_scores(profiles, entities, index, seed=0):
    """Fact precision and recall of ``profiles`` (texts) about ``entities``, over all their facts,
    with 95% bootstrap intervals over entities: ``{"precision", "precision_ci", "recall",
    "recall_ci", "stated", "facts", "n"}``. A profile that states nothing has precision 0 here."""
    import numpy as np

    profiles = list(profiles)
    if len(profiles) != len(entities):
        raise ValueError(f"{len(profiles)} profiles for {len(entities)} entities: one each")
    scores = [score_profile(p, e, index) for p, e in zip(profiles, entities)]
    right = np.array([s["right"] for s in scores], float)
    stated = np.array([s["stated"] for s in scores], float)
    found = np.array([s["found"] for s in scores], float)
    facts = np.array([s["facts"] for s in scores], float)
    draws = np.random.default_rng(seed).integers(0, len(scores), size=(2000, len(scores)))

    def interval(num, den):  # of the pooled ratio, over resampled entities
        ratios = num[draws].sum(1) / np.maximum(den[draws].sum(1), 1)
        return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))

    return {"precision": float(right.sum() / max(stated.sum(), 1)),
            "precision_ci": interval(right, stated),
            "recall": float(found.sum() / facts.sum()), "recall_ci": interval(found, facts),
            "stated": int(stated.sum()), "facts": int(facts.sum()), "n": len(scores)}


# ----------------------------------------------------------------------------------------------
# Counterfactual profiles, for training
# ----------------------------------------------------------------------------------------------
def _fake_passages(e, pools, rng):
    """Every relation-bearing aspect of ``e`` rewritten with false facts: ``[(aspect, text, fake)]``."""
    maker = _fake_country if e["domain"] == "country" else _fake_element
    aspects = {RELATIONS[r][1] for r in PROFILE_RELATIONS[e["domain"]]}
    out = []
    for aspect in ASPECTS[e["domain"]]:
        if aspect in aspects:
            fake, context = maker(e, aspect, pools, rng)
            out.append((aspect, RENDERERS[e["domain"]][aspect](fake, context, rng), fake))
    return out


def iter_profile_examples(entities, seed=0, keep=0.8, max_distractors=2):
    """An endless, deterministic stream of counterfactual profile examples, for training.

    Example i depends only on (``seed``, i) and walks the entities in a fresh seeded order each
    pass, test entities included (their names; never their facts). Each example is a dict:
    ``entity`` (the name), ``query`` ("Tell me about X"), ``passages`` (``{"title", "text"}``
    dicts, shuffled) and ``target`` (the profile). The passages are the entity's relation-bearing
    passages rewritten with false facts (each kept with probability ``keep``, at least one), and 0
    to ``max_distractors`` counterfactual passages about other entities; the target states the
    facts of the kept passages of the entity, and nothing else."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a probability above 0, got {keep!r}")
    pools = _Pools(entities)
    if not pools.entities:
        raise ValueError("profile examples need the entity records: pass load_entities()")
    n = len(pools.entities)
    i = 0
    while True:
        epoch, position = divmod(i, n)
        if position == 0:
            order = random.Random(f"{seed}/profile-order/{epoch}").sample(pools.entities, n)
        e = order[position]
        rng = random.Random(f"{seed}/profile/{i}")
        own = _fake_passages(e, pools, rng)
        kept = [p for p in own if rng.random() < keep] or [rng.choice(own)]
        facts = [f for aspect, _, fake in kept for f in profile_facts(fake, pools.index, aspect)]
        order_of = {r: j for j, r in enumerate(PROFILE_RELATIONS[e["domain"]])}
        facts.sort(key=lambda f: order_of[f[0]])  # stable: several values keep their order
        passages = [{"title": e["name"], "text": text} for _, text, _ in kept]
        for _ in range(rng.randint(0, max_distractors)):
            other = rng.choice([x for x in pools.entities if x["id"] != e["id"]])
            _, text, _ = rng.choice(_fake_passages(other, pools, rng))
            passages.append({"title": other["name"], "text": text})
        rng.shuffle(passages)
        yield {"entity": e["name"], "entity_id": e["id"], "query": QUERY.format(name=e["name"]),
               "passages": passages, "target": format_profile(facts)}
        i += 1


def profile_examples(entities, n, seed=0, **options):
    """The first ``n`` examples of :func:`iter_profile_examples` (the same whatever ``n``)."""
    import itertools

    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return list(itertools.islice(iter_profile_examples(entities, seed, **options), n))


# ----------------------------------------------------------------------------------------------
# The two readers of K passages: losses and decoding
# ----------------------------------------------------------------------------------------------
def _encode(model, tokenizer, queries, passage_lists):
    """Encode every (query, passage) pair on its own: ``(states [N, S, H], mask [N, S], owner [N])``
    with ``owner`` the example each row belongs to."""
    check_texts(queries, "queries")
    if len(passage_lists) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(passage_lists)} passage lists")
    sources, owner = [], []
    for b, (query, passages) in enumerate(zip(queries, passage_lists)):
        if not passages:
            raise ValueError(f"query {b} ({query!r}) has no passages: there is nothing to read")
        for p in passages:
            sources.append(combined_input(p["title"], p["text"], query))
            owner.append(b)
    batch = tokenizer(sources, padding=True, return_tensors="pt")
    limit = model.config.max_position_embeddings
    if batch.input_ids.shape[1] > limit:
        worst = int(batch.attention_mask.sum(1).argmax())
        raise ValueError(f"a passage with its query is {batch.input_ids.shape[1]} tokens long, more "
                         f"than the model's {limit} positions: {sources[worst][:80]!r}...")
    states = model.get_encoder()(input_ids=batch.input_ids,
                                 attention_mask=batch.attention_mask).last_hidden_state
    return states, batch.attention_mask, torch.tensor(owner)


def _fused(states, mask, owner, n):
    """Fusion-in-Decoder: each example's passage encodings, real tokens only, end to end:
    ``(states [B, L, H], mask [B, L])``."""
    rows = [torch.cat([states[j][mask[j].bool()] for j in (owner == b).nonzero()[:, 0].tolist()])
            for b in range(n)]
    longest = max(len(r) for r in rows)
    fused = states.new_zeros(n, longest, states.shape[-1])
    fused_mask = mask.new_zeros(n, longest)
    for b, r in enumerate(rows):
        fused[b, :len(r)] = r
        fused_mask[b, :len(r)] = 1
    return fused, fused_mask


def _labels(tokenizer, targets, limit):
    encoded = tokenizer(list(targets), padding=True, return_tensors="pt")
    labels = encoded.input_ids[:, 1:]  # the model prepends <s> itself
    if labels.shape[1] > limit:
        raise ValueError(f"a target profile is {labels.shape[1]} tokens long, more than the "
                         f"model's {limit} positions")
    return labels.masked_fill(encoded.attention_mask[:, 1:] == 0, -100)


def fid_loss(model, tokenizer, queries, passage_lists, targets):
    """Fusion-in-Decoder's loss: the mean cross-entropy per target token, the decoder attending
    to all of an example's passage encodings at once."""
    states, mask, owner = _encode(model, tokenizer, queries, passage_lists)
    fused, fused_mask = _fused(states, mask, owner, len(queries))
    labels = _labels(tokenizer, targets, model.config.max_position_embeddings)
    return model(encoder_outputs=(fused,), attention_mask=fused_mask, labels=labels).loss


def rag_token_loss(model, tokenizer, queries, passage_lists, targets):
    """RAG-Token's loss with a uniform prior over each example's passages: the mean over target
    tokens of ``-log Σ_k (1/K) p(y_t | x, d_k, y_<t)``, the decoder reading one passage at a time."""
    states, mask, owner = _encode(model, tokenizer, queries, passage_lists)
    per_example = _labels(tokenizer, targets, model.config.max_position_embeddings)  # [B, T]
    labels = per_example[owner]  # [N, T]: each passage's row gets its example's target
    logits = model(encoder_outputs=(states,), attention_mask=mask, labels=labels).logits
    picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    counts = torch.bincount(owner, minlength=len(queries)).float()
    # log Σ_k exp(...) per example: a scatter over rows, stabilised by each example's maximum.
    top = torch.full((len(queries), picked.shape[1]), -torch.inf).scatter_reduce(
        0, owner[:, None].expand_as(picked), picked, "amax").detach()
    summed = torch.zeros_like(top).index_add(0, owner, torch.exp(picked - top[owner]))
    mixture = top + torch.log(summed) - torch.log(counts)[:, None]
    real_example = per_example != -100
    return -(mixture * real_example).sum() / real_example.sum()


def _sequence_log_probs(model, tokenizer, queries, passage_lists, targets):
    """log p(y | x, d_k) of each example's target under each of its passages: ``([N], owner [N])``,
    the target's tokens and its </s> summed."""
    states, mask, owner = _encode(model, tokenizer, queries, passage_lists)
    labels = _labels(tokenizer, targets, model.config.max_position_embeddings)[owner]
    logits = model(encoder_outputs=(states,), attention_mask=mask, labels=labels).logits
    picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return (picked * (labels != -100)).sum(-1), owner


def _per_example_logsumexp(values, owner, n):
    """``log Σ_k exp(values_k) - log K`` over each example's rows: the uniform mixture."""
    top = torch.full((n,), -torch.inf, dtype=values.dtype).scatter_reduce(
        0, owner, values, "amax").detach()
    summed = torch.zeros_like(top).index_add(0, owner, torch.exp(values - top[owner]))
    counts = torch.bincount(owner, minlength=n).to(values.dtype)
    return top + torch.log(summed) - torch.log(counts)


def rag_sequence_loss(model, tokenizer, queries, passage_lists, targets):
    """RAG-Sequence's loss with a uniform prior over each example's passages: the mean over
    examples of ``-log Σ_k (1/K) p(y | x, d_k)``, each whole answer read from one passage.

    Unlike :func:`fid_loss` and :func:`rag_token_loss`, it is a mean per example, not per target
    token (Lewis et al. 2020 sum over the answer's tokens inside the mixture)."""
    values, owner = _sequence_log_probs(model, tokenizer, queries, passage_lists, targets)
    return -_per_example_logsumexp(values, owner, len(queries)).mean()


@torch.no_grad()
def fid_generate(model, tokenizer, queries, passage_lists, max_new_tokens=127):
    """Fusion-in-Decoder profiles, by greedy decoding: one string per query."""
    states, mask, owner = _encode(model, tokenizer, queries, passage_lists)
    fused, fused_mask = _fused(states, mask, owner, len(queries))
    from transformers.modeling_outputs import BaseModelOutput

    out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=fused),
                         attention_mask=fused_mask, max_new_tokens=max_new_tokens, num_beams=1,
                         do_sample=False)
    return tokenizer.batch_decode(out, skip_special_tokens=True)


@torch.no_grad()
def rag_token_generate(model, tokenizer, queries, passage_lists, max_new_tokens=127):
    """RAG-Token profiles by greedy decoding, with a uniform prior over each query's passages: at
    each step the most probable token of the mixture ``Σ_k (1/K) p(y_t | x, d_k, y_<t)``, until
    </s>, as :func:`fid_generate` picks the most probable token of its one distribution. (A search
    that returns the most probable *finished* sequence instead, as
    :func:`ragtutor.rag.rag_token_beam_search` does for short answers, prefers a profile that
    stops early: every fact added lowers a sequence's probability.) One string per query."""
    states, mask, owner = _encode(model, tokenizer, queries, passage_lists)
    start, eos = model.config.decoder_start_token_id, model.config.eos_token_id
    counts = torch.bincount(owner, minlength=len(queries)).float()
    prefix = torch.full((len(queries), 1), start, dtype=torch.long)
    done = torch.zeros(len(queries), dtype=torch.bool)
    for _ in range(max_new_tokens):
        logits = model(encoder_outputs=(states,), attention_mask=mask,
                       decoder_input_ids=prefix[owner], use_cache=False).logits[:, -1]
        probs = torch.softmax(logits.double(), -1)
        mixture = torch.zeros(len(queries), probs.shape[1], dtype=probs.dtype).index_add(
            0, owner, probs) / counts[:, None]
        mixture[:, model.config.pad_token_id] = 0.0
        token = mixture.argmax(-1).masked_fill(done, model.config.pad_token_id)
        prefix = torch.cat([prefix, token[:, None]], 1)
        done |= token == eos
        if done.all():
            break
    return tokenizer.batch_decode(prefix, skip_special_tokens=True)


@torch.no_grad()
def rag_sequence_generate(model, tokenizer, queries, passage_lists, max_new_tokens=16):
    """RAG-Sequence answers with a uniform prior over each query's passages ("thorough decoding",
    Lewis et al. 2020): each passage proposes its greedy answer, every proposal is scored under
    every passage of its query, and the proposal with the largest ``Σ_k (1/K) p(y | x, d_k)``
    wins (ties: the first passage's). One string per query."""
    check_texts(queries, "queries")
    if len(passage_lists) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(passage_lists)} passage lists")
    singles = [[p] for passages in passage_lists for p in passages]
    single_queries = [q for q, passages in zip(queries, passage_lists) for _ in passages]
    proposals = fid_generate(model, tokenizer, single_queries, singles, max_new_tokens)
    owner = [b for b, passages in enumerate(passage_lists) for _ in passages]
    candidates = [list(dict.fromkeys(a for a, o in zip(proposals, owner) if o == b))
                  for b in range(len(queries))]
    rows = [(b, c) for b in range(len(queries)) for c in candidates[b]]
    values, _ = _sequence_log_probs(model, tokenizer, [queries[b] for b, _ in rows],
                                    [passage_lists[b] for b, _ in rows], [c for _, c in rows])
    mixture = _per_example_logsumexp(values.double(), torch.tensor(
        [i for i, (b, _) in enumerate(rows) for _ in passage_lists[b]]), len(rows))
    best = {}
    for (b, c), score in zip(rows, mixture.tolist()):
        if b not in best or score > best[b][1]:
            best[b] = (c, score)
    return [best[b][0] for b in range(len(queries))]


def _value_spans(profile):
    """Character spans of the values in a profile written by :func:`format_profile`."""
    spans, position = [], 0
    for part in profile.split(FIELD_SEP):
        label, _, values = part.partition(LABEL_SEP)
        start = position + len(label) + len(LABEL_SEP)
        for value in values.split(VALUE_SEP):
            spans.append((start, start + len(value)))
            start += len(value) + len(VALUE_SEP)
        position += len(part) + len(FIELD_SEP)
    return spans


@torch.no_grad()
def value_token_votes(model, tokenizer, query, passages, profile):
    """How each passage, read alone, and RAG-Token's uniform mixture of them predict the value
    tokens of ``profile`` (teacher forcing: each token after the profile's own prefix).

    Returns a dict of tensors over the T value tokens (labels and separators left out): ``tokens``
    ``[T]``, their ids; ``per_passage``
    ``[K, T]``, the probability each passage's decoder gives the right token; ``passage_top``
    ``[K, T]``, whether it ranks it first; ``mixture`` ``[T]`` and ``mixture_top`` ``[T]``, the same
    for ``Σ_k (1/K) p(y_t | x, d_k, y_<t)``."""
    states, mask, _ = _encode(model, tokenizer, [query], [passages])
    labels = _labels(tokenizer, [profile], model.config.max_position_embeddings)  # [1, T]
    offsets = tokenizer(profile, return_offsets_mapping=True)["offset_mapping"][1:]
    spans = _value_spans(profile)
    keep = torch.tensor([any(a < e and b > s for s, e in spans) for a, b in offsets[:labels.shape[1]]])
    logits = model(encoder_outputs=(states,), attention_mask=mask,
                   decoder_input_ids=model.prepare_decoder_input_ids_from_labels(
                       labels.repeat(len(passages), 1))).logits
    probs = torch.softmax(logits, -1)[:, keep]  # [K, T, V]
    gold = labels[0, keep]
    mixture = probs.mean(0)
    picked = probs.gather(-1, gold[None, :, None].expand(len(passages), -1, 1))[..., 0]
    return {"tokens": gold, "per_passage": picked, "passage_top": probs.argmax(-1) == gold,
            "mixture": mixture.gather(-1, gold[:, None])[:, 0], "mixture_top": mixture.argmax(-1) == gold}


# ----------------------------------------------------------------------------------------------
# The profiler: retrieve, then write
# ----------------------------------------------------------------------------------------------
@dataclass
class Profile:
    """A profile of ``name`` and the passages it was written from (``ids``, in reading order)."""

    name: str
    text: str
    method: str
    ids: list = field(default_factory=list)

    @property
    def facts(self):
        """The ``(relation, value)`` pairs the profile states (:func:`parse_profile`)."""
        return parse_profile(self.text)

    def __str__(self):
        return f"{self.name} ({self.method}, from {len(self.ids)} passages): {self.text}"


class Profiler:
    """Write "Tell me about X" profiles from retrieved passages.

    ``rag_model`` (a :class:`ragtutor.rag_model.RAGModel`, chapter 07's) supplies the retriever and
    the passages; ``model``/``tokenizer`` is a profile generator of ``scripts/train_profiles.py``,
    read the way ``method`` says: "fid" (Fusion-in-Decoder) or "rag_token". Retrieval:

    1. the domain: the most common domain among the top 5 passages for "Tell me about X";
    2. the passages: for each relation of :data:`PROFILE_RELATIONS` of that domain, the top
       ``per_relation`` passages for the question "What is the <relation> of X?" (the knowledge
       base's first plain template), without repeats, in the order first found.
    """

    METHODS = ("fid", "rag_token")

    def __init__(self, model, tokenizer, rag_model, method="fid", per_relation=1):
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        if not isinstance(per_relation, int) or per_relation < 1:
            raise ValueError(f"per_relation must be a positive int, got {per_relation!r}")
        if rag_model.n_docs < max(per_relation, 5):
            raise ValueError(f"the retriever returns {rag_model.n_docs} passages per query; need "
                             f"{max(per_relation, 5)}: load it with n_docs={max(per_relation, 5)}")
        self.model, self.tokenizer, self.rag = model.eval(), tokenizer, rag_model
        self.method, self.per_relation = method, per_relation

    @classmethod
    def from_pretrained(cls, method="fid", folder=None, rag_model=None, **options):
        """The committed generator for ``method`` (``checkpoints/profile_<method>``, checked
        against its manifest) with chapter 07's retriever (``checkpoints/rag_token``, unless
        ``rag_model`` is given). ``folder`` replaces ``checkpoints/``."""
        from pathlib import Path

        from ragtutor.generation import CHECKPOINT_DIR, load_checkpoint
        from ragtutor.rag_model import RAGModel

        if method not in cls.METHODS:
            raise ValueError(f"method must be one of {cls.METHODS}, got {method!r}")
        model, tokenizer, record = load_checkpoint(f"profile_{method}", folder)
        if rag_model is None:
            rag_model = RAGModel.from_pretrained(Path(folder or CHECKPOINT_DIR) / "rag_token",
                                                 n_docs=5)
        profiler = cls(model, tokenizer, rag_model, method, **options)
        profiler.record = record
        return profiler

    def retrieve(self, names):
        """For each name, the passage records to read (see the class docstring)."""
        names = check_texts(names, "names")
        _, top = self.rag.retrieve([QUERY.format(name=n) for n in names])
        domain_of = {p["id"]: p.get("domain") for p in self.rag.passages}
        domains = []
        for row in top:
            votes = [domain_of[i] for i in row[:5] if domain_of[i] in PROFILE_RELATIONS]
            domains.append(max(sorted(set(votes)), key=votes.count) if votes else "country")
        questions, owner = [], []
        for b, (name, domain) in enumerate(zip(names, domains)):
            for relation in PROFILE_RELATIONS[domain]:
                questions.append(QUESTIONS[relation]["plain"][0].format(name=name))
                owner.append(b)
        _, ids = self.rag.retrieve(questions)
        found = [dict() for _ in names]
        for b, row in zip(owner, ids):
            for i in row[:self.per_relation]:
                found[b].setdefault(i, None)
        return [[self.rag.passages[self.rag.position[i]] for i in f] for f in found]

    def profile_many(self, names, batch_size=16):
        """One :class:`Profile` per name."""
        names = check_texts(names, "names")
        write = fid_generate if self.method == "fid" else rag_token_generate
        out = []
        for start in range(0, len(names), batch_size):
            chunk = names[start:start + batch_size]
            passages = self.retrieve(chunk)
            texts = write(self.model, self.tokenizer, [QUERY.format(name=n) for n in chunk], passages)
            out += [Profile(n, t, self.method, [p["id"] for p in ps])
                    for n, t, ps in zip(chunk, texts, passages)]
        return out

    def profile(self, name):
        """The :class:`Profile` of one name."""
        return self.profile_many([name])[0]


def closed_book_profile(model, tokenizer, name, domain):
    """A profile with no retrieval: chapter 03's closed-book model answers each profile relation's
    question ("What is the capital of X?") from its weights, one value per relation."""
    from ragtutor.generation import generate_answers

    relations = PROFILE_RELATIONS[domain]
    answers = generate_answers(model, tokenizer, [QUESTIONS[r]["plain"][0].format(name=name)
                                                  for r in relations])
    return FIELD_SEP.join(LABELS[r] + LABEL_SEP + a for r, a in zip(relations, answers))
