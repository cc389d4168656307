"""The reference runs: this project's own runs, kept as portable run files in the repository (``reference-runs/``),
so that no finished compute is lost with the machine that made it and a new user's leaderboard is populated before
any training.

The folder is read through a store built from it on first use and cached under the cache home, keyed by a digest of
the files (a changed folder builds a new one). Reference runs are shown beside the user's own, always marked: their
model names carry :data:`SUFFIX` wherever both are shown together, so they are never mixed silently into the
user's seeds or significance tests.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mmsr_bench.errors import BenchError
from mmsr_bench.paths import REPO_ROOT, cache_dir
from mmsr_bench.results import run_files
from mmsr_bench.results.store import Store

log = logging.getLogger(__name__)

#: Appended to a reference run's model name where reference and local runs are shown together.
SUFFIX = " (reference)"
ENV = "MMSR_BENCH_REFERENCE"


def reference_dir() -> Path:
    """``$MMSR_BENCH_REFERENCE``, else the checkout's ``reference-runs/``."""
    return Path(os.environ.get(ENV) or REPO_ROOT / "reference-runs").expanduser()


def cached_store(name: str, build) -> str:
    """A SQLite store under ``cache/reference`` named ``name``, built by ``build(url)`` into a temporary file and
    renamed into place (a crash never leaves a half-built cache)."""
    import threading

    folder = cache_dir("reference")
    path = folder / f"{name}.db"
    if not path.is_file():
        tmp = folder / f"{name}.{os.getpid()}.{threading.get_ident()}.tmp.db"
        tmp.unlink(missing_ok=True)
        try:
            build(f"sqlite:///{tmp}")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def reference_url(folder: Path | None = None) -> str:
    """The URL of a read-only store holding exactly the reference runs (built from the folder on first use)."""
    folder = Path(folder) if folder is not None else reference_dir()
    if not folder.is_dir():
        raise BenchError(f"no reference runs at {folder} (set ${ENV} to the folder of run files)")
    files = run_files.run_files(folder)
    digest = run_files.folder_digest(files)

    def build(url: str) -> None:
        records, loose = run_files.read_files(folder)
        run_files.write_records(Store(url), records, loose, source=str(folder))

    return cached_store(f"reference-{digest[:20]}", build)


def reference_store(folder: Path | None = None) -> Store:
    return Store(reference_url(folder), read_only=True)


def merged_url(local: Store, folder: Path | None = None) -> str:
    """A read-only store holding the local store's runs and the reference runs, the latter's model names marked with
    :data:`SUFFIX` (rebuilt when either side changes)."""
    import hashlib

    ref = reference_store(folder)
    key = hashlib.sha256(f"{local.url}|{local.last_change()}|{ref.url}".encode()).hexdigest()[:20]

    def build(url: str) -> None:
        dst = Store(url)
        records, loose = run_files.read_store(local)
        run_files.write_records(dst, records, loose, source=local.url)
        records, loose = run_files.read_store(ref)
        for rec in records:
            rec.run.model += SUFFIX
            for a in rec.artifacts:
                a.model += SUFFIX
        for a in loose:  # artifacts attached to no run, and tuning studies (their identity marked too)
            row = a.tuning if isinstance(a, run_files.TuningRecord) else a
            row.model += SUFFIX
            if isinstance(a, run_files.TuningRecord):
                row.key += SUFFIX
        run_files.write_records(dst, records, loose, source=ref.url)

    return cached_store(f"merged-{key}", build)


def is_reference(model: str) -> bool:
    return model.endswith(SUFFIX)
