"""``bench study`` (plan or run the MLLM-SRec study's grid) and ``bench report study`` (its tables).

:func:`register` is called by :mod:`mmsr_bench.cli.main`; the work is in :mod:`mmsr_bench.runner.study`, this module only prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def _fmt_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def print_plan(p, title: str | None = None) -> None:
    """The plan as a rich table: one row per (model, dataset), stored and missing seeds, the estimate (or why
    the cells cannot run on this suite's data)."""
    from mmsr_bench.cli.common import _print_table, console

    rows = []
    seen: dict[tuple[str, str], list] = {}
    for c in p.cells:
        seen.setdefault((c.model, c.dataset), []).append(c)
    for (model, dataset), cells in seen.items():
        stored = [c for c in cells if c.stored]
        missing = [c for c in cells if c.to_run]
        est = [c.estimate_s for c in missing if c.estimate_s is not None]
        unrunnable = [c for c in cells if c.cannot_run]
        if unrunnable:
            estimate = f"cannot run: {unrunnable[0].cannot_run}"
        elif not missing:
            estimate = "-"
        elif len(est) < len(missing):
            estimate = "unknown"
        else:
            estimate = f"{_fmt_seconds(sum(est))} ({missing[0].estimate_from})"
        rows.append([model, ",".join(cells[0].rqs), dataset,
                     " ".join(f"{c.seed}→#{c.run_id}" for c in stored) or "-",
                     " ".join(str(c.seed) for c in missing) or "-", estimate])
    _print_table(["model", "rq", "dataset", "stored (seed→run)", "missing seeds", "estimate"], rows,
                 title=title or f"study plan: {p.suite} (budget {p.budget})")
    seconds, unknown = p.estimate()
    if unknown == len(p.missing):
        total = "unknown (no stored runs of these models on this suite)"
    else:
        total = _fmt_seconds(seconds) + (f" + {unknown} cell(s) unknown" if unknown else "")
    unrunnable = f", {len(p.unrunnable)} cannot run on this data" if p.unrunnable else ""
    console.print(f"{len(p.stored)} of {len(p.cells)} cells stored, {len(p.missing)} missing{unrunnable}; estimated "
                  f"time of the missing ones: {total if p.missing else '-'}", highlight=False, soft_wrap=True)
    if p.unrunnable:
        console.print("[dim]`bench run` on a cell that cannot run says how to add what its dataset lacks (item images: "
                      "the amazon4-mm suite)[/dim]", highlight=False, soft_wrap=True)
    for d, fp in p.fingerprints.items():
        if fp is None:
            console.print(f"[yellow]{p.suite}/{d} is neither frozen nor built: every cell counts as missing[/yellow]")


def register(app: typer.Typer) -> None:
    """Add ``study`` and ``report study`` to the bench app (``report`` is created by mmsr_bench.cli.mllm)."""
    from mmsr_bench.cli.common import DB_OPTION

    report_app = next((g.typer_instance for g in app.registered_groups if g.name == "report"), None)
    if report_app is None:
        report_app = typer.Typer(help="Analysis reports over stored runs.", no_args_is_help=True)
        app.add_typer(report_app, name="report")

    @app.command("study")
    def study_cmd(
        suite: str = typer.Option(..., "--suite", "-s", help="Suite name or TOML path."),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Comma-separated datasets (default: all)."),
        seed_text: list[str] = typer.Option(["0"], "--seed", "--seeds", help="Seeds: --seeds 0 1 2."),
        plan_: bool = typer.Option(False, "--plan", help="Show stored and missing cells and an estimate (default)."),
        run_: bool = typer.Option(False, "--run", help="Run the missing cells (as `bench run --resume`), then plan."),
        budget: str = typer.Option("default", "--budget", help="default | tiny (the conformance kit's tiny budgets; "
                                   "recorded in each run's configuration)."),
        models: Optional[str] = typer.Option(None, "--models", help="Only these grid models (comma-separated); "
                                             "default: the whole study grid."),
        rq: Optional[str] = typer.Option(None, "--rq", help="Only these research questions: rq1,rq2,rq3,rq4."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA if present)."),
        set_: list[str] = typer.Option([], "--set", help="key=value for every grid model whose configuration has the "
                                       "field (repeatable), e.g. --set backbone=smollm2-135m; 'GLOB:key=value' "
                                       "only for the models it matches, e.g. --set 'mllm-srec*:max_pairs=1200'."),
        study_name: Optional[str] = typer.Option(None, "--study", help="A study file (TOML, the shape of "
                                                 "mmsr_bench/results/studies/mllm-srec.toml) or a shipped study's "
                                                 "name (default: mllm-srec)."),
        tuned: bool = typer.Option(False, "--tuned", help="Each grid model that `bench tune` tuned on this suite "
                                   "and --dataset (one) runs its best configuration (recorded in its runs); the "
                                   "others keep their defaults."),
        format: str = typer.Option("table", "--format", "-f", help="Plan output: table | json."),
        db: Optional[str] = DB_OPTION,
        verbose: bool = typer.Option(False, "--verbose", "-v"),
    ) -> None:
        """The MLLM-SRec study's grid (RQ1-RQ4): which (model, dataset, seed) cells are stored, which are missing,
        and (--run) run the missing ones."""
        from mmsr_bench.cli.common import _setup, console, err_console, fail
        from mmsr_bench.errors import BenchError
        from mmsr_bench.models.adapter import parse_set_options
        from mmsr_bench.results import study
        from mmsr_bench.results.store import mask_url
        from mmsr_bench.runner import study as study_runner

        _setup(verbose)
        try:
            if plan_ and run_:
                raise BenchError("--plan and --run: give one of them")
            if format not in ("table", "json"):
                raise BenchError(f"--format {format!r}: choose table or json")
            from mmsr_bench.cli.common import parse_seeds

            sets = parse_set_options(set_)
            opts = study.validate(suite, datasets=dataset, seeds=parse_seeds(seed_text, "--seeds"), models=models,
                                  rqs=rq, budget=budget, db=db, device=device, sets=sets, study=study_name,
                                  tuned=tuned)
            p = study_runner.plan(opts)
            if run_:
                if format == "table":
                    print_plan(p, title=f"study plan before running: {p.suite} (budget {p.budget})")
                outcomes = study_runner.run_missing(opts, p, on_result=lambda r: err_console.print(
                    f"[green]stored run {r.id}[/green]: {r.model} on {r.suite}/{r.dataset} seed {r.seed} "
                    f"(fit {r.fit_seconds:.1f}s, score {r.score_seconds:.1f}s)"))
                p = study_runner.plan(opts)
        except BenchError as exc:
            fail(str(exc))
            return
        if format == "json":
            print(json.dumps(p.to_dict(), indent=2))
        else:
            print_plan(p)
        failed = [o for o in outcomes if o.error] if run_ else []
        for o in failed:
            err_console.print(f"[red]failed[/red] {o.model}: {o.error}", highlight=False, soft_wrap=True)
        if failed:
            raise typer.Exit(1)
        if run_ and format == "table":
            extra = ((" --budget tiny" if budget == "tiny" else "") + "".join(f" --set {k}={v}" for k, v in opts.sets)
                     + (f" --db {mask_url(db)}" if db else ""))
            console.print(f"[dim]tables: bench report study --suite {suite} --format markdown{extra}[/dim]",
                          highlight=False, soft_wrap=True)

    @report_app.command("study")
    def report_study(
        suite: str = typer.Option(..., "--suite", "-s"),
        format: str = typer.Option("markdown", "--format", "-f", help="markdown | latex | html"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the report to this file."),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d"),
        budget: str = typer.Option("default", "--budget", help="default | tiny: which configurations' runs."),
        also: Optional[str] = typer.Option(None, "--also", help="Add columns of other suites on the same datasets, "
                                           "e.g. amazon4-full (full ranking beside sampled)."),
        metric: Optional[str] = typer.Option(None, "--metric", help="Comma-separated metrics (default: HR, Recall, "
                                             "NDCG at the suite's cutoffs >= 5, and AUC)."),
        rq: Optional[str] = typer.Option(None, "--rq", help="Only these research questions: rq1,rq2,rq3,rq4."),
        study_name: Optional[str] = typer.Option(None, "--study", help="A study file (TOML, the shape of "
                                                 "mmsr_bench/results/studies/mllm-srec.toml) or a shipped study's "
                                                 "name (default: mllm-srec)."),
        test: str = typer.Option("t", "--test", help="t | wilcoxon | perm | bootstrap"),
        correction: str = typer.Option("holm", "--correction", help="holm | fdr_bh | bonferroni | none"),
        alpha: float = typer.Option(0.05, "--alpha"),
        set_: list[str] = typer.Option([], "--set", help="Which runs: the key=value pairs given to `bench study` "
                                       "(repeatable)."),
        db: Optional[str] = DB_OPTION,
    ) -> None:
        """The study's tables: one per research question (best bold, second underlined, significance markers,
        %Improv., mean ± CI over seeds), the hallucination table, and a footer naming suite hash, code version
        and the runs behind each table."""
        from mmsr_bench.cli.common import _setup, console, fail
        from mmsr_bench.errors import BenchError
        from mmsr_bench.models.adapter import parse_set_options
        from mmsr_bench.results import significance, study, study_report
        from mmsr_bench.results.store import Store
        from mmsr_bench.suites import spec as suites

        _setup()
        try:
            if format not in study_report.FORMATS:
                raise BenchError(f"--format {format!r}: choose one of {', '.join(study_report.FORMATS)}")
            significance.check_options(test, correction, alpha)
            opts = study.validate(suite, datasets=dataset, rqs=rq, budget=budget, db=db, check_db=False,
                                  sets=parse_set_options(set_), study=study_name)
            also_specs = tuple(suites.load_suite(a) for a in study.parse_names(also, "--also") or ())
            metrics = study.parse_names(metric, "--metric")
            for s in (opts.spec, *also_specs):
                study_report.table_metrics(s, metrics)
            if out is not None and out.is_dir():
                raise BenchError(f"--out {out}: a folder; give a file name, e.g. {out / 'study.md'}")
            if out is not None and not out.parent.is_dir():
                raise BenchError(f"--out {out}: the folder {out.parent} does not exist")
            report = study_report.build_report(Store.for_reading(db), opts, also=also_specs, metrics=metrics, test=test,
                                        correction=correction, alpha=alpha)
            text = study_report.render(report, format)
        except BenchError as exc:
            fail(str(exc))
            return
        if out is not None:
            out.write_text(text, encoding="utf-8")
            console.print(f"wrote {out}", highlight=False)
        else:
            print(text, end="")
