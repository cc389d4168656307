"""The package layout is the data flow: a stage imports only earlier stages, and no module imports are cyclic."""

from __future__ import annotations

import ast
from pathlib import Path

import mmsr_bench

ROOT = Path(mmsr_bench.__file__).resolve().parent
#: The stages in data-flow order (the core modules errors, paths and progress come first); the two front ends,
#: the CLI and the dashboard, share the last rank (`bench dashboard` launches the app).
RANK = {"data": 1, "suites": 2, "evaluation": 3, "models": 4, "results": 5, "runner": 6, "cli": 7, "dashboard": 7}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """Every mmsr_bench module ``path`` imports at run time (module or function level; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmsr_bench"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((node.lineno, sub if sub in known else node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("mmsr_bench")]
    return out


def _stage(module: str) -> int:
    parts = module.split(".")
    return RANK.get(parts[1], 0) if len(parts) > 1 else 0


def test_every_module_sits_in_a_stage_or_the_core():
    core = {"mmsr_bench", "mmsr_bench.errors", "mmsr_bench.paths", "mmsr_bench.progress"}
    assert {m for m in _modules() if _stage(m) == 0} == core


def test_no_stage_imports_a_later_stage():
    mods = _modules()
    bad = [f"{m}:{line} imports {t}" for m, p in mods.items() for line, t in _imports(p, set(mods))
           if _stage(t) > _stage(m)]
    assert not bad, bad


#: Where models are trained: the results stage reads runs and measures in spaces the models stage built, never trains.
TRAINING = {"mmsr_bench.evaluation.loop", "mmsr_bench.models.toolkits.finetune", "mmsr_bench.models.toolkits.lit_clip",
            "mmsr_bench.models.toolkits.tiny_clip", "mmsr_bench.models.toolkits.image_text_space",
            "mmsr_bench.models.toolkits.resume"}


def test_the_results_stage_trains_nothing():
    mods = _modules()
    assert TRAINING <= set(mods)
    bad = [f"{m}:{line} imports {t}" for m, p in mods.items() if m.startswith("mmsr_bench.results")
           for line, t in _imports(p, set(mods)) if t in TRAINING]
    assert not bad, bad


def test_no_import_cycles():
    mods = _modules()
    graph = {m: {t for _, t in _imports(p, set(mods)) if t in mods and t != m} for m, p in mods.items()}
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


#: What a reader of results runs, in a fresh process: the study report over the built-in study (its cells' config
#: hashes included) and every dashboard page over a store and the reference runs. Prints whether torch was imported.
_READ_ONLY_FRONT_ENDS = """
import os, sys, tempfile
from pathlib import Path
tmp = tempfile.mkdtemp()
os.environ["MMSR_BENCH_HOME"] = tmp + "/home"
url = f"sqlite:///{tmp}/results.db"
from mmsr_bench.dashboard.fixture import build_fixture_store
build_fixture_store(url)
from typer.testing import CliRunner
from mmsr_bench.cli.main import app
r = CliRunner().invoke(app, ["report", "study", "--suite", "synth4-lite", "--dataset", "beauty", "--db", url])
assert r.exit_code == 0 and "RQ4" in r.output, r.output
print("report study imports torch:", "torch" in sys.modules)
from streamlit.testing.v1 import AppTest
import mmsr_bench.dashboard as dash
os.environ["MMSR_BENCH_DB"] = url
at = AppTest.from_file(str(Path(dash.__file__).resolve().parent / "app.py"), default_timeout=90)
at.run()
for page in sorted(p.stem for p in (Path(dash.__file__).resolve().parent / "app_pages").glob("*.py")):
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, (page, [e.value for e in at.exception])
    print(f"page {page} imports torch:", "torch" in sys.modules)
"""


def test_study_report_and_dashboard_pages_import_no_torch():
    """Reading results never loads a model's framework: the study report computes its cells' configuration hashes
    from the adapter classes (whose modules import torch only to fit or score), and no dashboard page imports it."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _READ_ONLY_FRONT_ENDS], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if "imports torch:" in line]
    assert len(lines) >= 7, out.stdout
    assert all(line.endswith("False") for line in lines), lines


#: Above this many lines a module states at its top why it is one module (issue: "no module of mmsr_bench/ is over
#: about 450 lines without a reason stated at its top").
LONG_MODULE_LINES = 450


def test_long_modules_say_why_they_are_one_module():
    silent = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG_MODULE_LINES:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Why one module" not in doc:
                silent.append(f"{name} ({text.count(chr(10))} lines)")
    assert not silent, f"split these, or say at the top why each is one module: {silent}"
