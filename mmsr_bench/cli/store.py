"""``bench store`` (copy, export, import, check, upgrade) and ``bench fits`` (export, import): moving runs, reference
run files and completed LLM fits between stores and machines. :func:`register` is called by :mod:`mmsr_bench.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmsr_bench.cli.common import DB_OPTION, _names_option, _setup, console, err_console, fail, suite_name
from mmsr_bench.errors import BenchError

store_app = typer.Typer(help="Copy, export and import runs; check and upgrade a store.", no_args_is_help=True)
fits_app = typer.Typer(help="Export and import completed LLM fits (for the shards of one cell on several machines).",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
    app.add_typer(fits_app, name="fits")


# ------------------------------------------------------------------------------------------------ store
@store_app.command("copy")
def store_copy(
    source: str = typer.Option(..., "--from", help="SQLAlchemy URL of the store to copy runs from (read only)."),
    destination: str = typer.Option(..., "--to", help="SQLAlchemy URL of the store to copy them into (created if "
                                                       "it is a new SQLite file or an empty database)."),
) -> None:
    """Copy runs (with per-user vectors and artifacts) missing from --to; rerunning copies nothing new."""
    from mmsr_bench.results.store_copy import copy_store

    _setup()
    try:
        rep = copy_store(source, destination)
    except BenchError as exc:
        fail(str(exc))
        return
    console.print(f"copied {rep.runs_copied} runs and {rep.artifacts_copied} artifacts from {rep.source} to "
                  f"{rep.destination} ({rep.runs_present} runs and {rep.artifacts_present} artifacts were already "
                  "there)", highlight=False, soft_wrap=True)


@store_app.command("export")
def store_export(
    to: Path = typer.Option(..., "--to", help="Folder to write run files into (SUITE/DATASET/UUID.json; created)."),
    suite: Optional[str] = typer.Option(None, "--suite", "-s", help="Only runs of this suite."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only runs on this dataset."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only these models (comma-separated)."),
    run_ids: list[str] = typer.Option([], "--run", help="Only these runs (uuid or id; repeatable)."),
    all_: bool = typer.Option(False, "--all", help="Also failed and interrupted runs (default: completed runs and "
                              "the shards of unfinished cells)."),
    db: Optional[str] = DB_OPTION,
) -> None:
    """Write stored runs as portable run files: the whole run record, its per-user vectors and artifacts, one JSON
    file per run with a content hash (see the README's "Reference runs")."""
    from mmsr_bench.results.store_copy import export_store

    _setup()
    try:
        rep = export_store(db, to, suite=suite_name(suite), dataset=dataset, models=_names_option(model, "--model"),
                           run_uuids=list(run_ids) or None, include_failed=all_)
    except BenchError as exc:
        fail(str(exc))
        return
    console.print(f"exported {rep.runs} runs, {rep.artifacts} loose artifacts and {rep.tunings} tuning studies from "
                  f"{rep.source} to {rep.folder}: "
                  f"{rep.files_written} files written ({rep.bytes_written / 1e6:.2f} MB), {rep.files_unchanged} "
                  f"unchanged, in {rep.seconds:.1f} s", highlight=False, soft_wrap=True, markup=False)


@store_app.command("import")
def store_import(
    source: Path = typer.Argument(..., help="A run file, or a folder of them (searched recursively)."),
    db: Optional[str] = DB_OPTION,
) -> None:
    """Load run files into a store: every file is validated first (hash, fields, vector lengths, suite
    fingerprint), then the runs the store lacks are written; importing again writes nothing."""
    import time

    from mmsr_bench.results.store_copy import import_files

    _setup()
    t0 = time.perf_counter()
    try:
        rep = import_files(source, db)
    except BenchError as exc:
        fail(str(exc))
        return
    console.print(f"imported {rep.runs_copied} runs, {rep.artifacts_copied} artifacts and {rep.tunings_copied} "
                  f"tuning studies from {rep.source} into {rep.destination} ({rep.runs_present} runs, "
                  f"{rep.artifacts_present} artifacts and {rep.tunings_present} tuning studies were already there) in "
                  f"{time.perf_counter() - t0:.1f} s", highlight=False, soft_wrap=True, markup=False)


@fits_app.command("export")
def fits_export(
    to: Path = typer.Option(..., "--to", help="Folder to copy the fits into (MODEL/NAME/fitted.*; created)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this model's fits."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only fits on this dataset."),
) -> None:
    """Copy this machine's completed fine-tuning fits (LoRA weights + fingerprint, a few MB each) out of the cache,
    so that another machine scores the remaining shards of a cell with the same fit."""
    from mmsr_bench.runner.fits import export_fits

    _fits_command(lambda: export_fits(to, model=model, dataset=dataset), "exported", f"to {to}")


@fits_app.command("import")
def fits_import(source: Path = typer.Argument(..., help="A folder written by `bench fits export`.")) -> None:
    """Validate fit folders (regular files, sizes, JSON fields, safetensors header, sha256) and copy them into the
    cache; a run uses one only when its fingerprint matches (same settings, examples, configuration, validation)."""
    from mmsr_bench.runner.fits import import_fits

    _fits_command(lambda: import_fits(source), "imported", f"from {source}")


def _fits_command(action, verb: str, where: str) -> None:
    """Run a fits export/import: one error line on bad input, else what was copied."""
    _setup()
    try:
        rep = action()
    except BenchError as exc:
        fail(str(exc))
        return
    console.print(f"{verb} {rep.fits} fits {where}: {rep.written} files written ({rep.bytes_written / 1e6:.1f} MB), "
                  f"{rep.unchanged} unchanged", highlight=False, soft_wrap=True, markup=False)


@store_app.command("check")
def store_check(db: Optional[str] = DB_OPTION) -> None:
    """Check a store for damage: SQLite's integrity check, every run's JSON fields and timestamps, and every per-user
    vector decoded against its run's user count; exit 1 naming each problem."""
    from mmsr_bench.results.store import Store

    _setup()
    try:
        store = Store.for_reading(db)
        problems = store.check()
    except BenchError as exc:
        fail(str(exc))
        return
    for p in problems:
        err_console.print(f"error: {p}", highlight=False, soft_wrap=True, markup=False)
    if problems:
        raise typer.Exit(1)
    console.print(f"{store.url}: no damage found ({len(store.runs(status=None))} runs)", highlight=False,
                  markup=False)


@store_app.command("upgrade")
def store_upgrade(db: Optional[str] = DB_OPTION) -> None:
    """Bring an older store to this version's schema (give runs stored before uuids existed their uuid)."""
    from mmsr_bench.results.store import mask_url, upgrade_store

    _setup()
    try:
        changed = upgrade_store(db)
    except BenchError as exc:
        fail(str(exc))
        return
    from mmsr_bench.paths import default_db_url

    what = ", ".join(f"{n} {t}" for t, n in changed.items()) if changed else "nothing: it was current"
    console.print(f"upgraded {mask_url(db or default_db_url())}: {what}", highlight=False, soft_wrap=True)
