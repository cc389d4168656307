"""``bench docs``: the tables in docs/ are generated from the reference runs, never typed by hand.

A generated block in a Markdown file is the bench command that makes it, between two comments::

    <!-- bench: leaderboard --suite synth4 --format markdown --against pop -->
    | model | ... |
    <!-- /bench -->

``bench docs`` reruns every block's command over the reference runs (``--db`` is added: the store built from
``reference-runs/``) and writes the output between the comments; ``bench docs --check`` only compares and names
each block that disagrees with the files (the test suite runs it). Only read-only report commands may appear in a
block (:data:`ALLOWED`); a block is parsed as command-line arguments, never executed as code.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import Optional

import typer

#: The commands a block may run: read-only reports over a store.
ALLOWED = (("leaderboard",), ("compare",), ("report", "study"), ("report", "ablations"), ("runs", "list"),
           ("runs", "trials"))
BLOCK = re.compile(r"<!-- bench: (?P<cmd>[^\n]+?) -->\n(?P<body>.*?)<!-- /bench -->", re.S)


def blocks(text: str) -> list[re.Match]:
    return list(BLOCK.finditer(text))


def block_args(cmd: str, where: str) -> list[str]:
    from mmsr_bench.errors import BenchError

    try:
        args = shlex.split(cmd)
    except ValueError as exc:
        raise BenchError(f"{where}: cannot parse the block's command {cmd!r}: {exc}") from None
    if not any(tuple(args[:len(a)]) == a for a in ALLOWED):
        raise BenchError(f"{where}: `bench {cmd}` is not a report command a docs block may run (allowed: "
                         f"{', '.join(' '.join(a) for a in ALLOWED)})")
    if any(a == "--db" or a.startswith("--db=") for a in args):
        raise BenchError(f"{where}: a docs block must not name --db; it always reads the reference runs")
    return args


def register(app: typer.Typer) -> None:
    @app.command("docs")
    def docs_cmd(
        files: Optional[list[Path]] = typer.Argument(None, help="Markdown files (default: docs/*.md of the "
                                                     "checkout)."),
        check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 naming every block that "
                                   "disagrees with the reference runs."),
        reference_dir: Optional[Path] = typer.Option(None, "--reference", help="Folder of run files (default: "
                                                     "reference-runs/ or $MMSR_BENCH_REFERENCE)."),
    ) -> None:
        """Regenerate (or --check) the generated tables in docs/ from the reference runs."""
        from mmsr_bench.cli.common import _setup, console, err_console, fail
        from mmsr_bench.errors import BenchError
        from mmsr_bench.paths import REPO_ROOT
        from mmsr_bench.results import reference

        _setup()
        try:
            url = reference.reference_url(reference_dir)
            paths = list(files) if files else sorted((REPO_ROOT / "docs").glob("*.md"))
            stale, total = [], 0
            for path in paths:
                try:
                    text = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise BenchError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
                out, pos = [], 0
                for m in blocks(text):
                    line = text.count("\n", 0, m.start()) + 1
                    where = f"{path}:{line}"
                    body = _run(app, block_args(m.group("cmd"), where) + ["--db", url], where)
                    total += 1
                    if body != m.group("body"):
                        stale.append(where)
                    out += [text[pos:m.start("body")], body]
                    pos = m.end("body")
                new = "".join(out) + text[pos:]
                if not check and new != text:
                    path.write_text(new, encoding="utf-8")
        except BenchError as exc:
            fail(str(exc))
            return
        if check:
            for where in stale:
                err_console.print(f"error: {where}: the generated block disagrees with the reference runs; run "
                                  "`bench docs` to regenerate it", highlight=False, soft_wrap=True, markup=False)
            if stale:
                raise typer.Exit(1)
            console.print(f"{total} generated blocks agree with the reference runs", highlight=False)
        else:
            console.print(f"regenerated {len(stale)} of {total} blocks from the reference runs", highlight=False)


def _run(app: typer.Typer, args: list[str], where: str) -> str:
    """The standard output of ``bench ARGS`` run in this process, ending in one newline; a failing command is an
    error naming the block."""
    from mmsr_bench.errors import BenchError

    buf, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            code = app(args, standalone_mode=False, prog_name="bench")  # click returns an Exit's code here
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 1))
    except Exception as exc:  # noqa: BLE001 - click usage errors and the like, named with the block
        raise BenchError(f"{where}: `bench {shlex.join(args[:-2])}` failed: {exc}") from None
    if code not in (0, None):
        last = (err.getvalue().strip().splitlines() or ["(no message)"])[-1]
        raise BenchError(f"{where}: `bench {shlex.join(args[:-2])}` failed: {last}")
    return buf.getvalue().rstrip("\n") + "\n"
