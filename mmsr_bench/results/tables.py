"""The one table writer: every results table (leaderboard, ablations, studies) is built once as a :class:`Table`
and rendered by the functions here, so bold/underline ranking, significance markers and missing cells look the
same in markdown, LaTeX, HTML and CSV whichever command or page produced them."""

from __future__ import annotations

import csv
import html
import io
import math
import re
from dataclasses import dataclass, replace
from typing import Sequence

from mmsr_bench.results.latex import escape

MISSING = "missing"  # text of a cell without runs (never print 0 for missing)

# how a marker reads outside LaTeX ("+"/"-" are the harness' better/worse codes) and inside it (superscripts)
_TEXT_MARK = {"+": " ▲", "-": " ▼"}
_LATEX_MARK = {"+": r"\dagger", "-": r"\ddagger", "†": r"\dagger", "‡": r"\ddagger", "*": "*"}
_PM = " ± "


@dataclass(frozen=True)
class Cell:
    text: str  # the formatted value, e.g. "0.3201" or "0.3201 ± 0.0040"
    value: float | None = None  # the number used for ranking (None = not ranked, e.g. missing)
    marker: str = ""  # significance marker shown after the value ("+", "-", "†", "*")
    rank: int = 0  # 1 = best (bold), 2 = second (underlined), 0 = neither


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]  # column titles
    rows: tuple[tuple[Cell | str, ...], ...]  # plain str = a label cell
    title: str = ""  # caption / heading
    footer: str = ""  # notes under the table (markdown/html), in the caption (latex)
    groups: tuple[tuple[str, int], ...] = ()  # header groups over the columns after `lead`, e.g. ("Beauty", 4)
    lead: int = 1  # leading label columns (left aligned)


def missing() -> Cell:
    """The cell of a combination without runs: says so, is never ranked."""
    return Cell(MISSING)


def rank_columns(table: Table, columns: Sequence[int] | None = None, lower_is_better: Sequence[int] = ()) -> Table:
    """Rank 1 (best) and 2 (second) per column among the cells with a finite value; ties share a rank.

    ``columns`` and ``lower_is_better`` are column indices as in ``header`` (default: every column after
    ``lead``); ranks of the other columns are left as they are."""
    cols = range(table.lead, len(table.header)) if columns is None else columns
    rows = [list(r) for r in table.rows]
    for j in cols:
        ranked = [c for r in rows if j < len(r) and isinstance(c := r[j], Cell) and _finite(c.value)]
        distinct = sorted({c.value for c in ranked}, reverse=j not in set(lower_is_better))[:2]
        for r in rows:
            c = r[j] if j < len(r) else None
            if isinstance(c, Cell):
                r[j] = replace(c, rank=distinct.index(c.value) + 1 if _finite(c.value) and c.value in distinct else 0)
    return replace(table, rows=tuple(tuple(r) for r in rows))


def _finite(v: float | None) -> bool:
    return v is not None and not math.isnan(v) and not math.isinf(v)


def flat_header(table: Table) -> list[str]:
    """Column titles for formats without spanning headers: "group/title", unless one group spans everything."""
    n_values = len(table.header) - table.lead
    if not table.groups or (len(table.groups) == 1 and table.groups[0][1] == n_values):
        return list(table.header)
    names: list[str] = []
    for name, width in table.groups:
        names += [name] * width
    names += [""] * max(0, n_values - len(names))
    return list(table.header[:table.lead]) + [f"{g}/{h}" if g else h
                                              for g, h in zip(names, table.header[table.lead:])]


def plain_text(c: Cell | str) -> str:
    """A cell as unstyled text with its marker (▲/▼ for +/-), as the terminal and CSV show it."""
    if isinstance(c, str):
        return c
    return c.text + _TEXT_MARK.get(c.marker, c.marker)


# ------------------------------------------------------------------------------------------------------ markdown


def to_markdown(table: Table) -> str:
    """A GitHub table: best **x**, second <u>x</u>, the marker appended (▲/▼ for +/-); title and footer around."""

    def cell(c: Cell | str) -> str:
        if isinstance(c, str):
            return _md(c)
        s = _md(c.text)
        s = f"**{s}**" if c.rank == 1 else f"<u>{s}</u>" if c.rank == 2 else s
        return s + _md(_TEXT_MARK.get(c.marker, c.marker))

    header = flat_header(table)
    out = [f"**{_md(table.title)}**", ""] if table.title else []
    out.append("| " + " | ".join(_md(h) for h in header) + " |")
    out.append("|" + "|".join(["---"] * table.lead + ["---:"] * (len(header) - table.lead)) + "|")
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if table.footer:
        out += [""] + [html.escape(strip_controls(line), quote=False) for line in table.footer.splitlines()]
    return "\n".join(out) + "\n"


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def strip_controls(text: str) -> str:
    """``text`` without control characters (ANSI and OSC terminal escapes start with ESC or CSI, which are removed,
    so their parameters print as inert text); tabs and newlines stay."""
    return _CONTROLS.sub("", text)


def csv_cell(value):
    """A CSV value that no spreadsheet runs as a formula (OWASP "CSV Injection"): text starting with ``=``, ``+``,
    ``-``, ``@``, a tab or CR gets a leading apostrophe, unless it is a number; control characters are removed."""
    if not isinstance(value, str):
        return value
    value = strip_controls(value) if value[:1] not in ("\t", "\r") else value
    if value.startswith(_FORMULA_START):
        try:
            float(value)
            return value
        except ValueError:
            return "'" + value
    return value


def _md(text: str) -> str:
    """Markdown cell text: HTML escaped (a stored ``<script>`` or ``<img onerror>`` is shown, never run), control
    characters removed, pipes escaped, one line."""
    return html.escape(strip_controls(text), quote=False).replace("|", r"\|").replace("\n", " ")


# --------------------------------------------------------------------------------------------------------- latex


def to_latex(table: Table, label: str | None = None) -> str:
    """A booktabs table: \\textbf best, \\underline second, markers as superscripts, groups as \\multicolumn with
    \\cmidrule, the footer in the caption; every text escaped."""
    n = len(table.header)
    lines = [r"\begin{table}[t]", r"\centering"]
    caption = " ".join(s for s in (_latex_text(table.title), _latex_text(table.footer)) if s)
    if caption:
        lines.append(r"\caption{" + caption + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{" + "l" * table.lead + "r" * (n - table.lead) + "}", r"\toprule"]
    if table.groups:
        top = [escape(h) for h in table.header[:table.lead]]
        rules, start = [], table.lead + 1
        for name, width in table.groups:
            top.append(r"\multicolumn{" + str(width) + r"}{c}{" + escape(name) + "}")
            rules.append(r"\cmidrule(lr){" + f"{start}-{start + width - 1}" + "}")
            start += width
        top += [""] * (n - table.lead - sum(w for _, w in table.groups))
        lines += [" & ".join(top) + r" \\", " ".join(rules)]
        lines.append(" & ".join([""] * table.lead + [escape(h) for h in table.header[table.lead:]]) + r" \\")
    else:
        lines.append(" & ".join(escape(h) for h in table.header) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(_latex_cell(c) for c in row) + r" \\" for row in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _latex_text(text: str) -> str:
    return escape(" ".join(text.split())).replace("▲", r"$\dagger$").replace("▼", r"$\ddagger$")


def _latex_cell(c: Cell | str) -> str:
    if isinstance(c, str):
        return escape(c)
    value, pm, spread = c.text.partition(_PM)
    s = escape(value)
    s = r"\textbf{" + s + "}" if c.rank == 1 else r"\underline{" + s + "}" if c.rank == 2 else s
    if pm:
        s += r"{\scriptsize$\pm$" + escape(spread) + "}"
    if c.marker:
        s += "$^{" + _LATEX_MARK[c.marker] + "}$" if c.marker in _LATEX_MARK else \
            r"\textsuperscript{" + escape(c.marker) + "}"
    return s


# ---------------------------------------------------------------------------------------------------------- html


def to_html(table: Table) -> str:
    """A <table> (caption = title) with <b> best and <u> second, everything escaped; the footer in a <p>."""
    e = html.escape
    out = ["<table>"]
    if table.title:
        out.append(f"<caption>{e(table.title)}</caption>")
    out.append("<thead>")
    if table.groups:
        spans = [f"<th>{e(h)}</th>" for h in table.header[:table.lead]]
        spans += [f'<th colspan="{w}">{e(name)}</th>' for name, w in table.groups]
        spans += ["<th></th>"] * (len(table.header) - table.lead - sum(w for _, w in table.groups))
        out.append("<tr>" + "".join(spans) + "</tr>")
        out.append("<tr>" + "".join(f"<th>{'' if i < table.lead else e(h)}</th>"
                                    for i, h in enumerate(table.header)) + "</tr>")
    else:
        out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in table.header) + "</tr>")
    out += ["</thead>", "<tbody>"]
    for row in table.rows:
        cells = []
        for i, c in enumerate(row):
            if isinstance(c, str):
                cells.append(f'<td style="text-align:left">{e(c)}</td>')
                continue
            s = e(c.text)
            s = f"<b>{s}</b>" if c.rank == 1 else f"<u>{s}</u>" if c.rank == 2 else s
            cells.append(f'<td style="text-align:right">{s}{e(_TEXT_MARK.get(c.marker, c.marker))}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    if table.footer:
        out.append("<p>" + "<br>".join(e(ln) for ln in table.footer.splitlines()) + "</p>")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------------- csv


def to_csv(table: Table) -> str:
    """Header (groups flattened into "group/title") and the cells' text with their markers; no styling."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(h) for h in flat_header(table)])
    for row in table.rows:
        w.writerow([csv_cell(plain_text(c)) for c in row])
    return buf.getvalue()
