"""The ``bench`` command line (Typer + rich): the app, its core commands, and the registration of the other command
modules (:mod:`mmsr_bench.cli.common` holds what they share). Library code logs; only the CLI prints.

Why one module of this length: the core commands (run, leaderboard, compare, models, runs, reproduce, dashboard) and
the entry point's argument and signal handling; the other command groups have their own modules.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Optional

import typer

from mmsr_bench.cli.common import (DB_OPTION, FORMATS, SEED_HELP, _names_option, _print_table, _setup, console,
                                   err_console, fail, parse_seeds, parse_shard, suite_name, terminal_text)
from mmsr_bench.errors import BenchError

app = typer.Typer(help="mmsr-bench: frozen-protocol benchmarks for sequential recommenders.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
runs_app = typer.Typer(help="Inspect stored runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

# --------------------------------------------------------------------------------------------------- run
@app.command()
def run(
    suite: str = typer.Option(..., "--suite", "-s", help="Suite name (see `bench suite list`) or a TOML path."),
    model: str = typer.Option(..., "--model", "-m", help="Model name(s), comma-separated (see `bench models`)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Comma-separated datasets (default: all)."),
    seed_text: list[str] = typer.Option(["0"], "--seed", help=SEED_HELP),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value for every model with the field, or "
                                   "'GLOB:key=value' for the models it matches (repeatable)."),
    db: Optional[str] = DB_OPTION,
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA if present)."),
    also: Optional[str] = typer.Option(None, "--also", help="Also score the fitted model on these suites "
                                       "(comma-separated) when they share the identical split, e.g. amazon4-full."),
    perturb: Optional[str] = typer.Option(None, "--perturb", help="blank:0.2 | noise:0.2 | swap:0.2 — perturb a share "
                                          "of item images; the run is stored with this as its variant."),
    resume: bool = typer.Option(False, "--resume", help="Skip (dataset, seed) cells already stored as completed "
                                "with the same suite fingerprint and config hash."),
    time_limit: Optional[float] = typer.Option(None, "--time-limit", help="Minutes one cell (fit and scoring) may "
                                               "take; past it the run is stopped and recorded as failed."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: score only the K-th of N blocks of the "
                                        "evaluation users (stored as a shard run; the N shards of a cell are merged "
                                        "into one run when the last is stored; an LLM's fit is shared)."),
    exact: bool = typer.Option(False, "--exact", help="Pin float32 CPU kernels to AVX2 (MKL_CBWR, "
                               "ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) so x86 CPUs of different makers take the "
                               "same code paths; slower, recorded in the run (docs/results.md measures it)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fit model(s) on a suite's training data and score them on the shared, frozen test candidates."""
    if exact:  # before anything imports torch
        from mmsr_bench.evaluation.scoring import request_exact_cpu

        try:
            request_exact_cpu()
        except BenchError as exc:
            fail(str(exc))
    from mmsr_bench.models import adapter
    from mmsr_bench.runner import execute as runner
    from mmsr_bench.suites import spec as suites

    _setup(verbose)
    done = []
    try:
        from mmsr_bench.paths import check_device
        from mmsr_bench.results.store import check_store

        seed = parse_seeds(seed_text)
        spec = suites.load_suite(suite)
        names = [d.name for d in spec.select(_names_option(dataset, "--dataset"))]
        model_names = _names_option(model, "--model")
        for m in model_names:
            adapter.get(m)  # an unknown model first, with its suggestions
        # the one --set grammar (run, sweep, study, tune): key=value reaches every model with the field,
        # 'GLOB:key=value' only the models it matches; a pair that reaches no model is an error
        per_model = adapter.resolve_sets(model_names, adapter.parse_set_options(set_))
        also_specs = tuple(suites.load_suite(a) for a in _names_option(also, "--also") or ())
        if perturb:
            from mmsr_bench.data import perturb as perturb_mod

            perturb_mod.parse(perturb)  # a malformed spec fails before any work
        check_device(device)
        if time_limit is not None and not 0 < time_limit <= 10 ** 6:
            raise BenchError(f"--time-limit {time_limit}: give minutes above 0 (at most 1,000,000)")
        shard_at = parse_shard(shard) if shard is not None else None
        # every name and every configuration is resolved (and checked) once, before any work starts
        plans = {m: adapter.plan(m, per_model[m]) for m in model_names}
        check_store(db)  # dialect, driver, file and schema, without creating anything
        for m in model_names:
            req = runner.RunRequest(spec, m, names, seed, per_model[m], db, device, perturb=perturb,
                                    also=also_specs, resume=resume,
                                    time_limit_s=time_limit * 60 if time_limit else None, shard=shard_at,
                                    plan=plans[m])
            done += runner.execute(req, on_result=lambda r: err_console.print(
                f"[green]stored {'shard run' if r.status == 'shard' else 'run'} {r.id}[/green]: {r.model} on "
                f"{r.suite}/{r.dataset} seed {r.seed} (fit {r.fit_seconds:.1f}s, score {r.score_seconds:.1f}s)"
                + (" [green]merged from its shards[/green]" if r.status == "completed" and shard_at else "")))
    except BenchError as exc:
        fail(str(exc))
        return
    if shard_at is not None and not any(r.status == "completed" for r in done):
        err_console.print(f"shard {shard_at[0] + 1}/{shard_at[1]} stored; the cell's run is merged when all "
                          f"{shard_at[1]} shards are stored (`bench run ... --shard K/{shard_at[1]} --resume` runs "
                          "the missing ones)")
        return
    primary = spec.evaluation.primary
    show = [m for m in spec.evaluation.names() if m in (primary, "hr@10", "ndcg@10", "mrr", "auc")] or [primary]
    rows = [[str(r.id), r.model, r.dataset, str(r.seed)] + [f"{r.metrics[m]:.4f}" for m in show] for r in done]
    _print_table(["run", "model", "dataset", "seed"] + show, rows, title=f"this invocation on {spec.name}")
    for sname in [spec.name] + [a.name for a in also_specs]:
        _leaderboard(sname, names, None, "table", db, None, 0.05, "t", "holm")


# ------------------------------------------------------------------------------------------- leaderboard
def _leaderboard(suite: str, datasets: list[str] | None, metric: Optional[str], fmt: str, db: Optional[str],
                 against: Optional[str], alpha: float, test: str, correction: str, reference: bool = False,
                 configs: str = "tuned") -> None:
    from mmsr_bench.evaluation import metrics as mt
    from mmsr_bench.results import leaderboard as lb
    from mmsr_bench.results import significance
    from mmsr_bench.results.store import Store

    metrics = [m.strip() for m in metric.split(",")] if metric else None
    for m in metrics or []:
        mt.parse_metric(m)
    if against:
        significance.check_options(test, correction, alpha)
    suite = suite_name(suite)
    wanted = ["hr@10", "ndcg@10", "mrr", "auc"]

    def side(store: Store) -> tuple[lb.Board | None, str]:
        """One store's board with its own significance marks (a reference run is never tested against a local
        one here: `bench compare` does that where the fingerprints agree)."""
        board = lb.build_board(store, suite, datasets, metrics, configs=configs)
        if not board.models:
            return None, ""
        if metrics is None:
            board.metrics = [m for m in wanted if m in board.metrics] or board.metrics[:4]
        if against and against in board.models:
            return board, significance.mark_board(store, board, against, alpha=alpha, test=test,
                                                  correction=correction)
        return board, ""

    try:
        local = Store.for_reading(db)
    except BenchError as exc:
        if not reference:
            raise BenchError(f"{exc}; `bench leaderboard --suite {suite} --reference` shows the project's "
                             "reference runs without one") from None
        local = None  # no local store yet: the reference runs alone
    board, footer = side(local) if local is not None else (None, "")
    if reference:
        from mmsr_bench.results import reference as ref

        ref_board, ref_footer = side(ref.reference_store())
        if ref_board is None and board is None:
            fail(f"no completed runs for suite {suite!r} in the local store or the reference runs "
                 f"({ref.reference_dir()})")
        board = lb.merge_boards(board, ref_board, ref.SUFFIX)
        board.notes.append(f"rows marked{ref.SUFFIX} are reference runs from {ref.reference_dir()}; significance "
                           "marks compare each side only with its own runs")
        footer = footer or ref_footer
    if board is None:
        fail(f"no completed runs for suite {suite!r} in {local.url}; run `bench run --suite {suite} --model pop`"
             + (" (or see the reference runs with --reference)" if not reference else ""))
        return
    if against and not footer:
        raise BenchError(f"--against {against!r}: no runs of that model on suite {suite!r} "
                         f"(models: {', '.join(board.models)})")
    if fmt == "table":
        for d in board.datasets:  # one table per dataset reads better in a terminal than one wide table
            sub = dataclasses.replace(board, datasets=[d],
                                      models=[m for m in board.models if (m, d, board.metrics[0]) in board.cells])
            header, rows = lb.to_rows(sub)
            _print_table(header, rows, title=f"leaderboard: {suite} / {d}")
        for n in board.row_notes() + board.notes + ([footer] if footer else []):
            console.print(f"[dim]{terminal_text(n)}[/dim]")
    elif fmt == "markdown":
        print(lb.to_markdown(board) + (f"\n{footer}" if footer else ""))
    elif fmt == "csv":
        print(lb.to_csv(board), end="")
    elif fmt == "json":
        print(lb.to_json(board))
    elif fmt == "latex":
        from mmsr_bench.results.leaderboard import board_to_latex

        print(board_to_latex(board, footer=footer))


@app.command()
def leaderboard(
    suite: str = typer.Option(..., "--suite", "-s"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Comma-separated datasets (default: all)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Comma-separated metrics, e.g. ndcg@10,hr@10."),
    format: str = typer.Option("table", "--format", "-f", help="table | markdown | csv | json | latex"),
    against: Optional[str] = typer.Option(None, "--against", help="Mark cells significantly better/worse than MODEL."),
    alpha: float = typer.Option(0.05, "--alpha"),
    test: str = typer.Option("t", "--test", help="t | wilcoxon | perm | bootstrap"),
    correction: str = typer.Option("holm", "--correction", help="holm | fdr_bh | bonferroni | none"),
    db: Optional[str] = DB_OPTION,
    reference: bool = typer.Option(False, "--reference", help="Also show the reference runs committed with the "
                                   "project (reference-runs/ or $MMSR_BENCH_REFERENCE), marked as such; works "
                                   "without a local store."),
    configs: str = typer.Option("tuned", "--configs", help="Which configuration a row shows: tuned (the one `bench "
                                "tune` chose where it tuned the model, else the newest) or default (tuned runs "
                                "left out)."),
) -> None:
    """Rank models on a suite: mean over seeds (± 95% CI where several seeds exist)."""
    _setup()
    if format not in FORMATS:
        fail(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    try:
        _leaderboard(suite, [d.strip() for d in dataset.split(",")] if dataset else None, metric, format, db,
                     against, alpha, test, correction, reference, configs)
    except BenchError as exc:
        fail(str(exc))


@app.command()
def compare(
    a: str = typer.Argument(..., help="Run id or uuid, or model name (one configuration, the tuned one where there is one, else the newest: its latest run per seed on --suite/--dataset)."),
    b: str = typer.Argument(..., help="Run id or model name: the baseline."),
    suite: Optional[str] = typer.Option(None, "--suite", "-s"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    metric: Optional[str] = typer.Option(None, "--metric", help="Comma-separated metrics (default: all stored)."),
    test: str = typer.Option("t", "--test", help="Test behind the significance flag: t | wilcoxon | perm | bootstrap"),
    correction: str = typer.Option("holm", "--correction", help="holm | fdr_bh | bonferroni | none"),
    alpha: float = typer.Option(0.05, "--alpha"),
    resamples: int = typer.Option(10000, "--resamples", help="Bootstrap and randomization resamples."),
    format: str = typer.Option("table", "--format", "-f", help="table | json | markdown"),
    db: Optional[str] = DB_OPTION,
) -> None:
    """Paired significance tests between two runs or two models (per-user vectors; several seeds averaged)."""
    from mmsr_bench.evaluation import metrics as mt
    from mmsr_bench.results import significance
    from mmsr_bench.results.store import Store

    _setup()
    if format not in ("table", "json", "markdown"):
        fail(f"--format {format!r}: choose one of table, json, markdown")
    try:
        names = [m.strip() for m in metric.split(",")] if metric else None
        for m in names or []:
            mt.parse_metric(m)
        significance.check_options(test, correction, alpha, resamples)
        cmp = significance.compare(Store.for_reading(db), a, b, suite=suite_name(suite), dataset=dataset,
                                   metrics=names, test=test,
                                   correction=correction, alpha=alpha, n_resamples=resamples)
    except BenchError as exc:
        fail(str(exc))
        return
    if format == "json":
        print(cmp.to_json())
        return
    header = ["metric", cmp.a_label, cmp.b_label, "diff", "rel", "95% CI (boot)", "p t", "p wilcoxon", "p perm",
              f"p {test} ({correction})", "d", "sig"]
    rows = [[r.metric, f"{r.mean_a:.4f}", f"{r.mean_b:.4f}", f"{r.diff:+.4f}", f"{r.rel_diff:+.1%}",
             f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]", f"{r.p_t:.2e}", f"{r.p_wilcoxon:.2e}", f"{r.p_perm:.2e}",
             f"{r.p_corrected:.2e}", f"{r.cohen_d:+.3f}", "yes" if r.significant else "no"] for r in cmp.rows]
    title = (f"{cmp.a_label} vs {cmp.b_label} on {cmp.suite}/{cmp.dataset}: {cmp.n_users} users, runs "
             f"{list(cmp.a_runs)} vs {list(cmp.b_runs)}")
    if format == "markdown":
        from mmsr_bench.results import tables

        print(tables.to_markdown(tables.Table(tuple(header), tuple(tuple(r) for r in rows), title=title,
                                              lead=len(header))), end="")
    else:
        _print_table(header, rows, title=title)
    if cmp.seed_tests:
        seed_rows = [[m, t.test, ",".join(map(str, t.seeds)), f"{t.mean_a:.4f}", f"{t.mean_b:.4f}", f"{t.diff:+.4f}",
                      f"{t.p_value:.2e}"] for m, t in cmp.seed_tests.items()]
        if format == "markdown":
            for r in seed_rows:
                print(f"- across seeds, {tables.strip_controls(r[0])}: {r[1]} over seeds {r[2]}: diff {r[5]}, "
                      f"p = {r[6]}")
        else:
            _print_table(["metric", "test", "seeds", "mean a", "mean b", "diff", "p"], seed_rows,
                         title="across seeds (paired by seed)")
    console.print(f"[dim]diff = a - b; significance: two-sided {test} test, {correction} correction over "
                  f"{len(cmp.rows)} metrics, alpha = {alpha}; bootstrap CI and randomization test with "
                  f"{resamples} resamples[/dim]") if format == "table" else None


# ------------------------------------------------------------------------------------------------ models
@app.command()
def models(
    name: Optional[str] = typer.Argument(None, help="A model: show its configuration fields, types and defaults."),
) -> None:
    """List models: built-ins from the catalog (no adapter imported) and third-party entry points; with NAME, that
    model's configuration."""
    from importlib.metadata import entry_points

    from mmsr_bench.models import adapter

    _setup()
    if name is not None:
        try:
            _model_config(name)
        except BenchError as exc:
            fail(str(exc))
        return
    rows = [[e.name, e.module, ",".join(e.needs) or "ids", e.description[:70]] for e in adapter.catalog().values()]
    plugins = sorted(ep.name for ep in entry_points(group=adapter.ENTRY_POINT_GROUP))
    _print_table(["model", "module", "needs", "description"], rows)
    if plugins:
        console.print(f"[dim]third-party entry points ({adapter.ENTRY_POINT_GROUP}): {', '.join(plugins)}; "
                      "`bench models NAME` shows one[/dim]")


def _model_config(name: str) -> None:
    from mmsr_bench.models import adapter

    reg = adapter.get(name)
    built = adapter.build(name)
    from mmsr_bench.models.search_space import declared_space

    space = declared_space(reg.cls.config_cls)
    rows = [[f.name, str(f.type).replace("typing.", ""), repr(getattr(built.config, f.name)),
             space[f.name].describe() if f.name in space else ""] for f in dataclasses.fields(built.config)]
    variants = sorted(n for n, r in adapter.registry().items() if r.cls is reg.cls and n != name)
    _print_table(["field", "type", "value (defaults and variant overrides)", "search space (bench tune)"], rows,
                 title=f"{name}: {reg.cls.__module__}.{reg.cls.__name__}")
    if reg.overrides:
        console.print(f"[dim]variant of {reg.cls.name}: {dict(reg.overrides)}[/dim]")
    if variants:
        console.print(f"[dim]variants of the same class: {', '.join(variants)}[/dim]")
    console.print("[dim]override any field with --set FIELD=VALUE[/dim]")


# ------------------------------------------------------------------------------------------------- runs
@runs_app.command("list")
def runs_list(
    suite: Optional[str] = typer.Option(None, "--suite", "-s"),
    model: Optional[str] = typer.Option(None, "--model", "-m"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
    all_: bool = typer.Option(False, "--all", help="Include failed runs."),
    format: str = typer.Option("table", "--format", "-f", help="table | markdown"),
    db: Optional[str] = DB_OPTION,
) -> None:
    """List stored runs."""
    from mmsr_bench.results.store import Store

    _setup()
    if format not in ("table", "markdown"):
        fail(f"--format {format!r}: choose table or markdown")
    try:
        rs = Store.for_reading(db).runs(suite=suite_name(suite), model=model, dataset=dataset,
                                        status=None if all_ else "completed")
        rows = [[str(r.id), r.suite, r.dataset, r.model + (f" [{r.variant}]" if r.variant else ""), str(r.seed),
                 r.status, f"{r.metrics.get('ndcg@10', float('nan')):.4f}", f"{r.fit_seconds:.1f}",
                 r.started_at.strftime("%Y-%m-%d %H:%M")] for r in rs]
    except BenchError as exc:
        fail(str(exc))
        return
    header = ["id", "suite", "dataset", "model", "seed", "status", "ndcg@10", "fit s", "started"]
    if format == "markdown":  # with the uuid, which names the run in every store (`bench reproduce UUID`)
        from mmsr_bench.results import tables

        header = ["uuid"] + header[1:]
        rows = [[r.uuid[:10]] + row[1:] for r, row in zip(rs, rows)]
        print(tables.to_markdown(tables.Table(tuple(header), tuple(tuple(r) for r in rows), lead=len(header))), end="")
        return
    _print_table(header, rows)


@runs_app.command("show")
def runs_show(run_id: int = typer.Argument(...), db: Optional[str] = DB_OPTION) -> None:
    """Show one run: config, environment, timings and metrics."""
    from mmsr_bench.results.store import Store

    _setup()
    try:
        r = Store.for_reading(db).run(run_id)
    except BenchError as exc:
        fail(str(exc))
        return
    from mmsr_bench.results.selection import convergence_of

    info = r.model_dump()
    try:
        for k in ("config_json", "packages_json", "metrics_json", "run_info_json"):
            info.pop(k)
            info[k.removesuffix("_json")] = r._json(k)
    except BenchError as exc:
        fail(str(exc))
        return
    sel = convergence_of(r)  # the validation choice in one schema, whatever the family stored
    info["selection"] = None if sel is None else dict(sel.as_dict(), status=sel.status)
    console.print_json(json.dumps(info, default=str))
    if sel is not None and sel.converged is False:
        err_console.print(f"[yellow]not converged[/yellow]: the best validation ({sel.metric} at {sel.unit} "
                          f"{sel.chosen}) is the last one and training stopped at its {sel.stopped_by}")


@app.command()
def reproduce(
    run_key: str = typer.Argument(..., metavar="RUN", help="The uuid of a reference (or stored) run, or its first "
                                  "8+ hex digits."),
    db: Optional[str] = DB_OPTION,
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA if present)."),
) -> None:
    """Rerun a reference cell with its recorded suite, model, configuration and seed, store the rerun in --db, and
    print the largest per-user difference against the recorded vectors (0 = reproduced exactly)."""
    from mmsr_bench.runner.reproduce import reproduce as reproduce_run

    _setup()
    try:
        rep = reproduce_run(run_key, db, device=device)
    except BenchError as exc:
        fail(str(exc))
        return
    r = rep.recorded
    rows = [[d.metric, f"{d.recorded:.6f}", f"{d.rerun:.6f}", f"{d.max_abs_diff:.3g}", str(d.users_differing)]
            for d in rep.diffs]
    _print_table(["metric", "recorded", "rerun", "max per-user |diff|", "users differing"], rows,
                 title=f"{r.model} on {r.suite}/{r.dataset} seed {r.seed}: run {r.uuid} ({rep.source}, host "
                       f"{r.host}) vs rerun {rep.rerun.uuid} (run {rep.rerun.id})")
    verdict = ("reproduced exactly: every per-user value is identical" if rep.exact else
               f"differs: the largest per-user difference is {rep.largest:.3g}")
    console.print(verdict, highlight=False, markup=False)


@app.command()
def dashboard(db: Optional[str] = DB_OPTION, port: int = typer.Option(8501, "--port")) -> None:
    """Serve the Streamlit leaderboard on http://127.0.0.1:PORT, reading the results store read-only."""
    from mmsr_bench import dashboard as dash

    _setup()
    try:
        raise typer.Exit(dash.launch(db, port))
    except BenchError as exc:
        fail(str(exc))


def _normalize_argv(argv: list[str]) -> list[str]:
    """Allow ``--seed 0 1 2`` (as researchers type it) by expanding it to ``--seed 0 --seed 1 --seed 2`` (the same
    for ``--seeds``, the spelling of ``bench study``)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        out.append(argv[i])
        if argv[i] in ("--seed", "--seeds"):
            j = i + 1
            vals = []
            while j < len(argv) and argv[j].lstrip("-").isdigit() and not argv[j].startswith("--"):
                vals.append(argv[j])
                j += 1
            if vals:
                out.append(vals[0])
                for v in vals[1:]:
                    out += [argv[i], v]
                i = j
                continue
        i += 1
    return out


def _register_extensions() -> None:
    """Command groups kept in their own modules register themselves on the app."""
    import importlib.util

    from mmsr_bench.cli import suites as cli_suites  # bench suite ... | data ... (suites and their raw data)

    cli_suites.register(app)
    from mmsr_bench.cli import store as cli_store  # bench store ... | fits ... (moving runs and fits between stores)

    cli_store.register(app)

    if importlib.util.find_spec("mmsr_bench.cli.mllm") is not None:
        from mmsr_bench.cli import mllm as cli_mllm

        cli_mllm.register(app)
    from mmsr_bench.cli import adapter as cli_adapter  # bench adapter check | new (the conformance kit)

    cli_adapter.register(app)
    from mmsr_bench.cli import sweep as cli_sweep  # bench sweep (local processes or a Ray cluster)

    cli_sweep.register(app)
    from mmsr_bench.cli import study as cli_study  # bench study | report study (the MLLM-SRec study in one command)

    cli_study.register(app)
    from mmsr_bench.cli import docs as cli_docs  # bench docs (the generated tables of docs/)

    cli_docs.register(app)
    from mmsr_bench.cli import tune as cli_tune  # bench tune | runs trials (Optuna on the validation split)

    cli_tune.register(app, runs_app)


_register_extensions()


def _terminate_as_interrupt(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    """SIGTERM (batch schedulers, `kill`) ends a run like Ctrl-C: the run is recorded as interrupted."""
    raise KeyboardInterrupt(f"terminated by signal {signum}")


def main() -> None:
    import signal

    sys.argv = [sys.argv[0]] + _normalize_argv(sys.argv[1:])
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        app()
    except BenchError as exc:  # the net under every command: a BenchError that escaped one is still one line
        try:
            fail(str(exc))
        except typer.Exit as ex:
            sys.exit(ex.exit_code)


if __name__ == "__main__":
    main()
