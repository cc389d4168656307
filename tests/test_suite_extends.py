"""Suite files with ``extends``: a derived suite declares only what differs, and loads as if written out in full."""

from __future__ import annotations

import pytest

from mmsr_bench.errors import BenchError
from mmsr_bench.suites import spec as suites


@pytest.mark.parametrize("child, parent, differs", [
    ("synth4-lite", "synth4", {"max_eval_users": 300}),
    ("amazon4-lite", "amazon4", {"max_eval_users": 1000}),
    ("amazon4-full", "amazon4", {"candidates": "full"}),
])
def test_shipped_derived_suites_inherit_everything_but_what_they_declare(child, parent, differs):
    c, p = suites.load_suite(child), suites.load_suite(parent)
    assert c.extends == parent and p.extends is None
    assert c.datasets == p.datasets and c.preprocess == p.preprocess and c.evaluation == p.evaluation
    assert c.protocol == p.protocol.model_copy(update=differs)
    assert c.name == child and c.hashes != p.hashes  # identity and frozen hashes are never inherited


def _write(tmp_path, name, body):
    (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\n{body}')
    return tmp_path / f"{name}.toml"


BASE = ('[[datasets]]\nname = "seq"\nsource = "sequence"\npath = "x.txt"\n\n[protocol]\nn_negatives = 9\nseed = 7\n'
        '[evaluation]\ncutoffs = [1, 5, 10]\nprimary = "ndcg@5"\n')


def test_nested_override_chain_and_own_datasets(tmp_path):
    _write(tmp_path, "base", BASE)
    _write(tmp_path, "mid", 'extends = "base"\n[protocol]\nseed = 8\n')
    leaf = suites.load_suite_file(_write(tmp_path, "leaf", 'extends = "mid"\n[evaluation]\ncutoffs = [1, 5]\n'))
    assert (leaf.protocol.n_negatives, leaf.protocol.seed, leaf.evaluation.cutoffs) == (9, 8, (1, 5))
    assert leaf.evaluation.primary == "ndcg@5"  # merged key by key: the parent's primary stays
    own = suites.load_suite_file(_write(tmp_path, "own", 'extends = "base"\n[[datasets]]\nname = "other"\n'
                                                         'source = "sequence"\npath = "y.txt"\n'))
    assert [d.name for d in own.datasets] == ["other"]  # arrays replace, tables merge


@pytest.mark.parametrize("files, needle", [
    ({"a": 'extends = "b"\n', "b": 'extends = "a"\n'}, "extends back to this file"),
    ({"a": 'extends = "nothere"\n'}, "no suite file nothere.toml"),
    ({"a": 'extends = "../etc/passwd"\n'}, "field extends"),
    ({"a": 'extends = 3\n'}, "expected a suite name"),
])
def test_bad_extends_is_one_error_naming_the_field(tmp_path, files, needle):
    for name, body in files.items():
        _write(tmp_path, name, body)
    with pytest.raises(BenchError, match=needle):
        suites.load_suite_file(tmp_path / "a.toml")
