"""The real data's item text as the shipped suites freeze it: Sports' derived descriptors (every item, joined by id,
recorded as derived), titles elsewhere, and `bench suite verify` passing for every shipped suite whose data is here.

Everything is built once per module into one cache home, so the Amazon datasets are materialized once."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.data.loaders import read_item_text_tsv
from mmsr_bench.models.adapter import Needs
from mmsr_bench.runner.execute import check_needs
from mmsr_bench.suites import build
from mmsr_bench.suites import spec as suites
from tests.conftest import real_data_root, requires_real_data

pytestmark = [pytest.mark.realdata, requires_real_data]

AMAZON = ("amazon4", "amazon4-full", "amazon4-lite")
SPORTS_SOURCE = "derived-descriptors (IDGenRec phase-0 ids; not Amazon titles)"


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_text_home")


@pytest.fixture
def home(shared_home, monkeypatch) -> Path:
    monkeypatch.setenv("MMSR_BENCH_HOME", str(shared_home))  # after the per-test home: share builds in this module
    return shared_home


def _buildable(spec: suites.SuiteSpec, d: suites.DatasetSpec) -> bool:
    """Whether this machine has what the dataset is built from (raw Amazon imports usually are not here)."""
    if d.source == "synth":
        return True
    if d.source != "sequence":
        return False
    root = real_data_root()
    paths = [d.path, d.items, d.users, d.item_text]
    if root is None or not all((root / p).exists() for p in paths if p):
        return False
    return not d.meta or (build.raw_dir("amazon2014") / d.meta).exists()


@pytest.mark.parametrize("suite", AMAZON)
def test_sports_items_all_carry_their_descriptor(home, suite):
    spec = suites.load_suite(suite)
    d = spec.dataset("sports")
    assert d.item_text_kind == "derived-descriptor"
    data = build.load(spec, "sports")  # verifies the frozen hashes
    frame = data.items.frame
    text = read_item_text_tsv(real_data_root() / d.item_text)
    assert len(frame) == len(text) == 18_357
    titles = frame["title"]
    assert titles.notna().all() and (titles.str.strip().str.len() > 0).all()
    assert (titles == text["text"].reindex(frame["ext_id"]).to_numpy()).all()  # joined by item id
    assert (frame["asin"] == text["asin"].reindex(frame["ext_id"]).to_numpy()).all()
    assert frame.loc[1, "title"] == "ghost armorers tool 332 punch hunting fishing"
    assert build.item_text_source(data) == SPORTS_SOURCE
    check_needs(Needs(text=True), data, "tallrec")  # text models may now run on Sports


@pytest.mark.parametrize("dataset", ["beauty", "toys"])
def test_other_amazon_datasets_keep_their_titles(home, dataset):
    data = build.load(suites.load_suite("amazon4"), dataset)
    assert build.item_text_source(data) == "titles"
    assert not suites.load_suite("amazon4").dataset(dataset).item_text


def test_shipped_suites_verify(home):
    """`bench suite build` then `bench suite verify` on every shipped suite, for the datasets this machine has."""
    cli = CliRunner()
    checked = []
    for name in suites.suite_files():
        spec = suites.load_suite(name)
        names = [d.name for d in spec.datasets if _buildable(spec, d)]
        if not names:
            continue
        args = ["--dataset", ",".join(names)]
        built = cli.invoke(app, ["suite", "build", name, *args])
        assert built.exit_code == 0, built.output
        res = cli.invoke(app, ["suite", "verify", name, *args])
        assert res.exit_code == 0, res.output
        assert [ln for ln in res.output.splitlines() if ln.startswith("ok ")] == [f"ok {name}/{n}" for n in names]
        checked.append(name)
    assert {"synth4", "synth4-lite", *AMAZON} <= set(checked)
