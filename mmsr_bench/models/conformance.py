"""The adapter conformance kit: named checks every adapter must pass (in the spirit of scikit-learn's
``check_estimator``). ``bench adapter check NAME`` prints them; :func:`run_checks` returns them.

The kit builds a tiny synth4-like suite (one synthetic category, 60 users, 80 items, 19 sampled negatives, with
titles and rendered images) in its own cache home, fits the adapter there with a tiny budget
(its adapter class's ``conformance_overrides``), and checks:

``score_before_fit``
    ``score`` on an unfitted adapter raises :class:`BenchError` (not a crash, not silent scores).
``shape_finite``
    scores have the candidates' shape and are finite.
``batch_invariance``
    a user's scores do not depend on the batch: all users in one batch vs. batches of 1 and of 3.
``candidate_permutation``
    permuting a user's candidate columns permutes the scores (the target is always column 0 in the harness, so a
    model that reads positions would look good and be wrong).
``determinism``
    two fits with the same seed give the same scores.
``no_test_leak``
    ``fit`` never learns the test targets. The kit fits twice more on two versions of the suite that differ *only*
    in every user's test target (in memory and in the suite files on disk: ``sequences.tsv``, ``targets.npy``,
    ``candidates_test.npy``); training sequences and the validation split are identical. A model that never sees
    test targets gives identical scores; one that reads them (from the suite files, from the caller's frames,
    from array views of the full sequences) does not. Inconclusive, and failed, when ``determinism`` fails.
``full_ranking``
    the fitted model scores the full-ranking protocol (``candidates`` = every item) through the harness's
    ``score_split``: right shape, finite.

Each check gives a :class:`CheckResult` with a one-line reason.

Why one module of this length: the kit's checks are one contract that share one tiny suite, one fitted model and one
report shape; split, a contributor would read three modules to learn what an adapter must do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from mmsr_bench.data.splits import EvalSplit, ScoreBatch
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.training import time_limit
from mmsr_bench.models import adapter as adapter_mod

log = logging.getLogger(__name__)

#: Tiny budgets for the built-in adapters (by registered base name): enough to run every code path, not to learn.

CHECKS = ("score_before_fit", "shape_finite", "batch_invariance", "candidate_permutation", "determinism",
          "no_test_leak", "full_ranking")

#: Users scored by the batching, permutation and full-ranking checks (keeps LLM scorers cheap).
PROBE_USERS = 12


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class KitSuite:
    """The kit's tiny suite: how it was written (the spec) and where it lives (its cache home)."""

    spec: object  # mmsr_bench.suites.spec.SuiteSpec
    dataset: str
    home: Path


def tiny_overrides(name: str) -> dict[str, str]:
    """The kit's budget for ``name``: its adapter class's ``conformance_overrides`` (declared on the class, inherited
    by its variants), filtered to the fields its config really has."""
    reg = adapter_mod.get(name)
    table = dict(reg.cls.conformance_overrides or {})
    fields = {f.name for f in dataclasses.fields(reg.cls.config_cls)}
    return {k: str(v) for k, v in table.items() if k in fields}


SUITE_TOML = """
name = "conformance"
description = "the conformance kit's tiny synth4-like slice"

[[datasets]]
name = "baby"
source = "synth"
category = "baby"
seed = 11
synth_users = {n_users}
synth_items = {n_items}

[preprocess]
kcore = 0
duplicates = "keep"

[protocol]
split = "leave_one_out"
candidates = "sampled"
n_negatives = {n_negatives}
seed = 2024

[evaluation]
metrics = ["hr", "ndcg", "mrr"]
cutoffs = [1, 5, 10]
primary = "ndcg@10"
"""


@contextlib.contextmanager
def _home(path: Path) -> Iterator[None]:
    old = os.environ.get("MMSR_BENCH_HOME")
    os.environ["MMSR_BENCH_HOME"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MMSR_BENCH_HOME", None)
        else:
            os.environ["MMSR_BENCH_HOME"] = old


def make_suite(workdir: Path, n_users: int = 60, n_items: int = 80, n_negatives: int = 19) -> KitSuite:
    """Write and build the kit's suite under ``workdir`` (its own cache home, ``workdir/home``)."""
    from mmsr_bench.suites import build
    from mmsr_bench.suites import spec as suites

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "conformance.toml"
    path.write_text(SUITE_TOML.format(n_users=n_users, n_items=n_items, n_negatives=n_negatives), encoding="utf-8")
    spec = suites.load_suite(str(path))
    home = workdir / "home"
    with _home(home):
        build.materialize(spec, spec.dataset("baby"))
    return KitSuite(spec, "baby", home)


def _load(kit: KitSuite):
    from mmsr_bench.suites import build

    return build.load(kit.spec, kit.dataset, allow_unfrozen=True)


# ------------------------------------------------------------------------------------------ the variant suite
def _swapped_targets(data) -> np.ndarray:
    """For every test user, a replacement test target: an item the user never interacted with and absent from
    the user's test and validation candidates (so both versions of the suite are valid and share train/valid)."""
    rng = np.random.default_rng(12345)
    n = data.test.n_items
    out = np.empty(len(data.test), dtype=np.int64)
    for i, u in enumerate(data.test.users):
        seen = set(data.train.sequences[u].tolist()) | {int(data.valid.targets[i]), int(data.test.targets[i])}
        seen |= set(data.test.candidates[i].tolist()) | set(data.valid.candidates[i].tolist())
        pool = np.setdiff1d(np.arange(1, n + 1), np.fromiter(seen, dtype=np.int64))
        if not len(pool):
            raise BenchError("conformance suite: no free item to swap a test target to (too few items)")
        out[i] = rng.choice(pool)
    return out


@contextlib.contextmanager
def _variant_files(data, new_targets: np.ndarray) -> Iterator[None]:
    """Rewrite the suite's files on disk so that they hold ``new_targets`` as test targets; restore afterwards."""
    d = data.directory
    names = ("sequences.tsv", "targets.npy", "candidates_test.npy")
    saved = {n: (d / n).read_bytes() for n in names}
    try:
        by_user = dict(zip(data.test.users.tolist(), new_targets.tolist()))
        lines = saved["sequences.tsv"].decode("utf-8").splitlines(keepends=True)
        out = [lines[0]]
        for u, line in enumerate(lines[1:]):
            if u in by_user:
                a, b, items = line.rstrip("\n").split("\t")
                toks = items.split()
                toks[-1] = str(by_user[u])
                line = f"{a}\t{b}\t{' '.join(toks)}\n"
            out.append(line)
        (d / "sequences.tsv").write_text("".join(out), encoding="utf-8")
        targets = np.load(d / "targets.npy", allow_pickle=False)
        targets[:, 1] = new_targets.astype(targets.dtype)
        np.save(d / "targets.npy", targets, allow_pickle=False)
        cands = np.load(d / "candidates_test.npy", allow_pickle=False)
        cands[:, 0] = new_targets.astype(cands.dtype)
        np.save(d / "candidates_test.npy", cands, allow_pickle=False)
        yield
    finally:
        for n, b in saved.items():
            (d / n).write_bytes(b)


def _variant_data(data, new_targets: np.ndarray):
    """The same SuiteData with other test targets, cut from the full sequences the way
    :func:`mmsr_bench.suites.build.load` cuts them (training ``seq[:-2]``, validation histories ``seq[:-2]``, test
    histories ``seq[:-1]``, each its own copy)."""
    rows = {u: i for i, u in enumerate(data.test.users.tolist())}
    seqs = []
    for u, s in enumerate(data.train.sequences):
        if u in rows:
            i = rows[u]
            seqs.append(np.concatenate([s, [data.valid.targets[i], new_targets[i]]]).astype(np.int64))
        else:
            seqs.append(None)
    train = dataclasses.replace(data.train, sequences=[s if f is None else f[:-2].copy()
                                                       for s, f in zip(data.train.sequences, seqs)])
    valid = dataclasses.replace(data.valid, histories=[seqs[u][:-2].copy() for u in data.valid.users])
    cands = data.test.candidates.copy()
    cands[:, 0] = new_targets
    test = dataclasses.replace(data.test, histories=[seqs[u][:-1].copy() for u in data.test.users],
                               targets=new_targets.copy(), candidates=cands)
    return dataclasses.replace(data, train=train, valid=valid, test=test)


# ------------------------------------------------------------------------------------------------ helpers
def _build(name: str, overrides: Mapping[str, str], seed: int, kit: KitSuite):
    from mmsr_bench.evaluation.scoring import seed_everything
    from mmsr_bench.paths import cache_dir

    reg = adapter_mod.get(name)
    seed_everything(seed, torch_too=reg.cls.uses_torch)
    model = adapter_mod.build(name, overrides, seed=seed, device="cpu",
                              cache_dir=str(cache_dir("models", "conformance")))
    return model


def _fit(name: str, overrides: Mapping[str, str], seed: int, kit: KitSuite, data):
    """Fit like :func:`mmsr_bench.runner.execute.run_one`: ``data`` (the SuiteData) is in the caller's frame, as in a run."""
    model = _build(name, overrides, seed, kit)
    adapter_mod.check_needs(adapter_mod.effective_needs(model), data, name)
    model.fit(data.train, data.valid)
    return model


def _subset(split: EvalSplit, n: int) -> EvalSplit:
    k = min(n, len(split))
    return dataclasses.replace(split, users=split.users[:k], histories=list(split.histories[:k]),
                               targets=split.targets[:k],
                               candidates=None if split.candidates is None else split.candidates[:k],
                               exclude=None if split.exclude is None else list(split.exclude[:k]))


def _score_all(model, split: EvalSplit, batch_size: int) -> np.ndarray:
    parts = []
    for batch in split.batches(batch_size):
        s = np.asarray(model.score(batch), dtype=np.float64)
        if s.shape != batch.candidates.shape:
            raise _Fail(f"score returned shape {s.shape} for candidates of shape {batch.candidates.shape}")
        parts.append(s)
    return np.concatenate(parts)


class _Fail(Exception):
    pass


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol_rel: float) -> tuple[bool, float]:
    """Whether ``a`` and ``b`` agree to float32-level tolerance; and the largest absolute difference."""
    scale = max(1.0, float(np.nanmax(np.abs(a))) if a.size and not np.isnan(a).all() else 1.0)
    diff = float(np.nanmax(np.abs(a - b))) if a.size and not np.isnan(a - b).all() else 0.0
    return bool(np.allclose(a, b, rtol=rtol, atol=atol_rel * scale, equal_nan=True)), diff


#: float32 tolerance for the batching and permutation checks (batched matmuls may differ in the last bits).
FLOAT32_RTOL, FLOAT32_ATOL = 1e-4, 1e-5
#: The same seed must give the same numbers (the runner's reproducibility contract): tight tolerance.
SAME_SEED_RTOL, SAME_SEED_ATOL = 1e-6, 1e-7


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


# ------------------------------------------------------------------------------------------------- checks
def check_score_before_fit(model, split: EvalSplit) -> CheckResult:
    batch = next(split.batches(4))
    try:
        scores = model.score(batch)
    except BenchError as exc:
        return CheckResult("score_before_fit", True, f"raises {type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the point is to report which exception it was
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return CheckResult("score_before_fit", False, f"crashes with {_one_line(exc)} at {Path(where.filename).name}:"
                                                      f"{where.lineno}; raise BenchError('... before fit') instead")
    shape = getattr(np.asarray(scores), "shape", None)
    return CheckResult("score_before_fit", False, f"returns scores of shape {shape} before fit; raise BenchError")


def check_shape_finite(model, split: EvalSplit, batch_size: int) -> CheckResult:
    scores = _score_all(model, split, batch_size)
    bad = ~np.isfinite(scores)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        return CheckResult("shape_finite", False, f"{int(bad.sum())} of {scores.size} scores are NaN/inf "
                                                  f"(first: user row {r}, column {c}: {scores[r, c]})")
    return CheckResult("shape_finite", True, f"{scores.shape[0]}x{scores.shape[1]} finite scores")


def check_batch_invariance(model, split: EvalSplit) -> CheckResult:
    sub = _subset(split, PROBE_USERS)
    whole = _score_all(model, sub, len(sub))
    for bs in (1, 3):
        other = _score_all(model, sub, bs)
        ok, diff = _close(whole, other, FLOAT32_RTOL, FLOAT32_ATOL)
        if not ok:
            row = int(np.argmax(np.max(np.abs(whole - other), axis=1)))
            return CheckResult("batch_invariance", False, f"scores in batches of {bs} differ from one batch of "
                                                          f"{len(sub)} by up to {diff:.3g} (user row {row})")
    return CheckResult("batch_invariance", True, f"{len(sub)} users: one batch = batches of 1 = batches of 3")


def check_candidate_permutation(model, split: EvalSplit) -> CheckResult:
    sub = _subset(split, PROBE_USERS)
    base = _score_all(model, sub, len(sub))
    rng = np.random.default_rng(0)
    perms = np.stack([rng.permutation(sub.candidates.shape[1]) for _ in range(len(sub))])
    perms = np.stack([np.roll(p, 1) if p[0] == 0 else p for p in perms])  # the target always leaves column 0
    shuffled = np.take_along_axis(sub.candidates, perms, axis=1)
    moved = _score_all(model, dataclasses.replace(sub, candidates=shuffled), len(sub))
    expected = np.take_along_axis(base, perms, axis=1)
    ok, diff = _close(expected, moved, FLOAT32_RTOL, FLOAT32_ATOL)
    if not ok:
        return CheckResult("candidate_permutation", False, f"permuting candidate columns changes the scores by up to "
                                                           f"{diff:.3g}: the model reads candidate positions")
    return CheckResult("candidate_permutation", True, "scores follow the candidates, not their columns")


def check_full_ranking(model, split: EvalSplit, batch_size: int) -> CheckResult:
    from mmsr_bench.evaluation.scoring import score_split

    sub = _subset(split, PROBE_USERS)
    full = dataclasses.replace(sub, candidates=None,
                               exclude=[h[h != t] for h, t in zip(sub.histories, sub.targets)])
    scores = _score_all(model, full, batch_size)
    if not np.isfinite(scores).all():
        return CheckResult("full_ranking", False, f"{int((~np.isfinite(scores)).sum())} full-ranking scores are NaN/inf")
    vec = score_split(model, full, ["ndcg@10"], batch_size, description="conformance full ranking")["ndcg@10"]
    return CheckResult("full_ranking", True, f"{len(sub)} users x {full.n_items} items; ndcg@10 {vec.mean():.3f}")


# ---------------------------------------------------------------------------------------------- the kit
#: Wall seconds each step of the kit (one fit, or one check with its fits) may take before it fails with a
#: time-limit reason instead of hanging the kit; ``run_checks(time_limit_s=...)`` / ``bench adapter check
#: --time-limit`` change it.
STEP_LIMIT_S = 900.0
_limit = {"s": STEP_LIMIT_S}


def _guard(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    try:
        with time_limit(_limit["s"], f"check {name}"):
            return fn()
    except _Fail as exc:
        return CheckResult(name, False, str(exc))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a check reports, it does not crash the kit
        log.debug("check %s raised", name, exc_info=True)
        return CheckResult(name, False, f"raised {_one_line(exc)}")


def run_checks(name: str, overrides: Mapping[str, str] | None = None, *, seed: int = 0,
               workdir: Path | None = None, kit: KitSuite | None = None,
               time_limit_s: float = STEP_LIMIT_S) -> list[CheckResult]:
    """Run every check on the registered adapter ``name`` with the kit's tiny budget plus ``overrides``.

    ``workdir``: where the kit's suite and cache home go (default: a temporary folder, deleted afterwards).
    ``kit``: an already built :func:`make_suite` (tests share one). ``time_limit_s``: the wall time each step may
    take (:data:`STEP_LIMIT_S`). Unknown names and bad overrides raise :class:`BenchError` before any work.
    """
    _limit["s"] = time_limit_s
    adapter_mod.get(name)
    cfg = {**tiny_overrides(name), **dict(overrides or {})}
    adapter_mod.build(name, cfg)  # a bad --set fails here, before any data work
    if kit is None:
        with contextlib.ExitStack() as stack:
            if workdir is None:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mmsr-conformance-")))
            kit = make_suite(Path(workdir))
            return _run(name, cfg, seed, kit)
    return _run(name, cfg, seed, kit)


def _run(name: str, cfg: dict, seed: int, kit: KitSuite) -> list[CheckResult]:
    results: dict[str, CheckResult] = {}
    with _home(kit.home):
        data = _load(kit)
        test = data.test
        bs = int(getattr(adapter_mod.build(name, cfg).config, "batch_size", 256))
        log.info("conformance %s: score before fit", name)
        results["score_before_fit"] = _guard("score_before_fit",
                                             lambda: check_score_before_fit(_build(name, cfg, seed, kit), test))
        log.info("conformance %s: fit 1 of 3", name)
        try:
            with time_limit(_limit["s"], "fit 1 of 3"):
                model = _fit(name, cfg, seed, kit, data)
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            reason = f"fit raised {_one_line(exc)}"
            for c in CHECKS[1:]:
                results[c] = CheckResult(c, False, reason)
            return [results[c] for c in CHECKS]
        results["shape_finite"] = _guard("shape_finite", lambda: check_shape_finite(model, test, bs))
        results["batch_invariance"] = _guard("batch_invariance", lambda: check_batch_invariance(model, test))
        results["candidate_permutation"] = _guard("candidate_permutation",
                                                  lambda: check_candidate_permutation(model, test))
        results["full_ranking"] = _guard("full_ranking", lambda: check_full_ranking(model, test, bs))
        # the leak probe: the test histories with both versions' targets among the candidates
        new_targets = _swapped_targets(data)
        probe = dataclasses.replace(test, candidates=np.concatenate([test.candidates, new_targets[:, None]], axis=1))
        try:
            first = _score_all(model, probe, bs)
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            first = None
            results["determinism"] = CheckResult("determinism", False, f"scoring raised {_one_line(exc)}")
        del model
        gc.collect()
        if first is not None:
            log.info("conformance %s: fit 2 of 3 (same seed)", name)
            results["determinism"] = _guard("determinism", lambda: _check_same(name, cfg, seed, kit, data, probe,
                                                                              bs, first, "determinism"))
        if results["determinism"].passed:
            log.info("conformance %s: fit 3 of 3 (other test targets)", name)
            results["no_test_leak"] = _guard("no_test_leak", lambda: _check_leak(name, cfg, seed, kit, data, probe,
                                                                                bs, first, new_targets))
        else:
            results["no_test_leak"] = CheckResult("no_test_leak", False,
                                                  "cannot tell: the determinism check failed")
    return [results[c] for c in CHECKS]


def _check_same(name, cfg, seed, kit, data, probe, bs, first, check) -> CheckResult:
    model = _fit(name, cfg, seed, kit, data)
    again = _score_all(model, probe, bs)
    ok, diff = _close(first, again, SAME_SEED_RTOL, SAME_SEED_ATOL)
    if not ok:
        return CheckResult(check, False, f"two fits with seed {seed} give scores differing by up to {diff:.3g}")
    return CheckResult(check, True, f"two fits with seed {seed} agree (max diff {diff:.2g})")


def _check_leak(name, cfg, seed, kit, real, probe, bs, first, new_targets) -> CheckResult:
    with _variant_files(real, new_targets):
        data = _variant_data(real, new_targets)  # noqa: F841 - in this frame, as in the runner's
        del real
        model = _fit(name, cfg, seed, kit, data)
    other = _score_all(model, probe, bs)
    ok, diff = _close(first, other, SAME_SEED_RTOL, SAME_SEED_ATOL)
    if not ok:
        return CheckResult("no_test_leak", False, f"changing only the test targets changes the fitted model's scores "
                                                  f"(by up to {diff:.3g}): fit reads test targets")
    return CheckResult("no_test_leak", True, "fit on other test targets gives the same scores")


def passed(results: list[CheckResult]) -> bool:
    return all(r.passed for r in results)
