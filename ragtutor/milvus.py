r"""The course's retrievers in a vector database: Milvus, on the retriever contract.

Chapters 01 and 02 keep their indexes in NumPy, SciPy and faiss, inside the notebook's process. A
deployed system keeps them in a database that many processes share and that survives a restart.
:class:`MilvusRetriever` stores the knowledge base in a Milvus collection and answers through the
same contract as every other retriever (:mod:`ragtutor.retrieval`)::

    with MilvusRetriever(encoder).fit(passages) as retriever:      # mode="dense"
        scores, ids = retriever.search(questions, k=5)              # [n_queries, k] each
        retriever.add(new_passages).delete(["FRA/capital"])
        retriever.upsert([{"id": "FRA/overview", "title": ..., "text": ...}])

    MilvusRetriever(mode="bm25").fit(passages)      # Milvus's own full-text search

Two modes, one row per passage (``id`` primary key, ``title``, ``text``) plus:

- ``mode="dense"``: the passage vector e(d) of a :class:`ragtutor.dense.BiEncoder`, in a
  ``FLOAT_VECTOR`` field searched by inner product, so that s(x, d) = q(x) · e(d) as in
  :class:`ragtutor.dense.DenseRetriever`. The default ``FLAT`` index is exact: both retrievers
  return the same passages with the same scores.
- ``mode="bm25"``: Milvus computes BM25 itself. ``content`` = title + " " + text (what
  :class:`ragtutor.sparse.BM25Retriever` indexes) is a ``VARCHAR`` field with an analyzer, and a
  BM25 ``Function`` turns it into the term counts of a sparse vector field, indexed by a
  ``SPARSE_INVERTED_INDEX`` with metric ``BM25``. Questions are sent as text; Milvus analyzes them
  the same way and scores

  .. math::
      s(q, d) = \sum_{t \in q}
                \ln\!\left(1 + \frac{N - \mathrm{df}(t) + 0.5}{\mathrm{df}(t) + 0.5}\right)
                \frac{\mathrm{tf}(t, d)\,(k_1 + 1)}
                     {\mathrm{tf}(t, d) + k_1 \left(1 - b + b\,\frac{|d|}{\mathrm{avgdl}}\right)}

  which is ``BM25Retriever(method="lucene")``'s formula. Only the words differ: with
  ``analyzer="standard"`` Milvus's analyzer splits the text (Milvus Lite: runs of ``\w``,
  lower-cased, accents kept, so "Bogotá" stays "bogotá"); with ``analyzer="ragtutor"`` the text
  and the questions are first tokenised by :func:`ragtutor.text.tokenize` and sent as those words
  joined by spaces, so that the scores are the course's own.

Where the database lives: ``uri=None`` opens Milvus Lite in a fresh temporary folder that
:meth:`MilvusRetriever.close` (or the end of a ``with`` block, or the object's garbage collection)
deletes; a path ending in ``.db`` is a Milvus Lite database that stays; ``http://host:19530`` is a
Milvus server. The client code is the same for all three.
"""
import math
import numbers
import re
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ragtutor.retrieval import (Retriever, check_texts, passage_text, unknown_to_tokenizer,
                                warn_unknown)
from ragtutor.text import tokenize

try:
    from pymilvus import DataType, Function, FunctionType, MilvusClient
except ImportError as error:  # an optional dependency: the rest of the package works without it
    raise ImportError("ragtutor.milvus needs pymilvus (and milvus-lite for a local database): "
                      "pip install pymilvus milvus-lite") from error

__all__ = ["MilvusRetriever", "milvus_string"]

MODES = ("dense", "bm25")
ANALYZERS = ("standard", "ragtutor")
# Milvus caps a VARCHAR at 65,535 bytes and a search at 16,384 results (limit) per query. Milvus
# Lite counts characters and has no cap: checking here keeps code that runs on Lite running on a
# server.
_MAX_VARCHAR = 65_535
_MAX_LIMIT = 16_384
# How many primary keys one delete expression names: long lists are cut into several deletes.
_DELETE_BATCH = 1_000
_COLLECTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def milvus_string(value):
    """``value`` as a double-quoted string literal of Milvus's filter expressions.

    Backslashes, double quotes and line breaks are escaped, so that the literal ends where it
    should: ``'x" or id != "'`` becomes ``"x\\" or id != \\""``, one string, not a second
    condition. (pymilvus's ``delete(ids=...)`` wraps each id in single quotes without escaping
    them, and Milvus Lite ignores ``filter_params``: neither is safe for arbitrary ids.)
    """
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}: {value!r}")
    return '"' + value.translate(_ESCAPES) + '"'


def _key(doc_id):
    """The primary key of a passage id: the id itself, or its decimal digits for an integer id
    (bare documents' positions, or integer ids of passage records)."""
    return doc_id if isinstance(doc_id, str) else str(int(doc_id))


def _add_index(index, field, index_type, metric, params):
    """Add to ``index`` (pymilvus ``IndexParams``) an index of ``field`` with build ``params``.

    The params go nested, as one JSON value under the key "params" (the form older clients sent
    and Milvus servers still read), not one key each: pymilvus 3 sends them one key each, and
    Milvus Lite 3.2 reads only the nested form, silently building with its defaults otherwise
    (BM25 with k1 = 1.5 instead of the 1.2 asked for)."""
    index.add_index(field_name=field, index_type=index_type, metric_type=metric,
                    params={"params": dict(params)})


def _close(client, uri, folder):
    """Close ``client``; for a temporary Milvus Lite database, stop its server and delete it.
    Takes no retriever, so that ``weakref.finalize`` can call it after the retriever is gone."""
    client.close()
    if folder is not None:
        # The Milvus Lite server of a .db path runs in this process's threads until released.
        from milvus_lite.server_manager import server_manager_instance
        server_manager_instance.release_server(uri)
        shutil.rmtree(folder, ignore_errors=True)


class MilvusRetriever(Retriever):
    """Passages in a Milvus collection, searched by dense vectors or by Milvus's BM25.

    Parameters (stored as given, checked by :meth:`fit`):

    - ``encoder``: a :class:`ragtutor.dense.BiEncoder`, needed by ``mode="dense"`` (and refused by
      ``"bm25"``, which has no use for it). Passages are encoded as it is when they are indexed.
    - ``mode``: ``"dense"`` or ``"bm25"`` (module docstring).
    - ``uri``: None (Milvus Lite in a temporary folder, deleted by :meth:`close`), a path ending in
      ``.db`` (Milvus Lite, kept) or a server's address such as ``"http://localhost:19530"``.
    - ``collection``: the collection's name. :meth:`fit` drops and recreates it, so two retrievers
      sharing a ``uri`` need different names.
    - ``batch_size``: passages encoded and inserted, and questions searched, per call.
    - ``index_params`` / ``search_params`` (dense): the Milvus index, a dict with ``index_type``
      and ``params`` (default: ``{"index_type": "FLAT"}``, exact), and the search-time parameters
      of an approximate one (``{"ef": 64}`` for HNSW, ``{"nprobe": 8}`` for IVF). The metric is
      always ``IP``, the course's dot product.
    - ``analyzer`` (bm25): ``"standard"`` (Milvus's analyzer), ``"ragtutor"`` (the course's
      tokeniser, then Milvus's) or a dict of Milvus ``analyzer_params``.
    - ``k1``, ``b`` (bm25): BM25's term saturation and length normalisation, as in
      :class:`ragtutor.sparse.BM25Retriever` (whose defaults these are; Milvus Lite's own default
      k1 is 1.5). Milvus Lite wants k1 > 0 and b in [0, 1].

    Documents: passage records (``id``, ``title``, ``text``) or, as for the course's other
    retrievers, bare documents: title/text pairs or strings (dense), strings or token lists
    (bm25; a token list is joined by spaces and analyzed again). The primary key is a ``VARCHAR``:
    the passage id, or the decimal digits of an integer id (a bare document's position), so one
    index cannot hold both 5 and "5".

    Search answers ``(scores, ids)``, both ``[n_queries, k]``, best first, scores as Milvus
    computed them (float32); equal scores are ordered by row, as :func:`ragtutor.retrieval.top_k`
    orders them, asking Milvus for more results until no tie straddles the k-th place. Milvus
    returns only the passages that share a word with a BM25 query: the others follow with score 0,
    lowest rows first, like ``BM25Retriever``'s.

    Learned state: ``client_`` (the ``pymilvus.MilvusClient``), ``uri_`` (the database it talks
    to), ``doc_ids_``, ``n_docs_``. Edits are written with ``Strong`` consistency and not flushed:
    the next search sees them (Milvus searches unflushed data), and Milvus Lite keeps one BM25
    statistic (N, df, avgdl) over the live rows, so an edited index scores exactly as a fresh fit
    (flushed segments would each keep their own, deleted rows included).
    """

    _name = "MilvusRetriever"

    def __init__(self, encoder=None, mode="dense", uri=None, collection="ragtutor",
                 batch_size=256, index_params=None, search_params=None, analyzer="standard",
                 k1=1.2, b=0.75):
        self.encoder = encoder
        self.mode = mode
        self.uri = uri
        self.collection = collection
        self.batch_size = batch_size
        self.index_params = index_params
        self.search_params = search_params
        self.analyzer = analyzer
        self.k1 = k1
        self.b = b

    # -- the contract ---------------------------------------------------------------------------
    def fit(self, corpus):
        """Drop the collection, create it again and insert ``corpus`` (passage records or bare
        documents). Returns ``self``."""
        return super().fit(corpus)

    def _fit(self, corpus):
        self._check_params()
        records = isinstance(corpus[0], Mapping)
        doc_ids = [d["id"] for d in corpus] if records else list(range(len(corpus)))
        rows = self._rows(corpus, doc_ids, known=set())
        self._connect()
        if self.client_.has_collection(self.collection):
            self.client_.drop_collection(self.collection)
        try:
            self._create_collection(len(rows[0]["vector"]) if self.mode == "dense" else None)
            self._insert(rows)
        except BaseException:
            # The old collection is gone: the retriever must not answer with its ids.
            self.__dict__.pop("doc_ids_", None)
            raise

    def _add(self, documents):
        if self._records:
            doc_ids = [d["id"] for d in documents]
        else:  # the positions that the base class gives bare documents: the next ones
            start = int(self.doc_ids_.max()) + 1
            doc_ids = list(range(start, start + len(documents)))
        rows = self._rows(documents, doc_ids, known={_key(i) for i in self.doc_ids_.tolist()})
        try:
            self._insert(rows)
        except BaseException:
            # A half-done insert would leave rows that doc_ids_ does not know: take them out.
            self._delete_keys([row["id"] for row in rows])
            raise

    def _delete(self, rows):
        self._delete_keys([_key(doc_id) for doc_id in self.doc_ids_[rows].tolist()])

    def upsert(self, records):
        """Replace the passages whose ids are in the index and add the others; returns ``self``.

        Milvus's own upsert, by primary key (``batch_size`` passages a call, each call atomic in
        Milvus, the whole not): a replaced passage keeps its row, so the
        index is then the one a fresh fit gives on the corpus with those passages replaced in
        place, new ones at the end. Only for an index of passage records, which have ids.
        """
        self._check_fitted()
        self._check_params()
        records = self._check_documents(records, "records")
        if not self._records or not isinstance(records[0], Mapping):
            raise TypeError("upsert() replaces passages by id: it needs passage records (dicts "
                            "with 'id', 'title', 'text') and an index fitted on them; use add() "
                            "and delete() for bare documents")
        self._check_new_ids(records, known=())  # an id given twice is refused, a known one not
        indexed = set(self.doc_ids_.tolist())
        doc_ids = [record["id"] for record in records]
        rows = self._rows(records, doc_ids, known={_key(i) for i in indexed - set(doc_ids)})
        fresh = [doc_id for doc_id in doc_ids if doc_id not in indexed]
        try:
            for start in range(0, len(rows), self.batch_size):
                self.client_.upsert(self.collection, rows[start:start + self.batch_size])
        except BaseException:
            # Passages replaced before the failure stay replaced; new ones must not linger.
            self._delete_keys([_key(doc_id) for doc_id in fresh])
            raise
        added = np.empty(len(fresh), dtype=object)
        added[:] = fresh
        self.doc_ids_ = np.concatenate([self.doc_ids_, added])
        return self

    def _scores_rows(self, queries, k):
        self._check_params()
        if k > _MAX_LIMIT:
            raise ValueError(f"k={k} is more than the {_MAX_LIMIT} results that Milvus returns "
                             "for one query: ask for fewer")
        data = self._queries(queries)
        row_of = {_key(doc_id): row for row, doc_id in enumerate(self.doc_ids_.tolist())}
        scores = np.zeros((len(queries), k), dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        unmatched = []
        for start in range(0, len(data), self.batch_size):
            for i, ranked in enumerate(self._ranked(data[start:start + self.batch_size], k,
                                                    row_of), start=start):
                if len(ranked) < k:
                    if self.mode == "dense":
                        raise ValueError(f"Milvus found {len(ranked)} of the k={k} passages asked "
                                         f"for queries[{i}]: its approximate index gave up early; "
                                         "raise search_params (ef, nprobe)")
                    if not ranked:
                        unmatched.append(i)
                    # Passages that share no word with the query score 0, lowest rows first.
                    taken = {row for _, row in ranked}
                    rest = (row for row in range(len(row_of)) if row not in taken)
                    ranked = ranked + [(0.0, row) for _, row in zip(range(k - len(ranked)), rest)]
                scores[i], rows[i] = zip(*ranked[:k])
        warn_unknown(queries, unmatched, f"this {self._name}'s corpus")
        return scores, rows

    # -- resources ------------------------------------------------------------------------------
    def close(self):
        """Close the connection; a temporary Milvus Lite database is deleted. The retriever is
        then unfitted (``fit`` opens a new database). Safe to call twice."""
        finalizer = self.__dict__.pop("_finalizer", None)
        if finalizer is not None:
            finalizer()
        for name in ("client_", "uri_", "doc_ids_"):
            self.__dict__.pop(name, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- inside ---------------------------------------------------------------------------------
    def _check_params(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: choose one of {MODES}")
        if self.mode == "dense" and self.encoder is None:
            raise ValueError("mode='dense' indexes passage vectors: pass encoder=, a "
                             "ragtutor.dense.BiEncoder (or use mode='bm25', which needs none)")
        if self.mode == "bm25" and self.encoder is not None:
            raise ValueError("mode='bm25' lets Milvus score words and does not use an encoder: "
                             "pass encoder=None, or mode='dense' to search by its vectors")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not isinstance(self.collection, str) or not _COLLECTION_NAME.fullmatch(self.collection):
            raise ValueError(f"collection must be a Milvus collection name (a letter or _, then "
                             f"letters, digits or _, at most 255), got {self.collection!r}")
        if self.uri is not None and not isinstance(self.uri, (str, Path)):
            raise TypeError(f"uri must be None, a path ending in .db or a server address, got "
                            f"{type(self.uri).__name__}: {self.uri!r}")
        for name in ("index_params", "search_params"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{name} must be None or a dict, got {getattr(self, name)!r}")
        if self.index_params is not None and \
                self.index_params.get("metric_type", "IP").upper() != "IP":
            raise ValueError(f"index_params has metric_type={self.index_params['metric_type']!r}: "
                             "the course's dense score is the dot product, metric 'IP'")
        if self.mode == "bm25":
            if not (self.analyzer in ANALYZERS or isinstance(self.analyzer, Mapping)):
                raise ValueError(f"analyzer must be one of {ANALYZERS} or a dict of Milvus "
                                 f"analyzer_params, got {self.analyzer!r}")
            for name, value in (("k1", self.k1), ("b", self.b)):
                if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                        or not math.isfinite(value):
                    raise ValueError(f"{name} must be a finite number, got {value!r}")
            if self.k1 <= 0 or not 0 <= self.b <= 1:
                raise ValueError(f"Milvus's BM25 needs k1 > 0 and b in [0, 1], got k1={self.k1}, "
                                 f"b={self.b}")

    def _connect(self):
        """Open the database once: a later fit reuses it (and its temporary folder), unless
        ``uri`` was changed since."""
        if hasattr(self, "client_"):
            if self._opened_for == self.uri:
                return
            self.close()
        folder = None
        if self.uri is None:
            folder = tempfile.mkdtemp(prefix="ragtutor-milvus-")
            uri = str(Path(folder) / "milvus.db")
        else:
            uri = str(self.uri)
        client = MilvusClient(uri=uri)
        self.client_, self.uri_, self._opened_for = client, uri, self.uri
        self._finalizer = weakref.finalize(self, _close, client, uri, folder)

    def _create_collection(self, dim):
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_MAX_VARCHAR)
        schema.add_field("title", DataType.VARCHAR, max_length=_MAX_VARCHAR)
        schema.add_field("text", DataType.VARCHAR, max_length=_MAX_VARCHAR)
        index = MilvusClient.prepare_index_params()
        if self.mode == "dense":
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            settings = dict(self.index_params or {})
            _add_index(index, "vector", settings.get("index_type", "FLAT"), "IP",
                       settings.get("params", {}))
        else:
            analyzer = dict(self.analyzer) if isinstance(self.analyzer, Mapping) \
                else {"type": "standard"}
            schema.add_field("content", DataType.VARCHAR, max_length=_MAX_VARCHAR,
                             enable_analyzer=True, analyzer_params=analyzer)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                         input_field_names=["content"],
                                         output_field_names=["sparse"]))
            _add_index(index, "sparse", "SPARSE_INVERTED_INDEX", "BM25",
                       {"bm25_k1": float(self.k1), "bm25_b": float(self.b)})
        # Strong: a search waits for every write before it, so an edit is seen at once.
        self.client_.create_collection(self.collection, schema=schema, index_params=index,
                                       consistency_level="Strong")

    def _rows(self, documents, doc_ids, known):
        """The rows to insert for ``documents`` with ids ``doc_ids``, after checking that each
        fits Milvus (keys unique among themselves and ``known``, strings within 65,535 bytes).
        Dense rows carry their vectors, encoded here."""
        keys = [_key(doc_id) for doc_id in doc_ids]
        seen = set(known)
        for doc_id, key in zip(doc_ids, keys):
            if key in seen:
                raise ValueError(f"passage id {doc_id!r} has the primary key {key!r}, which "
                                 "another id in the index has too (an integer and its digits, "
                                 "like 5 and '5'): give one of them another id")
            seen.add(key)
        rows = []
        for i, (document, key) in enumerate(zip(documents, keys)):
            title, text = self._title_text(document, i)
            row = {"id": key, "title": title, "text": text}
            if self.mode == "bm25":
                row["content"] = self._content(document)
            for name, value in row.items():
                if len(value.encode("utf-8")) > _MAX_VARCHAR:
                    raise ValueError(f"documents[{i}] ({key!r}): its {name} is "
                                     f"{len(value.encode('utf-8'))} bytes long, more than a "
                                     f"Milvus VARCHAR holds ({_MAX_VARCHAR}): split the passage")
            rows.append(row)
        if self.mode == "dense":
            vectors = self.encoder.encode_passages(
                [(row["title"], row["text"]) for row in rows], self.batch_size)
            for row, vector in zip(rows, vectors):
                row["vector"] = vector
        return rows

    def _content(self, document):
        """What Milvus analyzes: title + " " + text, a string, or a token list's words."""
        if isinstance(document, (Mapping, str)):
            content = passage_text(document) if isinstance(document, Mapping) else document
            return " ".join(tokenize(content)) if self.analyzer == "ragtutor" else content
        return " ".join(document)  # a token list is used as given, as BM25Retriever does

    def _title_text(self, document, i):
        """(title, text) of a passage record, a title/text pair, a string or a token list."""
        if isinstance(document, Mapping):
            return document["title"], document["text"]
        if isinstance(document, str):
            return "", document
        if self.mode == "dense" and isinstance(document, (tuple, list)) and len(document) == 2 \
                and all(isinstance(s, str) for s in document):
            return tuple(document)
        if self.mode == "bm25" and isinstance(document, (tuple, list)) \
                and all(isinstance(s, str) for s in document):
            return "", " ".join(document)
        kinds = "(title, text) pairs or strings" if self.mode == "dense" else \
            "strings or token lists"
        raise TypeError(f"documents[{i}] must be a passage record, or one of the {kinds} that "
                        f"mode={self.mode!r} indexes, got {type(document).__name__}: "
                        f"{document!r}"[:300])

    def _insert(self, rows):
        for start in range(0, len(rows), self.batch_size):
            self.client_.insert(self.collection, rows[start:start + self.batch_size])

    def _delete_keys(self, keys):
        for start in range(0, len(keys), _DELETE_BATCH):
            chosen = ", ".join(milvus_string(key) for key in keys[start:start + _DELETE_BATCH])
            self.client_.delete(self.collection, filter=f"id in [{chosen}]")

    def _queries(self, queries):
        """What Milvus is asked: question vectors (dense) or question texts (bm25)."""
        if self.mode == "dense":
            queries = check_texts(queries, "queries")
            warn_unknown(queries, unknown_to_tokenizer(self.encoder.tokenizer, queries),
                         "the question encoder")
            return self.encoder.encode_questions(queries, self.batch_size)
        texts = []
        for i, query in enumerate(queries):
            if isinstance(query, (list, tuple)) and all(isinstance(w, str) for w in query):
                texts.append(" ".join(query))
            elif isinstance(query, str):
                texts.append(" ".join(tokenize(query)) if self.analyzer == "ragtutor" else query)
            else:
                raise TypeError(f"queries[{i}] must be a string or a list of string tokens, got "
                                f"{type(query).__name__}: {query!r}")
        return texts

    def _ranked(self, data, k, row_of):
        """For each query of ``data``, its (score, row) pairs best first, ties by row: Milvus's
        top results, asked again with a larger limit while the last one returned ties with the
        k-th (passages past the limit could tie with it too, and then the lowest rows win)."""
        n = len(row_of)
        limit = min(k + 1, n, _MAX_LIMIT)
        ranked = [None] * len(data)
        todo = list(range(len(data)))
        while todo:
            hits = self._search([data[i] for i in todo], limit)
            again = []
            for i, found in zip(todo, hits):
                ranked[i] = sorted(((self._score(hit["distance"]), row_of[hit["id"]])
                                    for hit in found), key=lambda pair: (-pair[0], pair[1]))
                if len(found) == limit > k and ranked[i][-1][0] == ranked[i][k - 1][0] \
                        and limit < min(n, _MAX_LIMIT):
                    again.append(i)
            todo, limit = again, min(2 * limit, n, _MAX_LIMIT)
        return ranked

    def _search(self, data, limit):
        if self.mode == "dense":
            return self.client_.search(
                self.collection, data=data, anns_field="vector", limit=limit,
                output_fields=["id"],
                search_params={"metric_type": "IP", "params": dict(self.search_params or {})})
        return self.client_.search(self.collection, data=data, anns_field="sparse", limit=limit,
                                   output_fields=["id"], search_params={"metric_type": "BM25"})

    def _score(self, distance):
        # A Milvus server reports a BM25 match's score as its "distance"; Milvus Lite 3.2 reports
        # minus the score. BM25 scores are positive, so the score is |distance| either way.
        return abs(distance) if self.mode == "bm25" else distance
