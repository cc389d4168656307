"""Paper-ready LaTeX leaderboards: one row per model, one column group per dataset, best value bold, second
underlined, significance daggers (needs the booktabs package)."""

from __future__ import annotations

import math

from harness.leaderboard import Board

_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def escape(text: str) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def _metric_label(m: str) -> str:
    base, _, k = m.partition("@")
    name = {"hr": "HR", "ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "auc": "AUC"}.get(base, escape(base))
    return f"{name}@{k}" if k else name


def board_to_latex(board: Board, *, digits: int = 4, footer: str = "", caption: str | None = None,
                   label: str | None = None) -> str:
    n_cols = len(board.datasets) * len(board.metrics)
    lines = [r"\begin{table}[t]", r"\centering"]
    lines.append(r"\caption{" + escape(caption or f"Results on {board.suite}.") + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\begin{tabular}{l" + "r" * n_cols + "}")
    lines.append(r"\toprule")
    groups = [r"\multicolumn{" + str(len(board.metrics)) + r"}{c}{" + escape(d.capitalize()) + "}"
              for d in board.datasets]
    lines.append(" & ".join(["Model"] + groups) + r" \\")
    rules, start = [], 2
    for _ in board.datasets:
        rules.append(r"\cmidrule(lr){" + f"{start}-{start + len(board.metrics) - 1}" + "}")
        start += len(board.metrics)
    lines.append(" ".join(rules))
    lines.append(" & ".join([""] + [_metric_label(m) for _ in board.datasets for m in board.metrics]) + r" \\")
    lines.append(r"\midrule")
    ranks: dict[tuple[str, str, str], int] = {}
    for d in board.datasets:
        for m in board.metrics:
            vals = sorted({board.value(mo, d, m) for mo in board.models} - {math.nan}, reverse=True)
            vals = [v for v in vals if not math.isnan(v)]
            for mo in board.models:
                v = board.value(mo, d, m)
                if vals and v == vals[0]:
                    ranks[(mo, d, m)] = 1
                elif len(vals) > 1 and v == vals[1]:
                    ranks[(mo, d, m)] = 2
    for mo in board.models:
        cells = [escape(mo)]
        for d in board.datasets:
            for m in board.metrics:
                c = board.cells.get((mo, d, m))
                if c is None:
                    cells.append("--")
                    continue
                s = f"{c.mean:.{digits}f}"
                if ranks.get((mo, d, m)) == 1:
                    s = r"\textbf{" + s + "}"
                elif ranks.get((mo, d, m)) == 2:
                    s = r"\underline{" + s + "}"
                if c.n_seeds > 1 and not math.isnan(c.half_width):
                    s += r"{\scriptsize$\pm$" + f"{c.half_width:.{digits}f}" + "}"
                s += {"+": r"$^{\dagger}$", "-": r"$^{\ddagger}$"}.get(c.marker, "")
                cells.append(s)
        lines.append(" & ".join(cells) + r" \\")
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    notes = []
    if footer:
        notes.append(escape(footer).replace("▲/▼", r"$\dagger$/$\ddagger$"))
    notes += [escape(n) for n in board.notes]
    if notes:
        lines.append(r"\par\smallskip\footnotesize " + " ".join(notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
