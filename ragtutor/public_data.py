"""Real public question-answering and retrieval data, for the optional online section of chapter 10.

The knowledge base (:mod:`ragtutor.data`) is small and built offline; this module brings three
public data sets into the course's record shapes, so that the same retrievers and metrics run
on real data::

    passages, questions = load_squad(limit=200)            # SQuAD v1.1, validation split
    questions = load_nq_open(limit=200)                    # Natural Questions (open): no passages
    passages, queries, qrels = load_beir("scifact", limit=100)
    evaluate_beir(BM25Retriever(), passages, queries, qrels, k=10)

A passage is ``{"id", "title", "text"}``; a SQuAD question ``{"id", "question", "answers",
"passage_id"}``, as the knowledge base's; an NQ-open question has no ``passage_id``; a BEIR query
is ``{"id", "question"}`` and ``qrels`` maps its id to ``{passage_id: score}`` (graded; 0 = judged
not relevant). ``limit`` keeps the first questions or queries, and the passages are cut to match:
every passage a kept question needs, in source order, plus ``distractors`` others (None: all).

**Where the rows come from.** From the Hugging Face Hub through ``datasets.load_dataset``, which
needs the network. In offline mode (``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` set, as in every
test run) the Hub is not asked at all, not even its local cache, so that a notebook behaves the
same on every machine. Offline mode, or a download that fails for lack of network, raises
:class:`PublicDataUnavailable`: there is no silent substitute. Every loader also reads local JSON
Lines files of the Hub's rows (``files=``), as ``Dataset.to_json(path)`` writes them.

**The schemas expected** (each row is checked; a bad one raises ValueError naming its file and
line, or its Hub row, and what is wrong):

    rajpurkar/squad, split "validation"              id, title, context, question,
                                                     answers {"text": [str], "answer_start": [int]}
    google-research-datasets/nq_open, "validation"   question, answer [str]
    BeIR/<name>, config "corpus", split "corpus"     _id, title, text
    BeIR/<name>, config "queries", split "queries"   _id, text (other fields are ignored)
    BeIR/<name>-qrels, split "test"                  query-id, corpus-id, score

BEIR's ids are strings in the corpus and integers in some qrels: all become strings. BEIR's own
unzipped folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) is read too.
"""
import csv
import json
import math
import numbers
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from ragtutor.metrics import retrieval_scores
from ragtutor.retrieval import check_k

__all__ = ["PublicDataUnavailable", "OFFLINE_VARIABLES", "load_squad", "load_nq_open",
           "load_beir", "evaluate_beir"]

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}  # the values huggingface_hub reads as "set"
# Exceptions that mean "the network could not be reached", by module; a module that was never
# imported cannot have raised one, so none is imported here.
_NETWORK_ERRORS = (("httpx", "TransportError"), ("requests.exceptions", "ConnectionError"),
                   ("requests.exceptions", "Timeout"), ("aiohttp", "ClientConnectionError"),
                   ("huggingface_hub.errors", "LocalEntryNotFoundError"))


class PublicDataUnavailable(RuntimeError):
    """Public data was asked for while the network is off or unreachable; the message says what
    to do instead, and that the section that uses it is optional."""


# -- where the rows come from --------------------------------------------------------------------
def _network_failure(err):
    """True when ``err``, or an exception it was raised from, says the network was unreachable."""
    kinds = [ConnectionError, TimeoutError, socket.gaierror]
    kinds += [k for k in (getattr(sys.modules.get(m), n, None) for m, n in _NETWORK_ERRORS)
              if isinstance(k, type)]
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, tuple(kinds)):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _hub(path, config, split, save):
    """The rows of one Hub split as (where, row) pairs, or PublicDataUnavailable."""
    what = path + (f" (config {config!r})" if config else "") + f", split {split!r}"
    offline = [v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().upper() in _TRUE]
    reason, cause = f"{' and '.join(offline)} is set (offline mode), so the Hub was not asked", None
    if not offline:
        import datasets  # only here: offline use never imports it

        try:
            rows = datasets.load_dataset(path, config, split=split)
            return ((f"{what}, row {i}", row) for i, row in enumerate(rows, 1))
        except Exception as err:
            if not _network_failure(err):
                raise
            reason, cause = f"the download failed ({type(err).__name__}: {err})", err
    raise PublicDataUnavailable(
        f"{what} could not be loaded: {reason}. This public data set comes from the Hugging Face "
        f"Hub, so loading it needs the network. To get it, run this once with the network on (and "
        f"{' and '.join(OFFLINE_VARIABLES)} unset); or, on a machine with the network, save its "
        f"rows as JSON Lines with {save} and pass the file(s) here with files=. This section of "
        "chapter 10 is optional: skip it if you are offline, the rest of the course needs no "
        "network.") from cause


def _lines(path, tsv=False):
    """The rows of a JSON Lines file (or of BEIR's qrels .tsv, with its header) as (where, row)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a file of the Hub's rows (the "
                                "schemas are in ragtutor.public_data's docstring)")
    with path.open(encoding="utf-8", newline="" if tsv else None) as lines:
        if tsv:
            yield from ((f"{path} line {n}", row)
                        for n, row in enumerate(csv.DictReader(lines, delimiter="\t"), 2))
            return
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {n} is not a JSON object: write one row per line")
            yield f"{path} line {n}", row


# -- checks --------------------------------------------------------------------------------------
def _count(value, name, minimum):
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                              or value < minimum):
        raise ValueError(f"{name} must be None or a whole number >= {minimum}, got {value!r}")
    return value


def _fields(where, row, fields, kind):
    missing = [f for f in fields if f not in row]
    if missing:
        raise ValueError(f"{where} lacks the field(s) {', '.join(missing)}: a {kind} row has "
                         f"{', '.join(fields)}")


def _text(where, row, field, empty_ok=False):
    value = row[field]
    if not isinstance(value, str) or not (empty_ok or value.strip()):
        raise ValueError(f"{where}: {field} must be a {'' if empty_ok else 'non-empty '}string, "
                         f"got {value!r}")
    return value


def _id(where, row, field, seen=None):
    """``row[field]`` as a string id; with ``seen`` (id -> where), also checked to be new."""
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)) \
            or not str(value).strip():
        raise ValueError(f"{where}: {field} must be a non-empty string or an integer, got "
                         f"{value!r}")
    if seen is not None:
        if str(value) in seen:
            raise ValueError(f"{where} repeats the {field} {str(value)!r} of {seen[str(value)]}")
        seen[str(value)] = where
    return str(value)


def _answers(where, texts, field):
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip()
                                                           for t in texts):
        raise ValueError(f"{where}: {field} must be a non-empty list of non-empty strings, got "
                         f"{texts!r}")
    return list(dict.fromkeys(texts))  # without repeats, in their order


def _score(where, value):
    try:
        score = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        score = math.nan
    if not (math.isfinite(score) and score >= 0):
        raise ValueError(f"{where}: score must be a non-negative number, got {value!r}")
    return int(score) if score.is_integer() else score


def _keep(passages, needed, distractors):
    """The passages that ``needed`` names plus the first ``distractors`` others (None: all)."""
    kept, extra = [], 0
    for passage in passages:
        if passage["id"] not in needed:
            if distractors is not None and extra == distractors:
                continue
            extra += 1
        kept.append(passage)
    return kept


# -- the loaders ---------------------------------------------------------------------------------
def load_squad(limit=None, split="validation", files=None, distractors=0):
    """SQuAD v1.1 (Rajpurkar et al., 2016): ``(passages, questions)``.

    Passages are the split's distinct contexts, with ids ``"<title>/<n>"`` (the article's n-th
    context, from 0). Questions keep SQuAD's ids; ``answers`` are the annotators' answers without
    repeats. ``limit``: the first questions only; ``distractors``: how many contexts that no kept
    question needs to keep as well (None: all). ``files``: a JSON Lines file of the Hub's rows.
    """
    limit, distractors = _count(limit, "limit", 1), _count(distractors, "distractors", 0)
    save = f"datasets.load_dataset('rajpurkar/squad', split={split!r}).to_json('squad.jsonl')"
    rows = _lines(files) if files is not None else _hub("rajpurkar/squad", None, split, save)
    passages, context_ids, per_title, questions, seen = [], {}, {}, [], {}
    for where, row in rows:
        full = limit is not None and len(questions) == limit
        if full and distractors == 0:
            break
        _fields(where, row, ("id", "title", "context", "question", "answers"), "SQuAD")
        title, context = _text(where, row, "title"), row["context"]
        if not isinstance(context, str) or not context.strip():
            raise ValueError(f"{where}: question {row['id']!r} has no passage (its context is "
                             f"{context!r})")
        if (title, context) not in context_ids:
            context_ids[title, context] = f"{title}/{per_title.get(title, 0)}"
            per_title[title] = per_title.get(title, 0) + 1
            passages.append({"id": context_ids[title, context], "title": title, "text": context})
        if not full:
            answers = row["answers"].get("text") if isinstance(row["answers"], Mapping) else None
            questions.append({"id": _id(where, row, "id", seen),
                              "question": _text(where, row, "question"),
                              "answers": _answers(where, answers, "answers['text']"),
                              "passage_id": context_ids[title, context]})
    if not questions:
        raise ValueError(f"no SQuAD rows were found in {files or 'the Hub split'}")
    return _keep(passages, {q["passage_id"] for q in questions}, distractors), questions


def load_nq_open(limit=None, split="validation", files=None):
    """Natural Questions, open-domain version (Lee et al., 2019): a list of questions with ``id``
    (``"nq_open/<split>/<row>"``, from 0), ``question`` and ``answers``, and no passages (retrieve
    them from a corpus of your own). ``limit``: the first questions only; ``files``: a JSON Lines
    file of the Hub's rows."""
    limit = _count(limit, "limit", 1)
    save = (f"datasets.load_dataset('google-research-datasets/nq_open', split={split!r})"
            ".to_json('nq_open.jsonl')")
    rows = (_lines(files) if files is not None
            else _hub("google-research-datasets/nq_open", None, split, save))
    questions = []
    for where, row in rows:
        if limit is not None and len(questions) == limit:
            break
        _fields(where, row, ("question", "answer"), "NQ-open")
        questions.append({"id": f"nq_open/{split}/{len(questions)}",
                          "question": _text(where, row, "question"),
                          "answers": _answers(where, row["answer"], "answer")})
    if not questions:
        raise ValueError(f"no NQ-open rows were found in {files or 'the Hub split'}")
    return questions


def _beir_rows(name, split, files):
    """The (corpus, queries, qrels) rows of a BEIR data set: from the Hub, files or a folder."""
    if files is None:
        save = (f"datasets.load_dataset('BeIR/{name}', 'corpus', split='corpus').to_json("
                "'corpus.jsonl'), the same for 'queries', and datasets.load_dataset("
                f"'BeIR/{name}-qrels', split={split!r}).to_json('qrels.jsonl')")
        return (_hub(f"BeIR/{name}", "corpus", "corpus", save),
                _hub(f"BeIR/{name}", "queries", "queries", save),
                _hub(f"BeIR/{name}-qrels", None, split, save))
    if isinstance(files, Mapping) and all(key in files for key in ("corpus", "queries", "qrels")):
        paths = [Path(files[key]) for key in ("corpus", "queries", "qrels")]
    elif isinstance(files, (str, os.PathLike)) and Path(files).is_dir():
        qrels = Path(files) / "qrels" / f"{split}.tsv"
        paths = [Path(files) / "corpus.jsonl", Path(files) / "queries.jsonl",
                 qrels if qrels.is_file() else qrels.with_suffix(".jsonl")]
    else:
        raise ValueError(f"files must be {{'corpus': path, 'queries': path, 'qrels': path}} or "
                         f"BEIR's unzipped folder, got {files!r}")
    return _lines(paths[0]), _lines(paths[1]), _lines(paths[2], tsv=paths[2].suffix == ".tsv")


def load_beir(name="scifact", limit=None, split="test", files=None, distractors=None):
    """One BEIR data set (Thakur et al., 2021): ``(passages, queries, qrels)``.

    The queries are those with a relevant passage (a positive score) in the ``split``'s qrels, in
    the queries' order; ``limit`` keeps the first. ``qrels`` holds every judgment of the kept
    queries and ``passages`` every passage they judge, plus ``distractors`` others in corpus order
    (None, the default: the whole corpus, which BEIR's scores assume). ``files``: ``{"corpus":
    path, "queries": path, "qrels": path}`` (JSON Lines of the Hub's rows; qrels may be BEIR's
    ``.tsv``), or BEIR's unzipped folder.
    """
    limit, distractors = _count(limit, "limit", 1), _count(distractors, "distractors", 0)
    corpus_rows, query_rows, qrel_rows = _beir_rows(name, split, files)
    passages, corpus_ids, queries, query_ids, judged = [], {}, [], {}, {}
    for where, row in corpus_rows:
        _fields(where, row, ("_id", "title", "text"), "BEIR corpus")
        passages.append({"id": _id(where, row, "_id", corpus_ids),
                         "title": _text(where, row, "title", empty_ok=True),
                         "text": _text(where, row, "text", empty_ok=True)})
    for where, row in query_rows:
        _fields(where, row, ("_id", "text"), "BEIR queries")
        queries.append({"id": _id(where, row, "_id", query_ids),
                        "question": _text(where, row, "text")})
    for where, row in qrel_rows:
        _fields(where, row, ("query-id", "corpus-id", "score"), "BEIR qrels")
        qid, pid = _id(where, row, "query-id"), _id(where, row, "corpus-id")
        for value, known, what in ((qid, query_ids, "queries"), (pid, corpus_ids, "corpus")):
            if value not in known:
                raise ValueError(f"{where}: id {value!r} is not in the {what} (no _id {value!r})")
        if pid in judged.setdefault(qid, {}):
            raise ValueError(f"{where} judges passage {pid!r} for query {qid!r} a second time")
        judged[qid][pid] = _score(where, row["score"])
    kept = [q for q in queries if any(s > 0 for s in judged.get(q["id"], {}).values())][:limit]
    if not kept:
        raise ValueError(f"no query has a relevant passage (a positive score) in the {split!r} "
                         "qrels: check the split and the files")
    qrels = {q["id"]: judged[q["id"]] for q in kept}
    return _keep(passages, {pid for s in qrels.values() for pid in s}, distractors), kept, qrels


# -- evaluation ----------------------------------------------------------------------------------
def evaluate_beir(retriever, passages, queries, qrels, k=10):
    """Recall@k and nDCG@10 of ``retriever``, averaged over ``queries``:
    ``{"recall@<k>": ..., "ndcg@10": ..., "n": number of queries}``.

    A ``retriever`` that is not fitted yet is fitted on ``passages`` (the only fitting done here);
    a fitted one must index exactly these passages. Each query is searched once, to depth
    max(k, 10) (at most the number of passages); recall counts the passages with a positive score
    as relevant, nDCG uses the graded scores (:func:`ragtutor.metrics.retrieval_scores`).
    """
    passages, queries = list(passages), list(queries)
    if not passages or not queries:
        raise ValueError("passages and queries must both be non-empty lists of records")
    k = check_k(k, len(passages), "the passages", "passages")
    known = {p["id"] for p in passages}
    fix = "pass the passages, queries and qrels that one load_beir call returned"
    for query in queries:
        grades = qrels.get(query["id"])
        if not grades:
            raise ValueError(f"query {query['id']!r} has no qrels: {fix}")
        unknown = [pid for pid in grades if pid not in known]
        if unknown:
            raise ValueError(f"the qrels of query {query['id']!r} name passage {unknown[0]!r}, "
                             f"which is not among the passages: {fix}")
    if getattr(retriever, "doc_ids_", None) is None:
        retriever.fit(passages)
    elif set(list(retriever.doc_ids_)) != known:
        raise ValueError("the retriever is fitted on other documents than these passages: pass "
                         "an unfitted retriever (evaluate_beir fits it) or fit it on the passages")
    _, ids = retriever.search([q["question"] for q in queries], min(max(k, 10), len(passages)))
    row = retrieval_scores([list(r) for r in ids], [qrels[q["id"]] for q in queries], ks=(k,),
                           ndcg_k=10)
    return {f"recall@{k}": row[f"recall@{k}"], "ndcg@10": row["ndcg@10"], "n": row["n"]}
