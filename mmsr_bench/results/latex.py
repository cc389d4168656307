"""LaTeX text helpers shared by every LaTeX export (the rendering is :func:`mmsr_bench.results.tables.to_latex`):
escaping and the paper labels of metrics. A leaf module, so the table writer and the leaderboard can both use it."""

from __future__ import annotations

_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def escape(text: str) -> str:
    """LaTeX-safe text: special characters escaped, control characters (terminal escapes) dropped."""
    return "".join(_SPECIAL.get(ch, ch) for ch in text if ch in "\t\n" or not (ord(ch) < 32 or 127 <= ord(ch) < 160))


def metric_label(m: str) -> str:
    """``ndcg@10`` -> ``NDCG@10`` (unescaped: the table writer escapes)."""
    base, _, k = m.partition("@")
    name = {"hr": "HR", "ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "auc": "AUC"}.get(base, base)
    return f"{name}@{k}" if k else name
