"""``bench tune`` (:mod:`mmsr_bench.runner.tune`) and ``bench runs trials`` (the stored tuning studies and their
trials). :func:`register` is called by :mod:`mmsr_bench.cli.main`."""

from __future__ import annotations

import json
from typing import Optional

import typer


def tune_command(
    suite: str = typer.Option(..., "--suite", "-s", help="Suite name (see `bench suite list`) or a TOML path."),
    model: str = typer.Option(..., "--model", "-m", help="Model name(s), comma-separated: each gets the same "
                              "budget."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="The dataset whose validation split is tuned on."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Budget: complete + pruned trials per model."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Budget: wall minutes of trials per model on "
                                            "this machine (at --threads)."),
    seed: int = typer.Option(0, "--seed", help="The tuning seed (sampler and every trial's fit)."),
    seeds_text: list[str] = typer.Option([], "--seeds", help="Then test: run the best configuration on the test "
                                         "split with these seeds (--seeds 0 1 2)."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (seeded) | random | grid."),
    pruner: str = typer.Option("median", "--pruner", help="median | halving | none: stop poor trials early from "
                               "their validation curves."),
    workers: int = typer.Option(1, "--workers", help="Parallel trials (processes or Ray tasks) sharing the study."),
    executor: str = typer.Option("local", "--executor", help="local (worker processes) or ray."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster: auto or HOST:PORT."),
    space: Optional[str] = typer.Option(None, "--space", help="A TOML space file (one table per model) replacing the "
                                        "declared search spaces."),
    set_: list[str] = typer.Option([], "--set", help="Fixed override for every trial: key=value, or "
                                   "model-glob:key=value for some models (repeatable)."),
    threads: int = typer.Option(1, "--threads", help="torch threads per trial (recorded with the budget)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA if present)."),
    db: Optional[str] = typer.Option(None, "--db", help="SQLAlchemy URL of the results store; the Optuna study "
                                     "lives in the same database (one PostgreSQL URL shares it across machines)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Tune models on the validation split under one equal budget (Optuna), keep every trial, then test the best."""
    from mmsr_bench.cli.common import _names_option, _print_table, _setup, err_console, fail, parse_seeds
    from mmsr_bench.errors import BenchError
    from mmsr_bench.models import adapter
    from mmsr_bench.runner import tune

    _setup(verbose)
    try:
        models = tuple(_names_option(model, "--model") or ())
        for m in models:
            adapter.get(m)  # an unknown name first, with its suggestions
        fixed = adapter.resolve_sets(list(models), adapter.parse_set_options(set_))
        req = tune.TuneRequest(suite, models, dataset, trials, minutes, seed, sampler, pruner, workers, executor,
                               address, db, fixed, space, threads, device,
                               tuple(parse_seeds(seeds_text, "--seeds")) if seeds_text else ())

        def said(t) -> None:
            value = "" if t.value is None else f" {t.value:.4f}"
            err_console.print(f"[dim]trial {t.number}: {t.state}{value} ({t.seconds:.1f}s)[/dim]", highlight=False)

        outcomes = tune.tune(req, on_trial=said)
    except BenchError as exc:
        fail(str(exc))
        return
    rows = []
    for o in outcomes:
        best = "" if o.best_value is None else f"{o.best_value:.4f} (trial {o.best_trial})"
        rows.append([o.model, str(o.trials), str(o.pruned), str(o.failed), f"{o.minutes:.1f}", best,
                     json.dumps(o.best_params, sort_keys=True)[:120], " ".join(str(r.id) for r in o.runs)])
    _print_table(["model", "trials", "pruned", "failed", "minutes", "best valid", "best params", "test runs"], rows,
                 title=f"bench tune on {suite}/{dataset}")


def trials_command(
    study: Optional[str] = typer.Argument(None, help="A tuning study's uuid (or 8+ leading hex digits): its trials."),
    suite: Optional[str] = typer.Option(None, "--suite", "-s"),
    model: Optional[str] = typer.Option(None, "--model", "-m"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    format: str = typer.Option("table", "--format", "-f", help="table | markdown"),
    db: Optional[str] = typer.Option(None, "--db", help="SQLAlchemy URL of the results store."),
) -> None:
    """List tuning studies (``bench tune``), or one study's trials with their state, value, kept epoch and time."""
    from mmsr_bench.cli.common import _print_table, _setup, fail, suite_name
    from mmsr_bench.errors import BenchError
    from mmsr_bench.results import tables
    from mmsr_bench.results.store import Store

    def show(header: list[str], rows: list[list[str]], title: str | None = None) -> None:
        if format == "markdown":
            print(tables.to_markdown(tables.Table(tuple(header), tuple(tuple(r) for r in rows), title=title or "",
                                                  lead=len(header))), end="")
        else:
            _print_table(header, rows, title=title)

    _setup()
    try:
        if format not in ("table", "markdown"):
            raise BenchError(f"--format {format!r}: choose table or markdown")
        store = Store.for_reading(db)
        tunings = store.tunings(suite=suite_name(suite), model=model, dataset=dataset)
        if study is None:
            rows = []
            for t in tunings:
                trials = store.trials(t.id)
                budget = json.loads(t.budget_json)
                rows.append([t.uuid[:10], t.suite, t.dataset, t.model, t.sampler, t.pruner,
                             f"{budget.get('trials') or ''}" + (f"{budget['minutes']:g} min" if budget.get("minutes")
                                                                else " trials"),
                             str(sum(x.state == "complete" for x in trials)), str(sum(x.state == "pruned" for x in trials)),
                             str(sum(x.state == "failed" for x in trials)),
                             f"{sum(x.seconds for x in trials) / 60:.1f}",
                             "" if t.best_value is None else f"{t.best_value:.4f} (#{t.best_trial})"])
            if not rows:
                raise BenchError(f"no tuning studies in {store.url}; `bench tune` makes them")
            show(["study", "suite", "dataset", "model", "sampler", "pruner", "budget", "complete", "pruned",
                  "failed", "minutes", f"best {tunings[0].metric}"], rows)
            return
        text = study.strip().lower()
        if len(text) < 8 or any(c not in "0123456789abcdef" for c in text):
            raise BenchError(f"{study[:40]!r}: give a tuning study's uuid or at least 8 of its leading hex digits")
        found = [t for t in store.tunings() if t.uuid.startswith(text)]
        if len(found) != 1:
            raise BenchError(f"{study[:40]!r} matches {len(found)} tuning studies in {store.url}")
        t = found[0]
        rows = []
        for x in store.trials(t.id):
            sel = json.loads(x.selection_json or "{}")
            kept = f"{sel.get('chosen')}/{sel.get('last')} {sel.get('unit', '')}" if sel.get("chosen") else ""
            rows.append([str(x.number), x.state, "" if x.value is None else f"{x.value:.4f}", kept,
                         sel.get("stopped_by", ""), f"{x.seconds:.1f}", x.config_hash[:10],
                         json.dumps(json.loads(x.params_json), sort_keys=True)[:100], x.error[:60]])
        show(["trial", "state", t.metric, "kept", "stopped by", "seconds", "config", "params", "error"], rows,
             title=f"{t.model} on {t.suite}/{t.dataset}: study {t.uuid[:10]}")
    except BenchError as exc:
        fail(str(exc))


def register(app: typer.Typer, runs_app: typer.Typer) -> None:
    app.command("tune")(tune_command)
    runs_app.command("trials")(trials_command)
