"""``bench tune`` (mmsr_bench/runner/tune.py): trials on the validation split only, stored beside the runs,
resumable after SIGKILL, shared by workers on one PostgreSQL database; spaces declared on the configs; the
selection record and the not-converged flag (mmsr_bench/results/selection.py)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tests.test_conformance  # noqa: F401 - registers the canary adapters
from mmsr_bench.cli.main import app
from mmsr_bench.errors import BenchError
from mmsr_bench.models import adapter
from mmsr_bench.models.search_space import Choice, Range, check_space, declared_space, load_space_file
from mmsr_bench.results.selection import selection
from mmsr_bench.results.store import Store
from mmsr_bench.runner import tune

# SASRec at a budget of seconds on the tiny suite: two fields searched, the epoch cap small.
SPACE = """
[sasrec]
learning_rate = { low = 1e-4, high = 1e-2, log = true }
hidden_size = { choices = [16, 32] }
"""
FIXED = {"sasrec": {"epochs": "3", "n_layers": "1"}}


def _space(tmp_path: Path) -> str:
    path = tmp_path / "space.toml"
    path.write_text(SPACE)
    return str(path)


def _req(suite, tmp_path, db, **kw) -> tune.TuneRequest:
    base = dict(trials=4, db_url=db, fixed=FIXED, space_file=_space(tmp_path))
    base.update(kw)
    return tune.TuneRequest(str(suite), ("sasrec",), "seq", **base)


def _trials(db: str) -> list:
    store = Store(db)
    return [t for tu in store.tunings() for t in store.trials(tu.id)]


def test_tune_keeps_every_trial_and_tests_the_best(frozen_tiny, tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    [out] = tune.tune(_req(frozen_tiny, tmp_path, db, test_seeds=(0, 1)))
    trials = _trials(db)
    assert len([t for t in trials if t.state in ("complete", "pruned")]) == 4
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    for t in trials:  # the configuration, its hash and the validation curve of every trial
        cfg = json.loads(t.config_json)
        assert cfg["epochs"] == 3 and t.config_hash and json.loads(t.curve_json)
        assert set(json.loads(t.params_json)) == {"learning_rate", "hidden_size"}
    best = max((t for t in trials if t.state == "complete"), key=lambda t: t.value)
    assert out.best_trial == best.number and out.best_value == best.value
    # then test: ordinary runs of the best configuration, linked to the study
    assert [r.seed for r in out.runs] == [0, 1]
    for r in out.runs:
        assert r.config_hash == best.config_hash and r.status == "completed"
        assert r.run_info["tuned_from"]["tuning"] == out.tuning_uuid
        assert r.run_info["tuned_from"]["best_trial"] == best.number
    # the test run with the tuning seed refits the best trial exactly: same validation value
    assert out.runs[0].run_info["selection"]["value"] == pytest.approx(best.value, abs=1e-12)


def test_leaderboard_says_which_rows_are_tuned(frozen_tiny, tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    tune.tune(_req(frozen_tiny, tmp_path, db, trials=2, test_seeds=(0,)))
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "pop", "--db", db])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["leaderboard", "--suite", "tiny", "--db", db, "--format", "markdown"])
    assert res.exit_code == 0, res.output
    assert "| config |" in res.output.replace("config|", "config |")
    assert "tuned (2 trials" in res.output and "default" in res.output
    # a newer default-configuration run of the tuned model does not mix into its row
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "sasrec", "--seed", "1",
                                   "--set", "epochs=1", "--db", db])
    assert res.exit_code == 0, res.output
    from mmsr_bench.results.leaderboard import build_board

    board = build_board(Store.for_reading(db), "tiny")
    tuned_ids = {r.id for r in Store.for_reading(db).runs(model="sasrec") if "tuned_from" in r.run_info}
    assert set(board.cells[("sasrec", "seq", "ndcg@10")].run_ids) == tuned_ids
    assert any("other configurations" in n for n in board.notes)
    default = build_board(Store.for_reading(db), "tiny", configs="default")
    assert set(default.cells[("sasrec", "seq", "ndcg@10")].run_ids) == {
        r.id for r in Store.for_reading(db).runs(model="sasrec") if "tuned_from" not in r.run_info}
    assert not default.tuning


def test_same_seed_same_trajectory_whatever_the_test_targets(frozen_tiny, tmp_path):
    """The test split is never read while tuning: with every test target swapped (in memory and in the suite
    files on disk, as the conformance kit does), the trials are the same, parameter for parameter."""
    from mmsr_bench.models.conformance import _swapped_targets, _variant_data, _variant_files
    from mmsr_bench.suites import build
    from mmsr_bench.suites.spec import load_suite

    real = build.load(load_suite(str(frozen_tiny)), "seq")
    db1, db2 = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    tune.tune(_req(frozen_tiny, tmp_path, db1, pruner="none"), data=real)
    new_targets = _swapped_targets(real)
    with _variant_files(real, new_targets):
        tune.tune(_req(frozen_tiny, tmp_path, db2, pruner="none"), data=_variant_data(real, new_targets))
    a, b = _trials(db1), _trials(db2)
    assert [(t.params_json, t.value, t.curve_json) for t in a] == [(t.params_json, t.value, t.curve_json) for t in b]


def test_an_adapter_that_reads_test_targets_cannot_be_tuned(frozen_tiny, tmp_path):
    space = tmp_path / "canary.toml"
    space.write_text("[test-canary-leak-files]\nbatch_size = { choices = [64, 128] }\n"
                     "[test-canary-honest]\nbatch_size = { choices = [64, 128] }\n")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    req = tune.TuneRequest(str(frozen_tiny), ("test-canary-leak-files",), "seq", trials=2, db_url=db,
                           space_file=str(space))
    with pytest.raises(BenchError, match="no_test_leak"):
        tune.tune(req)
    assert not Path(tmp_path / "r.db").exists() or not _trials(db)
    honest = tune.tune(tune.TuneRequest(str(frozen_tiny), ("test-canary-honest",), "seq", trials=2, db_url=db,
                                        space_file=str(space), pruner="none"))
    assert honest[0].trials == 2


def _bench(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmsr_bench.cli.main", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _cli_args(suite, tmp_path, db, trials: int, *extra: str) -> list[str]:
    return ["tune", "--suite", str(suite), "--dataset", "seq", "--model", "sasrec", "--trials", str(trials),
            "--space", _space(tmp_path), "--set", "epochs=3", "--set", "n_layers=1", "--db", db, *extra]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))


def test_a_killed_tune_resumes_and_finishes_the_budget(frozen_tiny, tmp_path):
    path = tmp_path / "r.db"
    db = f"sqlite:///{path}"
    args = _cli_args(frozen_tiny, tmp_path, db, 4, "--pruner", "none")
    proc = _bench(*args, env=_env())
    deadline = time.time() + 240
    while time.time() < deadline:  # SIGKILL once the first trial is stored, while the next one runs
        if path.exists():
            try:
                n = sqlite3.connect(path).execute("SELECT count(*) FROM tuning_trials").fetchone()[0]
            except sqlite3.Error:
                n = 0
            if n >= 1:
                break
        if proc.poll() is not None:
            pytest.fail(f"tune ended before it could be killed: {proc.stdout.read()[-2000:]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(_trials(db))
    assert 1 <= done_before < 4
    again = _bench(*args, env=_env())
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out[-3000:]
    trials = _trials(db)
    assert len(trials) == 4 and all(t.state == "complete" for t in trials)
    assert len({t.number for t in trials}) == 4
    assert len({t.params_json for t in trials}) == 4  # nothing ran twice


@pytest.mark.slow
def test_two_workers_share_one_postgres_study_without_duplicates(frozen_tiny, tmp_path, new_postgres_url):
    db = new_postgres_url()
    res = subprocess.run([sys.executable, "-m", "mmsr_bench.cli.main",
                          *_cli_args(frozen_tiny, tmp_path, db, 6, "--workers", "2", "--pruner", "none")],
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    trials = _trials(db)
    assert len(trials) == 6 and all(t.state == "complete" for t in trials)
    assert len({t.number for t in trials}) == 6 and len({t.params_json for t in trials}) == 6
    assert len({t.worker for t in trials}) == 2  # both workers ran trials


# ------------------------------------------------------------------------------------------------ spaces
def test_declared_spaces_are_fields_of_their_configs():
    for name in ("sasrec", "bert4rec", "gptrec", "mmsr", "mmgcn", "tallrec", "mllm-srec-qlora"):
        cls = adapter.get(name).cls.config_cls
        space = declared_space(cls)
        assert space, name
        defaults = cls()
        for key, p in space.items():
            assert hasattr(defaults, key)
            if isinstance(p, Range):  # the published default lies inside the searched range
                assert p.low <= getattr(defaults, key) <= p.high, (name, key)


@pytest.mark.parametrize("text, message", [
    ("[sasrec]\nlearnig_rate = { low = 1e-4, high = 1e-2 }\n", "no field 'learnig_rate'. Did you mean: learning_rate"),
    ("[sasrec]\nlearning_rate = { low = 1e-2, high = 1e-4 }\n", "low (0.01) must be below high"),
    ("[sasrec]\nlearning_rate = { low = 0, high = 1, log = true }\n", "log scale needs low > 0"),
    ("[sasrec]\nn_layers = { low = 1, high = 2.5 }\n", "integer field"),
    ("[sasrec]\nhidden_act = { low = 1, high = 2 }\n", "needs a numeric field"),
    ("[sasrec]\nhidden_size = { choices = [] }\n", "at least one choice"),
    ("[sasrec]\nhidden_size = 64\n", "expected an inline table"),
    ("[sasrec]\nhidden_size = { choices = [1], low = 1 }\n", "not both"),
    ("[sasrec]\nhidden_size = { pick = [1] }\n", "unknown key(s) pick"),
    ("[bert4rec]\nhidden_size = { choices = [1] }\n", "no [sasrec] table"),
    ("[sasrec\n", "not valid TOML"),
])
def test_a_bad_space_file_is_one_error_naming_the_key(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(BenchError) as err:
        load_space_file(path, "sasrec", adapter.get("sasrec").cls.config_cls)
    assert message in str(err.value) and str(path) in str(err.value)


def test_bad_tune_arguments_fail_before_any_work(frozen_tiny, tmp_path):
    db = tmp_path / "r.db"
    for args, message in [
        (["--trials", "0"], "--trials 0"),
        (["--trials", "2", "--minutes", "3"], "exactly one budget"),
        (["--trials", "2", "--sampler", "cma"], "--sampler 'cma'"),
        (["--trials", "2", "--set", "nope=1"], "has a field 'nope'"),
        (["--trials", "2", "--set", "learning_rate=0.1"], "in its search space"),
    ]:
        res = CliRunner().invoke(app, ["tune", "--suite", str(frozen_tiny), "--dataset", "seq", "--model", "sasrec",
                                       "--db", f"sqlite:///{db}", *args])
        assert res.exit_code == 1 and message in res.output, (args, res.output)
    res = CliRunner().invoke(app, ["tune", "--suite", str(frozen_tiny), "--dataset", "seq", "--model", "pop",
                                   "--trials", "2", "--db", f"sqlite:///{db}"])
    assert res.exit_code == 1 and "declares no search space" in res.output
    assert not db.exists()


def test_models_command_shows_the_space():
    res = CliRunner().invoke(app, ["models", "bert4rec"])
    assert res.exit_code == 0 and "search space" in res.output and "0.1 .. 0.6" in res.output


def test_check_space_rejects_a_range_on_a_text_field():
    with pytest.raises(BenchError, match="hidden_act"):
        check_space(adapter.get("sasrec").cls.config_cls, {"hidden_act": Range(0, 1)}, "here")
    assert check_space(adapter.get("sasrec").cls.config_cls, {"hidden_act": Choice(("relu", "gelu"))}, "here")


# ------------------------------------------------------------------------------------------------ selection
def test_selection_reads_every_stored_shape():
    recbole = {"valid_curve": [[0, 1.0, 0.1], [1, 0.9, 0.2], [2, 0.8, 0.3]], "best_epoch": 2,
               "stopped_by": "max_epochs", "best_valid": 0.3}
    s = selection(recbole, {"valid_metric": "ndcg@10"})
    assert (s.unit, s.chosen, s.last, s.stopped_by, s.converged) == ("epoch", 3, 3, "budget", False)
    early = dict(recbole, best_epoch=0, stopped_by="early_stopping")
    assert selection(early).converged is True and selection(early).stopped_by == "patience"
    gptrec = {"best_epoch": 13, "epochs_run": 18, "best_valid": 0.37, "valid_metric": "ndcg@10",
              "history": [{"epoch": e, "loss": 1.0, "ndcg@10": 0.3} for e in range(1, 19)]}
    s = selection(gptrec, {"epochs": 100})
    assert (s.chosen, s.last, s.stopped_by, s.converged) == (13, 18, "patience", True)
    feature = {"best_epoch": 60, "epochs_run": 60, "best_valid": {"ndcg@10": 0.2}}
    s = selection(feature, {"epochs": 60})
    assert (s.metric, s.value, s.stopped_by, s.converged) == ("ndcg@10", 0.2, "budget", False)
    llm = {"best_step": 300, "steps": 300, "best_valid_auc": 0.626, "history": [{"step": 150, "auc": 0.55},
                                                                               {"step": 300, "auc": 0.626}]}
    s = selection(llm, {"patience": 2})
    assert (s.unit, s.chosen, s.last, s.converged) == ("step", 300, 300, False)
    one = {"best_step": 150, "best_valid_auc": 0.5, "history": [{"step": 150, "auc": 0.5}]}
    assert selection(one).converged is None and selection(one).status == "one validation"
    assert selection({"popularity": "counts"}) is None


def test_trials_are_readable_in_runs_trials_and_the_dashboard(frozen_tiny, tmp_path):
    from mmsr_bench.dashboard import queries as q

    db = f"sqlite:///{tmp_path / 'r.db'}"
    [out] = tune.tune(_req(frozen_tiny, tmp_path, db, trials=2, pruner="none"))
    res = CliRunner().invoke(app, ["runs", "trials", "--db", db])
    assert res.exit_code == 0 and out.tuning_uuid[:10] in res.output, res.output
    res = CliRunner().invoke(app, ["runs", "trials", out.tuning_uuid[:8], "--db", db])
    assert res.exit_code == 0 and "complete" in res.output, res.output
    studies, trials = q.tuning_frames(Store.for_reading(db))
    assert studies["complete"].tolist() == [2] and len(trials) == 2
    assert q.tuning_frames(Store(f"sqlite:///{tmp_path / 'empty.db'}"))[0].empty  # a store without any


def test_study_tuned_runs_the_best_configuration(frozen_tiny, tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    [out] = tune.tune(_req(frozen_tiny, tmp_path, db, trials=2, pruner="none"))
    res = CliRunner().invoke(app, ["study", "--suite", str(frozen_tiny), "--dataset", "seq", "--rq", "rq1",
                                   "--models", "sasrec,pop", "--tuned", "--run", "--db", db])
    assert res.exit_code == 0, res.output
    runs = {r.model: r for r in Store.for_reading(db).runs(suite="tiny")}
    assert runs["sasrec"].run_info["tuned_from"]["tuning"] == out.tuning_uuid
    assert "tuned_from" not in runs["pop"].run_info  # never tuned: its default configuration
    best = [t for t in _trials(db) if t.number == out.best_trial][0]
    assert runs["sasrec"].config_hash == best.config_hash
    res = CliRunner().invoke(app, ["study", "--suite", str(frozen_tiny), "--rq", "rq1", "--models", "pop",
                                   "--tuned", "--db", db])
    assert res.exit_code == 1 and "no grid model has a finished tuning study" in res.output


def test_a_tuning_study_travels_in_run_files_and_resumes_elsewhere(frozen_tiny, tmp_path):
    """Exported with the runs, imported on another machine's store (no Optuna history there): the trials are
    readable, and `bench tune` continues the same study after them, without repeating one."""
    db_a, db_b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    tune.tune(_req(frozen_tiny, tmp_path, db_a, trials=2, pruner="none", test_seeds=(0,)))
    folder = tmp_path / "files"
    res = CliRunner().invoke(app, ["store", "export", "--db", db_a, "--to", str(folder)])
    assert res.exit_code == 0 and "1 tuning studies" in res.output, res.output
    assert len(list(folder.rglob("tuning-*.json"))) == 1
    res = CliRunner().invoke(app, ["store", "import", str(folder), "--db", db_b])
    assert res.exit_code == 0 and "1 tuning studies" in res.output, res.output
    res = CliRunner().invoke(app, ["store", "import", str(folder), "--db", db_b])  # idempotent
    assert res.exit_code == 0 and "0 tuning studies from" in res.output, res.output
    assert [(t.number, t.params_json, t.value) for t in _trials(db_b)] == \
        [(t.number, t.params_json, t.value) for t in _trials(db_a)]
    [out] = tune.tune(_req(frozen_tiny, tmp_path, db_b, trials=4, pruner="none"))
    trials = _trials(db_b)
    assert [t.number for t in trials] == [0, 1, 2, 3] and len({t.params_json for t in trials}) == 4
    assert out.trials == 4


def test_a_damaged_tuning_file_is_refused(frozen_tiny, tmp_path):
    db = f"sqlite:///{tmp_path / 'a.db'}"
    tune.tune(_req(frozen_tiny, tmp_path, db, trials=1, pruner="none"))
    folder = tmp_path / "files"
    assert CliRunner().invoke(app, ["store", "export", "--db", db, "--to", str(folder)]).exit_code == 0
    [path] = folder.rglob("tuning-*.json")
    doc = json.loads(path.read_text())
    doc["trials"][0]["state"] = "glorious"
    from mmsr_bench.results.run_files import canonical
    import hashlib

    doc["sha256"] = hashlib.sha256(canonical({k: v for k, v in doc.items() if k != "sha256"})).hexdigest()
    path.write_text(json.dumps(doc))
    res = CliRunner().invoke(app, ["store", "import", str(folder), "--db", f"sqlite:///{tmp_path / 'b.db'}"])
    assert res.exit_code == 1 and "field state 'glorious'" in res.output and path.name in res.output


def test_an_llm_recommender_tunes_through_its_fine_tuning_loop(frozen_tiny, tmp_path):
    """TALLRec (tiny backbone, the kit's budget) tuned over its declared space: every trial's curve comes from the
    LoRA loop's validations (report_validation), and the best configuration is an ordinary run."""
    from mmsr_bench.models.conformance import tiny_overrides

    db = f"sqlite:///{tmp_path / 'r.db'}"
    fixed = {**tiny_overrides("tallrec"), "eval_every": "1", "max_pairs": "8"}
    req = tune.TuneRequest(str(frozen_tiny), ("tallrec",), "seq", trials=2, db_url=db, pruner="none",
                           fixed={"tallrec": fixed}, sampler="random", test_seeds=(0,))
    [out] = tune.tune(req)
    trials = _trials(db)
    assert len(trials) == 2 and all(t.state == "complete" for t in trials)
    for t in trials:
        assert json.loads(t.curve_json) and set(json.loads(t.params_json)) == {"lr", "lora_rank", "decision_loss"}
        assert json.loads(t.selection_json)["unit"] == "step"
    assert out.runs[0].run_info["tuned_from"]["best_trial"] == out.best_trial


def test_the_llm_loop_stops_at_its_deadline_and_says_so(frozen_tiny):
    """The LLM fine-tuning loop has the deadline the epoch loop has (max_train_minutes): it validates once more,
    keeps the best state and records stopped_by = deadline, which the selection record reads."""
    from mmsr_bench.models.conformance import tiny_overrides
    from mmsr_bench.suites import build
    from mmsr_bench.suites.spec import load_suite

    data = build.load(load_suite(str(frozen_tiny)), "seq")
    model = adapter.build("tallrec", {**tiny_overrides("tallrec"), "max_pairs": "64", "epochs": "3",
                                      "max_train_minutes": "0.00001"})
    model.fit(data.train, data.valid)
    info = model.run_info
    assert info["selection"]["stopped_by"] == "deadline" and info["steps"] == 1 and len(info["history"]) == 1
    sel = selection(info, adapter.config_dict(model))
    assert (sel.stopped_by, sel.chosen, sel.last) == ("deadline", 1, 1)
    default = adapter.build("tallrec", tiny_overrides("tallrec"))
    assert "max_train_minutes" not in adapter.config_dict(default)  # at its default, the identity is unchanged


def test_ray_workers_share_one_study(frozen_tiny, tmp_path):
    """`--executor ray --workers 2`: two Ray tasks run the trials of one study, no trial twice."""
    ray = pytest.importorskip("ray", reason="Ray 2.6.3 needs pkg_resources (setuptools<81)", exc_type=ImportError)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    Store(db)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("MMSR_BENCH_HOME", "MMSR_BENCH_DATA")}})
    try:
        [out] = tune.tune(_req(frozen_tiny, tmp_path, db, trials=4, pruner="none", workers=2, executor="ray"))
    finally:
        ray.shutdown()
    trials = _trials(db)
    assert len(trials) == 4 and all(t.state == "complete" for t in trials) and out.trials == 4
    assert len({t.number for t in trials}) == 4 and len({t.params_json for t in trials}) == 4


def test_reference_tuning_studies_join_the_dashboards_merged_store(frozen_tiny, tmp_path):
    """The dashboard's toggle merges the reference runs into the local store's view, model names marked: tuning
    studies among the reference run files are marked the same way (it used to fail on them)."""
    from mmsr_bench.results import reference

    db_ref, db_local = f"sqlite:///{tmp_path / 'ref.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    tune.tune(_req(frozen_tiny, tmp_path, db_ref, trials=1, pruner="none", test_seeds=(0,)))
    folder = tmp_path / "reference-runs"
    assert CliRunner().invoke(app, ["store", "export", "--db", db_ref, "--to", str(folder)]).exit_code == 0
    tune.tune(_req(frozen_tiny, tmp_path, db_local, trials=1, pruner="none", test_seeds=(0,)))
    merged = Store.for_reading(reference.merged_url(Store.for_reading(db_local), folder))
    assert sorted(t.model for t in merged.tunings()) == ["sasrec", "sasrec" + reference.SUFFIX]
    assert sorted(r.model for r in merged.runs()) == ["sasrec", "sasrec" + reference.SUFFIX]


def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_retried(tmp_path, monkeypatch):
    """A worker killed between creating its trial and the trial's first heartbeat (a thread) leaves a RUNNING trial
    without any heartbeat, which optuna alone never fails, so a rerun would wait for it forever (seen once in
    test_a_killed_tune_resumes_and_finishes_the_budget). The waiting loop gives it one heartbeat; it then goes stale."""
    import optuna
    from optuna.storages import fail_stale_trials

    from mmsr_bench.runner import tune as tune_mod

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(storage=storage)
        orphan = study.ask()  # RUNNING, never a heartbeat: its worker died right after creating it
        time.sleep(1.5)
        fail_stale_trials(study)
        assert study.trials[orphan.number].state == optuna.trial.TrialState.RUNNING  # optuna alone: forever
        monkeypatch.setattr(tune_mod, "GRACE_S", 1)
        tune_mod._beat_for_silent_trials(study, study.get_trials(deepcopy=False))
        time.sleep(2.5)
        fail_stale_trials(study)
    assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL
