"""``bench sweep``: many (model, dataset, seed) cells on local worker processes or a Ray cluster
(:mod:`mmsr_bench.runner.sweep`), with a live progress table. :func:`register` is called by :mod:`mmsr_bench.cli.main`."""

from __future__ import annotations

from typing import Optional

import typer


def sweep_command(
    suite: str = typer.Option(..., "--suite", "-s", help="Suite name (see `bench suite list`) or a TOML path."),
    model: str = typer.Option(..., "--model", "-m", help="Model name(s), comma-separated."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Comma-separated datasets (default: all)."),
    seed_text: list[str] = typer.Option(["0"], "--seed", help="One or more seeds: --seed 0 1 2."),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable)."),
    executor: str = typer.Option("local", "--executor", help="local (worker processes here) or ray."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto or HOST:PORT (default: start "
                                          "a local one)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes / concurrent cells "
                                          "(default: CPU count)."),
    retries: int = typer.Option(1, "--retries", help="Retries of a failed cell before it is recorded as failed."),
    num_cpus: Optional[float] = typer.Option(None, "--num-cpus", help="CPUs per cell (default 1)."),
    num_gpus: Optional[float] = typer.Option(None, "--num-gpus", help="GPUs per cell (default: 1 for torch "
                                             "adapters, 0 for numpy baselines; Ray only)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA if present)."),
    db: Optional[str] = typer.Option(None, "--db", help="SQLAlchemy URL of the results store (share one "
                                     "PostgreSQL URL across a cluster)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run every (model, dataset, seed) cell as an idempotent task: stored cells are skipped, failures retried."""
    import time

    from rich.live import Live
    from rich.table import Table

    from mmsr_bench.cli.common import _names_option, _setup, console, err_console, fail, parse_seeds, terminal_text
    from mmsr_bench.errors import BenchError
    from mmsr_bench.models import adapter
    from mmsr_bench.runner import sweep

    _setup(verbose)
    t0 = time.perf_counter()

    def table(states) -> Table:
        counts = {k: sum(s.status == k for s in states) for k in ("done", "running", "failed", "skipped",
                                                                   "pending", "interrupted")}
        t = Table(title=f"sweep {suite}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
                  + f" — {time.perf_counter() - t0:.0f}s")
        for h in ("cell", "status", "attempts", "seconds", "run", "error"):
            t.add_column(h)
        for s in states:
            secs = s.seconds if s.status != "running" else time.perf_counter() - (s.started or time.perf_counter())
            t.add_row(*(terminal_text(v) for v in (s.cell.key, s.status, str(s.attempts), f"{secs:.1f}",
                                                   str(s.run_id or ""), s.error[:60])))
        return t

    try:
        req = sweep.SweepRequest(suite, _names_option(model, "--model"), _names_option(dataset, "--dataset"),
                                 parse_seeds(seed_text), adapter.parse_set_options(set_), db, executor, address,
                                 workers,
                                 retries, num_cpus, num_gpus, device)
        cells = sweep.plan(req)
        with Live(console=err_console, refresh_per_second=2, transient=False) as live:
            states = sweep.sweep(req, cells=cells, on_update=lambda st: live.update(table(st)))
    except BenchError as exc:
        fail(str(exc))
        return
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted: in-flight cells recorded as interrupted; rerun to resume[/yellow]")
        raise typer.Exit(130)
    failed = [s for s in states if s.status == "failed"]
    console.print(f"{sum(s.status == 'done' for s in states)} done, {sum(s.status == 'skipped' for s in states)} "
                  f"skipped, {len(failed)} failed", highlight=False)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
