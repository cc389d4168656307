"""The adapter conformance kit (mmsr_bench/models/conformance.py): canary adapters that break one rule each are failed with a
one-line reason, honest adapters pass, and `bench adapter check` / `bench adapter new` work from the command line."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mmsr_bench.errors import BenchError
from mmsr_bench.models import conformance
from mmsr_bench.models.adapter import Adapter, AdapterConfig, register
from mmsr_bench.suites.build import SuiteData


@dataclass(frozen=True)
class CanaryConfig(AdapterConfig):
    pass


class _Counts(Adapter):
    """An honest base: item -> next-item counts from training sequences, plus popularity."""

    config_cls = CanaryConfig
    uses_torch = False

    def fit(self, train, valid):
        self.counts = np.zeros((train.n_items + 1, train.n_items + 1))
        for seq in train.sequences:
            for a, b in zip(seq[:-1], seq[1:]):
                self.counts[a, b] += 1
        self.pop = train.item_popularity().astype(float)
        return self

    def score(self, batch):
        if not hasattr(self, "counts"):
            raise BenchError(f"{self.name}: score() called before fit()")
        last = np.array([h[-1] if len(h) else 0 for h in batch.histories])
        cands = np.asarray(batch.candidates)
        return self.counts[last[:, None], cands] + 1e-3 * self.pop[cands]


@register()
class Honest(_Counts):
    name = "test-canary-honest"


class _Boosts(_Counts):
    """Scores whatever it leaked (``self.leak``: user -> test target) far above the rest."""

    leak: dict = {}

    def score(self, batch):
        s = super().score(batch)
        for r, u in enumerate(batch.users.tolist()):
            s[r] += 100.0 * (np.asarray(batch.candidates[r]) == self.leak.get(u, -1))
        return s


@register()
class LeakFiles(_Boosts):
    """Reads the test targets from the suite's files: the dataset folder is the item table's first image root."""

    name = "test-canary-leak-files"

    def fit(self, train, valid):
        super().fit(train, valid)
        folder = Path(train.items.image_roots[0])
        targets = np.load(folder / "targets.npy")[:, 1]
        users = np.load(folder / "eval_users.npy")
        self.leak = dict(zip(users.tolist(), targets.tolist()))
        return self


@register()
class LeakFrames(_Boosts):
    """Finds the caller's SuiteData (the runner has it in its frame) and reads its test split."""

    name = "test-canary-leak-frames"

    def fit(self, train, valid):
        super().fit(train, valid)
        self.leak = {}
        for frame in inspect.stack()[1:]:
            for value in frame.frame.f_locals.values():
                if isinstance(value, SuiteData):
                    self.leak = dict(zip(value.test.users.tolist(), value.test.targets.tolist()))
                    break
            if self.leak:
                break
        return self



@register()
class LeakViews(_Boosts):
    """Reads past the end of its training sequences: a slice's ``.base`` is the whole sequence when the harness
    hands out views."""

    name = "test-canary-leak-views"

    def fit(self, train, valid):
        super().fit(train, valid)
        self.leak = {u: int(s.base[-1]) for u, s in enumerate(train.sequences)
                     if getattr(s, "base", None) is not None and s.base.ndim == 1}
        return self



@register()
class ReadsPosition(_Counts):
    """Puts column 0 first: right on the harness's layout (target in column 0), wrong for a model."""

    name = "test-canary-position"

    def score(self, batch):
        s = super().score(batch)
        s[:, 0] += 100.0
        return s


@register()
class Unseeded(_Counts):
    """Adds noise from an unseeded generator at fit time."""

    name = "test-canary-unseeded"

    def fit(self, train, valid):
        super().fit(train, valid)
        self.counts = self.counts + np.random.default_rng().random(self.counts.shape)
        return self


@register()
class BatchDependent(_Counts):
    """Normalises scores over the batch: a user's scores depend on who else is in it."""

    name = "test-canary-batch"

    def score(self, batch):
        s = super().score(batch)
        return s - s.mean() + 0.1 * len(batch.users)


@register()
class CrashBeforeFit(_Counts):
    name = "test-canary-crash"

    def score(self, batch):  # no "before fit" guard: self.counts does not exist yet
        last = np.array([h[-1] if len(h) else 0 for h in batch.histories])
        return self.counts[last[:, None], np.asarray(batch.candidates)]


@register()
class NanScores(_Counts):
    name = "test-canary-nan"

    def score(self, batch):
        s = super().score(batch)
        s[np.asarray(batch.candidates) % 7 == 0] = np.nan
        return s


@register()
class ExitsInFit(_Counts):
    name = "test-canary-exit"

    def fit(self, train, valid):
        import sys

        sys.exit(0)


@register()
class WritesCandidates(_Counts):
    """Overwrites the shared candidate array in place (it would corrupt the next seed's numbers)."""

    name = "test-canary-inplace"

    def score(self, batch):
        s = super().score(batch)
        batch.candidates[:, 0] = batch.candidates[:, -1]
        return s


@register()
class HangsInFit(_Counts):
    name = "test-canary-hang"

    def fit(self, train, valid):
        import time

        time.sleep(3600)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    return conformance.make_suite(tmp_path_factory.mktemp("kit"))


def _by_name(results):
    return {r.name: r for r in results}


def test_honest_adapter_passes_every_check(kit):
    results = conformance.run_checks("test-canary-honest", kit=kit)
    assert [r.name for r in results] == list(conformance.CHECKS)
    assert all(r.passed for r in results), [r for r in results if not r.passed]


@pytest.mark.parametrize("name,check,words", [
    ("test-canary-leak-files", "no_test_leak", "fit reads test targets"),
    ("test-canary-leak-frames", "no_test_leak", "fit reads test targets"),
    ("test-canary-position", "candidate_permutation", "reads candidate positions"),
    ("test-canary-unseeded", "determinism", "differing"),
    ("test-canary-batch", "batch_invariance", "batches of 1"),
    ("test-canary-crash", "score_before_fit", "AttributeError"),
    ("test-canary-nan", "shape_finite", "NaN/inf"),
])
def test_each_canary_fails_its_check_with_a_one_line_reason(kit, name, check, words):
    results = _by_name(conformance.run_checks(name, kit=kit))
    bad = results[check]
    assert not bad.passed and words in bad.reason and "\n" not in bad.reason, bad
    also = {"test-canary-unseeded": {"no_test_leak"},  # a non-deterministic fit makes the leak check inconclusive
            "test-canary-nan": {"full_ranking"}}.get(name, set())
    others = [r for n, r in results.items() if n != check and n not in also and not r.passed]
    assert not others, others


def test_fit_gets_arrays_that_do_not_reach_past_the_training_prefix(kit):
    """build.load hands fit copies, not views of the full sequences: `.base` would expose the test target."""
    results = _by_name(conformance.run_checks("test-canary-leak-views", kit=kit))
    assert results["no_test_leak"].passed, results["no_test_leak"]
    with conformance._home(kit.home):
        data = conformance._load(kit)
    arrays = [*data.train.sequences, *data.valid.histories, *data.test.histories]
    assert all(a.base is None for a in arrays)


def test_bad_names_and_overrides_fail_before_any_work(tmp_path):
    with pytest.raises(BenchError, match="unknown model"):
        conformance.run_checks("no-such-model", workdir=tmp_path)
    with pytest.raises(BenchError, match="no field 'epochz'"):
        conformance.run_checks("sasrec", {"epochz": "1"}, workdir=tmp_path)
    assert not (tmp_path / "home").exists()


def test_sys_exit_in_fit_and_in_place_writes_fail_the_kit(kit):
    results = conformance.run_checks("test-canary-exit", kit=kit)
    assert [r.passed for r in results][1:] == [False] * (len(results) - 1)
    assert all("SystemExit" in r.reason for r in results[1:]), results
    bad = _by_name(conformance.run_checks("test-canary-inplace", kit=kit))["shape_finite"]
    assert not bad.passed and "read-only" in bad.reason, bad


def test_a_hanging_fit_fails_the_kit_at_its_time_limit(kit):
    import time

    t0 = time.monotonic()
    results = conformance.run_checks("test-canary-hang", kit=kit, time_limit_s=0.5)
    assert time.monotonic() - t0 < 60
    assert not any(r.passed for r in results[1:]) and "time limit of 0.5 s" in results[1].reason, results
