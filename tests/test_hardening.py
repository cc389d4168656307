"""Hardening: names from loaded files never become paths outside the cache, a spec edited after its build is refused
naming the field, and concurrent first builds of one dataset end in one build that every process reuses."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import app
from mmsr_bench.errors import BenchError, HashMismatch
from mmsr_bench.paths import cache_dir, check_safe_name, inside
from mmsr_bench.suites import build
from mmsr_bench.suites import spec as suites


@pytest.mark.parametrize("name", ["../../../../victim", "../escape", "a/b", "..", ".", "", ".hidden", "a\\b",
                                  "x" * 101, "a..b", "nul\x00"])
def test_unsafe_dataset_and_suite_names_are_refused_at_load(tmp_path, name):
    for template in ('name = "t"\n[[datasets]]\nname = {n}\nsource = "synth"\n',
                     'name = {n}\n[[datasets]]\nname = "d"\nsource = "synth"\n'):
        f = tmp_path / "t.toml"
        f.write_text(template.format(n='"' + name.replace("\\", "\\\\").replace("\x00", "\\u0000") + '"'))
        with pytest.raises(BenchError, match=r"t.toml: field .*name.*not a safe name"):
            suites.load_suite_file(f)


def test_a_traversal_name_never_deletes_or_writes_outside_the_cache(tmp_path, monkeypatch, _isolated_home):
    """The reported attack: `bench suite build` on a suite whose dataset name climbs out of the cache."""
    home = _isolated_home
    victim = home.parent / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    depth = len(home.relative_to(home.anchor).parts)
    evil = tmp_path / "evil.toml"
    evil.write_text(f'name = "evil"\n[[datasets]]\nname = "{"../" * (depth + 1)}{victim.relative_to(victim.anchor)}"\n'
                    'source = "synth"\ncategory = "baby"\nsynth_users = 30\nsynth_items = 40\n')
    before = sorted(p for p in tmp_path.rglob("*"))
    res = CliRunner().invoke(app, ["suite", "build", str(evil)])
    assert res.exit_code != 0 and "not a safe name" in res.output and "Traceback" not in res.output
    assert (victim / "keep.txt").read_text() == "precious"
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_cache_paths_are_confined(_isolated_home):
    for bad in ("..", "../x", "a/b", "/etc"):
        with pytest.raises(BenchError, match="not a safe name"):
            cache_dir("suites", bad)
    assert cache_dir("suites", "ok-name_1.2").is_dir()
    with pytest.raises(BenchError, match="outside"):
        inside(_isolated_home / "a" / ".." / ".." / "b", _isolated_home, "test")
    assert check_safe_name("synth4-lite", "x") == "synth4-lite"


@pytest.mark.parametrize("suite_field,edit", [
    ("n_negatives", ("n_negatives = 19", "n_negatives = 18")),
    ("seed", ("seed = 7", "seed = 8")),
    ("kcore", ("kcore = 0", "kcore = 3")),
    ("candidates", ('candidates = "sampled"', 'candidates = "popularity"')),
    ("max_eval_users", ("max_eval_users = 0", "max_eval_users = 50")),
    ("path", ('path = "tiny.txt"', 'path = "other.txt"')),
])
def test_a_spec_edited_after_its_build_is_refused_naming_the_field(frozen_tiny, suite_field, edit):
    text = frozen_tiny.read_text()
    assert edit[0] in text
    frozen_tiny.write_text(text.replace(edit[0], edit[1], 1))
    spec = suites.load_suite(str(frozen_tiny))
    with pytest.raises(HashMismatch, match=rf"{suite_field}: built with .* the spec now says .*--force"):
        build.load(spec, "seq")
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "pop"])
    assert res.exit_code != 0 and suite_field in res.output and "Traceback" not in res.output


def test_a_synth_seed_edit_is_refused(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "s"\n[[datasets]]\nname = "baby"\nsource = "synth"\ncategory = "baby"\nseed = 1\n'
                 'synth_users = 40\nsynth_items = 40\n' + SMALL)
    build.materialize(suites.load_suite_file(f), suites.load_suite_file(f).dataset("baby"))
    f.write_text(f.read_text().replace("seed = 1", "seed = 2"))
    with pytest.raises(HashMismatch, match=r"datasets.seed: built with 1, the spec now says 2"):
        build.load(suites.load_suite_file(f), "baby", allow_unfrozen=True)


def test_a_build_without_a_spec_record_is_refused(frozen_tiny):
    spec = suites.load_suite(str(frozen_tiny))
    record = build.dataset_dir(spec, "seq") / "build.json"
    import json

    info = json.loads(record.read_text())
    del info["spec"]
    record.write_text(json.dumps(info))
    with pytest.raises(HashMismatch, match="does not record the spec"):
        build.load(spec, "seq")


SMALL = '[protocol]\nn_negatives = 9\n[evaluation]\ncutoffs = [1, 5]\nprimary = "ndcg@5"\n'


def _build_in_child(path: str, home: str, data: str, queue) -> None:
    os.environ["MMSR_BENCH_HOME"], os.environ["MMSR_BENCH_DATA"] = home, data
    try:
        spec = suites.load_suite(path)
        queue.put(("ok", build.load(spec, "seq").fingerprint))
    except Exception as exc:  # reported to the parent, which fails the test with it
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def test_concurrent_first_builds_end_in_one_shared_build(frozen_tiny, _isolated_home, tmp_path):
    import shutil

    shutil.rmtree(build.dataset_dir(suites.load_suite(str(frozen_tiny)), "seq"))  # frozen, but not built here
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(str(frozen_tiny), str(_isolated_home), str(tmp_path / "data"),
                                                        queue)) for _ in range(6)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(kind == "ok" for kind, _ in results), results
    assert len({fp for _, fp in results}) == 1
    folder = build.dataset_dir(suites.load_suite(str(frozen_tiny)), "seq").parent
    assert not [p.name for p in folder.iterdir() if re.search(r"\.(building|old)$", p.name)]


@pytest.mark.parametrize("toml,needle", [
    ('name = "t"\ndatasets = []\n', "at least one"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "synth"\n[[datasets]]\nname = "a"\nsource = "synth"\n',
     "more than once"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\ncutoffs = [0]\n', "out of range"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\ncutoffs = []\n', "cutoffs"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\ncutoffs = [100000]\n', "out of range"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\ncutoffs = [10, 200]\n', "exceed the 100"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\nprimary = "hr@20"\ncutoffs = [5]\n',
     "not one of the suite's metrics"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "synth"\n[evaluation]\nmetrics = ["hr", "bogus"]\n', "unknown"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "sequence"\npath = "/etc/passwd"\n', "relative path"),
    ('name = "t"\n[[datasets]]\nname = "a"\nsource = "sequence"\npath = "../../x.txt"\n', "relative path"),
])
def test_bad_suite_fields_name_the_field(tmp_path, toml, needle):
    f = tmp_path / "t.toml"
    f.write_text(toml)
    with pytest.raises(BenchError, match=re.escape(needle)):
        suites.load_suite_file(f)


def test_binary_or_folder_suite_files_are_clean_errors(tmp_path):
    b = tmp_path / "b.toml"
    b.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(BenchError, match="not a UTF-8 text file"):
        suites.load_suite_file(b)
    d = tmp_path / "d.toml"
    d.mkdir()
    with pytest.raises(BenchError, match="is a folder"):
        suites.load_suite_file(d)


def test_a_flipped_image_byte_is_refused_naming_the_file(_isolated_home, tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('name = "s"\n[[datasets]]\nname = "baby"\nsource = "synth"\ncategory = "baby"\n'
                 'synth_users = 40\nsynth_items = 40\n' + SMALL)
    spec = suites.load_suite_file(f)
    build.materialize(spec, spec.dataset("baby"))
    img = sorted((build.dataset_dir(spec, "baby") / "images").glob("*.png"))[0]
    raw = bytearray(img.read_bytes())
    raw[40] ^= 0xFF  # inside the IHDR/IDAT data
    img.write_bytes(bytes(raw))
    with pytest.raises(HashMismatch, match=re.escape(str(img))):
        build.load(spec, "baby", allow_unfrozen=True)


def test_resume_skips_stored_cells_and_runs_only_the_missing_ones(frozen_tiny):
    from mmsr_bench.results.store import Store

    cli = CliRunner()
    base = ["run", "--suite", str(frozen_tiny), "--model", "test-successor", "--set", "noise=0.1"]
    assert cli.invoke(app, base + ["--seed", "0", "--seed", "1"]).exit_code == 0
    first = {r.seed: r.id for r in Store().runs()}
    res = cli.invoke(app, base + ["--seed", "0", "--seed", "1", "--seed", "2", "--resume"])
    assert res.exit_code == 0, res.output
    runs = Store().runs()
    assert sorted(r.seed for r in runs) == [0, 1, 2]  # no duplicate of seeds 0 and 1
    assert {r.seed: r.id for r in runs if r.seed < 2} == first
    # another configuration is another cell: not skipped
    assert cli.invoke(app, base[:-1] + ["noise=0.2", "--seed", "0", "--resume"]).exit_code == 0
    assert len(Store().runs()) == 4
    # without --resume a command repeats its cells (the documented default)
    assert cli.invoke(app, base + ["--seed", "0"]).exit_code == 0
    assert len(Store().runs()) == 5


def test_rejected_commands_leave_no_store_and_no_rows(frozen_tiny, _isolated_home, tmp_path):
    from mmsr_bench.results.store import Store

    db = tmp_path / "fresh.db"
    cli = CliRunner()
    bad = [["--set", "batch_size=0"], ["--seed", "-1"], ["--seed", "4294967296"], ["--device", "nosuch"],
           ["--dataset", ""], ["--set", "noise=nan"], ["--db", "sqlite:///:memory:"], ["--db", "mysql://u@h/x"],
           ["--db", f"sqlite:///{tmp_path}/nodir/x.db"]]
    for extra in bad:
        args = ["run", "--suite", str(frozen_tiny), "--model", "test-successor"] + extra
        if "--db" not in extra:
            args += ["--db", f"sqlite:///{db}"]
        res = cli.invoke(app, args)
        assert res.exit_code == 1, (extra, res.output)
        assert "Traceback" not in res.output and res.output.count("error:") == 1, (extra, res.output)
    assert not db.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 10)
    res = cli.invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor", "--db",
                           f"sqlite:///{garbage}"])
    assert res.exit_code == 1 and "cannot open the results store" in res.output
    for cmd in (["leaderboard", "--suite", str(frozen_tiny)], ["runs", "list"], ["compare", "1", "2"]):
        res = cli.invoke(app, cmd + ["--db", f"sqlite:///{db}"])
        assert res.exit_code == 1 and "no results store" in res.output, (cmd, res.output)
    assert not db.exists()
    assert Store(f"sqlite:///{_isolated_home / 'results.db'}").runs(status=None) == []


def test_a_tampered_cached_backbone_is_rebuilt_not_used(caplog):
    from mmsr_bench.models.toolkits.backbones import PretrainSpec, load_backbone

    texts = ["red lipstick", "blue toy truck", "green soap bar"] * 4
    first = load_backbone("tiny-llama", texts=texts, pretrain=PretrainSpec(steps=0), device="cpu")
    (weights,) = Path(first.path).glob("*.safetensors")
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0x01
    weights.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="mmsr_bench.models.toolkits.backbones"):
        again = load_backbone("tiny-llama", texts=texts, pretrain=PretrainSpec(steps=0), device="cpu")
    assert any("building it again" in r.getMessage() for r in caplog.records)
    assert again.weights_sha256 == first.weights_sha256  # rebuilt deterministically, not the tampered bytes


def test_an_id_sorted_dump_is_flagged_in_build_runs_and_leaderboard_and_freeze_needs_an_override(tmp_path,
                                                                                                 monkeypatch):
    from mmsr_bench.results.store import Store

    root = tmp_path / "data"
    root.mkdir()
    lines = [" ".join(map(str, [u] + sorted(range(1 + u % 7, 30, 1 + u % 3))[:8])) for u in range(1, 80)]
    (root / "sorted.txt").write_text("\n".join(lines) + "\n")
    f = tmp_path / "dump.toml"
    f.write_text('name = "dump"\n[[datasets]]\nname = "seq"\nsource = "sequence"\npath = "sorted.txt"\n'
                 '[preprocess]\nkcore = 0\n' + SMALL)
    monkeypatch.setenv("MMSR_BENCH_DATA", str(root))
    cli = CliRunner()
    res = cli.invoke(app, ["suite", "freeze", str(f)])
    assert res.exit_code == 1 and "strictly increasing by item id" in res.output and "--accept-warnings" in res.output
    assert "hashes" not in f.read_text()
    res = cli.invoke(app, ["suite", "freeze", str(f), "--accept-warnings"])
    assert res.exit_code == 0, res.output
    assert cli.invoke(app, ["run", "--suite", str(f), "--model", "pop"]).exit_code == 0
    (run,) = Store().runs()
    assert any("id-sorted" in w for w in run.run_info["data_quality_warnings"])
    board = cli.invoke(app, ["leaderboard", "--suite", "dump", "--format", "markdown"])
    assert "data quality: seq: 100% of" in " ".join(board.output.split())


@pytest.mark.parametrize("model", ["sasrec", "bert4rec"])
def test_same_seed_same_threads_gives_identical_per_user_vectors(frozen_tiny, model):
    """SASRec was seen to move in the 3rd digit between two runs of the README's command; at a fixed thread count
    two runs must agree exactly, per user, and record the thread count."""
    import numpy as np

    from mmsr_bench.runner import execute as runner

    spec = suites.load_suite(str(frozen_tiny))
    overrides = {"epochs": "2", "hidden_size": "16", "inner_size": "16", "num_threads": "1"}
    runs = [runner.execute(runner.RunRequest(spec, model, ["seq"], [3], overrides))[0] for _ in range(2)]
    from mmsr_bench.results.store import Store

    a, b = (Store().per_user(r.id) for r in runs)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    info = runs[0].run_info
    assert info["reproducibility"]["torch_deterministic"] is True and info["torch_threads"] == 1


def test_json_caches_are_verified_on_read(tmp_path, caplog):
    """Caption and summary caches: a flipped character, a truncation or the older unhashed format is recomputed."""
    import json

    from mmsr_bench.paths import read_verified_json, write_verified_json

    f = tmp_path / "captions.json"
    write_verified_json(f, {"abc": "a red round ball"})
    assert read_verified_json(f) == {"abc": "a red round ball"}
    f.write_text(f.read_text().replace("red", "blue"))
    with caplog.at_level("WARNING"):
        assert read_verified_json(f) == {}
    assert str(f) in caplog.text
    write_verified_json(f, {"abc": "x"})
    f.write_text(f.read_text()[:-5])
    assert read_verified_json(f) == {}
    f.write_text(json.dumps({"abc": "a red round ball"}))  # the older format: entries without a hash
    assert read_verified_json(f) == {}
