"""The model catalog (mmsr_bench/models/registry.toml) lists exactly the registered built-ins, and looking one up imports only
its own module: `bench models` and `bench run --model pop` never import torch."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.models import adapter


def test_catalog_matches_the_registry():
    cat = adapter.catalog()
    reg = {n: r for n, r in adapter.registry().items() if r.cls.__module__.startswith("mmsr_bench.models.")}
    assert set(cat) == set(reg)
    for name, entry in cat.items():
        r = reg[name]
        need = getattr(adapter.build(name), "effective_needs", r.cls.needs)
        assert entry.module == r.cls.__module__, name
        assert set(entry.needs) == {k for k, v in (("text", need.text), ("images", need.images)) if v}, name
        assert entry.description == (r.description or "").split("\n")[0], name


def test_catalog_is_generated_from_the_classes():
    """registry.toml is exactly what `bench adapter catalog --write` writes from the registered classes."""
    from pathlib import Path

    path = Path(adapter.__file__).with_name("registry.toml")
    assert path.read_text(encoding="utf-8") == adapter.catalog_text()
    res = CliRunner().invoke(app, ["adapter", "catalog"])
    assert res.exit_code == 0 and '[models."sasrec"]' in res.output


def _torch_imported(code: str) -> bool:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_listing_and_pop_do_not_import_torch():
    assert not _torch_imported("from typer.testing import CliRunner; from mmsr_bench.cli.main import app; "
                               "assert CliRunner().invoke(app, ['models']).exit_code == 0")
    assert not _torch_imported("from mmsr_bench.models import adapter; adapter.get('pop'); adapter.build('random')")
    assert not _torch_imported("from typer.testing import CliRunner; from mmsr_bench.cli.main import app; "
                               "r = CliRunner().invoke(app, ['run', '--suite', 'synth4', '--model', 'pop', "
                               "'--dataset', 'baby']); assert r.exit_code == 0, r.output; "
                               "r = CliRunner().invoke(app, ['leaderboard', '--suite', 'synth4']); "
                               "assert r.exit_code == 0, r.output")
    # building SASRec (its configuration, its hash) imports no torch either; its network does (the check can fail)
    assert not _torch_imported("from mmsr_bench.models import adapter; adapter.config_hash(adapter.build('sasrec'))")
    assert _torch_imported("import mmsr_bench.models.recbole_compat")


def test_models_name_shows_the_configuration():
    res = CliRunner().invoke(app, ["models", "mllm-srec-text"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "modalities" in out and "'text'" in out and "variant of mllm-srec" in out
    bad = CliRunner().invoke(app, ["models", "sasrecc"])
    assert bad.exit_code == 1 and "Did you mean: sasrec" in bad.output


def test_no_hand_kept_list_of_model_names_in_the_package():
    """A model's facts live on its class and reach the rest through the generated catalog: no module keeps its own
    list, tuple, set or dict of two or more model names (the per-model tables the issue removed: adapter modules,
    tiny budgets, CPU-only models, the study grid). The dashboard fixture, which picks models to simulate, is data."""
    import ast
    from pathlib import Path

    import mmsr_bench

    names = set(adapter.catalog())
    allowed = {"dashboard/fixture.py"}
    root = Path(mmsr_bench.__file__).resolve().parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).as_posix() in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            elts = node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else \
                [k for k in node.keys if k is not None] if isinstance(node, ast.Dict) else []
            hits = [e.value for e in elts if isinstance(e, ast.Constant) and e.value in names]
            if len(hits) >= 2:
                found.append(f"{path.relative_to(root)}:{node.lineno} {hits}")
    assert not found, found
    # the check can fail: a list like the removed CPU_ONLY_MODELS is found
    bad = ast.parse("CPU_ONLY_MODELS = ('pop', 'random')")
    assert any(isinstance(n, ast.Tuple) and sum(e.value in names for e in n.elts) >= 2 for n in ast.walk(bad))
