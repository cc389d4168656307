"""Copy runs between results stores (``bench store copy --from URL --to URL``): for instance the SQLite files of
several machines into one shared PostgreSQL store, or a shared store into a file to take away.

A run's identity is its cell (suite, protocol fingerprint, dataset, model, variant, seed, config hash) plus its
``uuid``: a run whose uuid the destination already holds is not copied again, so re-running a copy copies nothing
new and two stores holding the same runs merge without duplicates. A uuid present in both stores with different
cells means the stores disagree: the copy refuses before writing anything. Each run goes in its own transaction,
with its per-user vectors (their stored bytes, unchanged) and the artifacts attached to it; artifacts attached to
no run are copied after the runs, likewise by uuid. The destination's ids are its own (they are not preserved).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mmsr_bench import progress
from mmsr_bench.errors import BenchError
from mmsr_bench.results.store import Artifact, Run, Store, UserMetric, check_store, mask_url, sqlite_file

log = logging.getLogger(__name__)

CELL_FIELDS = ("suite", "suite_hash", "dataset", "model", "variant", "seed", "config_hash")


@dataclass
class CopyReport:
    source: str  # masked URLs
    destination: str
    runs_copied: int = 0
    runs_present: int = 0  # already in the destination (same uuid and cell)
    artifacts_copied: int = 0
    artifacts_present: int = 0


def cell(run: Run) -> tuple:
    return tuple(getattr(run, f) for f in CELL_FIELDS)


def same_store(a: str, b: str) -> bool:
    """Whether two URLs name one store: the same SQLite file, or the same server, port and database."""
    fa, fb = sqlite_file(a), sqlite_file(b)
    if fa is not None or fb is not None:
        return fa is not None and fb is not None and fa.resolve() == fb.resolve()
    try:
        ua, ub = make_url(a), make_url(b)
    except Exception:  # noqa: BLE001 - malformed URLs are reported when opened
        return False
    key = lambda u: (u.get_backend_name(), (u.host or "").lower(), u.port, u.database, u.username)  # noqa: E731
    return key(ua) == key(ub)


def copy_store(source: str, destination: str) -> CopyReport:
    """Copy every run (completed and failed) and artifact of ``source`` missing from ``destination``; see the
    module docstring. Both URLs are checked before anything is written."""
    for flag, url in (("--from", source), ("--to", destination)):
        if not url or not str(url).strip():
            raise BenchError(f"{flag}: give the SQLAlchemy URL of a results store")
    if same_store(source, destination):
        raise BenchError(f"--from {mask_url(source)!r} and --to {mask_url(destination)!r} name the same store")
    try:
        src = Store.for_reading(source)  # exists, has runs, current schema, reachable
    except BenchError as exc:
        raise BenchError(f"--from: {exc}") from None
    try:
        check_store(destination)  # valid URL, driver, folder, reachable, not a foreign schema; creates nothing
        dst = Store(destination)
    except BenchError as exc:
        raise BenchError(f"--to: {exc}") from None
    report = CopyReport(source=src.url, destination=dst.url)

    with Session(dst.engine) as s:
        have_runs = {r.uuid: (r.id, cell(r)) for r in s.exec(select(Run))}
        have_arts = set(s.exec(select(Artifact.uuid)))
    src_runs = src.runs(status=None)
    clashes = [r for r in src_runs if r.uuid in have_runs and have_runs[r.uuid][1] != cell(r)]
    if clashes:
        r = clashes[0]
        raise BenchError(f"run {r.uuid} is in both stores as different cells ({src.url} run {r.id}: "
                         f"{r.suite}/{r.dataset} {r.model} seed {r.seed}; {dst.url} run {have_runs[r.uuid][0]}) "
                         f"and {len(clashes) - 1} more: the stores disagree; nothing was copied")
    with Session(src.engine) as s:
        src_arts = list(s.exec(select(Artifact).order_by(Artifact.id)))
        for a in src_arts:
            s.expunge(a)
    arts_of: dict[int, list[Artifact]] = {}
    for a in src_arts:
        if a.run_id is not None:
            arts_of.setdefault(a.run_id, []).append(a)
    dst_id: dict[int, int] = {r.id: have_runs[r.uuid][0] for r in src_runs if r.uuid in have_runs}
    copied_now: set[str] = set()  # artifact uuids copied with their run

    with progress.track(f"copying runs to {dst.url}", total=len(src_runs)) as task:
        for run in src_runs:
            if run.uuid in have_runs:
                report.runs_present += 1
            else:
                new_id = _copy_run(src, dst, run, [a for a in arts_of.get(run.id, []) if a.uuid not in have_arts])
                if new_id is None:  # a concurrent copy stored it first
                    report.runs_present += 1
                else:
                    dst_id[run.id] = new_id
                    report.runs_copied += 1
                    copied = {a.uuid for a in arts_of.get(run.id, []) if a.uuid not in have_arts}
                    report.artifacts_copied += len(copied)
                    copied_now |= copied
                    have_arts |= copied
            task.advance()

    for a in src_arts:  # artifacts attached to no run, or added to a run after an earlier copy
        if a.uuid in have_arts:
            report.artifacts_present += a.uuid not in copied_now
            continue
        run_id = None
        if a.run_id is not None:
            run_id = dst_id.get(a.run_id)
            if run_id is None:
                log.warning("artifact %d of %s: its run %d was not copied; skipped", a.id, src.url, a.run_id)
                continue
        if _copy_artifact(dst, a, run_id):
            report.artifacts_copied += 1
        else:
            report.artifacts_present += 1
        have_arts.add(a.uuid)
    log.info("copied %d runs and %d artifacts from %s to %s (%d runs already there)", report.runs_copied,
             report.artifacts_copied, src.url, dst.url, report.runs_present)
    return report


def _fresh(row, cls, **changes):
    data = row.model_dump(exclude={"id"})
    data.update(changes)
    return cls(**data)


def _copy_run(src: Store, dst: Store, run: Run, artifacts: list[Artifact]) -> int | None:
    """One run with its per-user vectors and ``artifacts`` in one destination transaction; its new id, or None when
    the destination got the same uuid meanwhile (nothing written)."""
    with Session(src.engine) as s:
        vectors = [(m.metric, m.values) for m in s.exec(select(UserMetric).where(UserMetric.run_id == run.id))]
    try:
        with Session(dst.engine) as s:
            with s.begin():
                new = _fresh(run, Run)
                s.add(new)
                s.flush()
                for metric, blob in vectors:
                    s.add(UserMetric(run_id=new.id, metric=metric, values=blob))
                for a in artifacts:
                    s.add(_fresh(a, Artifact, run_id=new.id))
                new_id = new.id
    except IntegrityError:
        if _has_uuid(dst, Run, run.uuid):
            return None
        raise
    return new_id


def _copy_artifact(dst: Store, art: Artifact, run_id: int | None) -> bool:
    try:
        with Session(dst.engine) as s:
            with s.begin():
                s.add(_fresh(art, Artifact, run_id=run_id))
    except IntegrityError:
        if _has_uuid(dst, Artifact, art.uuid):
            return False
        raise
    return True


def _has_uuid(store: Store, cls, uuid: str) -> bool:
    with Session(store.engine) as s:
        return s.exec(select(cls.id).where(cls.uuid == uuid)).first() is not None


