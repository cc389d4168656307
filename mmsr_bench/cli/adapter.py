"""``bench adapter check NAME`` (the conformance kit, :mod:`mmsr_bench.models.conformance`) and ``bench adapter new NAME``
(a new adapter from the ``pop`` template, :mod:`mmsr_bench.models.scaffold`). :func:`register` is called by
:mod:`mmsr_bench.cli.main`; the shared helpers come from :mod:`mmsr_bench.cli.common`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

adapter_app = typer.Typer(help="Write and check adapters (the conformance kit).", no_args_is_help=True)


@adapter_app.command("check")
def adapter_check(
    name: str = typer.Argument(..., help="A registered model (built-in, variant or entry point)."),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable), on top of the kit's "
                                   "tiny budget."),
    seed: int = typer.Option(0, "--seed"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Keep the kit's suite and cache here "
                                           "(default: a temporary folder)."),
    time_limit: float = typer.Option(15.0, "--time-limit", help="Minutes each step (a fit, or a check with its "
                                     "fits) may take before it fails instead of hanging the kit."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the conformance checks on NAME with a tiny budget; exit 1 when any fails."""
    from rich.markup import escape
    from rich.table import Table

    from mmsr_bench.cli.common import _setup, console, err_console, fail
    from mmsr_bench.errors import BenchError
    from mmsr_bench.models import adapter, conformance

    _setup(verbose)
    try:
        overrides = adapter.parse_set_options(set_)
        budget = {**conformance.tiny_overrides(name), **overrides}
        if workdir is not None and workdir.exists() and not workdir.is_dir():
            raise BenchError(f"--workdir {workdir}: a file, not a folder")
        if not 0 < time_limit <= 10 ** 6:
            raise BenchError(f"--time-limit {time_limit}: give minutes above 0")
        results = conformance.run_checks(name, overrides, seed=seed, workdir=workdir, time_limit_s=time_limit * 60)
    except BenchError as exc:
        fail(str(exc))
        return
    table = Table(title=f"conformance of {name}" + (f" ({', '.join(f'{k}={v}' for k, v in budget.items())})"
                                                   if budget else ""))
    for col in ("check", "result", "reason"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, "[green]pass[/green]" if r.passed else "[bold red]FAIL[/bold red]", escape(r.reason))
    console.print(table)
    failed = [r for r in results if not r.passed]
    for r in failed:
        err_console.print(f"[bold red]error:[/bold red] {name} fails {r.name}: {escape(r.reason)}", highlight=False,
                          soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@adapter_app.command("new")
def adapter_new(
    name: str = typer.Argument(..., help="The new model's name: lower-case letters, digits, inner hyphens."),
    root: Optional[Path] = typer.Option(None, "--root", help="The checkout to write into (default: this one)."),
) -> None:
    """Write mmsr_bench/models/<name>.py and tests/test_<name>.py from the pop baseline, and its registry.toml entry."""
    from mmsr_bench.cli.common import _setup, console, fail
    from mmsr_bench.errors import BenchError
    from mmsr_bench.models import scaffold

    _setup()
    try:
        made = scaffold.new_adapter(name, root)
    except BenchError as exc:
        fail(str(exc))
        return
    module = made.adapter.stem
    console.print(f"wrote {made.adapter}\nwrote {made.test}")
    if made.registry:
        console.print(f"appended [bold]{name}[/bold] to {made.registry} (edit its description)")
    console.print(f"next: write the model in {made.adapter} (module mmsr_bench.models.{module}, found through its "
                  f"catalog entry), then `bench adapter check {name}` and `pytest -q {made.test}`", highlight=False)


@adapter_app.command("catalog")
def adapter_catalog(
    write: bool = typer.Option(False, "--write", help="Write mmsr_bench/models/registry.toml from the classes."),
) -> None:
    """The model catalog (registry.toml) as the registered classes say it should read: print it, or --write it.
    Exit 1 when the file differs and --write was not given (what tests/test_registry.py checks)."""
    from pathlib import Path

    from mmsr_bench.cli.common import _setup, err_console
    from mmsr_bench.models import adapter

    _setup()
    path = Path(adapter.__file__).with_name("registry.toml")
    text = adapter.catalog_text()
    if write:
        path.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {path}", highlight=False)
        return
    print(text, end="")
    if path.read_text(encoding="utf-8") != text:
        err_console.print(f"[yellow]{path} differs from the classes; `bench adapter catalog --write` regenerates "
                          "it[/yellow]", highlight=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(adapter_app, name="adapter")
