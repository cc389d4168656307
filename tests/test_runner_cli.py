"""The runner and the CLI end to end on a tiny frozen suite: determinism, refusals, one clear error line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsr_bench.cli.main import _normalize_argv, app
from mmsr_bench.errors import BenchError, HashMismatch, MissingModality
from mmsr_bench.evaluation import scoring
from mmsr_bench.models import adapter
from mmsr_bench.results.store import Store
from mmsr_bench.runner import execute as runner
from mmsr_bench.suites import build
from mmsr_bench.suites import spec as suites


def _req(path, model="test-successor", seeds=(0,), **kw):
    return runner.RunRequest(suites.load_suite(str(path)), model, ["seq"], list(seeds), kw.pop("overrides", {}), **kw)


def test_run_stores_metrics_and_same_seed_gives_same_numbers(frozen_tiny):
    r1 = runner.execute(_req(frozen_tiny, overrides={"noise": "0.5"}))[0]
    r2 = runner.execute(_req(frozen_tiny, overrides={"noise": "0.5"}))[0]
    r3 = runner.execute(_req(frozen_tiny, overrides={"noise": "0.5"}, seeds=(1,)))[0]
    assert r1.metrics == r2.metrics
    assert r1.metrics != r3.metrics
    assert r1.metrics["hr@10"] > 0.5  # the planted successor pattern is learnable
    store = Store()
    vec = store.per_user(r1.id)
    assert len(vec["ndcg@10"]) == r1.n_users == 120
    assert np.isclose(vec["ndcg@10"].mean(), r1.metrics["ndcg@10"], atol=1e-12)
    assert r1.config["noise"] == 0.5 and r1.run_info["fitted_users"] == 120
    assert r1.suite_hash == r2.suite_hash and r1.eval_users_hash


def test_several_seeds_share_a_group(frozen_tiny):
    runs = runner.execute(_req(frozen_tiny, seeds=(0, 1, 2)))
    assert [r.seed for r in runs] == [0, 1, 2] and len({r.group_id for r in runs}) == 1


def test_a_configuration_is_resolved_once_per_command(frozen_tiny, monkeypatch):
    """`bench run` parses and checks a model's configuration once (adapter.plan); each (dataset, seed) cell then gets
    a fresh instance of that same configuration, and every stored run carries the plan's hash."""
    parsed, built = [], []
    real_parse, real_instantiate = adapter.parse_overrides, adapter._instantiate
    monkeypatch.setattr(adapter, "parse_overrides", lambda *a, **k: parsed.append(1) or real_parse(*a, **k))
    monkeypatch.setattr(adapter, "_instantiate", lambda *a, **k: built.append(k["seed"]) or real_instantiate(*a, **k))
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor", "--seed", "0",
                                   "--seed", "1", "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert len(parsed) == 2  # the variant's overrides and the user's, once
    assert built == [0, 0, 1, 2]  # the plan's check, then one fresh instance per seed
    hashes = {r.config_hash for r in Store().runs(model="test-successor")}
    assert len(hashes) == 1


def test_changed_candidate_byte_refuses_before_fitting(frozen_tiny):
    spec = suites.load_suite(str(frozen_tiny))
    path = build.dataset_dir(spec, "seq") / "candidates_test.npy"
    raw = bytearray(path.read_bytes())
    raw[200] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(HashMismatch, match="candidates_test.npy"):
        runner.execute(_req(frozen_tiny))
    assert Store().runs(status=None) == []


def test_missing_modality_refused_before_training(frozen_tiny):
    with pytest.raises(MissingModality, match="needs item images"):
        runner.execute(_req(frozen_tiny, model="test-needs-images"))


def test_unknown_model_lists_closest():
    with pytest.raises(BenchError, match="Did you mean: test-successor"):
        adapter.get("test-sucessor")


def test_bad_set_override():
    with pytest.raises(BenchError, match="no field 'nois'.*Did you mean: noise"):
        adapter.build("test-successor", {"nois": "1"})
    with pytest.raises(BenchError, match="cannot parse 'abc'"):
        adapter.build("test-successor", {"noise": "abc"})
    with pytest.raises(BenchError, match="expected key=value"):
        adapter.parse_set_options(["noise"])


def test_argv_seed_expansion():
    assert _normalize_argv(["run", "--seed", "0", "1", "2", "--model", "x"]) == [
        "run", "--seed", "0", "--seed", "1", "--seed", "2", "--model", "x"]
    assert _normalize_argv(["tune", "--seed", "3", "--seeds", "0", "1"]) == [
        "tune", "--seed", "3", "--seeds", "0", "--seeds", "1"]


def test_one_set_grammar_for_every_command():
    """--set key=value reaches each model with the field; GLOB:key=value only the models it matches; a pair that
    reaches no model is one error (run, sweep, study and tune share adapter.resolve_sets)."""
    per = adapter.resolve_sets(["sasrec", "bert4rec", "pop"], {"mask_ratio": "0.3", "sas*:epochs": "2",
                                                               "epochs": "4"})
    assert per == {"sasrec": {"epochs": "2"}, "bert4rec": {"mask_ratio": "0.3", "epochs": "4"}, "pop": {}}
    with pytest.raises(BenchError, match="none of sasrec, pop has a field 'epohcs'. Did you mean: epochs"):
        adapter.resolve_sets(["sasrec", "pop"], {"epohcs": "2"})
    with pytest.raises(BenchError, match="'gpt\\*' matches none of the models"):
        adapter.resolve_sets(["sasrec"], {"gpt*:lr": "0.1"})
    with pytest.raises(BenchError, match="names no model"):
        adapter.resolve_sets(["sasrec"], {" :lr": "0.1"})


@pytest.mark.parametrize("args, message", [
    (["run", "--suite", "nosuch", "--model", "test-successor"], "unknown suite 'nosuch'"),
    (["run", "--suite", "{suite}", "--model", "nosuch"], "unknown model 'nosuch'"),
    (["run", "--suite", "{suite}", "--model", "test-successor", "--dataset", "nope"], "no dataset 'nope'"),
    (["run", "--suite", "{suite}", "--model", "test-successor", "--set", "bad"], "expected key=value"),
    (["run", "--suite", "{suite}", "--model", "test-successor", "--set", "noise=x"], "cannot parse"),
    (["leaderboard", "--suite", "{suite}", "--metric", "ndcg"], "needs a cutoff"),
    (["runs", "show", "99"], "no results store at"),  # a read-only command never creates the store
])
def test_cli_errors_are_one_line_and_write_nothing(frozen_tiny, args, message):
    args = [a.replace("{suite}", str(frozen_tiny)) for a in args]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    err = result.stderr if hasattr(result, "stderr") else result.output
    assert message in " ".join(err.split())
    assert "Traceback" not in result.output
    assert Store().runs(status=None) == []


def test_cli_run_then_leaderboard_formats(frozen_tiny):
    cli = CliRunner()
    res = cli.invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor", "--seed", "0",
                           "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "leaderboard: tiny" in res.output
    md = cli.invoke(app, ["leaderboard", "--suite", "tiny", "--format", "markdown", "--metric", "ndcg@10"])
    assert md.exit_code == 0 and "| test-successor |" in md.output and "±" in md.output
    csv = cli.invoke(app, ["leaderboard", "--suite", "tiny", "--format", "csv"])
    assert csv.output.splitlines()[0].startswith("model,dataset,metric,mean")
    listing = cli.invoke(app, ["runs", "list"])
    assert "test-successor" in listing.output


def test_a_crashing_adapter_leaves_a_failed_record_without_metrics(frozen_tiny, monkeypatch):
    from tests.conftest import Successor

    def boom(self, batch):
        raise RuntimeError("scoring exploded")

    monkeypatch.setattr(Successor, "score", boom)
    with pytest.raises(BenchError, match="test-successor raised RuntimeError: scoring exploded while scoring on "
                                         "tiny/seq seed 0; the run is recorded as failed"):
        runner.execute(_req(frozen_tiny))
    store = Store()
    assert store.runs() == []  # nothing completed
    failed = store.runs(status="failed")
    assert len(failed) == 1 and "scoring exploded" in failed[0].error and failed[0].metrics == {}
    with pytest.raises(BenchError, match="no per-user metric vectors"):
        store.per_user(failed[0].id)


def test_sigterm_mid_run_leaves_an_interrupted_record(frozen_tiny, monkeypatch):
    """`kill` (SIGTERM, what batch schedulers send) ends a run like Ctrl-C: recorded as interrupted, no metrics."""
    import os
    import signal

    from mmsr_bench.cli.main import _terminate_as_interrupt
    from tests.conftest import Successor

    def killed(self, batch):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the SIGTERM handler should have raised")

    monkeypatch.setattr(Successor, "score", killed)
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.execute(_req(frozen_tiny))
    finally:
        signal.signal(signal.SIGTERM, previous)
    interrupted = Store().runs(status="interrupted")
    assert len(interrupted) == 1 and interrupted[0].metrics == {} and "signal 15" in interrupted[0].error


def test_also_scores_the_same_fit_on_a_suite_with_the_identical_split(frozen_tiny, tmp_path):
    full = tmp_path / "tinyfull.toml"
    full.write_text(frozen_tiny.read_text().replace('name = "tiny"', 'name = "tinyfull"')
                    .replace('candidates = "sampled"', 'candidates = "full"').split("[hashes")[0])
    spec_full = suites.load_suite(str(full))
    suites.write_hashes(spec_full, "seq", build.materialize(spec_full, spec_full.dataset("seq")))
    req = runner.RunRequest(suites.load_suite(str(frozen_tiny)), "test-successor", ["seq"], [0], {},
                            also=(suites.load_suite(str(full)),))
    sampled, ranked = runner.execute(req)
    assert (sampled.suite, ranked.suite) == ("tiny", "tinyfull")
    assert ranked.run_info["validation_suite"] == "tiny" and ranked.fit_seconds == sampled.fit_seconds
    assert ranked.metrics["hr@10"] <= sampled.metrics["hr@10"] + 1e-12  # full ranking is harder
    other = tmp_path / "tinyk.toml"
    other.write_text(frozen_tiny.read_text().replace('name = "tiny"', 'name = "tinyk"').replace("kcore = 0", "kcore = 6")
                     .split("[hashes")[0])
    spec_k = suites.load_suite(str(other))
    suites.write_hashes(spec_k, "seq", build.materialize(spec_k, spec_k.dataset("seq")))
    with pytest.raises(BenchError, match="split differs"):
        runner.execute(runner.RunRequest(suites.load_suite(str(frozen_tiny)), "test-successor", ["seq"], [0], {},
                                         also=(suites.load_suite(str(other)),)))


def test_long_scoring_is_announced_with_an_estimate(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="mmsr_bench.runner.execute"):
        scoring._announce_estimate("scoring beauty", 8, 1000, 2.0)
        scoring._announce_estimate("scoring tiny", 8, 16, 0.1)
    assert len(caplog.records) == 1
    assert "1000 users, about 4 min at 4.0 users/s" in caplog.records[0].getMessage()


def test_leaderboard_ranks_by_the_suites_primary_metric(frozen_tiny):
    from mmsr_bench.results import leaderboard as lb

    for model, noise in (("test-successor", "5.0"), ("pop", None), ("random", None)):
        runner.execute(_req(frozen_tiny, model=model, overrides={"noise": noise} if noise else {}))
    spec = suites.load_suite(str(frozen_tiny))
    board = lb.build_board(Store(), spec.name)
    assert spec.evaluation.primary == "ndcg@10" and board.metrics[0] != "ndcg@10"  # hr@1 sorts first as a column
    values = [board.value(m, "seq", "ndcg@10") for m in board.models]
    assert values == sorted(values, reverse=True)


def test_progress_without_a_terminal_prints_count_rate_and_time_left():
    """A background run (``nohup``, CI) gets a plain line every interval, not a bar that is only drawn at the end."""
    from rich.console import Console

    from mmsr_bench.cli.common import _LineReporter

    now = [0.0]
    console = Console(record=True, width=200, force_terminal=False)
    reporter = _LineReporter(console, interval=60.0, clock=lambda: now[0])
    with reporter.task("tuning", total=200) as task:
        for _ in range(200):
            now[0] += 7.0
            task.advance(1)
    lines = console.export_text().splitlines()
    assert lines[0] == "… tuning (200)" and lines[-1] == "✓ tuning in 1400.0s"
    ticks = lines[1:-1]
    assert len(ticks) == 22  # every 9th step (63 s) before the last one
    assert ticks[0] == "  tuning: 9/200 in 63s (0.143/s, about 1337s left)"
    with reporter.task("unsized", total=None) as task:
        now[0] += 600.0
        task.advance(5)
    assert console.export_text().splitlines() == ["… unsized", "✓ unsized in 600.0s"]


@pytest.mark.parametrize("phase", ["fit", "score"])
def test_a_misbehaving_adapter_is_one_error_line_with_a_failed_record(frozen_tiny, monkeypatch, phase):
    """sys.exit in adapter code, a wrong score type, an in-place write into the shared inputs: each is one
    `error:` line naming the model and the phase, exit 1, a failed record, no traceback."""
    from tests.conftest import Successor

    cli = CliRunner()
    cases = {
        "fit": [(lambda self, train, valid: sys.exit(0), "called sys.exit(0) while fitting"),
                (lambda self, train, valid: train.sequences[0].__setitem__(0, 1),
                 "ValueError: assignment destination is read-only while fitting")],
        "score": [(lambda self, batch: [["x"] * batch.candidates.shape[1]] * len(batch.users),
                   "score returned list, not an array of numbers"),
                  (lambda self, batch: batch.candidates.__setitem__((slice(None), 0), 1),
                   "ValueError: assignment destination is read-only while scoring")],
    }
    real_fit = Successor.fit
    for k, (bad, message) in enumerate(cases[phase]):
        if phase == "fit":
            monkeypatch.setattr(Successor, "fit", bad)
        else:
            monkeypatch.setattr(Successor, "fit", real_fit)
            monkeypatch.setattr(Successor, "score", bad)
        res = cli.invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor", "--seed", str(k)])
        assert res.exit_code == 1, res.output
        assert message in " ".join(res.output.split()) and "Traceback" not in res.output, res.output
    assert len(Store().runs(status="failed")) == 2


def test_a_cell_past_its_time_limit_is_stopped_and_recorded(frozen_tiny, monkeypatch):
    import time

    from tests.conftest import Successor

    monkeypatch.setattr(Successor, "fit", lambda self, train, valid: time.sleep(3600))
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor",
                                   "--time-limit", "0.01"])
    assert res.exit_code == 1 and "ran past its time limit of 0.6 s" in res.output, res.output
    (failed,) = Store().runs(status="failed")
    assert "time limit" in failed.error and failed.run_info["time_limit_s"] == 0.6
    res = CliRunner().invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor",
                                   "--time-limit", "-1"])
    assert res.exit_code == 1 and "--time-limit -1" in res.output


@pytest.mark.parametrize("args,message", [
    (["--seed", "1_0"], "--seed '1_0': seeds must be integers"),
    (["--seed", "abc"], "--seed 'abc': seeds must be integers"),
    (["--seed", "4294967296"], "seeds must be integers in [0, 2**32 - 1]"),
    (["--seed", "1", "--seed", "1"], "seed 1 is given twice"),
    (["--set", "noise=1", "--set", "noise=2"], "--set 'noise' is given twice"),
    (["--set", "noise=" + "9" * 30 + "x"], "cannot parse"),
    (["--model", "test-successor,test-successor"], "'test-successor' is named twice"),
])
def test_seeds_names_and_big_integers_are_one_error_line(frozen_tiny, args, message):
    base = ["run", "--suite", str(frozen_tiny), "--db", f"sqlite:///{frozen_tiny.parent / 'r.db'}"]
    if "--model" not in args:
        base += ["--model", "test-successor"]
    res = CliRunner().invoke(app, base + args)
    assert res.exit_code != 0, res.output
    assert res.output.startswith("error:") and "Traceback" not in res.output, res.output
    if message:
        assert message in res.output, res.output
    assert not (frozen_tiny.parent / "r.db").exists()


def test_huge_ids_and_resamples_are_refused(frozen_tiny):
    cli = CliRunner()
    assert cli.invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor"]).exit_code == 0
    res = cli.invoke(app, ["runs", "show", "9" * 25])
    assert res.exit_code == 1 and "no run with id" in res.output
    res = cli.invoke(app, ["compare", "1", "1", "--resamples", "1000000000000"])
    assert res.exit_code == 1 and "--resamples 1000000000000: give 1 to 1,000,000" in res.output


def test_a_suite_given_by_path_works_in_the_read_commands(frozen_tiny):
    cli = CliRunner()
    assert cli.invoke(app, ["run", "--suite", str(frozen_tiny), "--model", "test-successor"]).exit_code == 0
    for args in (["leaderboard", "--suite", str(frozen_tiny), "--format", "csv"],
                 ["runs", "list", "--suite", str(frozen_tiny)]):
        res = cli.invoke(app, args)
        assert res.exit_code == 0 and "test-successor" in res.output, (args, res.output)


def test_a_second_signal_while_the_interrupted_record_is_written_leaves_it_whole(frozen_tiny, monkeypatch):
    """Ctrl-C twice: the second signal arrives while the interrupted run is being recorded; the record is still
    written whole, and the interrupt still ends the command."""
    import os
    import signal

    from mmsr_bench.cli.main import _terminate_as_interrupt
    from tests.conftest import Successor

    def killed(self, batch):
        raise KeyboardInterrupt("first Ctrl-C")

    real_add = Store.add_run

    def add_run_with_a_second_signal(self, run, per_user=None, artifacts=None):
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal, mid-write
        return real_add(self, run, per_user, artifacts)

    monkeypatch.setattr(Successor, "score", killed)
    monkeypatch.setattr(Store, "add_run", add_run_with_a_second_signal)
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.execute(_req(frozen_tiny))
    finally:
        signal.signal(signal.SIGTERM, previous)
    (run,) = Store().runs(status="interrupted")
    assert "first Ctrl-C" in run.error
