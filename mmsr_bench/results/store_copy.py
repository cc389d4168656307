"""Move runs between results stores and run files: ``bench store copy --from URL --to URL`` (for instance the
SQLite files of several machines into one shared PostgreSQL store), ``bench store export`` (a store's runs as
portable run files, :mod:`mmsr_bench.results.run_files`) and ``bench store import`` (run files into a store).

All three are one code path: runs are read as :class:`~mmsr_bench.results.run_files.RunRecord` (from a store or
from validated files) and written by :func:`~mmsr_bench.results.run_files.write_records`. A run's identity is its
cell (suite, protocol fingerprint, dataset, model, variant, seed, config hash) plus its ``uuid``: a run whose uuid
the destination already holds is not written again, so re-running a copy or an import writes nothing new, and two
sources holding the same runs merge without duplicates. A uuid present in both places with different cells means
they disagree: nothing is written. Each run goes in its own transaction, with its per-user vectors and the
artifacts attached to it; artifacts attached to no run follow, likewise by uuid. The destination's ids are its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from mmsr_bench.errors import BenchError
from mmsr_bench.results import run_files
from mmsr_bench.results.run_files import CELL_FIELDS, WriteReport, cell  # noqa: F401 - re-exported
from mmsr_bench.results.store import Store, check_store, mask_url, sqlite_file

log = logging.getLogger(__name__)

CopyReport = WriteReport


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


def _open_destination(url: str, flag: str) -> Store:
    try:
        check_store(url)  # valid URL, driver, folder, reachable, not a foreign schema; creates nothing
        return Store(url)
    except BenchError as exc:
        raise BenchError(f"{flag}: {exc}") from None


def _open_source(url: str, flag: str) -> Store:
    try:
        return Store.for_reading(url)  # exists, has runs, current schema, reachable
    except BenchError as exc:
        raise BenchError(f"{flag}: {exc}") from None


def copy_store(source: str, destination: str) -> CopyReport:
    """Copy every run (completed and failed) and artifact of ``source`` missing from ``destination``; see the
    module docstring. Both URLs are checked before anything is written."""
    for flag, url in (("--from", source), ("--to", destination)):
        if not url or not str(url).strip():
            raise BenchError(f"{flag}: give the SQLAlchemy URL of a results store")
    if same_store(source, destination):
        raise BenchError(f"--from {mask_url(source)!r} and --to {mask_url(destination)!r} name the same store")
    src = _open_source(source, "--from")
    dst = _open_destination(destination, "--to")
    records, loose = run_files.read_store(src)
    run_files.check_foreign_records(records, loose)
    return run_files.write_records(dst, records, loose, source=src.url)


@dataclass
class ExportReport:
    source: str
    folder: str
    runs: int
    artifacts: int
    files_written: int
    files_unchanged: int
    bytes_written: int
    seconds: float
    tunings: int = 0


def export_store(db: str | None, to: Path, *, suite: str | None = None, dataset: str | None = None,
                 models: list[str] | None = None, run_uuids: list[str] | None = None,
                 include_failed: bool = False) -> ExportReport:
    """Write the matching runs of ``db`` (completed ones and shards of unfinished cells, which are finished
    compute too; ``include_failed`` adds failed and interrupted runs) and the artifacts attached to no run that
    match, as run files under ``to``. Nothing is written when a filter matches nothing."""
    t0 = time.perf_counter()
    from mmsr_bench.paths import default_db_url

    src = _open_source(db or default_db_url(), "--db")
    records, loose = run_files.read_store(src, suite=suite, dataset=dataset, models=models, run_uuids=run_uuids)
    if not include_failed:
        records = [r for r in records if r.run.status in ("completed", "shard")]
    if not records and not loose:
        raise BenchError(f"no runs in {src.url} match the filters (--suite/--dataset/--model/--run); nothing exported")
    written, same, nbytes = run_files.export_records(records, loose, Path(to))
    tunings = sum(isinstance(x, run_files.TuningRecord) for x in loose)
    return ExportReport(src.url, str(to), len(records), len(loose) - tunings, written, same, nbytes,
                        time.perf_counter() - t0, tunings)


def import_files(source: Path, db: str | None) -> CopyReport:
    """Validate every run file under ``source`` (all of them, before anything is written), then store the runs
    ``db`` does not hold yet."""
    records, loose = run_files.read_files(Path(source))
    from mmsr_bench.paths import default_db_url

    dst = _open_destination(db or default_db_url(), "--db")
    return run_files.write_records(dst, records, loose, source=str(source))
