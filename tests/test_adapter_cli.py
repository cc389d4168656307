"""`bench adapter check` and `bench adapter new` from the command line, and a third-party adapter package installed
through the `mmsr_bench.adapters` entry point and checked by the kit (offline: pip builds it from a local folder)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tests.test_conformance  # noqa: F401 - registers the canary adapters
from mmsr_bench.cli.main import app
from mmsr_bench.models import conformance

REPO = Path(__file__).resolve().parent.parent


def _out(res) -> str:
    return " ".join((res.output + (res.stderr if res.stderr_bytes is not None else "")).split())


def test_check_prints_every_check_and_exits_0_on_a_conforming_adapter(tmp_path):
    res = CliRunner().invoke(app, ["adapter", "check", "test-canary-honest", "--workdir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = _out(res)
    assert all(c in out for c in conformance.CHECKS) and "FAIL" not in out


def test_check_exits_1_naming_the_failed_check(tmp_path):
    res = CliRunner().invoke(app, ["adapter", "check", "test-canary-position", "--workdir", str(tmp_path)])
    assert res.exit_code == 1
    assert "test-canary-position fails candidate_permutation: permuting candidate columns" in _out(res)


def test_check_rejects_unknown_models_and_fields_in_one_line(tmp_path):
    res = CliRunner().invoke(app, ["adapter", "check", "sasrecc"])
    assert res.exit_code == 1 and "Did you mean: sasrec" in _out(res)
    res = CliRunner().invoke(app, ["adapter", "check", "pop", "--set", "epochs=1", "--workdir", str(tmp_path)])
    assert res.exit_code == 1 and "has no field 'epochs'" in _out(res)
    assert not (tmp_path / "home").exists()


def _scaffold_root(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "mmsr_bench" / "models").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "mmsr_bench" / "models" / "registry.toml").write_text("# catalog\n")
    return root


def test_new_writes_a_conforming_adapter_its_test_and_catalog_entry(tmp_path):
    root = _scaffold_root(tmp_path)
    res = CliRunner().invoke(app, ["adapter", "new", "my-model", "--root", str(root)])
    assert res.exit_code == 0, res.output
    src = root / "mmsr_bench" / "models" / "my_model.py"
    test = root / "tests" / "test_my_model.py"
    assert src.exists() and test.exists()
    assert '[models."my-model"]' in (root / "mmsr_bench" / "models" / "registry.toml").read_text()
    assert 'conformance.run_checks("my-model"' in test.read_text()
    spec = importlib.util.spec_from_file_location("scaffolded_my_model", src)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)  # registers "my-model"
    results = conformance.run_checks("my-model", workdir=tmp_path / "kit")
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    again = CliRunner().invoke(app, ["adapter", "new", "my-model", "--root", str(root)])
    assert again.exit_code == 1 and "already registered" in _out(again)


@pytest.mark.parametrize("name,words", [
    ("../evil", "not allowed"), ("My-Model", "not allowed"), ("a/b", "not allowed"), ("x--y", "not allowed"),
    ("class", "reserved"), ("sasrec", "already registered"), ("mllm-srec-text", "already registered"),
])
def test_new_refuses_unsafe_and_taken_names(tmp_path, name, words):
    root = _scaffold_root(tmp_path)
    res = CliRunner().invoke(app, ["adapter", "new", name, "--root", str(root)])
    assert res.exit_code == 1 and words in _out(res), res.output
    assert sorted(p.name for p in root.rglob("*")) == ["mmsr_bench", "models", "registry.toml", "tests"]


def test_new_refuses_to_overwrite_a_file(tmp_path):
    root = _scaffold_root(tmp_path)
    (root / "tests" / "test_fresh_one.py").write_text("# mine\n")
    res = CliRunner().invoke(app, ["adapter", "new", "fresh-one", "--root", str(root)])
    assert res.exit_code == 1 and "already exists" in _out(res)
    assert (root / "tests" / "test_fresh_one.py").read_text() == "# mine\n"
    assert not (root / "mmsr_bench" / "models" / "fresh_one.py").exists()


PLUGIN = '''
from dataclasses import dataclass

import numpy as np

from mmsr_bench.models.adapter import Adapter, AdapterConfig, register
from mmsr_bench.errors import BenchError


@dataclass(frozen=True)
class LastItemConfig(AdapterConfig):
    weight: float = 1.0


@register()
class LastItem(Adapter):
    """A third-party adapter: item -> next-item transition counts."""

    name = "plugin-last-item"
    description = "example third-party adapter"
    config_cls = LastItemConfig
    uses_torch = False

    def fit(self, train, valid):
        self.t = np.zeros((train.n_items + 1, train.n_items + 1))
        for s in train.sequences:
            np.add.at(self.t, (s[:-1], s[1:]), self.config.weight)
        return self

    def score(self, batch):
        if not hasattr(self, "t"):
            raise BenchError("plugin-last-item: score() called before fit()")
        last = np.array([h[-1] if len(h) else 0 for h in batch.histories])
        return self.t[last[:, None], np.asarray(batch.candidates)]
'''


def test_a_third_party_package_installed_through_the_entry_point_is_checked(tmp_path):
    pkg = tmp_path / "src"
    (pkg / "mmsr_plugin_demo").mkdir(parents=True)
    (pkg / "mmsr_plugin_demo" / "__init__.py").write_text(PLUGIN)
    (pkg / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "mmsr-plugin-demo"
        version = "0.1"

        [project.entry-points."mmsr_bench.adapters"]
        plugin-last-item = "mmsr_plugin_demo"

        [tool.setuptools]
        packages = ["mmsr_plugin_demo"]
        '''))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(pkg)], check=True, capture_output=True, text=True)
    assert list(site.glob("mmsr_plugin_demo-0.1.dist-info/entry_points.txt"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    bench = [sys.executable, "-c", "from mmsr_bench.cli.main import main; main()"]
    ok = subprocess.run(bench + ["adapter", "check", "plugin-last-item", "--workdir", str(tmp_path / "kit")],
                        env=env, capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no_test_leak" in ok.stdout and "FAIL" not in ok.stdout
    bad = subprocess.run(bench + ["adapter", "check", "plugin-last-item", "--set", "weight=nan"],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "LastItemConfig.weight" in bad.stderr, bad.stderr
    # without the package on the path the name is unknown: the check is about the entry point
    env_without = dict(os.environ, PYTHONPATH=str(REPO))
    missing = subprocess.run(bench + ["adapter", "check", "plugin-last-item"], env=env_without,
                             capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 1 and "unknown model 'plugin-last-item'" in missing.stderr


def test_set_values_are_validated_by_pydantic_naming_the_field():
    from mmsr_bench.errors import BenchError
    from mmsr_bench.models import adapter

    assert adapter.build("mmgcn", {"text_fields": "title, brand", "concat": "yes"}).config.text_fields == (
        "title", "brand")
    for override, words in [({"epochs": "1.5"}, "--set SASRecConfig.epochs: cannot parse '1.5' as int"),
                            ({"epochs": "ten"}, "valid integer"),
                            ({"num_threads": "x"}, "SASRecConfig.num_threads")]:
        with pytest.raises(BenchError, match=words.replace("(", r"\(").replace(".", r"\.")):
            adapter.build("sasrec", override)
    with pytest.raises(BenchError, match=r"MMGCNConfig\.concat: cannot parse 'maybe' as bool"):
        adapter.build("mmgcn", {"concat": "maybe"})
