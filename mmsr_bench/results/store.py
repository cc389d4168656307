"""The results store (SQLModel): one row per run plus its per-user metric vectors, written in one transaction.

Per-user vectors are stored compactly: float64 arrays in ``.npy`` format, zlib-compressed, one row per (run,
metric), loadable back as arrays in one call (:meth:`Store.per_user`). The user order is the suite's evaluation
user list, whose hash is recorded in the run, so two runs can be paired user by user.

Any SQLAlchemy URL works; SQLite (the default) and PostgreSQL (``postgresql+psycopg://user@host/db``, for a store
shared by several machines) are the tested ones. On PostgreSQL the tables are created under an advisory lock (so
many writers may open a new database at once), sessions run in UTC, and a store opened read-only runs every
transaction read-only (``default_transaction_read_only``), so the dashboard can never write.

Every run and artifact carries a ``uuid``, its identity across stores (``bench store copy`` skips runs whose uuid
the destination already holds). A store written before uuids existed gets the column on its first opening for
writing (``bench store upgrade``), filled with a uuid derived from each row's contents; opened read-only, such a
store is refused with that instruction.

Why one module of this length: the store's schema, its migrations and every query over it, so that a column is
defined and read in one module.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator
from uuid import NAMESPACE_URL, uuid4, uuid5

import numpy as np
from sqlalchemy import UniqueConstraint, event, text
from sqlalchemy.exc import (ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, OperationalError,
                            ProgrammingError)
from sqlmodel import Field, Session, SQLModel, create_engine, select

from mmsr_bench.errors import BenchError
from mmsr_bench.paths import default_db_url

log = logging.getLogger(__name__)

#: Free disk space a run needs beside a SQLite store before it starts (its rows are far smaller; this leaves room
#: for SQLite's journal and the rest of the machine).
MIN_FREE_BYTES = 64 * 2 ** 20
#: Key of the PostgreSQL advisory lock that serializes schema creation and upgrades between processes.
SCHEMA_LOCK_KEY = 0x6D6D7372  # "mmsr"
#: Columns an older store may lack that opening it for writing adds (table -> columns).
UPGRADABLE = {"runs": ("uuid",), "artifacts": ("uuid",)}
#: Seconds a writer waits for another writer's lock on a SQLite store before it gives up with a clear error
#: (SQLite's own default is 5 s, too short beside a long copy or import); ``$MMSR_BENCH_DB_LOCK_TIMEOUT`` overrides.
LOCK_TIMEOUT_S = 60.0


def lock_timeout() -> float:
    import os

    raw = os.environ.get("MMSR_BENCH_DB_LOCK_TIMEOUT", "")
    try:
        value = float(raw) if raw.strip() else LOCK_TIMEOUT_S
    except ValueError:
        raise BenchError(f"$MMSR_BENCH_DB_LOCK_TIMEOUT={raw[:40]!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise BenchError(f"$MMSR_BENCH_DB_LOCK_TIMEOUT={raw[:40]!r}: give seconds between 0 and 86400")
    return value


def new_uuid() -> str:
    return uuid4().hex


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, index=True)  # identity across stores (store copy)
    group_id: str = Field(index=True)  # runs started by one `bench run` (one per seed) share it
    suite: str = Field(index=True)
    suite_hash: str  # protocol fingerprint of (suite, dataset): equal hashes = comparable runs
    dataset: str = Field(index=True)
    model: str = Field(index=True)  # registered name, variants included (e.g. mllm-srec-text)
    variant: str = ""  # perturbation or other run-level variant tag (e.g. "blank:0.2")
    config_json: str = "{}"
    config_hash: str = ""
    seed: int = 0
    code_version: str = ""
    code_dirty: bool = False
    packages_json: str = "{}"
    host: str = ""
    device: str = "cpu"
    started_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None
    status: str = "completed"  # completed | failed
    error: str = ""
    fit_seconds: float = 0.0
    score_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    n_users: int = 0
    eval_users_hash: str = ""
    metrics_json: str = "{}"
    run_info_json: str = "{}"  # adapter facts: chosen epoch and the split that chose it, backbone hash, random weights

    def _json(self, name: str) -> dict:
        """A JSON column as a dict; a damaged value is one clear error naming the run and the field."""
        try:
            value = json.loads(getattr(self, name))
        except (TypeError, ValueError):
            raise BenchError(f"run {self.id} ({self.uuid}): field {name} is not valid JSON; `bench store check` "
                             "lists the damage") from None
        if not isinstance(value, dict):
            raise BenchError(f"run {self.id} ({self.uuid}): field {name} is not a JSON object")
        return value

    @property
    def metrics(self) -> dict[str, float]:
        return self._json("metrics_json")

    @property
    def config(self) -> dict:
        return self._json("config_json")

    @property
    def run_info(self) -> dict:
        return self._json("run_info_json")


class UserMetric(SQLModel, table=True):
    __tablename__ = "user_metrics"

    run_id: int = Field(foreign_key="runs.id", primary_key=True)
    metric: str = Field(primary_key=True)
    values: bytes


class Artifact(SQLModel, table=True):
    """Run-attached analyses (hallucination distributions, ...), stored as JSON."""

    __tablename__ = "artifacts"

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, index=True)
    run_id: int | None = Field(default=None, foreign_key="runs.id", index=True)
    suite: str = Field(index=True)
    dataset: str = Field(index=True)
    model: str = Field(index=True)
    kind: str = Field(index=True)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    payload_json: str = "{}"


class Tuning(SQLModel, table=True):
    """One tuning study of ``bench tune``: a model tuned on one dataset's validation split under one budget. Its
    Optuna study (``study_name``) lives in the same database; ``key`` is its identity (suite fingerprint, dataset,
    model, seed, sampler, pruner, metric, space, fixed overrides), so a rerun of the same command resumes it."""

    __tablename__ = "tunings"

    id: int | None = Field(default=None, primary_key=True)
    uuid: str = Field(default_factory=new_uuid, unique=True, index=True)
    key: str = Field(unique=True, index=True)
    study_name: str = ""
    suite: str = Field(index=True)
    suite_hash: str = ""
    dataset: str = Field(index=True)
    model: str = Field(index=True)
    seed: int = 0
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str = ""  # the objective: the suite's primary metric on the whole validation split
    space_json: str = "{}"
    fixed_json: str = "{}"  # the --set overrides every trial shares
    budget_json: str = "{}"  # {"trials": N} or {"minutes": T}, and the thread count
    host: str = ""
    code_version: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    updated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    best_trial: int | None = None
    best_value: float | None = None
    best_params_json: str = "{}"


class TuningTrial(SQLModel, table=True):
    """One trial of a tuning study: its sampled parameters, the resulting configuration and its hash, the validation
    curve the training loop produced, the kept epoch, the objective value, its state and time."""

    __tablename__ = "tuning_trials"
    __table_args__ = (UniqueConstraint("tuning_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    tuning_id: int = Field(foreign_key="tunings.id", index=True)
    number: int = 0  # the Optuna trial number
    state: str = "complete"  # complete | pruned | failed
    params_json: str = "{}"
    config_json: str = "{}"
    config_hash: str = ""
    value: float | None = None
    curve_json: str = "[]"  # [[step, value], ...] as the training loop validated
    selection_json: str = "{}"  # mmsr_bench.results.selection.Selection.as_dict()
    seconds: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str = ""
    worker: str = ""  # host:pid


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: the form every message and log line shows."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is masked by hand and reported by _engine
        return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", str(url))


def _one_line(exc: BaseException) -> str:
    """A database error as one line, without the statement and its parameters; a lock names the wait."""
    text_ = "; ".join(line.strip() for line in str(getattr(exc, "orig", None) or exc).splitlines() if line.strip())
    if "locked" in text_.lower():
        text_ += (f" (another process held it longer than the {lock_timeout():g} s this command waits; "
                  "$MMSR_BENCH_DB_LOCK_TIMEOUT sets the wait)")
    return text_


def _pg_connect_args(u, read_only: bool) -> dict:
    """libpq options for a psycopg/psycopg2 engine: UTC sessions, read-only transactions for a read-only store,
    a bounded connect timeout; options already in the URL are kept."""
    opts = ["-c timezone=UTC"] + (["-c default_transaction_read_only=on"] if read_only else [])
    given = u.query.get("options")
    given = " ".join(given) if isinstance(given, tuple) else given
    args = {"options": " ".join(([given] if given else []) + opts)}
    if "connect_timeout" not in u.query:
        args["connect_timeout"] = 10
    return args


def _engine(url: str, *, read_only: bool = False):
    """An engine for ``url``, with one-line errors for a malformed URL, a missing driver and an in-memory store."""
    from sqlalchemy.engine import make_url

    shown = mask_url(url)
    kwargs: dict = {}
    try:
        u = make_url(url)
        if u.get_backend_name() == "postgresql" and u.get_driver_name() in ("psycopg", "psycopg2"):
            kwargs = {"connect_args": _pg_connect_args(u, read_only), "pool_pre_ping": True}
        elif u.get_backend_name() == "sqlite" and "timeout" not in u.query:
            kwargs = {"connect_args": {"timeout": lock_timeout()}}
        engine = create_engine(url, **kwargs)
    except NoSuchModuleError as exc:
        raise BenchError(f"--db {shown!r} is not a valid SQLAlchemy URL: no dialect for it ({exc})") from None
    except ImportError as exc:
        hint = "for example psycopg for postgresql+psycopg://"
        if url.startswith("postgresql"):
            hint = "pip install 'psycopg[binary]' and use a postgresql+psycopg:// URL"
        raise BenchError(f"--db {shown!r}: the database driver is not installed ({exc.name or exc}); install it "
                         f"({hint})") from None
    except (ArgumentError, ValueError) as exc:
        raise BenchError(f"--db {shown!r} is not a valid SQLAlchemy URL: {exc}") from None
    if engine.url.get_backend_name() == "sqlite" and _in_memory(engine.url):
        raise BenchError(f"--db {shown!r} is an in-memory SQLite database: every run would be lost when the "
                         "command ends; give a file, e.g. sqlite:///results.db")
    return engine


def _in_memory(u) -> bool:
    """Whether a SQLite URL names an in-memory database, URI forms included (``file::memory:?cache=shared``,
    ``file:name?mode=memory``)."""
    db = u.database or ""
    if db in ("", ":memory:"):
        return True
    if db.startswith("file:"):
        rest = db[5:]
        return rest.startswith(":memory:") or "mode=memory" in rest or "mode=memory" in str(u.query)
    return str(u.query.get("mode", "")) == "memory"


def _retrying(step: Callable[[], None], attempts: int) -> None:
    """Run ``step``, retrying the races of several processes changing one schema at once ("already exists",
    "duplicate", "locked"); the retry finds the work done and does nothing."""
    for attempt in range(attempts):
        try:
            step()
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            text_ = str(getattr(exc, "orig", exc)).lower()
            if ("already exists" not in text_ and "duplicate" not in text_ and "locked" not in text_) \
                    or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _schema_lock(conn) -> None:
    """On PostgreSQL, hold the schema advisory lock until the end of the current transaction (DDL there is
    transactional, so the next process waits, then finds the tables)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})


def _create_tables(engine, attempts: int = 8) -> None:
    """``create_all`` that tolerates other processes creating the same tables at the same moment (measured: 15 of
    40 runs lost when 8 processes opened a new store at once): a "table already exists" race is retried, and the
    retry finds the tables and creates nothing. On PostgreSQL the creation also holds an advisory lock."""
    def create() -> None:
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                _schema_lock(conn)
                SQLModel.metadata.create_all(conn)
        else:
            SQLModel.metadata.create_all(engine)

    _retrying(create, attempts)


def legacy_uuid(table: str, row: dict) -> str:
    """The uuid given to a row stored before uuids existed: derived from its contents (ids excluded), so two copies
    of one old store upgrade to the same uuids and merge without duplicates."""
    body = {k: str(v) for k, v in row.items() if k not in ("id", "uuid", "run_id")}
    return uuid5(NAMESPACE_URL, f"mmsr-bench:{table}:" + json.dumps(body, sort_keys=True)).hex


def _upgrade(engine, pending: dict[str, list[str]], url: str, attempts: int = 8) -> dict[str, int]:
    """Add the ``uuid`` column to an older store's tables, fill it (:func:`legacy_uuid`) and index it uniquely;
    returns how many rows of each table got a uuid."""
    from sqlalchemy import inspect

    filled: dict[str, int] = {}

    def step(table: str) -> None:
        with engine.begin() as conn:
            _schema_lock(conn)
            if "uuid" not in {c["name"] for c in inspect(conn).get_columns(table)}:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN uuid VARCHAR"))
            rows = [dict(r) for r in conn.execute(text(f"SELECT * FROM {table} WHERE uuid IS NULL")).mappings()]
            seen: set[str] = set()
            for row in rows:
                value = legacy_uuid(table, row)
                if value in seen:  # two rows identical but for their ids: the second gets a fresh uuid
                    value = new_uuid()
                seen.add(value)
                conn.execute(text(f"UPDATE {table} SET uuid = :u WHERE id = :i"), {"u": value, "i": row["id"]})
            conn.execute(text(f"CREATE UNIQUE INDEX IF NOT EXISTS ix_{table}_uuid ON {table} (uuid)"))
        filled[table] = filled.get(table, 0) + len(rows)
        if rows:
            log.warning("upgraded the results store %s: gave %d %s rows a uuid", url, len(rows), table)

    for table, cols in pending.items():
        if cols != ["uuid"]:
            raise BenchError(f"the results store {url}: no upgrade known for {table}.{', '.join(cols)}")
        _retrying(lambda: step(table), attempts)
    return filled


def upgrade_store(url: str | None) -> dict[str, int]:
    """Bring an existing store to this version's schema (``bench store upgrade``): rows stored before uuids get
    theirs. Returns the rows changed per table (empty when it was current); never creates a store."""
    url = url or default_db_url()
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise BenchError(f"no results store at {path} (--db {mask_url(url)})")
    store = Store(url, read_only=True, _upgradable=True)
    store.engine.dispose()
    if not store.exists():
        raise BenchError(f"the results store {store.url} holds no runs yet: nothing to upgrade")
    return Store(url).upgraded


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL (None for other databases and URI-style SQLite URLs)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except ArgumentError:
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.database.startswith("file:"):
        return None
    return Path(u.database)


def check_store(url: str | None) -> None:
    """Everything that can be wrong with a store URL, checked before a run does any work and without creating the
    store: the URL, its driver, an in-memory database, a missing folder, a file that is not SQLite, a foreign
    schema (an existing database is opened read-only for the check)."""
    url = url or default_db_url()
    path = sqlite_file(url)
    if path is not None and not path.exists():
        _engine(url)
        if not path.parent.is_dir():
            raise BenchError(f"--db {mask_url(url)!r}: the folder {path.parent} does not exist")
        return
    if path is not None and path.is_dir():
        raise BenchError(f"--db {mask_url(url)!r}: {path} is a folder, not a database file")
    engine = _engine(url, read_only=True)
    try:
        check_schema(engine, mask_url(url))  # columns a writing open adds (uuid) are no reason to refuse
    except (OperationalError, DatabaseError) as exc:
        raise BenchError(f"cannot open the results store {mask_url(url)}: {_one_line(exc)}") from None
    finally:
        engine.dispose()


def check_schema(engine, url: str) -> dict[str, list[str]]:
    """Refuse an existing database whose tables of our names lack our columns (another program's schema, or a
    store from an incompatible version), before any work is done. Returns the columns an older store lacks that
    opening it for writing adds (:data:`UPGRADABLE`), per table; empty for a current store."""
    from sqlalchemy import inspect

    insp = inspect(engine)
    present = set(insp.get_table_names())
    pending: dict[str, list[str]] = {}
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in present:
            continue
        have = {c["name"] for c in insp.get_columns(table.name)}
        missing = sorted(c.name for c in table.columns if c.name not in have)
        upgradable = [c for c in missing if c in UPGRADABLE.get(table.name, ())]
        if upgradable and len(upgradable) == len(missing):
            pending[table.name] = upgradable
            continue
        if missing:
            more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            raise BenchError(f"the results store {url} has a table {table.name!r} without the columns "
                             f"{', '.join(missing[:4])}{more}: it "
                             "is not an mmsr-bench store of this version; use another --db")
    return pending


def encode_vector(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float64), allow_pickle=False)
    return zlib.compress(buf.getvalue(), 6)


def decode_vector(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False)


class Store:
    """A results store at any SQLAlchemy URL (default ``sqlite:///results.db`` in the current directory)."""

    def __init__(self, url: str | None = None, *, read_only: bool = False, _upgradable: bool = False) -> None:
        self.connect_url = url or default_db_url()
        self.url = mask_url(self.connect_url)  # for messages: the password masked
        self.read_only = read_only
        self.upgraded: dict[str, int] = {}  # rows given a uuid by this opening (an older store's upgrade)
        self.engine = _engine(self.connect_url, read_only=read_only)
        if self.connect_url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            if not read_only:
                self._quick_check()
                _create_tables(self.engine)
            pending = check_schema(self.engine, self.url)
            if pending and read_only and not _upgradable:
                raise BenchError(f"the results store {self.url} predates run uuids (no column uuid in "
                                 f"{', '.join(pending)}): open it once for writing to add them, with "
                                 f"`bench store upgrade --db {self.url}` (any `bench run` on it does it too)")
            if pending and not read_only:
                self.upgraded = _upgrade(self.engine, pending, self.url)
        except (OperationalError, DatabaseError) as exc:
            raise BenchError(f"cannot open the results store {self.url}: {_one_line(exc)}") from None

    @classmethod
    def for_reading(cls, url: str | None = None) -> "Store":
        """A store opened read-only for a command that only reads: never creates a file, and a store without runs is
        one clear error instead of a missing-table traceback."""
        path = sqlite_file(url or default_db_url())
        if path is not None and not path.is_file():
            raise BenchError(f"no results store at {path} (--db {mask_url(url or default_db_url())}); "
                             "`bench run` creates one")
        store = cls(url, read_only=True)
        if not store.exists():
            raise BenchError(f"the results store {store.url} holds no runs yet; `bench run` stores them")
        return store

    def _writable(self) -> None:
        if self.read_only:
            raise BenchError(f"the results store {self.url} is open read-only; nothing was written")

    def _quick_check(self) -> None:
        """Refuse to write into a damaged SQLite file (``PRAGMA quick_check``: page and index structure, linear in
        the file's size and cheap next to any run); the damage is named."""
        if self.engine.dialect.name != "sqlite" or (sqlite_file(self.connect_url) is not None
                                                    and not sqlite_file(self.connect_url).exists()):
            return
        try:
            with self.engine.connect() as conn:
                rows = [r[0] for r in conn.execute(text("PRAGMA quick_check(5)"))]
        except DatabaseError as exc:
            if "locked" in str(exc).lower():
                raise
            rows = [_one_line(exc)]
        if rows != ["ok"]:
            raise BenchError(f"the results store {self.url} is damaged (SQLite quick_check: {'; '.join(rows)[:300]}); "
                             "nothing was written to it. `bench store check --db URL` lists the damage; copy what is "
                             "readable with `bench store copy` or restore the file")

    def check_writable(self) -> None:
        """Prove, before any work, that a run can be stored here: a write transaction (an insert, rolled back) under
        the lock timeout, and on a SQLite file some free space beside it. A read-only file, folder, mount or URI,
        a lock held too long, or a full disk fails now with one line instead of after hours of fitting."""
        import shutil

        self._writable()
        try:
            with Session(self.engine) as s:
                s.begin()
                s.add(Artifact(suite="write-probe", dataset="write-probe", model="write-probe", kind="write-probe"))
                s.flush()
                s.rollback()
        except (OperationalError, DatabaseError) as exc:
            raise BenchError(f"cannot write to the results store {self.url}: {_one_line(exc)}; nothing was "
                             "run") from None
        path = sqlite_file(self.connect_url)
        if path is not None:
            free = shutil.disk_usage(path.resolve().parent).free
            if free < MIN_FREE_BYTES:
                raise BenchError(f"the results store {self.url}: only {free / 2 ** 20:.1f} MiB free on its disk "
                                 f"(a run needs room for its rows and per-user vectors); nothing was run")

    def check(self) -> list[str]:
        """Everything wrong with this store, as one line each (empty: sound): SQLite's full integrity check, and
        every run's JSON fields, timestamps and per-user vector blobs decoded (``bench store check``)."""
        problems: list[str] = []
        if self.engine.dialect.name == "sqlite":
            try:
                with self.engine.connect() as conn:
                    rows = [r[0] for r in conn.execute(text("PRAGMA integrity_check(20)"))]
            except (OperationalError, DatabaseError) as exc:
                rows = [_one_line(exc)]
            if rows != ["ok"]:
                problems += [f"SQLite integrity_check: {r}" for r in rows]
        try:
            if not self.exists():
                return problems + [f"no runs table in {self.url}"]
            problems += self._check_rows()
        except (OperationalError, DatabaseError) as exc:
            problems.append(f"the tables cannot be read: {_one_line(exc)}")
        return problems

    def _check_rows(self) -> list[str]:
        problems: list[str] = []
        with Session(self.engine) as s:
            run_rows = s.exec(text("SELECT id, uuid, config_json, metrics_json, run_info_json, packages_json, "
                                   "started_at, n_users FROM runs")).all()
            for rid, uuid, *jsons, started, n_users in run_rows:
                for name, value in zip(("config_json", "metrics_json", "run_info_json", "packages_json"), jsons):
                    try:
                        json.loads(value)
                    except (TypeError, ValueError):
                        problems.append(f"run {rid} ({uuid}): field {name} is not valid JSON")
                if started is not None and isinstance(started, str):
                    try:
                        datetime.fromisoformat(started)
                    except ValueError:
                        problems.append(f"run {rid} ({uuid}): field started_at {started[:40]!r} is not a time")
            for rid, metric, blob in s.exec(text("SELECT run_id, metric, \"values\" FROM user_metrics")).all():
                try:
                    vec = decode_vector(blob)
                except Exception as exc:  # noqa: BLE001 - any undecodable blob is reported, never raised
                    problems.append(f"run {rid}: per-user vector {metric!r} cannot be decoded ({type(exc).__name__})")
                    continue
                expected = next((r[-1] for r in run_rows if r[0] == rid), None)
                if expected is not None and vec.size != expected:
                    problems.append(f"run {rid}: per-user vector {metric!r} has {vec.size} values, n_users is "
                                    f"{expected}")
        return problems

    def exists(self) -> bool:
        from sqlalchemy import inspect

        try:
            return inspect(self.engine).has_table("runs")
        except OperationalError:
            return False

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine) as s:
            yield s

    def add_run(self, run: Run, per_user: dict[str, np.ndarray] | None = None,
                artifacts: list[Artifact] | None = None) -> Run:
        """Insert a run, its per-user vectors and artifacts in ONE transaction: all or nothing."""
        self._writable()
        with Session(self.engine) as s:
            with s.begin():
                s.add(run)
                s.flush()
                for name, vec in (per_user.items() if per_user is not None else ()):
                    s.add(UserMetric(run_id=run.id, metric=name, values=encode_vector(vec)))
                for art in artifacts or []:
                    art.run_id = run.id
                    s.add(art)
            s.refresh(run)
            s.expunge(run)
        return run

    def _insert(self, row):
        """One row in its own transaction, returned detached with its new id."""
        self._writable()
        with Session(self.engine) as s:
            with s.begin():
                s.add(row)
            s.refresh(row)
            s.expunge(row)
        return row

    def add_artifact(self, artifact: Artifact) -> Artifact:
        return self._insert(artifact)

    # -------------------------------------------------------------------------------------------- tuning
    def tuning_for(self, template: Tuning) -> Tuning:
        """The stored tuning study with ``template.key``, else ``template`` stored as a new one (two workers that
        open the same study at once get the same row)."""
        self._writable()
        for attempt in range(2):
            with Session(self.engine) as s:
                found = s.exec(select(Tuning).where(Tuning.key == template.key)).first()
                if found is not None:
                    s.expunge(found)
                    return found
            try:
                return self._insert(template)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def update_tuning(self, tuning_id: int, **fields) -> None:
        self._writable()
        with Session(self.engine) as s, s.begin():
            row = s.get(Tuning, tuning_id)
            for k, v in fields.items():
                setattr(row, k, v)
            row.updated_at = datetime.now(timezone.utc)

    def add_trial(self, trial: TuningTrial) -> TuningTrial:
        """Store one finished trial (its own transaction); a trial number stored twice is refused by the table."""
        return self._insert(trial)

    def _has_table(self, name: str) -> bool:
        from sqlalchemy import inspect

        try:
            return inspect(self.engine).has_table(name)
        except OperationalError:
            return False

    def tunings(self, *, suite: str | None = None, dataset: str | None = None, model: str | None = None
                ) -> list[Tuning]:
        """Tuning studies (none in a store written before ``bench tune`` existed)."""
        with self._reading("the tuning studies"):
            if not self._has_table("tunings"):
                return []
            return self._select(Tuning, Tuning.id, suite=suite, dataset=dataset, model=model)

    def trials(self, tuning_id: int) -> list[TuningTrial]:
        with self._reading(f"the trials of tuning study {tuning_id}"):
            if not self._has_table("tuning_trials"):
                return []
            return self._select(TuningTrial, TuningTrial.number, tuning_id=tuning_id)

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """A damaged row, blob or table met while reading becomes one clear error naming the store (``bench store
        check`` lists every problem), never a traceback."""
        try:
            yield
        except BenchError:
            raise
        except (OperationalError, DatabaseError) as exc:
            raise BenchError(f"cannot read {what} from the results store {self.url}: {_one_line(exc)}; "
                             "`bench store check` lists the damage") from None
        except (ValueError, TypeError, zlib.error, EOFError, OSError) as exc:
            raise BenchError(f"the results store {self.url} holds a damaged value in {what} ({type(exc).__name__}: "
                             f"{str(exc)[:120]}); `bench store check` lists the damage") from None

    def completed_cells(self, *, suite: str, fingerprint: str | None, dataset: str, model: str, variant: str,
                        config_hash: str, seeds: Iterable[int] | None = None) -> dict[int, Run]:
        """Seed -> the newest completed run of each stored cell: the one predicate behind ``--resume``, sweeps, the
        study plan and its report (same suite name and fingerprint (None: any), dataset, model, variant,
        configuration hash; ``seeds`` None: every seed)."""
        wanted = None if seeds is None else set(seeds)
        keep: dict[int, Run] = {}
        for r in self.runs(suite=suite, dataset=dataset, model=model, variant=variant):  # in id order
            if r.config_hash == config_hash and (fingerprint is None or r.suite_hash == fingerprint) and (
                    wanted is None or r.seed in wanted):
                keep[r.seed] = r
        return {s: keep[s] for s in sorted(keep)}

    def completed_cell(self, *, suite: str, fingerprint: str, dataset: str, model: str, variant: str, seed: int,
                       config_hash: str) -> Run | None:
        """The newest completed run of one (dataset, model, variant, seed, configuration) cell, if stored."""
        return self.completed_cells(suite=suite, fingerprint=fingerprint, dataset=dataset, model=model,
                                    variant=variant, config_hash=config_hash, seeds=(seed,)).get(seed)

    def runs(self, *, suite: str | None = None, dataset: str | None = None, model: str | None = None,
             status: str | None = "completed", variant: str | None = None) -> list[Run]:
        with self._reading("the runs"):
            return self._runs(suite=suite, dataset=dataset, model=model, status=status, variant=variant)

    def _select(self, cls, order, **equal) -> list:
        """Rows of ``cls`` whose columns equal the given values (None: any), in ``order``, detached."""
        q = select(cls)
        for name, val in equal.items():
            if val is not None:
                q = q.where(getattr(cls, name) == val)
        with Session(self.engine) as s:
            rows = list(s.exec(q.order_by(order)))
            for r in rows:
                s.expunge(r)
        return rows

    def _runs(self, *, suite, dataset, model, status, variant) -> list[Run]:
        if not self.exists():
            return []
        return self._select(Run, Run.id, suite=suite, dataset=dataset, model=model, status=status, variant=variant)

    def run(self, run_id: int) -> Run:
        if not 0 <= run_id < 2 ** 63:
            raise BenchError(f"no run with id {str(run_id)[:30]} in {self.url}")
        with self._reading(f"run {run_id}"), Session(self.engine) as s:
            r = s.get(Run, run_id) if self.exists() else None
            if r is None:
                raise BenchError(f"no run with id {run_id} in {self.url}")
            s.expunge(r)
            return r

    def per_user(self, run_id: int, metrics: list[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the named) per-user metric vectors of a run, as float64 arrays in evaluation-user order."""
        q = select(UserMetric).where(UserMetric.run_id == run_id)
        with self._reading(f"the per-user vectors of run {run_id}"):
            with Session(self.engine) as s:
                rows = list(s.exec(q))
            out = {r.metric: decode_vector(r.values) for r in rows if metrics is None or r.metric in metrics}
        if not out:
            raise BenchError(f"run {run_id} has no per-user metric vectors in {self.url}")
        return out

    def artifacts(self, *, kind: str | None = None, suite: str | None = None, model: str | None = None) -> list[Artifact]:
        with self._reading("the artifacts"):
            return self._artifacts(kind=kind, suite=suite, model=model)

    def _artifacts(self, *, kind, suite, model) -> list[Artifact]:
        if not self.exists():
            return []
        return self._select(Artifact, Artifact.id, kind=kind, suite=suite, model=model)

    def last_change(self) -> str:
        """A cheap token that changes whenever a run is added (for dashboard caching)."""
        if not self.exists():
            return "empty"
        from sqlalchemy import func

        with Session(self.engine) as s:
            n, last = s.exec(select(func.count(Run.id), func.max(Run.id))).one()
            na = s.exec(select(func.count(Artifact.id))).one()
        return f"{n}:{last}:{na}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
