"""What every ``bench`` command module shares: the consoles, error exit, logging and progress setup, common
options. Command modules import this, never each other, so the CLI has no import cycle."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from mmsr_bench import progress as progress_mod
from mmsr_bench.errors import BenchError

# Without a terminal (pipes, CI, tests) tables get a fixed generous width instead of being cut at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DB_OPTION = typer.Option(None, "--db", help="SQLAlchemy URL of the results store (default: $MMSR_BENCH_DB or "
                                            "sqlite:///results.db in the current directory).")
FORMATS = ("table", "markdown", "csv", "json", "latex")


class RichReporter:
    """Progress bars for long work (build, fit, scoring), shared by nested tasks."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                                 transient=False)
        self.depth = 0

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[object]:
        if self.depth == 0:
            self.progress.start()
        self.depth += 1
        tid = self.progress.add_task(description, total=total)

        class _T:
            def advance(_self, n: int = 1) -> None:
                self.progress.advance(tid, n)

        try:
            yield _T()
        finally:
            if total is None:
                self.progress.update(tid, total=1, completed=1)
            self.depth -= 1
            if self.depth == 0:
                self.progress.stop()


def _setup(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False)], force=True)
    for noisy in ("recbole", "transformers", "httpx", "urllib3", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    progress_mod.set_reporter(RichReporter(err_console) if err_console.is_terminal else _LineReporter(err_console))


class _LineReporter:
    """Without a terminal (CI, pipes, ``nohup``), plain lines instead of redrawn bars: one when a step starts, one
    when it ends, and for a step with a known size one every ``interval`` seconds with its count, rate and time
    left, so a background run of an hour shows where it is in its log."""

    def __init__(self, console: Console, interval: float = 60.0, clock=None) -> None:
        import time

        self.console = console
        self.interval = interval
        self.clock = clock or time.perf_counter

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[object]:
        t0 = self.clock()
        self.console.print(f"[dim]… {description}[/dim]" + (f" ({total})" if total else ""))
        reporter = self

        class _T:
            done = 0
            last = t0

            def advance(self, n: int = 1) -> None:
                self.done += n
                now = reporter.clock()
                if not total or now - self.last < reporter.interval or self.done >= total:
                    return
                self.last = now
                elapsed = now - t0
                left = elapsed / self.done * (total - self.done)
                reporter.console.print(f"[dim]  {description}: {self.done}/{total} in {elapsed:.0f}s "
                                       f"({self.done / elapsed:.3g}/s, about {left:.0f}s left)[/dim]")

        yield _T()
        self.console.print(f"[dim]✓ {description} in {self.clock() - t0:.1f}s[/dim]")


def _names_option(value: Optional[str], option: str) -> list[str] | None:
    """``"a,b"`` -> ["a", "b"]; None stays None (the default); a value naming nothing, or one name twice (it would
    store the same cell twice), is an error."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise BenchError(f"{option} {value[:80]!r} names nothing; give comma-separated names or leave the option out")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BenchError(f"{option}: {twice[0][:80]!r} is named twice")
    return names


def suite_name(value: Optional[str]) -> Optional[str]:
    """The stored name of ``--suite``: a suite file given by path (``held.toml``) is stored under the ``name`` it
    declares, so read commands find the runs `bench run --suite held.toml` made (a name passes unchanged)."""
    from pathlib import Path

    if value and value.endswith(".toml") and Path(value).exists():
        from mmsr_bench.suites.spec import load_suite

        return load_suite(value).name
    return value


SEED_HELP = "One or more seeds: --seed 0 1 2 stores one run per seed (integers in [0, 2**32 - 1])."


def parse_seeds(values: list[str], option: str = "--seed") -> list[int]:
    """Seeds as plain decimal integers in [0, 2**32 - 1], each once: ``1_0``, ``+3``, ``0x10`` and ``abc`` are
    refused with one error line (Python's ``int`` would read the first three)."""
    from mmsr_bench.evaluation.scoring import check_seeds

    out: list[int] = []
    for raw in values:
        text = str(raw).strip()
        if not text.isascii() or not text.isdigit() or len(text) > 10:  # the text form; the range is the shared rule
            raise BenchError(f"{option} {text[:40]!r}: seeds must be integers in [0, 2**32 - 1]")
        out.append(int(text))
    return check_seeds(out, option, at_least_one=False)


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (1 <= K <= N, plain decimal) as the 0-based (index, of) the runner takes."""
    k, sep, n = str(text).strip().partition("/")
    if (not sep or not k.isascii() or not n.isascii() or not k.isdigit() or not n.isdigit() or len(k) > 6
            or len(n) > 6 or not 1 <= int(k) <= int(n)):
        raise BenchError(f"--shard {str(text)[:40]!r}: give K/N with 1 <= K <= N, e.g. --shard 1/4")
    return int(k) - 1, int(n)


def fail(message: str) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True, emoji=False)
    raise typer.Exit(1)


def terminal_text(value) -> object:
    """A cell for the terminal: text with control characters (ANSI/OSC escapes) removed and rich markup escaped, so
    a stored name prints as itself; a rich ``Text`` (styled by the caller) passes as it is."""
    from rich.markup import escape
    from rich.text import Text

    from mmsr_bench.results.tables import strip_controls

    return value if isinstance(value, Text) else escape(strip_controls(str(value)))


def _print_table(header: list[str], rows: list[list], title: str | None = None) -> None:
    t = Table(title=terminal_text(title) if title else None, show_lines=False)
    for i, h in enumerate(header):
        t.add_column(terminal_text(h), justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*(terminal_text(c) for c in r))
    console.print(t)
