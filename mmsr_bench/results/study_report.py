"""A study's tables built from stored runs, and their rendering (Markdown, LaTeX, HTML): one table per research
question with significance markers against its reference, and the hallucination row. The options they are built
for are :class:`mmsr_bench.results.study.StudyOptions` (:func:`mmsr_bench.results.study.validate`).

A cell is *stored* as :mod:`mmsr_bench.results.study` defines it. Significance markers are :func:`mmsr_bench.results.significance.compare`'s tests on
the same runs: per-user values averaged over seeds, the chosen paired test, the correction over the table's metrics
of one dataset. Library code: no printing.

Why one module of this length: the tables and their three renderings share the table types and their footnotes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.results.study import (StudyOptions, cannot_run, current_fingerprint, expected_config_hash,
                                      grid_models)
from mmsr_bench.results.study_spec import RQ

FORMATS = ("markdown", "latex", "html")
NOT_APPLICABLE = "n/a"  # a cell whose model cannot run on the dataset (its footer says why); missing = not run yet
MARK_BETTER, MARK_WORSE = "+", "-"  # mmsr_bench.results.significance's codes; mmsr_bench.results.tables shows ▲/▼
#: Metric families shown in the study tables (at the suite's cutoffs >= 5 where present) and AUC.
TABLE_FAMILIES = ("hr", "recall", "ndcg")


@dataclass(frozen=True)
class Group:
    """The columns of one dataset under one suite's protocol."""

    spec: object
    dataset: str
    metrics: tuple[str, ...]
    fingerprint: str | None
    label: str


@dataclass(frozen=True)
class StatCell:
    mean: float | None  # None: no runs (printed as missing)
    half_width: float = math.nan
    n_seeds: int = 0
    marker: str = ""


@dataclass(frozen=True)
class StudyTable:
    """One research question's table as data (rendered through :mod:`mmsr_bench.results.tables`)."""

    key: str
    title: str
    rows: tuple[str, ...]  # models
    labels: tuple[str, ...]  # row labels
    groups: tuple[Group, ...]
    cells: dict  # (model, group index, metric) -> StatCell
    improv: dict  # (model, group index) -> relative change on the primary metric
    improv_header: str
    references: dict  # group index -> reference model (None when it has no runs)
    run_ids: tuple[int, ...]
    suite_hashes: tuple[str, ...]
    code_versions: tuple[str, ...]
    significance: str
    #: (model, group index) -> why the model cannot run on that dataset (printed n/a, not missing)
    unrunnable: dict = field(default_factory=dict)
    #: models with a shown run that stopped at its budget still improving on validation (marked in the table)
    not_converged: tuple[str, ...] = ()
    against_baseline: bool = False  # the reference is the best baseline per dataset (else the full model)
    full: str = ""

    def footer(self) -> str:
        def ref(i: int) -> str:
            if self.references.get(i):
                return self.references[i]
            if not self.against_baseline and (self.full, i) in self.unrunnable:
                return f"{NOT_APPLICABLE} (the full model cannot run)"
            return "missing"

        refs = "; ".join(f"{g.label}: {ref(i)}" for i, g in enumerate(self.groups))
        why: dict[str, list[str]] = {}
        for (m, _), reason in self.unrunnable.items():
            if m not in why.setdefault(reason, []):
                why[reason].append(m)
        na = "".join(f" {NOT_APPLICABLE}: cannot run on the dataset ({', '.join(ms)}: {reason})."
                     for reason, ms in why.items())
        from mmsr_bench.results.selection import NOT_CONVERGED_MARK

        nc = (f" {NOT_CONVERGED_MARK}: not converged ({', '.join(self.not_converged)}): a shown run stopped at its "
              "training budget while validation was still improving." if self.not_converged else "")
        return (f"Reference per dataset: {refs}. {self.significance}{na}{nc} "
                f"suite_hash: {'; '.join(self.suite_hashes) or 'none'}; code version: "
                f"{', '.join(self.code_versions) or 'none'}; runs: {', '.join(map(str, self.run_ids)) or 'none'}.")


@dataclass(frozen=True)
class HallucinationTable:
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    tags: tuple[str, ...]
    primary: str
    cells: dict  # (model, dataset, column) -> float | None; columns "flagged", "auroc", and each tag
    artifact_ids: tuple[int, ...]
    run_ids: tuple[int, ...]
    suite_hashes: tuple[str, ...]
    code_versions: tuple[str, ...]

    def footer(self) -> str:
        return (f"flagged: share of generated captions flagged by `bench hallucination`; AUROC where ground truth "
                f"exists; '{self.primary} change TAG': relative change of the mean {self.primary} under each "
                f"`--perturb` tag against the untagged runs of the same configuration. Artifacts: "
                f"{', '.join(map(str, self.artifact_ids)) or 'none'}; suite_hash: "
                f"{'; '.join(self.suite_hashes) or 'none'}; code version: {', '.join(self.code_versions) or 'none'}; "
                f"runs: {', '.join(map(str, self.run_ids)) or 'none'}.")


@dataclass(frozen=True)
class StudyReport:
    suite: str
    budget: str
    tables: tuple[StudyTable, ...]
    hallucination: HallucinationTable | None
    notes: tuple[str, ...] = ()


def table_metrics(spec, wanted: list[str] | None = None) -> list[str]:
    """HR/Recall/NDCG at the suite's cutoffs (those >= 5 where there are any) and AUC, in the suite's terms."""
    ev = spec.evaluation
    names = set(ev.names())
    if wanted:
        bad = [m for m in wanted if m not in names]
        if bad:
            raise BenchError(f"--metric {bad[0]!r}: suite {spec.name!r} reports {', '.join(ev.names())}")
        return list(wanted)
    cutoffs = [k for k in ev.cutoffs if k >= 5] or list(ev.cutoffs)
    out = [f"{fam}@{k}" for fam in TABLE_FAMILIES for k in sorted(cutoffs) if f"{fam}@{k}" in names]
    if "auc" in names:
        out.append("auc")
    return out or [ev.primary]


def study_runs(store, spec, dataset: str, model: str, cfg_hash: str, fingerprint: str | None,
               seeds: tuple[int, ...] | None = None, variant: str = "") -> list:
    """The completed runs behind one cell: the newest per seed with this fingerprint and configuration hash."""
    return list(store.completed_cells(suite=spec.name, fingerprint=fingerprint, dataset=dataset, model=model,
                                      variant=variant, config_hash=cfg_hash, seeds=seeds or None).values())


def _significance_text(test: str, correction: str, alpha: float) -> str:
    names = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test", "perm": "paired randomization test",
             "bootstrap": "paired bootstrap test"}
    corr = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg", "bonferroni": "Bonferroni", "none": "no"}[correction]
    return (f"▲/▼: significantly better/worse than the reference (two-sided {names[test]} on "
            f"per-user values averaged over seeds, {corr} correction across the dataset's metrics, alpha = {alpha}; "
            f"as `bench compare`).")


def _compare_rows(store, runs: list, ref_runs: list, metrics: list[str], test: str, correction: str, alpha: float,
                  resamples: int):
    """Exactly :func:`mmsr_bench.results.significance.compare` on already resolved runs."""
    from mmsr_bench.results import significance, stats

    significance.check_comparable(runs, ref_runs)
    va = significance.seed_averaged(store, runs, metrics)
    vb = significance.seed_averaged(store, ref_runs, metrics)
    return stats.compare_metrics(va, vb, metrics, test=test, correction=correction, alpha=alpha, seed=0,
                                 n_boot=resamples, n_perm=resamples)


def _summary(values: list[float]) -> tuple[float, float]:
    from mmsr_bench.results import stats

    return stats.seed_summary(values)


def _groups(opts: StudyOptions, also: tuple, metrics: list[str] | None) -> list[Group]:
    out = []
    for spec in (opts.spec, *also):
        ms = table_metrics(spec, metrics)
        for d in opts.datasets:
            if d not in {x.name for x in spec.datasets}:
                continue
            label = d if spec is opts.spec else f"{d} ({spec.name})"
            out.append(Group(spec, d, tuple(ms), current_fingerprint(spec, d), label))
    return out


def build_report(store, opts: StudyOptions, *, also: tuple = (), metrics: list[str] | None = None,
                 test: str = "t", correction: str = "holm", alpha: float = 0.05,
                 resamples: int = 10_000) -> StudyReport:
    """Every research question's table (and the hallucination table) from the stored runs of the study's cells."""
    from mmsr_bench.results import significance

    significance.check_options(test, correction, alpha, resamples)
    groups = _groups(opts, also, metrics)
    # the test statistic of t and wilcoxon does not depend on resamples: keep the bootstrap CI cheap there
    n_res = resamples if test in ("perm", "bootstrap") else min(resamples, 1000)
    hashes = {m: expected_config_hash(m, opts.budget, opts.sets) for m in opts.study.grid_models(list(opts.rqs))}
    full = opts.study.full
    runs: dict[tuple[str, int], list] = {}
    for gi, g in enumerate(groups):
        for m in hashes:
            runs[(m, gi)] = study_runs(store, g.spec, g.dataset, m, hashes[m], g.fingerprint)
    tables = []
    for key in opts.rqs:
        rq = opts.study.rqs[key]
        models = [m for m in rq.models if m in hashes]
        cells, improv, refs, unrunnable = {}, {}, {}, {}
        used: set = set()
        for gi, g in enumerate(groups):
            primary = g.spec.evaluation.primary if g.spec.evaluation.primary in g.metrics else g.metrics[0]
            for m in models:
                rs = runs[(m, gi)]
                if not rs and (why := cannot_run(m, opts.budget, opts.sets, g.spec, g.dataset)):
                    unrunnable[(m, gi)] = why
                for met in g.metrics:
                    vals = [r.metrics[met] for r in rs if met in r.metrics]
                    if vals:
                        mean, hw = _summary(vals)
                        cells[(m, gi, met)] = StatCell(mean, hw, len(vals))
                    else:
                        cells[(m, gi, met)] = StatCell(None)
            if rq.against_baseline:
                base = [m for m in models if not opts.study.is_proposed(m) and cells[(m, gi, primary)].mean is not None]
                ref = max(base, key=lambda m: cells[(m, gi, primary)].mean) if base else None
            else:
                ref = full if full in models and runs[(full, gi)] else None
            refs[gi] = ref
            for m in models:
                if runs[(m, gi)]:
                    used |= {r.id for r in runs[(m, gi)]}
            if ref is None:
                continue
            ref_mean = cells[(ref, gi, primary)].mean
            for m in models:
                if m == ref or not runs[(m, gi)]:
                    continue
                rows = _compare_rows(store, runs[(m, gi)], runs[(ref, gi)], list(g.metrics), test, correction,
                                     alpha, n_res)
                for row in rows:
                    if row.significant:
                        c = cells[(m, gi, row.metric)]
                        cells[(m, gi, row.metric)] = dataclasses.replace(
                            c, marker=MARK_BETTER if row.diff > 0 else MARK_WORSE)
                show_improv = (m == full) if rq.against_baseline else True
                mean = cells[(m, gi, primary)].mean
                if show_improv and mean is not None and ref_mean:
                    improv[(m, gi)] = (mean - ref_mean) / ref_mean
        picked = [r for (m, gi), rs in runs.items() if m in models for r in rs if r.id in used]
        from mmsr_bench.results.selection import convergence_of

        unconverged = tuple(m for m in models if any(
            (sel := convergence_of(r)) is not None and sel.converged is False
            for gi in range(len(groups)) for r in runs[(m, gi)]))
        tables.append(StudyTable(
            key, rq.title, tuple(models),
            tuple(_label(rq, m, [r for gi in range(len(groups)) for r in runs[(m, gi)]]) for m in models),
            tuple(groups), cells, improv,
            "%Improv." if rq.against_baseline else "%Diff. vs full", refs, tuple(sorted(used)),
            _suite_hashes(groups, picked), _versions(picked),
            _significance_text(test, correction, alpha), unrunnable, unconverged, rq.against_baseline, full))
    hal = hallucination_table(store, opts, hashes)
    notes = tuple(f"{g.label}: suite {g.spec.name} is neither frozen nor built here; runs of any fingerprint "
                  "are shown" for g in groups if g.fingerprint is None)
    return StudyReport(opts.spec.name, opts.budget, tuple(tables), hal, notes)


def _label(rq: RQ, model: str, runs: list = ()) -> str:
    """The row label; a QLoRA row whose shown runs all ran unquantized (``--set quantization=none``, e.g. on a CPU
    without a 4-bit kernel) says so, rather than claiming 4-bit."""
    if model not in rq.labels:
        return model
    label = rq.labels[model]
    quantization = {r.config.get("quantization") for r in runs}
    if "QLoRA" in label and quantization == {"none"}:
        label += ", run with quantization=none"
    return f"{model} ({label})"


def _suite_hashes(groups, runs: list) -> tuple[str, ...]:
    """``label=fingerprint`` of every column group, plus any other fingerprint a shown run carries."""
    out = [f"{g.label}={g.fingerprint}" for g in groups if g.fingerprint]
    known = {g.fingerprint for g in groups}
    return tuple(out + sorted({r.suite_hash for r in runs if r.suite_hash not in known}))


def _versions(runs: list) -> tuple[str, ...]:
    return tuple(sorted({f"{r.code_version[:12]}{'+dirty' if r.code_dirty else ''}" for r in runs}))


def _artifact_suite_matches(value: str, spec) -> bool:
    return value == spec.name or Path(value).stem == spec.name


def hallucination_table(store, opts: StudyOptions, hashes: dict[str, str]) -> HallucinationTable:
    """Flagged share and AUROC from ``bench hallucination`` artifacts, and the primary metric's relative drop
    under each ``--perturb`` tag, for the study's MLLM-SRec models (the full model always has a row)."""
    spec = opts.spec
    primary = spec.evaluation.primary
    mllm = [m for m in hashes if opts.study.is_proposed(m)]
    arts = {}
    for a in store.artifacts(kind="hallucination"):
        if a.model in mllm and a.dataset in opts.datasets and _artifact_suite_matches(a.suite, spec):
            arts[(a.model, a.dataset)] = a  # the newest wins (ordered by id)
    tagged = [r for r in store.runs(suite=spec.name) if r.variant and r.model in mllm and r.dataset in opts.datasets
              and r.config_hash == hashes[r.model]]
    tags = tuple(sorted({r.variant for r in tagged}))
    models = [m for m in mllm if m == opts.study.full or any(k[0] == m for k in arts) or any(r.model == m for r in tagged)]
    cells: dict = {}
    used: list = []
    fps = {d: current_fingerprint(spec, d) for d in opts.datasets}
    for m in models:
        for d in opts.datasets:
            a = arts.get((m, d))
            payload = json.loads(a.payload_json) if a else {}
            cells[(m, d, "flagged")] = payload.get("flagged_share")
            cells[(m, d, "auroc")] = payload.get("auroc")
            fp = fps[d]
            clean = study_runs(store, spec, d, m, hashes[m], fp) if tags else []
            for t in tags:
                pert = study_runs(store, spec, d, m, hashes[m], fp, variant=t)
                value = None
                if clean and pert:
                    c = float(np.mean([r.metrics[primary] for r in clean]))
                    p = float(np.mean([r.metrics[primary] for r in pert]))
                    value = (p - c) / c if c else None
                    used += clean + pert
                cells[(m, d, t)] = value
    return HallucinationTable(tuple(models), tuple(opts.datasets), tags, primary, cells,
                              tuple(sorted(a.id for a in arts.values() if a.model in models)),
                              tuple(sorted({r.id for r in used})),
                              tuple([f"{d}={fp}" for d, fp in fps.items() if fp]
                                    + sorted({r.suite_hash for r in used} - set(fps.values()))),
                              _versions(used))


# ------------------------------------------------------------------------------------------------- rendering
def _fmt(c: StatCell, digits: int = 4) -> str:
    s = f"{c.mean:.{digits}f}"
    if c.n_seeds > 1 and not math.isnan(c.half_width):
        s += f" ± {c.half_width:.{digits}f}"
    return s


def _pct(x: float | None) -> str:
    return "missing" if x is None else f"{100 * x:+.2f}%"


def to_table(t: StudyTable):
    """A :class:`mmsr_bench.results.tables.Table`: rows = models, columns = datasets x metrics (+ the improvement column),
    best bold and second underlined per metric column."""
    from mmsr_bench.results import tables as tb

    header = ["model"]
    groups = []
    ranked = []
    for gi, g in enumerate(t.groups):
        for met in g.metrics:
            ranked.append(len(header))
            header.append(met)
        header.append(t.improv_header)
        groups.append((g.label, len(g.metrics) + 1))
    rows = []
    from mmsr_bench.results.selection import NOT_CONVERGED_MARK

    for m, label in zip(t.rows, t.labels):
        row: list = [label + (NOT_CONVERGED_MARK if m in t.not_converged else "")]
        for gi, g in enumerate(t.groups):
            for met in g.metrics:
                c = t.cells[(m, gi, met)]
                if c.mean is not None:
                    row.append(tb.Cell(_fmt(c), c.mean, c.marker))
                else:
                    row.append(tb.Cell(NOT_APPLICABLE if (m, gi) in t.unrunnable else tb.MISSING))
            if (m, gi) in t.improv:
                row.append(tb.Cell(_pct(t.improv[(m, gi)]), t.improv[(m, gi)]))
            elif t.references.get(gi) == m:
                row.append(tb.Cell("ref"))
            else:
                row.append(tb.Cell(""))
        rows.append(tuple(row))
    table = tb.Table(tuple(header), tuple(rows), title=t.title, footer=t.footer(), groups=tuple(groups))
    return tb.rank_columns(table, columns=ranked)


def hallucination_to_table(h: HallucinationTable):
    from mmsr_bench.results import tables as tb

    cols = ["flagged", "auroc", *h.tags]
    names = {"flagged": "flagged", "auroc": "AUROC", **{t: f"{h.primary} change {t}" for t in h.tags}}
    header = ["model"] + [names[c] for _ in h.datasets for c in cols]
    rows = []
    for m in h.models:
        row: list = [m]
        for d in h.datasets:
            for c in cols:
                v = h.cells.get((m, d, c))
                if v is None:
                    row.append(tb.Cell(tb.MISSING))
                elif c == "flagged":
                    row.append(tb.Cell(f"{100 * v:.1f}%", v))
                elif c == "auroc":
                    row.append(tb.Cell(f"{v:.3f}", v))
                else:
                    row.append(tb.Cell(_pct(v), v))
        rows.append(tuple(row))
    return tb.Table(tuple(header), tuple(rows), title="Hallucination and robustness", footer=h.footer(),
                    groups=tuple((d, len(cols)) for d in h.datasets))


def all_tables(report: StudyReport) -> list:
    out = [to_table(t) for t in report.tables]
    if report.hallucination is not None:
        out.append(hallucination_to_table(report.hallucination))
    return out


def render(report: StudyReport, fmt: str) -> str:
    """The whole report in one format (markdown, latex or html), one table per research question."""
    from mmsr_bench.results import tables as tb

    if fmt not in FORMATS:
        raise BenchError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    parts = []
    for i, t in enumerate(all_tables(report)):
        if fmt == "markdown":
            parts.append(tb.to_markdown(t))
        elif fmt == "latex":
            parts.append(tb.to_latex(t, label=f"tab:study-{report.suite}-{i + 1}"))
        else:
            parts.append(tb.to_html(t))
    notes = list(report.notes)
    if fmt == "markdown":
        head = f"# The MLLM-SRec study on {report.suite} (budget: {report.budget})\n"
        return "\n\n".join([head, *parts, *(f"_{n}_" for n in notes)]) + "\n"
    if fmt == "latex":
        return "\n\n".join([f"% The MLLM-SRec study on {report.suite} (budget: {report.budget})", *parts,
                            *(f"% {n}" for n in notes)]) + "\n"
    import html

    body = "\n".join(parts + [f"<p><em>{html.escape(n)}</em></p>" for n in notes])
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>MLLM-SRec study: "
            f"{html.escape(report.suite)}</title></head>\n<body>\n<h1>The MLLM-SRec study on "
            f"{html.escape(report.suite)} (budget: {html.escape(report.budget)})</h1>\n{body}\n</body></html>\n")
