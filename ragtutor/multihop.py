"""Questions that need two passages of the knowledge base (groundwork for comparing
Fusion-in-Decoder with RAG-Sequence and RAG-Token).

``data/kb/two_fact_questions.jsonl`` is written by ``python data/build_two_fact.py`` from the
knowledge base's passages and entities, with its own manifest ``two_fact_manifest.json`` (the
file's sha256, its counts, and the sha256 of the passages and entities it was built from). Three
kinds of question, each answerable only by combining facts that two different passages state:

    bridge      "Which country bordering Romania uses the euro?"     -> Bulgaria
                (ROU/neighbours lists the neighbours; BGR/economy states the currency)
    chain       "What currency is used in the country whose capital is Zagreb?" -> euro
                (HRV/capital names the country; HRV/economy states its currency)
    comparison  "Which is denser, iron or lead?"                       -> lead
                (Fe/physical and Pb/physical each state one density)

Fields of a record: id, kind, relation, question, answers (every acceptable answer, canonical
first), answer_entity_id (None for chain questions, whose answer is a value), entity_ids (every
entity the answer depends on), mentioned_entity_ids (the entities the question names, directly or
by their capital), passage_ids (the passages needed, in reasoning order), evidence (for each
needed passage, a string it contains verbatim that states the fact), options (the names a
bridge or comparison answer is chosen from; None for chain), value (the bridge value or the
chain's capital), values (a comparison's stated numbers by entity id), direction (a comparison's
"more" or "less"), template (which phrasing) and split.

Splits follow the knowledge base's split by entity: a question has the split of the entity it
names, a train question involves train entities only, and a comparison pairs entities of one split.
"""
import copy
import functools
import hashlib
import json
import os
import random
from pathlib import Path

from ragtutor import data
from ragtutor.metrics import exact_match

__all__ = ["QUESTIONS_FILE", "MANIFEST_FILE", "REBUILD", "KINDS", "RELATIONS", "FIELDS",
           "load_two_fact_questions", "verify_two_fact_manifest", "guessing_baseline",
           "reader_inputs"]

QUESTIONS_FILE = "two_fact_questions.jsonl"
MANIFEST_FILE = "two_fact_manifest.json"
REBUILD = "python data/build_two_fact.py"
KINDS = ("bridge", "chain", "comparison")
RELATIONS = {"bridge": ("currency", "language", "region"),
             "chain": ("currency", "language", "region"),
             "comparison": ("area", "density", "atomic_number")}
FIELDS = ("id", "kind", "relation", "question", "answers", "answer_entity_id", "entity_ids",
          "mentioned_entity_ids", "passage_ids", "evidence", "options", "value", "values",
          "direction", "template", "split")


def _folder(data_dir):
    return Path(data_dir or os.environ.get("RAGTUTOR_DATA_DIR") or data.DATA_DIR)


def _fail(path, problem):
    raise data.KnowledgeBaseError(f"{path}: {problem}. Build the two-fact questions with `{REBUILD}` "
                                  "(run from the repository root).")


def _read_manifest(folder):
    path = folder / MANIFEST_FILE
    if not path.is_file():
        _fail(path, "the manifest is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        _fail(path, f"the manifest is not valid JSON ({err})")
    if not isinstance(manifest, dict) or not all(k in manifest for k in ("sha256", "count", "built_from")):
        _fail(path, "the manifest lacks sha256, count or built_from")
    return manifest


def _kb_checksums(folder):
    """The sha256 that the knowledge base's MANIFEST.sha256 lists, by file name ({} if none)."""
    path = folder / data.MANIFEST
    if not path.is_file():
        return {}
    listed = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    return listed


def verify_two_fact_manifest(data_dir=None):
    """Check the questions file against its manifest, and that the knowledge base's passages and
    entities are those it was built from; returns the manifest (a dict).

    Raises :class:`ragtutor.data.KnowledgeBaseError` naming the file at fault and the command
    that builds it again: missing, one byte changed, or built from another knowledge base.
    """
    folder = _folder(data_dir)
    manifest = _read_manifest(folder)
    path = folder / QUESTIONS_FILE
    if not path.is_file():
        _fail(path, "the file is missing")
    if hashlib.sha256(path.read_bytes()).hexdigest() != manifest["sha256"]:
        _fail(path, f"its sha256 does not match {MANIFEST_FILE} (the file was changed or is corrupt)")
    current = _kb_checksums(folder)
    for name, digest in sorted(manifest["built_from"].items()):
        if current.get(name) != digest:
            _fail(path, f"it was built from another {name} than the knowledge base's "
                        f"(MANIFEST.sha256 lists {current.get(name)}, it was built from {digest}): "
                        "the knowledge base was rebuilt since")
    return manifest


@functools.lru_cache(maxsize=4)
def _parse(path_name, stamp):
    path = Path(path_name)
    manifest = verify_two_fact_manifest(path.parent)
    records, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            _fail(path, f"line {number} is not valid JSON ({err.msg})")
        missing = [f for f in FIELDS if not isinstance(record, dict) or f not in record]
        if missing:
            _fail(path, f"line {number} lacks the field(s) {', '.join(missing)}")
        if record["id"] in seen:
            _fail(path, f"line {number} repeats the id {record['id']!r}")
        seen.add(record["id"])
        records.append(record)
    if len(records) != manifest["count"]:
        _fail(path, f"it holds {len(records)} questions, its manifest says {manifest['count']}")
    return tuple(records)


def load_two_fact_questions(split, kind=None, data_dir=None):
    """The two-fact questions of one split ("train", "dev" or "test"), as a list of dicts.

    ``kind`` keeps one kind only: "bridge", "chain" or "comparison" (None: all, in file order:
    by id). The file is checked against its manifest, and against the knowledge base it was built
    from, on first use; every call returns fresh copies. ``data_dir`` (or ``RAGTUTOR_DATA_DIR``)
    points at another knowledge-base folder.
    """
    if split not in data.SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(data.SPLITS)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(KINDS)}, or None for all")
    path = _folder(data_dir) / QUESTIONS_FILE
    if not path.is_file():
        _fail(path, "the file is missing")
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
                  for p in (path, path.parent / MANIFEST_FILE, path.parent / data.MANIFEST))
    records = _parse(str(path.resolve()), stamp)
    return [copy.deepcopy(r) for r in records
            if r["split"] == split and (kind is None or r["kind"] == kind)]


def guessing_baseline(questions):
    """Mean exact match of guessing without reading: a uniform pick among a question's
    ``options`` (1/2 for a comparison, 1/number of neighbours for a bridge), and for questions
    without options (chain) the one answer string per relation that is right most often
    ("euro", "English")."""
    if not questions:
        raise ValueError("no questions")
    total = sum(1 / len(q["options"]) for q in questions if q["options"])
    by_relation = {}
    for q in questions:
        if not q["options"]:
            by_relation.setdefault(q["relation"], []).append(q)
    for group in by_relation.values():
        candidates = sorted({a for q in group for a in q["answers"]})
        total += max(sum(exact_match(c, q["answers"]) for q in group) for c in candidates)
    return total / len(questions)


def reader_inputs(questions, passages, retriever, n_distractors=2, seed=0):
    """What a reader of several passages is given for each two-fact question: its gold passages
    and ``n_distractors`` others, in a shuffled order.

    The distractors are the passages ``retriever`` ranks highest for the question that are not
    gold: the near misses a retriever would really return (for "Which is denser, iron or lead?",
    other passages about iron and lead). ``retriever`` is fitted on ``passages`` (any retriever of
    the course: ``search(queries, k)`` returns ``(scores, ids)``). ``seed`` fixes the order, so
    that the gold passages' positions vary and a reader cannot learn to read only the first.
    Returns one dict per question: ``question``, ``passages`` (passage records) and ``answers``.
    """
    if isinstance(n_distractors, bool) or not isinstance(n_distractors, int) or n_distractors < 0:
        raise ValueError(f"n_distractors must be a non-negative int, got {n_distractors!r}")
    questions = list(questions)
    if not questions:
        raise ValueError("questions is empty: give two-fact question records "
                         "(load_two_fact_questions)")
    by_id = {p["id"]: p for p in passages}
    for q in questions:
        missing = [i for i in q.get("passage_ids", ()) if i not in by_id]
        if missing or not q.get("passage_ids"):
            raise KeyError(f"question {q.get('id')!r} needs passages that are not given: "
                           f"{missing or 'it names none'}")
    depth = n_distractors + max(len(q["passage_ids"]) for q in questions)
    _, ids = retriever.search([q["question"] for q in questions], depth)
    rng = random.Random(seed)
    result = []
    for q, row in zip(questions, ids):
        others = [i for i in row if i not in q["passage_ids"]][:n_distractors]
        shown = [by_id[i] for i in list(q["passage_ids"]) + others]
        rng.shuffle(shown)
        result.append({"question": q["question"], "passages": shown, "answers": q["answers"]})
    return result
