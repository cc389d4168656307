"""Suites, materialization, hashing and the refusal to run on a changed artifact."""

from __future__ import annotations

import numpy as np
import pytest

from mmsr_bench.errors import BenchError, HashMismatch, UnknownName
from mmsr_bench.suites import build
from mmsr_bench.suites import spec as suites
from tests.conftest import write_tiny_suite


def test_every_shipped_suite_loads():
    files = suites.suite_files()
    assert {"synth4", "synth4-lite", "amazon4", "amazon4-full", "amazon4-lite"} <= set(files)
    for name in files:
        spec = suites.load_suite(name)
        assert [d.name for d in spec.datasets] == ["baby", "sports", "beauty", "toys"]
        assert spec.evaluation.primary in spec.evaluation.names()


def test_unknown_suite_names_closest():
    with pytest.raises(UnknownName, match="amazon4"):
        suites.load_suite("amazon")


def test_bad_suite_file_names_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[datasets]]\nname = "x"\nsource = "ftp"\n')
    with pytest.raises(BenchError, match=r"bad.toml: field datasets.0.source"):
        suites.load_suite(str(bad))
    bad.write_text("name = = 1")
    with pytest.raises(BenchError, match="bad.toml: invalid TOML"):
        suites.load_suite(str(bad))


def test_unknown_dataset_is_refused(tiny_suite):
    spec = suites.load_suite(str(tiny_suite))
    with pytest.raises(UnknownName, match="no dataset 'sq'.*Did you mean: seq"):
        spec.select("sq")


def test_build_is_deterministic_and_candidates_are_valid(tiny_suite):
    spec = suites.load_suite(str(tiny_suite))
    ds = spec.dataset("seq")
    first = build.materialize(spec, ds)
    second = build.materialize(spec, ds, force=True)
    assert first == second
    data = build.load(spec, "seq", allow_unfrozen=True)
    cands = data.test.candidates
    assert cands.shape == (len(data.test), 20)
    _, seqs = build.read_sequences(build.dataset_dir(spec, "seq") / "sequences.tsv")
    for row, u in enumerate(data.test.users):
        assert cands[row, 0] == seqs[u][-1] == data.test.targets[row]
        negs = cands[row, 1:]
        assert len(set(negs.tolist())) == len(negs)
        assert not set(negs.tolist()) & set(seqs[u].tolist())  # never an item the user interacted with
        assert data.valid.targets[row] == seqs[u][-2]
        np.testing.assert_array_equal(data.train.sequences[u], seqs[u][:-2])
        np.testing.assert_array_equal(data.test.histories[row], seqs[u][:-1])
    # validation and test negatives are drawn independently
    assert not np.array_equal(data.valid.candidates[:, 1:], cands[:, 1:])
    assert data.items.frame.loc[1, "title"] == "Item 1 & friends"


def test_freeze_verify_and_refuse_changed_byte(tiny_suite):
    spec = suites.load_suite(str(tiny_suite))
    with pytest.raises(HashMismatch, match="no frozen hashes"):
        build.load(spec, "seq")
    hashes = build.materialize(spec, spec.dataset("seq"))
    suites.write_hashes(spec, "seq", hashes)
    assert "[hashes.seq]" in tiny_suite.read_text()
    spec = suites.load_suite(str(tiny_suite))
    build.load(spec, "seq")  # verifies
    path = build.dataset_dir(spec, "seq") / "candidates_test.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(HashMismatch, match="candidates_test.npy does not match"):
        build.load(spec, "seq")


def test_candidates_of_a_user_do_not_depend_on_other_users(tmp_path, monkeypatch):
    """Seeded per suite, dataset and user: dropping half the users leaves the others' candidates unchanged."""
    out = {}
    for n in (120, 60):
        path = write_tiny_suite(tmp_path / str(n), n_users=n)
        monkeypatch.setenv("MMSR_BENCH_DATA", str(tmp_path / str(n) / "data"))
        spec = suites.load_suite(str(path))
        build.materialize(spec, spec.dataset("seq"), force=True)
        data = build.load(spec, "seq", allow_unfrozen=True)
        assert data.train.n_items == 40
        out[n] = data.test.candidates
    np.testing.assert_array_equal(out[120][:60], out[60])


def test_full_ranking_and_eval_user_sample(tmp_path, monkeypatch):
    path = write_tiny_suite(tmp_path, candidates="full", max_eval_users=50)
    monkeypatch.setenv("MMSR_BENCH_DATA", str(tmp_path / "data"))
    spec = suites.load_suite(str(path))
    build.materialize(spec, spec.dataset("seq"))
    data = build.load(spec, "seq", allow_unfrozen=True)
    assert data.test.full_ranking and len(data.test) == 50
    assert not (build.dataset_dir(spec, "seq") / "candidates_test.npy").exists()
    for hist, ex, t in zip(data.test.histories, data.test.exclude, data.test.targets):
        assert t not in ex.tolist() and set(ex.tolist()) <= set(hist.tolist())
    batch = next(data.test.batches(8))
    assert batch.candidates.shape == (8, data.test.n_items) and batch.full_ranking


def test_popularity_protocol_prefers_popular_items(tmp_path, monkeypatch):
    path = write_tiny_suite(tmp_path, candidates="popularity", n_users=200, n_items=60)
    monkeypatch.setenv("MMSR_BENCH_DATA", str(tmp_path / "data"))
    spec = suites.load_suite(str(path))
    build.materialize(spec, spec.dataset("seq"))
    data = build.load(spec, "seq", allow_unfrozen=True)
    pop = data.train.item_popularity()
    negs = data.test.candidates[:, 1:].ravel()
    assert pop[negs].mean() > pop[1:].mean()


def test_missing_dataset_says_what_to_fetch():
    spec = suites.load_suite("amazon4")
    with pytest.raises(BenchError, match=r"reviews_Baby_5.json.gz.*bench data import amazon4.*--dataset sports,beauty,toys"):
        build.materialize(spec, spec.dataset("baby"))


def test_kcore_and_duplicates(tmp_path):
    import pandas as pd

    from mmsr_bench.data.splits import RawDataset

    raw = RawDataset("x", ["a", "b", "c"], [["1", "1", "2", "3"], ["1", "2", "2", "3"], ["9", "1"]],
                     pd.DataFrame(index=["1", "2", "3", "9"]))
    spec = suites.SuiteSpec(name="x", datasets=(suites.DatasetSpec(name="x", source="synth"),),
                            preprocess=suites.Preprocess(kcore=2, duplicates="drop"))
    users, seqs, report = build.preprocess(raw, spec)
    assert users == ["a", "b"] and seqs == [["1", "2", "3"], ["1", "2", "3"]]
    assert any("2-core" in r for r in report)


def test_meta_enrichment_joins_by_asin_and_says_what_to_import(tiny_suite):
    import gzip

    text = tiny_suite.read_text().replace('items = "tiny_items.tsv"', 'items = "tiny_items.tsv"\nmeta = "meta_Tiny.json.gz"')
    tiny_suite.write_text(text)
    spec = suites.load_suite(str(tiny_suite))
    with pytest.raises(BenchError, match=r"meta_Tiny.json.gz.*bench data import tiny --from DIR"):
        build.materialize(spec, spec.dataset("seq"))
    lines = [str({"asin": f"A{i:05d}", "title": f"Meta title {i}", "brand": "Acme",
                  "imUrl": f"http://img.example/{i}.jpg"}) for i in range(1, 41)]
    with gzip.open(build.raw_dir("amazon2014") / "meta_Tiny.json.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    build.materialize(spec, spec.dataset("seq"), force=True)
    items = build.load(spec, "seq", allow_unfrozen=True).items.frame
    assert items.loc[3, "title"] == "Item 3 & friends"  # existing text is kept
    assert items.loc[3, "brand"] == "Acme" and items.loc[3, "image"] == "http://img.example/3.jpg"


@pytest.mark.parametrize("dataset", ["baby", "sports", "beauty", "toys"])
def test_synth4_lite_is_a_300_user_sample_of_synth4_with_the_same_candidates(dataset):
    """Both suites load against their frozen hashes; the lite users are 300 of synth4's, each with synth4's split
    and candidates (seeded per protocol seed, dataset, user and split, not per suite), so numbers are comparable."""
    full, lite = (build.load(suites.load_suite(n), dataset) for n in ("synth4", "synth4-lite"))
    assert lite.suite.protocol.model_copy(update={"max_eval_users": 0}) == full.suite.protocol
    assert len(full.test) == full.train.n_users == 2000 and len(lite.test) == 300
    assert len(set(lite.test.users.tolist())) == 300 and set(lite.test.users.tolist()) <= set(full.test.users.tolist())
    row = {u: i for i, u in enumerate(full.test.users.tolist())}
    idx = np.asarray([row[u] for u in lite.test.users.tolist()])
    for split in ("valid", "test"):
        a, b = getattr(full, split), getattr(lite, split)
        np.testing.assert_array_equal(b.targets, a.targets[idx])
        np.testing.assert_array_equal(b.candidates, a.candidates[idx])
        assert all(np.array_equal(h, a.histories[i]) for h, i in zip(b.histories, idx))
    assert lite.suite.hashes[dataset]["sequences.tsv"] == full.suite.hashes[dataset]["sequences.tsv"]
    assert lite.suite.hashes[dataset]["items.tsv"] == full.suite.hashes[dataset]["items.tsv"]
    assert lite.fingerprint != full.fingerprint  # a different evaluation: runs never mix on the leaderboard


def _with_item_text(tiny_suite, text: str, extra: str = 'item_text_kind = "derived-descriptor"\n'
                    'item_text_note = "test descriptors; not titles"\n'):
    (tiny_suite.parent / "data" / "tiny_descriptors.tsv").write_text(text)
    toml = tiny_suite.read_text().replace('items = "tiny_items.tsv"',
                                          f'items = "tiny_items.tsv"\nitem_text = "tiny_descriptors.tsv"\n{extra}')
    tiny_suite.write_text(toml)
    return suites.load_suite(str(tiny_suite))


def test_item_text_replaces_every_title_and_is_recorded_with_runs(tiny_suite):
    from mmsr_bench.runner import execute as runner

    rows = "".join(f"{i}\tA{i:05d}\tdescriptor of item {i}\n" for i in range(1, 41) if i != 7)
    spec = _with_item_text(tiny_suite, "s3rec_item_id\tasin\tdescriptor\n" + rows)
    suites.write_hashes(spec, "seq", build.materialize(spec, spec.dataset("seq")))
    spec = suites.load_suite(str(tiny_suite))
    data = build.load(spec, "seq")
    titles = data.items.frame["title"]
    assert titles[3] == "descriptor of item 3" and titles[7] is None  # no mixing with the item table's titles
    assert not titles.dropna().str.contains("friends").any()
    source = build.item_text_source(data)
    assert source == "derived-descriptors (test descriptors; not titles)"
    run = runner.execute(runner.RunRequest(spec, "test-successor", ["seq"], [0], {}))[0]
    assert run.run_info["item_text_source"] == source


def test_item_text_source_without_item_text(frozen_tiny):
    spec = suites.load_suite(str(frozen_tiny))
    assert build.item_text_source(build.load(spec, "seq")) == "titles"
    assert spec.dataset("seq").item_text_source(has_titles=False) == "none"


def test_item_text_asin_mismatch_and_missing_file_name_the_file(tiny_suite):
    spec = _with_item_text(tiny_suite, "s3rec_item_id\tasin\tdescriptor\n1\tA00001\tsock\n2\tB99999\track\n")
    with pytest.raises(BenchError) as err:
        build.materialize(spec, spec.dataset("seq"))
    msg = str(err.value)
    assert "tiny_descriptors.tsv line 3: item 2 has asin 'B99999'" in msg and "A00002" in msg and "\n" not in msg
    (tiny_suite.parent / "data" / "tiny_descriptors.tsv").unlink()
    with pytest.raises(BenchError, match=r"tiny_descriptors.tsv: item text file not found"):
        build.materialize(spec, spec.dataset("seq"))


@pytest.mark.parametrize("fields, needle", [
    ('item_text = "d.tsv"\nmeta = "meta_X.json.gz"', "item_text and meta both supply titles"),
    ('item_text_kind = "derived-descriptor"', "item_text is not set"),
    ('item_text = "d.tsv"\nitem_text_kind = "summary"', "field datasets.0.item_text_kind"),
])
def test_item_text_spec_is_checked(tmp_path, fields, needle):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'name = "bad"\n[[datasets]]\nname = "x"\nsource = "sequence"\npath = "x.txt"\n{fields}\n')
    with pytest.raises(BenchError, match=needle) as err:
        suites.load_suite(str(bad))
    assert str(err.value).startswith(f"{bad}: field datasets.0")
    bad.write_text('name = "bad"\n[[datasets]]\nname = "x"\nsource = "synth"\nitem_text = "d.tsv"\n')
    with pytest.raises(BenchError, match='needs source = "sequence"'):
        suites.load_suite(str(bad))
