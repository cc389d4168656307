"""The results store (SQLModel): one row per run plus its per-user metric vectors, written in one transaction.

Per-user vectors are stored compactly: float64 arrays in ``.npy`` format, zlib-compressed, one row per (run,
metric), loadable back as arrays in one call (:meth:`Store.per_user`). The user order is the suite's evaluation
user list, whose hash is recorded in the run, so two runs can be paired user by user.
"""

from __future__ import annotations

import io
import json
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from sqlalchemy import event
from sqlalchemy.exc import (ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError, OperationalError,
                            ProgrammingError)
from sqlmodel import Field, Session, SQLModel, create_engine, select

from harness.errors import BenchError
from harness.paths import default_db_url


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    id: int | None = Field(default=None, primary_key=True)
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

    @property
    def metrics(self) -> dict[str, float]:
        return json.loads(self.metrics_json)

    @property
    def config(self) -> dict:
        return json.loads(self.config_json)

    @property
    def run_info(self) -> dict:
        return json.loads(self.run_info_json)


class UserMetric(SQLModel, table=True):
    __tablename__ = "user_metrics"

    run_id: int = Field(foreign_key="runs.id", primary_key=True)
    metric: str = Field(primary_key=True)
    values: bytes


class Artifact(SQLModel, table=True):
    """Run-attached analyses (hallucination distributions, ...), stored as JSON."""

    __tablename__ = "artifacts"

    id: int | None = Field(default=None, primary_key=True)
    run_id: int | None = Field(default=None, foreign_key="runs.id", index=True)
    suite: str = Field(index=True)
    dataset: str = Field(index=True)
    model: str = Field(index=True)
    kind: str = Field(index=True)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    payload_json: str = "{}"


def _engine(url: str):
    """An engine for ``url``, with one-line errors for a malformed URL, a missing driver and an in-memory store."""
    try:
        engine = create_engine(url)
    except NoSuchModuleError as exc:
        raise BenchError(f"--db {url!r} is not a valid SQLAlchemy URL: no dialect for it ({exc})") from None
    except ImportError as exc:
        raise BenchError(f"--db {url!r}: the database driver is not installed ({exc.name or exc}); install it "
                         "(for example psycopg for postgresql+psycopg://)") from None
    except (ArgumentError, ValueError) as exc:
        raise BenchError(f"--db {url!r} is not a valid SQLAlchemy URL: {exc}") from None
    if engine.url.get_backend_name() == "sqlite" and engine.url.database in (None, "", ":memory:"):
        raise BenchError(f"--db {url!r} is an in-memory SQLite database: every run would be lost when the "
                         "command ends; give a file, e.g. sqlite:///results.db")
    return engine


def _create_tables(engine, attempts: int = 8) -> None:
    """``create_all`` that tolerates other processes creating the same tables at the same moment (measured: 15 of
    40 runs lost when 8 processes opened a new store at once): a "table already exists" race is retried, and the
    retry finds the tables and creates nothing."""
    import time

    for attempt in range(attempts):
        try:
            SQLModel.metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            text = str(getattr(exc, "orig", exc)).lower()
            if ("already exists" not in text and "duplicate" not in text and "locked" not in text) \
                    or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


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
            raise BenchError(f"--db {url!r}: the folder {path.parent} does not exist")
        return
    if path is not None and path.is_dir():
        raise BenchError(f"--db {url!r}: {path} is a folder, not a database file")
    store = Store(url, read_only=True)
    store.engine.dispose()


def check_schema(engine, url: str) -> None:
    """Refuse an existing database whose tables of our names lack our columns (another program's schema, or a
    store from an incompatible version), before any work is done."""
    from sqlalchemy import inspect

    insp = inspect(engine)
    present = set(insp.get_table_names())
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in present:
            continue
        have = {c["name"] for c in insp.get_columns(table.name)}
        missing = sorted(c.name for c in table.columns if c.name not in have)
        if missing:
            more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            raise BenchError(f"the results store {url} has a table {table.name!r} without the columns "
                             f"{', '.join(missing[:4])}{more}: it "
                             "is not an mmsr-bench store of this version; use another --db")


def encode_vector(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float64), allow_pickle=False)
    return zlib.compress(buf.getvalue(), 6)


def decode_vector(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(zlib.decompress(blob)), allow_pickle=False)


class Store:
    """A results store at any SQLAlchemy URL (default ``sqlite:///results.db`` in the current directory)."""

    def __init__(self, url: str | None = None, *, read_only: bool = False) -> None:
        self.url = url or default_db_url()
        self.read_only = read_only
        self.engine = _engine(self.url)
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            if not read_only:
                _create_tables(self.engine)
            check_schema(self.engine, self.url)
        except (OperationalError, DatabaseError) as exc:
            raise BenchError(f"cannot open the results store {self.url}: {getattr(exc, 'orig', exc)}") from None

    @classmethod
    def for_reading(cls, url: str | None = None) -> "Store":
        """A store opened read-only for a command that only reads: never creates a file, and a store without runs is
        one clear error instead of a missing-table traceback."""
        path = sqlite_file(url or default_db_url())
        if path is not None and not path.is_file():
            raise BenchError(f"no results store at {path} (--db {url or default_db_url()}); `bench run` creates one")
        store = cls(url, read_only=True)
        if not store.exists():
            raise BenchError(f"the results store {store.url} holds no runs yet; `bench run` stores them")
        return store

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

    def add_artifact(self, artifact: Artifact) -> Artifact:
        with Session(self.engine) as s:
            with s.begin():
                s.add(artifact)
            s.refresh(artifact)
            s.expunge(artifact)
        return artifact

    def runs(self, *, suite: str | None = None, dataset: str | None = None, model: str | None = None,
             status: str | None = "completed", variant: str | None = None) -> list[Run]:
        if not self.exists():
            return []
        q = select(Run)
        for col, val in ((Run.suite, suite), (Run.dataset, dataset), (Run.model, model), (Run.status, status),
                         (Run.variant, variant)):
            if val is not None:
                q = q.where(col == val)
        with Session(self.engine) as s:
            rows = list(s.exec(q.order_by(Run.id)))
            for r in rows:
                s.expunge(r)
        return rows

    def run(self, run_id: int) -> Run:
        with Session(self.engine) as s:
            r = s.get(Run, run_id) if self.exists() else None
            if r is None:
                raise BenchError(f"no run with id {run_id} in {self.url}")
            s.expunge(r)
            return r

    def per_user(self, run_id: int, metrics: list[str] | None = None) -> dict[str, np.ndarray]:
        """All (or the named) per-user metric vectors of a run, as float64 arrays in evaluation-user order."""
        q = select(UserMetric).where(UserMetric.run_id == run_id)
        with Session(self.engine) as s:
            rows = list(s.exec(q))
        out = {r.metric: decode_vector(r.values) for r in rows if metrics is None or r.metric in metrics}
        if not out:
            raise BenchError(f"run {run_id} has no per-user metric vectors in {self.url}")
        return out

    def artifacts(self, *, kind: str | None = None, suite: str | None = None, model: str | None = None) -> list[Artifact]:
        if not self.exists():
            return []
        q = select(Artifact)
        for col, val in ((Artifact.kind, kind), (Artifact.suite, suite), (Artifact.model, model)):
            if val is not None:
                q = q.where(col == val)
        with Session(self.engine) as s:
            rows = list(s.exec(q.order_by(Artifact.id)))
            for r in rows:
                s.expunge(r)
        return rows

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
