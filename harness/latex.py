"""Paper-ready LaTeX leaderboards: one row per model, one column group per dataset, best value bold, second
underlined, significance daggers (needs the booktabs package). The rendering is :func:`harness.tables.to_latex`;
this module holds the LaTeX escaping it shares and the leaderboard's paper labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # harness.tables imports escape from here, harness.leaderboard imports harness.tables
    from harness.leaderboard import Board

_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def escape(text: str) -> str:
    return "".join(_SPECIAL.get(ch, ch) for ch in text)


def metric_label(m: str) -> str:
    """``ndcg@10`` -> ``NDCG@10`` (unescaped: the table writer escapes)."""
    base, _, k = m.partition("@")
    name = {"hr": "HR", "ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "auc": "AUC"}.get(base, base)
    return f"{name}@{k}" if k else name


def board_to_latex(board: Board, *, digits: int = 4, footer: str = "", caption: str | None = None,
                   label: str | None = None) -> str:
    """The leaderboard as a booktabs table; ``footer`` (the significance note) and the board's notes go in the
    caption."""
    from dataclasses import replace

    from harness import tables
    from harness.leaderboard import board_table

    table = board_table(board, digits, group_name=str.capitalize, metric_name=metric_label)
    notes = " ".join(n for n in [footer, *board.notes] if n)
    table = replace(table, header=("Model", *table.header[1:]), title=caption or f"Results on {board.suite}.",
                    footer=notes)
    return tables.to_latex(table, label=label)
