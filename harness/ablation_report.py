"""The MLLM-SRec ablation report: one row per (variant, dataset), one column per metric, the variant's value with
its relative change over the base model and a significance marker from the paired tests of
:func:`harness.significance.compare` (per-user values, corrected across the row's metrics).

Variants are the registered ``mllm-srec*`` names (plus any extra names given) that have completed runs on the
suite; the base's own row shows its values without a change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from harness.errors import BenchError
from harness.latex import escape
from harness.store import Store

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("hr@10", "ndcg@10", "mrr", "auc")
PREFIX = "mllm-srec"


@dataclass(frozen=True)
class AblationCell:
    value: float
    rel: float | None  # relative change over the base (None for the base itself)
    marker: str  # "+" significantly better, "-" significantly worse, "" otherwise


@dataclass(frozen=True)
class AblationTable:
    suite: str
    base: str
    metrics: list[str]
    rows: list[tuple[str, str, dict[str, AblationCell]]]  # (variant, dataset, cells)
    footer: str


def variants_on(store: Store, suite: str, extra: tuple[str, ...] = ()) -> list[str]:
    from harness import adapter

    names = {r.model for r in store.runs(suite=suite) if r.status == "completed" and r.variant == ""}
    wanted = [n for n in adapter.registry() if n.startswith(PREFIX)] + list(extra)
    return [n for n in dict.fromkeys(wanted) if n in names]


def build(store: Store, suite: str, base: str, *, datasets: list[str] | None = None,
          metrics: list[str] | None = None, test: str = "t", correction: str = "holm", alpha: float = 0.05,
          extra: tuple[str, ...] = (), n_resamples: int = 2000) -> AblationTable:
    from harness import significance

    runs = [r for r in store.runs(suite=suite, model=base) if r.status == "completed" and r.variant == ""]
    if not runs:
        raise BenchError(f"--base {base!r}: no completed runs on suite {suite!r} in {store.url}; "
                         f"run `bench run --suite {suite} --model {base}` first")
    ds = datasets or sorted({r.dataset for r in runs})
    names = list(metrics or [m for m in DEFAULT_METRICS if m in runs[0].metrics])
    rows = []
    for variant in variants_on(store, suite, extra) or [base]:
        for dataset in ds:
            try:
                var_runs = significance.resolve(store, variant, suite, dataset)
            except BenchError:
                continue
            if variant == base:
                vals = significance.seed_averaged(store, var_runs, names)
                rows.append((variant, dataset, {m: AblationCell(float(vals[m].mean()), None, "") for m in names}))
                continue
            try:
                cmp = significance.compare(store, variant, base, suite=suite, dataset=dataset, metrics=names,
                                           test=test, correction=correction, alpha=alpha, n_resamples=n_resamples)
            except BenchError as exc:
                log.warning("ablation %s vs %s on %s: %s", variant, base, dataset, exc)
                continue
            cells = {r.metric: AblationCell(r.mean_a, r.rel_diff,
                                            ("+" if r.diff > 0 else "-") if r.significant else "") for r in cmp.rows}
            rows.append((variant, dataset, cells))
    rows.sort(key=lambda r: (r[1], r[0] != base, r[0]))
    footer = (f"relative change over {base}; +/-: significantly better/worse (two-sided {test} test on per-user "
              f"values, {correction} correction across metrics, alpha = {alpha})")
    return AblationTable(suite, base, names, rows, footer)


def cell_text(c: AblationCell | None, digits: int = 4) -> str:
    if c is None:
        return "-"
    if c.rel is None:
        return f"{c.value:.{digits}f}"
    return f"{c.value:.{digits}f} ({c.rel:+.1%}){c.marker}"


def to_rows(table: AblationTable) -> tuple[list[str], list[list[str]]]:
    header = ["variant", "dataset", *table.metrics]
    return header, [[v, d, *(cell_text(cells.get(m)) for m in table.metrics)] for v, d, cells in table.rows]


def to_markdown(table: AblationTable) -> str:
    header, rows = to_rows(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + f"\n\n{table.footer}\n"


def to_latex(table: AblationTable) -> str:
    header, rows = to_rows(table)
    cols = "ll" + "r" * len(table.metrics)
    out = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
           " & ".join(escape(h) for h in header) + r" \\", r"\midrule"]
    out += [" & ".join(escape(c) for c in r) + r" \\" for r in rows]
    out += [r"\bottomrule", r"\end{tabular}",
            rf"\caption{{Ablations of MLLM-SRec on {escape(table.suite)}. {escape(table.footer)}}}", r"\end{table}"]
    return "\n".join(out) + "\n"
