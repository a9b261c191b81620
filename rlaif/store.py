"""SQLite run store (WAL): prompts, candidates, judgements, labels, the
judge-call cache and stage records.

WAL mode lets a reader (the viewer, `rlaif show`) and a writer (a judge run)
share the file. Every batch is committed before the next starts, so a kill
loses at most the batch in flight.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlaif.errors import RlaifError
from rlaif.hashing import canonical_json
from rlaif.judges.details import PairDetails
from rlaif.records import Candidate, Prompt
from rlaif.store_labels import IN_CHUNK as _IN_CHUNK
from rlaif.store_labels import LabelQueries, is_busy  # noqa: F401 - is_busy: for the store's callers
from rlaif.store_queue import LABELLED_SQL, PAIR_COLS, PAIR_SELECT, QueueQueries, pair_record, review_columns, sql_functions

SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    id TEXT PRIMARY KEY, text TEXT NOT NULL, category TEXT, split TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id TEXT PRIMARY KEY, prompt_id TEXT NOT NULL, idx INTEGER NOT NULL, text TEXT NOT NULL,
    policy_hash TEXT NOT NULL, gen_hash TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS candidates_gen ON candidates(gen_hash, prompt_id);
CREATE TABLE IF NOT EXISTS judgements (
    judge_hash TEXT NOT NULL, candidate_id TEXT NOT NULL, principle_id TEXT NOT NULL,
    principle_hash TEXT NOT NULL, score REAL, status TEXT NOT NULL, raw TEXT,
    PRIMARY KEY (judge_hash, candidate_id, principle_id)
);
CREATE TABLE IF NOT EXISTS ai_pairs (
    judge_hash TEXT NOT NULL, prompt_id TEXT NOT NULL, chosen_id TEXT NOT NULL, rejected_id TEXT NOT NULL,
    confidence REAL NOT NULL, status TEXT NOT NULL, details TEXT NOT NULL,
    pair_key TEXT, inconsistent INTEGER NOT NULL DEFAULT 0, n_disagree INTEGER NOT NULL DEFAULT 0,
    principle_ids TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (judge_hash, prompt_id, chosen_id, rejected_id)
);
CREATE TABLE IF NOT EXISTS judge_sets (
    judge_hash TEXT PRIMARY KEY, constitution_hash TEXT NOT NULL, gen_hash TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS human_labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pair_key TEXT NOT NULL, prompt TEXT NOT NULL,
    chosen TEXT NOT NULL, rejected TEXT NOT NULL, label TEXT NOT NULL, source TEXT NOT NULL,
    annotator TEXT, note TEXT, created_at REAL NOT NULL, UNIQUE (pair_key, source)
);
CREATE TABLE IF NOT EXISTS human_feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, feedback_key TEXT NOT NULL, prompt TEXT NOT NULL,
    completion TEXT NOT NULL, kind TEXT NOT NULL, value INTEGER NOT NULL, scale INTEGER NOT NULL,
    source TEXT NOT NULL, annotator TEXT, comment TEXT, created_at REAL NOT NULL, UNIQUE (feedback_key, source)
);
CREATE TABLE IF NOT EXISTS judge_cache (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stages (
    name TEXT PRIMARY KEY, input_hash TEXT NOT NULL, status TEXT NOT NULL,
    started_at REAL, finished_at REAL, seconds REAL, info TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# The review queue and the label joins page through these (rlaif/viewer/queue.py, rlaif/labels.py).
INDEXES = """
CREATE INDEX IF NOT EXISTS ai_pairs_key ON ai_pairs(pair_key);
DROP INDEX IF EXISTS ai_pairs_review;
CREATE INDEX IF NOT EXISTS ai_pairs_queue ON ai_pairs(judge_hash, status, inconsistent, confidence, n_disagree,
                                                      pair_key, principle_ids);
CREATE INDEX IF NOT EXISTS human_labels_source ON human_labels(source);
"""
SCHEMA_VERSION = "3"
# v2 -> v3: the AI pairs gained the columns the review queue sorts and filters on in SQL.
_V3_COLUMNS = ("pair_key TEXT", "inconsistent INTEGER NOT NULL DEFAULT 0", "n_disagree INTEGER NOT NULL DEFAULT 0",
               "principle_ids TEXT NOT NULL DEFAULT ''")


_PAGE = 5_000  # rows a paged reader (``iter_candidates``) reads at once
_DELETE_BATCH = 20_000  # AI pairs ``put_ai_pairs(replace=True)`` deletes per transaction
_PAIR_COLUMNS = ("judge_hash, prompt_id, chosen_id, rejected_id, confidence, status, details, inconsistent, "
                 "n_disagree, principle_ids, pair_key")
_GAP = "json_extract(a.details, '$.gap'),"  # the one field of ``details`` the mix reads


def _gap_record(r: tuple, **extra) -> dict[str, Any]:
    return dict(zip(PAIR_COLS, r), **extra) | {"details": {"gap": r[7]}}


class _Connection(sqlite3.Connection):
    """A connection whose ``with`` block commits only when no ``Store.journaled`` transaction (store_labels.py)
    encloses it (that one then commits, or rolls back, the whole)."""

    nested = 0

    def __enter__(self):
        return self if self.nested else super().__enter__()

    def __exit__(self, *exc):
        return False if self.nested else super().__exit__(*exc)


def _typed(rows: Iterable[tuple]) -> Iterator[tuple]:
    """AI pair rows with their details as ``PairDetails`` (the judge stage passes them so; a dict is read)."""
    for *head, d in rows:
        yield (*head, d if isinstance(d, PairDetails) else PairDetails.from_dict(d))


class Store(QueueQueries, LabelQueries):
    """``create``: make the file if missing; ``readonly``: open for reading only (no schema
    stamp, no table creation: `rlaif show`, `labels stats|export` never change a run store);
    ``check``: run SQLite's ``quick_check`` first, so a damaged store is an error instead of
    a run that silently skips every stage. ``busy_timeout``: seconds a write waits for another
    process's write transaction before SQLite gives up ("database is locked"; ``set_busy_timeout``)."""

    BUSY_TIMEOUT = 30.0

    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False, check: bool = False,
                 busy_timeout: float | None = None):
        self.path = Path(path)
        self.busy_timeout = self.BUSY_TIMEOUT if busy_timeout is None else busy_timeout
        if (readonly or not create) and not self.path.exists():
            raise RlaifError(f"{self.path}: no run store here (run `rlaif run CONFIG` first)")
        self.db: sqlite3.Connection | None = None
        self._cache_also: list[Path] = []  # read_cache_also
        self._also_open: dict[int, Store] = {}
        try:
            self._open(readonly, check)
        except BaseException:
            if self.db is not None:  # no -wal/-shm files left behind by a store that failed to open
                self.db.close()
            raise

    def _open(self, readonly: bool, check: bool) -> None:
        try:
            self.db = self._connect(readonly)
            if check:
                self._check()
            if readonly:
                row = self._schema_row()
            else:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
                row = self._schema_row()
                if row is None:
                    with self.db:
                        self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                    row = (SCHEMA_VERSION,)
                elif row[0] == "2":
                    self._upgrade_v2()
                    row = (SCHEMA_VERSION,)
                if row[0] == SCHEMA_VERSION:
                    self.db.executescript(INDEXES)
            if row is not None and row[0] == "2" and readonly:
                raise RlaifError(f"{self.path}: a run store of an earlier rlaif (schema v2); upgrade it in place "
                                 "by running any writing command once, e.g. `rlaif run CONFIG` (every stage is "
                                 "skipped)")
            if row is not None and row[0] != SCHEMA_VERSION:
                raise RlaifError(f"{self.path}: run store schema v{row[0]}, this rlaif writes v{SCHEMA_VERSION}; "
                                 "move the run directory away or pick another --workdir")
        except sqlite3.OperationalError as e:
            if "readonly" in str(e) or "read-only" in str(e):
                raise RlaifError(f"{self.path}: the run directory or its store is read-only ({e}); make it writable, "
                                 "or use a read-only command (`rlaif show`, `rlaif labels stats|export`)") from None
            raise RlaifError(f"{self.path}: cannot open the run store ({e}); check the file and its folder") from None
        except sqlite3.DatabaseError as e:
            raise RlaifError(f"{self.path}: not a valid run store ({e}); restore it from a copy, or move the "
                             "run directory away and re-run") from None

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            return sql_functions(sqlite3.connect(self.path, timeout=self.busy_timeout, factory=_Connection))
        try:  # query_only: this connection refuses every write (a WAL store still needs its -shm file)
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, factory=_Connection)
            db.execute("PRAGMA query_only=ON")
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return sql_functions(db)
        except sqlite3.OperationalError:  # a read-only folder: read the file as it is on disk
            return sql_functions(sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1", uri=True,
                                                 timeout=self.busy_timeout, factory=_Connection))

    def _upgrade_v2(self) -> None:
        """Add the v3 columns to a v2 store and fill them, in one transaction (a kill leaves v2)."""
        with self.db:
            have = {r[1] for r in self.db.execute("PRAGMA table_info(ai_pairs)")}
            for col in _V3_COLUMNS:
                if col.split()[0] not in have:
                    self.db.execute(f"ALTER TABLE ai_pairs ADD COLUMN {col}")
            rows = self.db.execute("SELECT rowid, status, details FROM ai_pairs")
            self.db.executemany("UPDATE ai_pairs SET inconsistent=?, n_disagree=?, principle_ids=? WHERE rowid=?",
                                ((*review_columns(PairDetails.from_dict(json.loads(d)), st), rid) for rid, st, d in rows))
            self._fill_pair_keys(None)
            self.db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (SCHEMA_VERSION,))

    def _schema_row(self):
        try:
            return self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                raise sqlite3.DatabaseError("no rlaif tables") from None
            raise

    def _check(self) -> None:
        rows = [r[0] for r in self.db.execute("PRAGMA quick_check(5)").fetchall()]
        if rows != ["ok"]:
            detail = "; ".join(" ".join(str(r).split()) for r in rows)  # one line
            raise sqlite3.DatabaseError("damaged: " + detail[:300])

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another process's write transaction (the viewer waits briefly and keeps
        a verdict that found the store busy, rlaif/viewer/writes.py, rather than freeze the screen)."""
        self.busy_timeout = seconds
        self.db.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def close(self) -> None:
        for other in self._also_open.values():
            other.close()
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------- prompts
    def put_prompts(self, prompts: Iterable[Prompt]) -> None:
        with self.db:
            self.db.execute("DELETE FROM prompts")
            self.db.executemany(
                "INSERT INTO prompts(id, text, category, split) VALUES (?,?,?,?)",
                [(p.id, p.text, p.category, p.split) for p in prompts],
            )

    def prompts(self, split: str | None = None) -> list[Prompt]:
        q = "SELECT id, text, category, split FROM prompts"
        rows = self.db.execute(q + (" WHERE split=?" if split else "") + " ORDER BY rowid", (split,) if split else ())
        return [Prompt(*r) for r in rows]

    def prompt_categories(self, split: str) -> set[str | None]:
        """The distinct categories of the split's prompts (None: prompts without one)."""
        return {c for (c,) in self.db.execute("SELECT DISTINCT category FROM prompts WHERE split=?", (split,))}

    # ---------------------------------------------------------- candidates
    def add_candidates(self, cands: Iterable[Candidate], gen_hash: str) -> None:
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO candidates VALUES (?,?,?,?,?,?,?)",
                [(c.id, c.prompt_id, c.index, c.text, c.policy_hash, gen_hash, now) for c in cands],
            )

    def done_prompt_ids(self, gen_hash: str) -> set[str]:
        rows = self.db.execute("SELECT DISTINCT prompt_id FROM candidates WHERE gen_hash=?", (gen_hash,))
        return {r[0] for r in rows}

    def candidates(self, gen_hash: str) -> list[Candidate]:
        return list(self.iter_candidates(gen_hash))

    def iter_candidates(self, gen_hash: str) -> Iterator[Candidate]:
        """The candidates of a generation, by prompt id then index, streamed a page at a time, each page read
        whole: no query stays open while the caller works, so it may write to the store in between. (A query
        left open keeps this connection's read snapshot; once another process commits, say a viewer verdict,
        a write on this connection fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT), no busy
        timeout: the pointwise judge stage writing between its parts did.)"""
        q = "SELECT id, prompt_id, idx, text, policy_hash FROM candidates WHERE gen_hash=?"
        after: tuple = ()
        while True:
            rows = self.db.execute(q + (" AND (prompt_id, idx, id) > (?,?,?)" if after else "")
                                   + " ORDER BY prompt_id, idx, id LIMIT ?", (gen_hash, *after, _PAGE)).fetchall()
            for r in rows:
                yield Candidate(*r)
            if len(rows) < _PAGE:
                return
            after = (rows[-1][1], rows[-1][2], rows[-1][0])

    # ---------------------------------------------------------- judge cache
    def cache_get_many(self, keys: list[str]) -> dict[str, Any]:
        """The cached results of ``keys`` found in this store's call cache, or else in the caches of the
        stores ``read_cache_also`` named (read only)."""
        out: dict[str, Any] = {}
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = keys[i : i + _IN_CHUNK]
            q = f"SELECT key, value FROM judge_cache WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({k: json.loads(v) for k, v in self.db.execute(q, chunk)})
        for n, path in enumerate(self._cache_also):
            missing = [k for k in keys if k not in out]
            if not missing:
                break
            if n not in self._also_open:  # opened on first use, in the thread that uses this store
                self._also_open[n] = Store(path, readonly=True)
            out.update(self._also_open[n].cache_get_many(missing))
        return out

    def read_cache_also(self, paths: Iterable[Path]) -> None:
        """Also look up calls in the call caches of the stores at ``paths`` (those that exist), in order:
        round k >= 2 of an iterative run pays no call an earlier round paid (rlaif/rounds.py). New calls
        are stored here only."""
        self._cache_also = [Path(p) for p in paths if Path(p).exists()]

    def cache_put_many(self, items: dict[str, Any]) -> None:
        now = time.time()
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO judge_cache VALUES (?,?,?)",
                [(k, json.dumps(v), now) for k, v in items.items()],
            )

    # ---------------------------------------------------------- judgements and AI pairs
    def put_judgements(self, judge_hash: str, rows: list[tuple]) -> None:
        """rows: (candidate_id, principle_id, principle_hash, score, status, raw)."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO judgements VALUES (?,?,?,?,?,?,?)", [(judge_hash, *r) for r in rows]
            )

    def ai_pair_judge_hashes(self) -> list[str]:
        """The judge hashes that have AI pairs stored."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT judge_hash FROM ai_pairs")]

    def put_ai_pairs(self, judge_hash: str, rows: list[tuple], replace: bool = True) -> None:
        """rows: (prompt_id, chosen_id, rejected_id, confidence, status, details: PairDetails or its dict); ``replace``: the
        judge run's earlier pairs go (False: add to them, as a stage judging in parts does).

        An AI comparison. ``status`` is "scored" or "unscored" (the judge gave
        no usable verdict: chosen/rejected are then just the order asked, and
        the mix never uses it). ``details``: ``PairDetails.to_dict()``
        (rlaif/judges/details.py, which documents the JSON shape).

        Written as `labels import` writes labels (rlaif/store_labels.py), so that no write transaction holds the
        run store's lock while Python works: the rows are encoded and given their pair keys in a TEMP table
        (no lock on the run store), the earlier pairs (``replace``) are deleted in batches of
        ``_DELETE_BATCH``, then the rows are copied in by one INSERT ... SELECT. Holding it through the
        encoding and the keys' hashing, a part of the pointwise judge (50,000 candidates) held the lock 6-9 s,
        now about 1 s, and the pairwise judge's one call longer as a run grows (bench/lock_hold.py). An error in ``rows``
        changes nothing; the batched delete is not atomic with the copy, which only the judge stage calls
        while its record says `running`, and which a re-run redoes.
        """
        self.db.executescript(f"CREATE TEMP TABLE IF NOT EXISTS stage_pairs AS SELECT {_PAIR_COLUMNS} FROM ai_pairs "
                              "WHERE 0; DELETE FROM temp.stage_pairs;")
        try:
            with self.db:  # the TEMP table only
                self.db.executemany(
                    f"INSERT INTO temp.stage_pairs({_PAIR_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
                    ((judge_hash, p, c, r, conf, st, canonical_json(d.to_dict(compact=True)), *review_columns(d, st))
                     for p, c, r, conf, st, d in _typed(rows)))
                self._fill_pair_keys(None, "temp.stage_pairs")
            while replace:
                with self.db:
                    gone = self.db.execute("DELETE FROM ai_pairs WHERE rowid IN (SELECT rowid FROM ai_pairs WHERE "
                                           "judge_hash=? LIMIT ?)", (judge_hash, _DELETE_BATCH)).rowcount
                replace = gone >= _DELETE_BATCH
            with self.db:
                self.db.execute(f"INSERT INTO ai_pairs({_PAIR_COLUMNS}) SELECT {_PAIR_COLUMNS} FROM temp.stage_pairs "
                                "WHERE true ORDER BY rowid")
        finally:
            self.db.execute("DROP TABLE IF EXISTS temp.stage_pairs")

    def _fill_pair_keys(self, judge_hash: str | None, table: str = "ai_pairs") -> None:
        """Set ``pair_key`` (rlaif.records.pair_key of the texts) on the AI pairs of a judge run (None: all) in
        ``table`` (the AI pairs, or those ``put_ai_pairs`` stages)."""
        name = table.split(".")[-1]
        self.db.execute(
            f"""UPDATE {table} SET pair_key=rlaif_pair_key(p.text, c.text, r.text)
               FROM prompts p, candidates c, candidates r
               WHERE {name}.pair_key IS NULL AND p.id={name}.prompt_id AND c.id={name}.chosen_id
               AND r.id={name}.rejected_id"""
            + (f" AND {name}.judge_hash=?" if judge_hash is not None else ""),
            (judge_hash,) if judge_hash is not None else ())

    def put_judge_set(self, judge_hash: str, constitution_hash: str, gen_hash: str) -> None:
        """Record which constitution and generation the AI pairs of ``judge_hash`` were judged
        under (`rlaif constitution diff --run` compares the label sets of two constitutions)."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO judge_sets VALUES (?,?,?,?)",
                            (judge_hash, constitution_hash, gen_hash, time.time()))

    def judge_sets(self, constitution_hash: str, gen_hash: str) -> list[str]:
        """The judge hashes of the AI pair sets judged under ``constitution_hash`` on the candidates
        ``gen_hash``, newest first. Stores written before ``judge_sets`` existed: the sets whose
        pairs record that constitution (their order unknown)."""
        try:
            rows = self.db.execute("SELECT judge_hash FROM judge_sets WHERE constitution_hash=? AND gen_hash=? "
                                   "ORDER BY created_at DESC", (constitution_hash, gen_hash)).fetchall()
        except sqlite3.OperationalError:  # a read-only store from before the table
            rows = []
        if rows:
            return [r[0] for r in rows]
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT judge_hash FROM ai_pairs WHERE json_extract(details, '$.constitution_hash')=?",
            (constitution_hash,))]

    def ai_pairs(self, judge_hash: str) -> list[dict[str, Any]]:
        return list(self.iter_ai_pairs(judge_hash))

    def iter_ai_pairs(self, judge_hash: str, unlabelled_only: bool = False, raw: bool = False,
                      gap_only: bool = False) -> Iterator[dict[str, Any]]:
        """The AI pairs of a judge run in store order, streamed (``unlabelled_only``: those no human
        label covers; ``raw``: ``details`` as the stored JSON text, and the ``pair_key``; ``gap_only``:
        ``details`` holds just the ``gap``, read by SQLite, as the mix needs: no JSON parsed per pair)."""
        q = PAIR_SELECT.format(extra=", a.rowid, a.pair_key" if gap_only else ", a.pair_key") + " WHERE a.judge_hash=?"
        if gap_only:
            q = q.replace("a.details,", _GAP, 1)
        if unlabelled_only:
            q += " AND NOT " + LABELLED_SQL.format("")
        for r in self.db.execute(q + " ORDER BY a.prompt_id, a.chosen_id, a.rejected_id", (judge_hash,)):
            if raw:
                yield dict(zip(PAIR_COLS, r[:-1]), pair_key=r[-1])
            elif gap_only:
                yield _gap_record(r[:-2], row=r[-2], pair_key=r[-1])
            else:
                yield pair_record(r[:-1])

    def ai_pairs_by_rows(self, rows: list[int]) -> dict[int, dict[str, Any]]:
        """The AI pairs with these row ids (``row`` of ``iter_ai_pairs(gap_only=True)``), as it yields them:
        the mix keeps only row ids of the pairs it trains on and reads their texts back here, in its order."""
        out: dict[int, dict[str, Any]] = {}
        for i in range(0, len(rows), _IN_CHUNK):
            chunk = rows[i:i + _IN_CHUNK]
            q = PAIR_SELECT.format(extra=", a.rowid").replace("a.details,", _GAP, 1)
            for r in self.db.execute(q + f" WHERE a.rowid IN ({','.join('?' * len(chunk))})", chunk):
                out[r[-1]] = _gap_record(r[:-1], row=r[-1])
        return out

    def ai_pair_choices(self, judge_hash: str) -> Iterator[tuple[str, str, float]]:
        """(chosen id, rejected id, confidence) of each AI pair of a judge run, in store order."""
        yield from self.db.execute("SELECT chosen_id, rejected_id, confidence FROM ai_pairs WHERE judge_hash=? "
                                   "ORDER BY prompt_id, chosen_id, rejected_id", (judge_hash,))

    def has_ai_pairs(self, judge_hash: str) -> bool:
        """Whether the judge run made any AI pair (one index probe, not a count of a million)."""
        return self.db.execute("SELECT 1 FROM ai_pairs WHERE judge_hash=? LIMIT 1", (judge_hash,)).fetchone() is not None

    def ai_pair_counts(self, judge_hash: str) -> tuple[int, int]:
        """(AI pairs, scored ones) of a judge run."""
        r = self.db.execute("SELECT COUNT(*), COALESCE(SUM(status='scored'), 0) FROM ai_pairs WHERE judge_hash=?",
                            (judge_hash,)).fetchone()
        return r[0], r[1]

    # ---------------------------------------------------------- stages
    def latest_judge_hash(self) -> str | None:
        """The judge hash of the last completed judge stage (what the viewer shows)."""
        rec = self.stage("judge")
        return rec["info"].get("judge_hash") if rec else None

    def stage(self, name: str) -> dict[str, Any] | None:
        r = self.db.execute(
            "SELECT input_hash, status, started_at, finished_at, seconds, info FROM stages WHERE name=?", (name,)
        ).fetchone()
        if r is None:
            return None
        return {"input_hash": r[0], "status": r[1], "started_at": r[2], "finished_at": r[3],
                "seconds": r[4], "info": json.loads(r[5] or "{}")}

    def stages(self) -> dict[str, dict[str, Any]]:
        names = [r[0] for r in self.db.execute("SELECT name FROM stages")]
        return {n: self.stage(n) for n in names}  # type: ignore[misc]

    def set_stage(self, name: str, input_hash: str, status: str, seconds: float | None = None,
                  info: dict | None = None) -> None:
        now = time.time()
        with self.db:
            self.db.execute(
                """INSERT INTO stages(name, input_hash, status, started_at, finished_at, seconds, info)
                   VALUES (?,?,?,?,?,?,?)
                   ON CONFLICT(name) DO UPDATE SET input_hash=excluded.input_hash, status=excluded.status,
                   started_at=CASE WHEN excluded.status='running' THEN excluded.started_at ELSE stages.started_at END,
                   finished_at=excluded.finished_at, seconds=excluded.seconds, info=excluded.info""",
                (name, input_hash, status, now, now if status == "done" else None, seconds,
                 json.dumps(info or {}, sort_keys=True, default=str)),
            )

    def counts(self) -> dict[str, int]:
        return {t: self.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("prompts", "candidates", "judgements", "ai_pairs", "human_labels", "judge_cache")}
