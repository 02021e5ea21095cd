"""The knowledge base and its question-answer splits, loaded offline.

The files in ``data/kb/`` are written by ``python data/build_kb.py`` (see ``data/README.md``):

    passages.jsonl          id, title, text, entity_id, domain, aspect
    questions_<split>.jsonl id, question, answers, entity_id, entity, domain, relation,
                            passage_id, mismatch, split          (split: train, dev, test)
    entities.jsonl          id, name, domain, split, aliases, facts, answers, skip_relations
    MANIFEST.sha256         sha256 of each file above, in ``sha256sum`` format

Every loader returns a list of dicts by default, or a ``datasets.Dataset`` with
``as_dataset=True``. Each file's checksum is verified against the manifest the first time it is
read; a missing, altered or malformed file raises :class:`KnowledgeBaseError` naming the file and
the command that rebuilds it. Parsed files are cached per (folder, file, size, modification time);
every call returns fresh copies, so changing a returned record never changes the next call's.

The folder is, in order of precedence: the ``data_dir`` argument, the environment variable
``RAGTUTOR_DATA_DIR``, then :data:`DATA_DIR` (``data/kb`` beside the package in the repository).
"""
import copy
import functools
import hashlib
import json
import os
from pathlib import Path

__all__ = ["DATA_DIR", "SPLITS", "PHRASINGS", "KnowledgeBaseError", "load_passages", "load_questions",
           "load_entities", "load_unanswerable", "verify_manifest", "UNANSWERABLE_KINDS"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "kb"
SPLITS = ("train", "dev", "test")
PHRASINGS = ("seen", "new", "typed", "all")
MANIFEST = "MANIFEST.sha256"
SOURCES_DIR = Path(__file__).resolve().parent.parent / "data" / "sources"
UNANSWERABLE_KINDS = ("fictional", "outside", "missing_relation")
REBUILD = "python data/build_kb.py"

FIELDS = {
    "passages": ("id", "title", "text", "entity_id", "domain", "aspect"),
    "questions": ("id", "question", "answers", "entity_id", "entity", "domain", "relation",
                  "passage_id", "mismatch", "split"),
    "entities": ("id", "name", "domain", "split", "aliases", "facts", "answers", "skip_relations"),
}


class KnowledgeBaseError(RuntimeError):
    """A knowledge-base file is missing, altered or malformed; the message says how to rebuild it."""


def _folder(data_dir):
    return Path(data_dir or os.environ.get("RAGTUTOR_DATA_DIR") or DATA_DIR)


def _fail(path, problem):
    raise KnowledgeBaseError(f"{path}: {problem}. Rebuild the knowledge base with `{REBUILD}` "
                             "(run from the repository root).")


def _read_manifest(folder):
    path = folder / MANIFEST
    if not path.is_file():
        _fail(path, "the manifest is missing")
    checksums = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            _fail(path, f"line {number} is not '<sha256>  <file name>'")
        checksums[name] = digest
    return checksums


def verify_manifest(data_dir=None):
    """Check the sha256 of every file listed in the manifest; return the verified file names.

    Raises :class:`KnowledgeBaseError` naming the first file that is missing or whose checksum
    differs (one changed byte is enough), and when a data file is not listed at all.
    """
    folder = _folder(data_dir)
    checksums = _read_manifest(folder)
    expected = {"passages.jsonl", "entities.jsonl", *(f"questions_{s}.jsonl" for s in SPLITS)}
    for name in sorted(expected - checksums.keys()):
        _fail(folder / MANIFEST, f"it does not list {name}")
    for name, digest in sorted(checksums.items()):
        _checked_bytes(folder / name, digest)
    return sorted(checksums)


def _checked_bytes(path, digest):
    if not path.is_file():
        _fail(path, "the file is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        _fail(path, "its sha256 does not match MANIFEST.sha256 (the file was changed or is corrupt)")
    return data


@functools.lru_cache(maxsize=16)
def _parse(path_name, stamp, kind):
    """Verify and parse one JSON-lines file; cached on the file's and the manifest's (size, mtime)."""
    path = Path(path_name)
    checksums = _read_manifest(path.parent)
    if path.name not in checksums:
        _fail(path.parent / MANIFEST, f"it does not list {path.name}")
    data = _checked_bytes(path, checksums[path.name])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        _fail(path, f"line {line} is not UTF-8 text (byte {data[err.start]:#04x})")
    records, seen = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            _fail(path, f"line {number} is not valid JSON ({err.msg})")
        missing = [f for f in FIELDS[kind] if not isinstance(record, dict) or f not in record]
        if missing:
            _fail(path, f"line {number} lacks the field(s) {', '.join(missing)}")
        problem = _record_problem(record, kind)
        if problem:
            _fail(path, f"line {number}: {problem}")
        if record["id"] in seen:
            _fail(path, f"line {number} repeats the id {record['id']!r} of line {seen[record['id']]}")
        seen[record["id"]] = number
        records.append(record)
    return tuple(records)


def _record_problem(record, kind):
    """What is wrong with one record's fields (their types), or None."""
    texts = {"passages": ("id", "title", "text", "entity_id", "domain", "aspect"),
             "questions": ("id", "question", "entity_id", "entity", "domain", "relation",
                           "passage_id", "split"),
             "entities": ("id", "name", "domain", "split")}[kind]
    for field in texts:
        if not isinstance(record[field], str) or not record[field].strip():
            return f"{field} must be a non-empty string, got {record[field]!r}"
    if kind == "questions":
        answers = record["answers"]
        if not isinstance(answers, list) or not answers or not all(
                isinstance(a, str) and a.strip() for a in answers):
            return f"answers must be a non-empty list of strings, got {answers!r}"
    if kind == "entities" and not (isinstance(record["facts"], dict)
                                   and isinstance(record["answers"], dict)):
        return "facts and answers must be objects"
    return None


def _load(name, kind, data_dir, as_dataset):
    path = _folder(data_dir) / name
    if not path.is_file():
        _fail(path, "the file is missing")
    manifest = path.parent / MANIFEST
    stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
                  for p in (path, manifest))
    records = copy.deepcopy(list(_parse(str(path.resolve()), stamp, kind)))
    if not as_dataset:
        return records
    from datasets import Dataset  # imported here: plain-list users do not pay for it

    if kind == "entities":
        # Facts differ between domains (a country has a capital, an element a symbol); Arrow
        # needs one schema, so the nested fields travel as JSON strings in the table.
        records = [{**r, "facts": json.dumps(r["facts"], ensure_ascii=False, sort_keys=True),
                    "answers": json.dumps(r["answers"], ensure_ascii=False, sort_keys=True)}
                   for r in records]
    return Dataset.from_list(records)


def load_passages(as_dataset=False, data_dir=None):
    """All passages: dicts with id, title, text, entity_id, domain ("country"/"element"), aspect."""
    return _load("passages.jsonl", "passages", data_dir, as_dataset)


def load_questions(split, as_dataset=False, data_dir=None, phrasing="seen"):
    """The questions of one split ("train", "dev" or "test"), split by entity.

    Fields: id, question, answers (every acceptable answer, canonical first), entity_id, entity,
    domain, relation, passage_id (the gold passage), mismatch (True when the question shares no
    content word with its gold passage except the entity's name), split.

    ``phrasing="seen"`` gives the knowledge base's own questions, worded with the templates that
    every split shares; ``phrasing="new"`` (dev and test only) one question per fact worded as no
    training question is, typed as people type (``ragtutor.templates.PHRASINGS``), with the extra
    fields phrasing, template and form; ``phrasing="typed"`` (dev only) questions written by hand
    the way people type into a search box (``data/sources/typed_questions_dev.tsv``; mismatch is
    None); ``phrasing="all"`` the seen and new ones.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if phrasing not in PHRASINGS:
        raise ValueError(f"unknown phrasing {phrasing!r}: choose one of {', '.join(PHRASINGS)}")
    if phrasing != "seen" and split == "train":
        raise ValueError("the train split has seen phrasings only: new phrasings are held out for "
                         "dev and test (training scripts draw their own, from PHRASINGS['...']['train'])")
    if phrasing == "typed" and split != "dev":
        raise ValueError(f"typed questions exist for the dev split only, not {split!r}")
    if phrasing == "all":
        rows = [{**q, "phrasing": "seen", "template": None, "form": None}
                for q in load_questions(split, False, data_dir, "seen")]
        rows += load_questions(split, False, data_dir, "new")
        if not as_dataset:
            return rows
        from datasets import Dataset
        return Dataset.from_list(rows)
    name = f"questions_{split}.jsonl" if phrasing == "seen" else f"questions_{split}_{phrasing}.jsonl"
    return _load(name, "questions", data_dir, as_dataset)


def load_entities(as_dataset=False, data_dir=None):
    """Every entity with its true facts: id, name, domain, split, aliases, facts, answers, skip_relations.

    ``answers`` maps each relation to its acceptable answers. With ``as_dataset=True`` the
    nested ``facts`` and ``answers`` are JSON strings (``json.loads`` turns them back).
    """
    return _load("entities.jsonl", "entities", data_dir, as_dataset)


def load_unanswerable(split, sources_dir=None):
    """Questions the knowledge base cannot answer, written by hand (chapter 07): ``split`` "dev"
    (to calibrate an abstention rule on) or "test" (to report it on; no place, topic or entity in
    common with dev). Dicts with id ("unanswerable/dev/3"), question and kind: "fictional" (a
    relation the knowledge base covers, about a place or element that does not exist), "outside"
    (knowledge outside its domain) or "missing_relation" (a real entity of that split, asked for a
    fact no passage states). From ``data/sources/unanswerable_<split>.tsv``."""
    if split not in ("dev", "test"):
        raise ValueError(f"unanswerable questions exist for the dev and test splits, not {split!r}")
    path = Path(sources_dir or SOURCES_DIR) / f"unanswerable_{split}.tsv"
    if not path.is_file():
        raise KnowledgeBaseError(f"{path} is missing: restore it from git (`git checkout -- {path}`)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or parts[0] not in UNANSWERABLE_KINDS or not parts[1].strip():
            raise KnowledgeBaseError(f"{path}: line {number} must be '<kind><TAB><question>' with a "
                                     f"kind among {', '.join(UNANSWERABLE_KINDS)}, got {line!r}; "
                                     f"restore the file from git (`git checkout -- {path}`)")
        rows.append({"id": f"unanswerable/{split}/{len(rows)}", "question": parts[1].strip(),
                     "kind": parts[0]})
    return rows
