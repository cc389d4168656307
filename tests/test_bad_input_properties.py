"""Property-based bad-input tests (hypothesis): whatever the CLI arguments, suite TOML fields or raw data lines, the
harness either works or ends in one clean error line with exit 1: never a traceback, never a row stored for a
rejected command. Example counts are bounded so the module runs in about a minute on 2 cores."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.errors import BenchError
from mmsr_bench.results.store import Store

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=True)

NUMBERS = st.one_of(st.integers(-10, 300), st.sampled_from([0, -1, 2 ** 31, 2 ** 32, 2 ** 64, 10 ** 20]),
                    st.floats(allow_nan=True, allow_infinity=True))
TEXT = st.text(alphabet=string.printable + "é✓\x00", max_size=12)
VALUE = st.one_of(NUMBERS.map(str), TEXT, st.sampled_from(["", "none", "true", "1e30", "nan", "-inf", "(1,2)"]))


def _clean(result) -> None:
    """Exit 0, or exit 1 with exactly one 'error:' line; no traceback in any case."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), result.output
    if result.exit_code:
        assert result.output.count("error:") == 1, result.output


def _n_rows(db: str) -> int:
    return len(Store(db, read_only=True).runs(status=None)) if Store(db, read_only=True).exists() else 0


@settings(max_examples=60, **SETTINGS)
@given(seeds=st.lists(st.integers(-2 ** 40, 2 ** 70), max_size=2),
       sets=st.lists(st.tuples(st.sampled_from(["noise", "batch_size", "nois", "", "noise "]), VALUE), max_size=2),
       dataset=st.one_of(st.none(), st.sampled_from(["", ",", "seq", "seq,seq", "nope", "../x"]), TEXT),
       device=st.one_of(st.none(), st.sampled_from(["cpu", "cuda", "cuda:7", "mps", "nosuch", ""]), TEXT),
       metric_model=st.sampled_from(["test-successor", "test-successor,pop", "nosuch", ",", ""]))
@example(seeds=[], sets=[("batch_size", "0")], dataset=None, device=None, metric_model="test-successor")
@example(seeds=[], sets=[("batch_size", "-5")], dataset=None, device=None, metric_model="pop")
@example(seeds=[-1], sets=[], dataset=None, device=None, metric_model="pop")
@example(seeds=[2 ** 32], sets=[], dataset="", device="nosuch", metric_model="pop")
@example(seeds=[0], sets=[("noise", "nan")], dataset="seq", device="cpu", metric_model="test-successor")
def test_run_arguments(frozen_tiny, tmp_path, seeds, sets, dataset, device, metric_model):
    db = f"sqlite:///{tmp_path / 'props.db'}"
    before = _n_rows(db)
    args = ["run", "--suite", str(frozen_tiny), "--model", metric_model, "--db", db]
    for s in seeds:
        args += ["--seed", str(s)]
    for k, v in sets:
        args += ["--set", f"{k}={v}"]
    if dataset is not None:
        args += ["--dataset", dataset]
    if device is not None:
        args += ["--device", device]
    result = CliRunner().invoke(app, args)
    _clean(result)
    if result.exit_code:
        assert _n_rows(db) == before  # nothing stored for a rejected command
    else:
        assert _n_rows(db) > before


@settings(max_examples=40, **SETTINGS)
@given(command=st.sampled_from(["leaderboard", "compare"]),
       metric=st.one_of(st.none(), st.sampled_from(["ndcg@0", "ndcg@100000", "hr", "auc@5", "ndcg@10", ""]), TEXT),
       fmt=st.one_of(st.sampled_from(["table", "json", "markdown", "csv", "latex", "bogus", ""]), TEXT),
       alpha=st.sampled_from(["0.05", "0", "1", "-1", "nan", "2"]),
       refs=st.sampled_from([("1", "1"), ("1", "2"), ("test-successor", "pop"), ("99", "1"), ("x", "")]))
def test_report_arguments(frozen_tiny, tmp_path_factory, command, metric, fmt, alpha, refs):
    db = f"sqlite:///{tmp_path_factory.getbasetemp() / 'reports.db'}"
    if not _n_rows(db):
        for model in ("test-successor", "pop"):
            assert CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", model,
                                            "--db", db]).exit_code == 0
    before = _n_rows(db)
    if command == "leaderboard":
        args = ["leaderboard", "--suite", "tiny", "--format", fmt, "--alpha", alpha, "--against", "pop"]
    else:
        args = ["compare", *refs, "--suite", "tiny", "--dataset", "seq", "--format", fmt, "--alpha", alpha]
    if metric is not None:
        args += ["--metric", metric]
    _clean(CliRunner().invoke(app, args + ["--db", db]))
    assert _n_rows(db) == before


FIELDS = {
    "name": st.sampled_from(["tiny", "../tiny", "", "a/b"]),
    "datasets.0.name": st.one_of(st.sampled_from(["seq", "..", "../../v", "", "x" * 200]), TEXT),
    "datasets.0.source": st.sampled_from(["sequence", "synth", "ftp", "", "amazon2023"]),
    "datasets.0.category": st.one_of(st.sampled_from(["../../../../../tmp/pwned", "Baby", "a/b", "", ".."]), TEXT),
    "datasets.0.path": st.sampled_from(["tiny.txt", "/etc/passwd", "../x.txt", "nope.txt", "", "tiny_items.tsv"]),
    "datasets.0.items": st.sampled_from(["tiny_items.tsv", "tiny.txt", "", "../../x"]),
    "preprocess.kcore": NUMBERS,
    "preprocess.duplicates": st.sampled_from(["keep", "drop", "bogus"]),
    "protocol.candidates": st.sampled_from(["sampled", "full", "popularity", "bogus"]),
    "protocol.n_negatives": NUMBERS,
    "protocol.seed": NUMBERS,
    "protocol.max_eval_users": NUMBERS,
    "evaluation.cutoffs": st.lists(st.integers(-3, 2000), max_size=3),
    "evaluation.metrics": st.lists(st.sampled_from(["hr", "ndcg", "auc", "bogus", ""]), max_size=3),
    "evaluation.primary": st.sampled_from(["ndcg@10", "hr@5", "auc", "ndcg@0", "bogus", ""]),
    "datasets": st.sampled_from([[], "x", 3]),
}


def _set(doc: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
    node[keys[-1]] = value


@settings(max_examples=60, **SETTINGS)
@given(edits=st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), min_size=1, max_size=3).flatmap(
    lambda d: st.fixed_dictionaries({k: FIELDS[k] for k in d})))
def test_suite_files(tiny_suite, tmp_path, edits):
    import tomllib

    import tomlkit

    doc = tomllib.loads(tiny_suite.read_text())
    for k, v in edits.items():
        if k.startswith("datasets.") and not (isinstance(doc.get("datasets"), list) and doc["datasets"]):
            continue
        if isinstance(v, float) and v != v:
            v = "nan"  # TOML has nan, tomlkit writes it as a string here
        _set(doc, k, v)
    path = tmp_path / "tiny.toml"
    try:
        path.write_text(tomlkit.dumps(doc))
    except Exception:  # a value TOML cannot hold: not a case for the harness
        return
    _clean(CliRunner().invoke(app, ["suite", "build", str(path)]))


@settings(max_examples=80, **SETTINGS)
@given(lines=st.lists(st.one_of(
    st.fixed_dictionaries({"reviewerID": st.one_of(TEXT, st.integers(), st.just({"a": 1}), st.none()),
                           "asin": st.one_of(TEXT, st.integers(), st.lists(st.integers(), max_size=2)),
                           "unixReviewTime": st.one_of(NUMBERS, TEXT, st.just(1e30)),
                           "overall": st.one_of(NUMBERS, TEXT, st.none())}).map(json.dumps),
    st.just("[" * 5000 + "]" * 5000), st.just('{"a": ' * 200_000), TEXT), max_size=6))
def test_review_files(tmp_path, lines):
    from mmsr_bench.data.loaders import load_amazon_2014

    f = tmp_path / "reviews.json"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        load_amazon_2014(f)
    except BenchError as exc:
        assert str(f) in str(exc) or "reviews" in str(exc)


@settings(max_examples=60, **SETTINGS)
@given(text=st.text(alphabet="0123456789 \t\n-+.eé\x00x", max_size=60))
def test_sequence_files(tmp_path, text):
    from mmsr_bench.data.loaders import load_sequence_file

    f = tmp_path / "seq.txt"
    f.write_text(text, encoding="utf-8")
    try:
        load_sequence_file(f)
    except BenchError as exc:
        assert str(f) in str(exc)


@pytest.mark.parametrize("payload", [b"\x89PNG\r\n\x1a\n\x00\xff", b"", "a = [".encode(), b"\xef\xbb\xbfname = 1"])
def test_binary_and_broken_suite_files(tmp_path, payload):
    f = tmp_path / "s.toml"
    f.write_bytes(payload)
    _clean(CliRunner().invoke(app, ["suite", "build", str(f)]))


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_run_file_import_of_mutated_files(tmp_path_factory, data):
    """Any byte-level change to a run file (overwrite, delete, insert, truncate) is refused with one error line and
    nothing stored, unless the change leaves the JSON content identical (e.g. whitespace), in which case the run is
    imported unchanged."""
    from mmsr_bench.results.store_copy import export_store
    from tests.test_run_files import _fill

    tmp = tmp_path_factory.mktemp("mut")
    src = f"sqlite:///{tmp / 'src.db'}"
    _fill(src, n=2, dataset="d0")
    export_store(src, tmp / "out")
    path = next(p for p in sorted((tmp / "out").rglob("*.json")) if "artifact-" not in p.name)
    raw = bytearray(path.read_bytes())
    original = json.loads(raw)
    kind = data.draw(st.sampled_from(["overwrite", "delete", "insert", "truncate"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if kind == "overwrite":
        raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]))
    elif kind == "delete":
        del raw[at:at + data.draw(st.integers(1, 40))]
    elif kind == "insert":
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        del raw[at:]
    path.write_bytes(bytes(raw))
    try:
        same = {k: v for k, v in json.loads(bytes(raw)).items() if k != "sha256"} == \
               {k: v for k, v in original.items() if k != "sha256"}
    except (ValueError, UnicodeDecodeError, AttributeError):
        same = False
    db = tmp / "dst.db"
    res = CliRunner().invoke(app, ["store", "import", str(path), "--db", f"sqlite:///{db}"])
    _clean(res)
    if same:
        assert res.exit_code == 0 or "sha256" in res.output  # a changed sha256 field itself is refused
    else:
        assert res.exit_code == 1 and str(path) in " ".join(res.output.split()), res.output
        assert not db.exists() or not Store(f"sqlite:///{db}", read_only=True).runs(status=None)


# ------------------------------------------------------------------ output turned against its reader (per format)
# Any stored text (a name, a code version, a title) reaches each output format inert: HTML escaped in markdown,
# no formula in CSV, no command in LaTeX, no escape sequence or markup in the terminal, no live markdown in the
# dashboard. Text is drawn from an alphabet rich in the attack characters.

HOSTILE = st.text(alphabet=string.printable + "\x1b\x9b\x07\x00é✓[](){}<>&|`*_=+-@$%#^~\\", max_size=40)


@settings(max_examples=300, **SETTINGS)
@given(text=HOSTILE)
def test_markdown_cells_are_inert(text):
    from mmsr_bench.results.tables import _md

    out = _md(text)
    assert "<" not in out and ">" not in out and "\n" not in out
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in out.replace("\t", ""))
    assert all(out[i - 1] == "\\" for i, c in enumerate(out) if c == "|")


@settings(max_examples=300, **SETTINGS)
@given(text=HOSTILE)
def test_csv_cells_are_never_formulas(text):
    from mmsr_bench.results.tables import csv_cell

    out = csv_cell(text)
    if out[:1] in ("=", "+", "-", "@", "\t", "\r"):
        float(out)  # only a number may start like a formula


@settings(max_examples=300, **SETTINGS)
@given(text=HOSTILE)
def test_latex_text_carries_no_command(text):
    from mmsr_bench.results.latex import _SPECIAL, escape

    out = escape(text)
    for seq in sorted(_SPECIAL.values(), key=len, reverse=True):
        out = out.replace(seq, "")
    assert "\\" not in out and not any(ord(c) < 32 and c not in "\t\n" for c in out)


@settings(max_examples=200, **SETTINGS)
@given(text=st.text(alphabet=string.ascii_letters + string.digits + " [/]=#:@\x1b\x9b\x07]()", max_size=40))
def test_terminal_text_prints_as_itself(text):
    from rich.console import Console

    from mmsr_bench.cli.common import terminal_text
    from mmsr_bench.results.tables import strip_controls

    console = Console(record=True, width=1000, color_system=None, emoji=False)
    console.print(terminal_text(text), highlight=False, end="")
    shown = console.export_text()
    assert "\x1b" not in shown and "\x9b" not in shown
    assert shown.rstrip() == strip_controls(text).rstrip()


@settings(max_examples=300, **SETTINGS)
@given(text=HOSTILE)
def test_dashboard_markdown_text_is_inert(text):
    from mmsr_bench.dashboard.ui import md_text

    out = md_text(text)
    for i, c in enumerate(out):
        if c in "<>&[]`":
            assert i > 0 and out[i - 1] == "\\", (text, out)
    assert "\n" not in out and "\x1b" not in out


@settings(max_examples=200, **SETTINGS)
@given(text=st.one_of(st.text(alphabet="0123456789/ -+_x", max_size=12), TEXT))
def test_shard_argument(text):
    from mmsr_bench.cli.common import parse_shard

    try:
        index, of = parse_shard(text)
    except BenchError as exc:
        assert str(exc).startswith("--shard ")
        return
    assert 0 <= index < of and f"{index + 1}/{of}" == "/".join(str(int(p)) for p in text.strip().split("/"))
