"""``bench suite`` (list, show, build, verify, freeze) and ``bench data`` (import, fetch, images): the suites and
their raw data. :func:`register` is called by :mod:`mmsr_bench.cli.main`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import typer

from mmsr_bench import progress as progress_mod
from mmsr_bench.cli.common import _names_option, _print_table, _setup, console, fail
from mmsr_bench.errors import BenchError

suite_app = typer.Typer(help="Describe, build, verify and freeze benchmark suites.", no_args_is_help=True)
data_app = typer.Typer(help="Import raw data and fetch item images.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(suite_app, name="suite")
    app.add_typer(data_app, name="data")


# ------------------------------------------------------------------------------------------------- suites
@suite_app.command("list")
def suite_list() -> None:
    """List the shipped suites (mmsr_bench/suites/specs/)."""
    from mmsr_bench.suites import spec as suites

    _setup()
    rows = []
    for name, path in suites.suite_files().items():
        try:
            s = suites.load_suite_file(path)
            frozen = sum(1 for d in s.datasets if d.name in s.hashes)
            rows.append([name, ",".join(d.name for d in s.datasets), s.protocol.candidates,
                         f"{frozen}/{len(s.datasets)}", s.description[:60]])
        except BenchError as exc:
            from rich.text import Text

            rows.append([name, "", "", "", Text(str(exc), style="red")])
    _print_table(["suite", "datasets", "candidates", "frozen", "description"], rows)


@suite_app.command("show")
def suite_show(name: str) -> None:
    """Describe a suite: datasets, preprocessing, protocol, metrics and frozen hashes."""
    from mmsr_bench.suites import spec as suites

    _setup()
    try:
        s = suites.load_suite(name)
    except BenchError as exc:
        fail(str(exc))
        return
    console.print_json(json.dumps(s.model_dump(), default=str))


def _build(name: str, dataset: Optional[str], force: bool, verbose: bool) -> tuple:
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    spec = suites.load_suite(name)
    out = {}
    for d in spec.select(dataset):
        with progress_mod.track(f"building {name}/{d.name}", total=None):
            out[d.name] = build.materialize(spec, d, force=force)
    return spec, out


@suite_app.command("build")
def suite_build(name: str, dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
                force: bool = typer.Option(False, "--force"), verbose: bool = typer.Option(False, "-v")) -> None:
    """Materialize a suite's artifacts into the cache ($MMSR_BENCH_HOME, default ~/.cache/mmsr-bench)."""
    from mmsr_bench.suites import build

    _setup(verbose)
    try:
        spec, out = _build(name, dataset, force, verbose)
        for d in out:
            build.verify(spec, d, allow_unfrozen=True)
            frozen = spec.hashes.get(d)
            state = "matches the frozen hashes" if frozen == out[d] else (
                "NOT frozen in the spec" if not frozen else "[red]differs from the frozen hashes[/red]")
            console.print(f"{name}/{d}: {build.dataset_dir(spec, d)} ({state})")
            info = json.loads((build.dataset_dir(spec, d) / "build.json").read_text())
            for line in info.get("report", []):
                console.print(f"  [dim]{line}[/dim]")
    except BenchError as exc:
        fail(str(exc))


@suite_app.command("verify")
def suite_verify(name: str, dataset: Optional[str] = typer.Option(None, "--dataset", "-d")) -> None:
    """Re-hash every built artifact against the suite spec."""
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    _setup()
    try:
        spec = suites.load_suite(name)
        for d in spec.select(dataset):
            build.verify(spec, d.name)
            console.print(f"[green]ok[/green] {name}/{d.name}")
    except BenchError as exc:
        fail(str(exc))


@suite_app.command("freeze")
def suite_freeze(name: str, dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
                 force: bool = typer.Option(False, "--force", help="Rebuild before hashing."),
                 accept_warnings: bool = typer.Option(False, "--accept-warnings",
                                                      help="Freeze although the build recorded data-quality "
                                                           "warnings (runs on it still carry them).")) -> None:
    """Build and write the artifacts' sha256 into the suite spec (review the diff before committing)."""
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    _setup()
    try:
        spec, out = _build(name, dataset, force, False)
        for d in out:
            record = json.loads((build.dataset_dir(spec, d) / "build.json").read_text(encoding="utf-8"))
            warnings = (record.get("quality") or {}).get("warnings", [])
            if warnings and not accept_warnings:
                raise BenchError(f"refusing to freeze {spec.name}/{d}: {' '.join(warnings)}. Fix the data, or pass "
                                 "--accept-warnings to freeze it anyway (every run will record the warning)")
        for d, hashes in out.items():
            path = suites.write_hashes(spec, d, hashes)
            console.print(f"froze {name}/{d} in {path}")
    except BenchError as exc:
        fail(str(exc))


# ------------------------------------------------------------------------------------------------- data
@data_app.command("import")
def data_import(suite: str, from_: Path = typer.Option(..., "--from", help="Folder with the raw Amazon files.")) -> None:
    """Copy raw Amazon review/meta files a user downloaded into the cache, for the suite's raw-file datasets."""
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    _setup()
    try:
        spec = suites.load_suite(suite)
        if not from_.is_dir():
            fail(f"--from {from_}: not a folder")
        copied = []
        for d in spec.datasets:
            kind, names = build.raw_files(d)
            for n in names:
                if (from_ / n).exists():
                    from mmsr_bench.paths import inside

                    dest_dir = build.raw_dir(kind)
                    src = inside(from_ / n, from_, f"--from file {n}")  # no name reaches outside either folder
                    dst = inside(dest_dir / n, dest_dir, f"raw file {n}")
                    if not src.is_file():
                        raise BenchError(f"--from {from_ / n}: not a regular file")
                    shutil.copy2(src, dst)
                    copied.append(n)
        if not copied:
            fail(f"no raw files for suite {suite!r} found in {from_}; expected e.g. reviews_<Category>_5.json.gz")
        console.print(f"imported {', '.join(copied)}; now run `bench suite build {suite}`")
    except BenchError as exc:
        fail(str(exc))


@data_app.command("fetch")
def data_fetch(
    suite: str = typer.Argument(..., help="Suite name or TOML path, e.g. amazon4 or amazon4-mm."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Comma-separated datasets (default: all)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Where the Amazon 2014 files are published "
                                           "(default: $MMSR_BENCH_AMAZON2014_URL or McAuley's category files)."),
) -> None:
    """Download the raw Amazon 2014 files a suite's datasets need into the cache (what `bench data import` would
    copy), resuming cut downloads and checking each file; then `bench suite build SUITE` builds from them."""
    import os

    from mmsr_bench.data import fetch
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    _setup()
    try:
        spec = suites.load_suite(suite)
        base = base_url or os.environ.get("MMSR_BENCH_AMAZON2014_URL") or fetch.AMAZON_2014_URL
        base = base if base.endswith("/") else base + "/"
        todo = []
        for d in spec.select(_names_option(dataset, "--dataset")):
            kind, names = build.raw_files(d)
            if kind == "amazon2023":
                raise BenchError(f"dataset {d.name!r}: `bench data fetch` downloads the Amazon 2014 files; download "
                                 "the 2023 files yourself and use `bench data import`")
            todo += [(d.name, n) for n in names if n.endswith(".gz")]
        if not todo:
            fail(f"suite {spec.name!r}: none of its datasets is built from raw Amazon files; nothing to fetch")
        folder = build.raw_dir("amazon2014")
        rows = []
        for ds, name in todo:
            with progress_mod.track(f"fetching {name}", total=None):
                got = fetch.fetch_file(base + name, folder, name)
            state = "already here" if got.skipped else (f"resumed at {got.resumed_from:,} bytes" if got.resumed_from
                                                        else "downloaded")
            rows.append([ds, name, f"{got.bytes:,}", got.sha256[:16], state])
    except BenchError as exc:
        fail(str(exc))
        return
    _print_table(["dataset", "file", "bytes", "sha256", "state"], rows, title=f"raw files of {spec.name} in {folder}")
    console.print(f"now run `bench suite build {suite}` (the frozen hashes check what was built)", highlight=False,
                  markup=False)


@data_app.command("images")
def data_images(
    suite: str = typer.Option(..., "--suite", "-s"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    offline: bool = typer.Option(False, "--offline", help="Only use local files and images already cached."),
) -> None:
    """Resolve and verify every item image of a suite's datasets (downloading URLs once) and report coverage."""
    from mmsr_bench.data import images
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    _setup()
    try:
        spec = suites.load_suite(suite)
        rows = []
        for d in spec.select(dataset):
            data = build.load(spec, d.name)
            frame = data.items.frame
            report = images.resolve_images(frame, f"{spec.name}-{d.name}", allow_network=not offline,
                                           roots=data.items.image_roots)
            failed = ", ".join(f"{n} {r}" for r, n in sorted(report.failed.items())) or "-"
            rows.append([d.name, str(report.n_items), str(report.ok), str(report.missing), failed,
                         f"{report.coverage:.1%}"])
    except BenchError as exc:
        fail(str(exc))
        return
    _print_table(["dataset", "items", "usable", "no reference", "failed", "coverage"], rows,
                 title=f"item images: {spec.name}")
