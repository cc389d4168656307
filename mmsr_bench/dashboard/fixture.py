"""A synthetic results store for the dashboard's tests, benchmark and screenshot demo.

Why: the pages must be exercised on a store with several models, seeds, datasets, variants, perturbation runs, a
failed run and a hallucination artifact without training anything. Every run's aggregate metrics are the means of
its stored per-user vectors, as the runner writes them, so significance tests and leaderboard cells agree. The
values are simulated (a per-model skill plus user and seed noise); they are demo data, never benchmark results.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from mmsr_bench.results.store import Artifact, Run, Store, UserMetric, encode_vector

METRICS = ("hr@10", "ndcg@10", "mrr", "auc")


@dataclass(frozen=True)
class FixtureSpec:
    """What to put in the store; ``skill`` maps a model to its mean hit rate (higher = better)."""

    suite: str = "synth4"
    datasets: tuple[str, ...] = ("beauty", "toys")
    skill: tuple[tuple[str, float], ...] = (("pop", 0.18), ("sasrec", 0.42), ("bert4rec", 0.40),
                                            ("mllm-srec-qlora", 0.50), ("mllm-srec-text", 0.46),
                                            ("mllm-srec-noimg", 0.44))
    seeds: tuple[int, ...] = (0, 1, 2)
    perturbations: tuple[str, ...] = ("blank:0.2", "blank:0.5", "swap:0.2", "swap:0.5")
    perturbed_model: str = "mllm-srec-qlora"
    n_users: int = 400
    failed_run: bool = True
    hallucination: bool = True
    extra: dict = field(default_factory=dict)
    #: store the shipped suite's real protocol fingerprint as ``suite_hash`` (run files are checked against it on
    #: import, so a fixture exported as reference runs needs it); a placeholder otherwise
    real_fingerprint: bool = False
    code_version: str = "abc1234"  # every run's
    host: str = "bench-host"  # every run's
    failed_model: str = "gptrec"
    failed_error: str = "CUDA out of memory (simulated)"


def _suite_hash(spec: FixtureSpec, dataset: str) -> str:
    if spec.real_fingerprint:
        from mmsr_bench.suites.spec import load_suite, suite_files

        if spec.suite in suite_files():
            return load_suite(spec.suite).protocol_fingerprint(dataset)
    return f"hash-{dataset}"


def _per_user(rng: np.random.Generator, skill: float, user_ease: np.ndarray) -> dict[str, np.ndarray]:
    p = np.clip(skill + user_ease + rng.normal(0, 0.01), 0.01, 0.99)
    hit = (rng.random(len(p)) < p).astype(np.float64)
    rank = rng.integers(1, 11, len(p))
    ndcg = hit / np.log2(rank + 1)
    mrr = np.where(hit > 0, 1.0 / rank, rng.random(len(p)) * 0.08)
    auc = np.clip(0.5 + 0.45 * p + rng.normal(0, 0.05, len(p)), 0, 1)
    return {"hr@10": hit, "ndcg@10": ndcg, "mrr": mrr, "auc": auc}


def _run_row(spec: FixtureSpec, model: str, dataset: str, seed: int, variant: str, vecs: dict[str, np.ndarray],
             idx: int, status: str = "completed") -> Run:
    config = {"model": model, "lr": 1e-3 if "mllm" not in model else 2e-4, "epochs": 20,
              "hidden": 64, "lora": {"r": 8, "alpha": 16} if "qlora" in model else None, "variant": variant}
    text = json.dumps(config, sort_keys=True)
    started = datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=7 * idx)
    metrics = {k: float(v.mean()) for k, v in vecs.items()} if status == "completed" else {}
    return Run(group_id=f"g{idx // max(1, len(spec.seeds)):05d}", suite=spec.suite,
               suite_hash=_suite_hash(spec, dataset),
               dataset=dataset, model=model, variant=variant, config_json=text,
               config_hash=hashlib.sha256(text.encode()).hexdigest(), seed=seed, code_version=spec.code_version,
               code_dirty=idx % 5 == 0, packages_json=json.dumps({"torch": "2.14.1", "numpy": "2.4.6"}),
               host=spec.host, device="cuda" if "mllm" in model else "cpu", started_at=started,
               finished_at=started + timedelta(seconds=30 + idx % 50), status=status,
               error="" if status == "completed" else spec.failed_error,
               fit_seconds=20.0 + (idx % 17), score_seconds=3.0 + (idx % 5) * 0.5, peak_memory_mb=900.0 + idx % 300,
               n_users=spec.n_users, eval_users_hash=f"users-{dataset}", metrics_json=json.dumps(metrics),
               run_info_json=json.dumps({"best_epoch": 10 + seed, "chosen_on": "valid"}))


def _hallucination_payload(rng: np.random.Generator, dataset: str) -> dict:
    matched = rng.normal(0.62, 0.05, 300).clip(0, 2)
    mismatched = rng.normal(0.80, 0.05, 300).clip(0, 2)
    threshold = float(np.quantile(mismatched, 0.05))
    flagged = float((matched > threshold).mean())
    pos = np.concatenate([np.zeros(len(matched)), np.ones(len(mismatched))])
    scores = np.concatenate([matched, mismatched])
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    auroc = float((ranks[pos == 1].sum() - len(mismatched) * (len(mismatched) + 1) / 2)
                  / (len(matched) * len(mismatched)))
    return {"dataset": dataset, "distances": [round(float(x), 5) for x in matched],
            "mismatched": [round(float(x), 5) for x in mismatched], "threshold": threshold,
            "flagged_share": flagged, "auroc": auroc}


def build_fixture_store(url: str, spec: FixtureSpec = FixtureSpec(), seed: int = 0) -> Store:
    """Fill (and return) the store at ``url`` with the runs described by ``spec``; one transaction per run."""
    store = Store(url)
    rng = np.random.default_rng(seed)
    idx = 0
    for d_i, dataset in enumerate(spec.datasets):
        ease = np.random.default_rng(1000 + d_i).normal(0, 0.15, spec.n_users)
        for model, skill in spec.skill:
            jobs = [("", skill)]
            if model == spec.perturbed_model:
                for tag in spec.perturbations:
                    kind, share = tag.split(":")
                    jobs.append((tag, skill * (1 - (0.5 if kind == "blank" else 0.3) * float(share))))
            for variant, sk in jobs:
                for s in spec.seeds:
                    vecs = _per_user(rng, sk, ease)
                    arts = []
                    if spec.hallucination and variant == "" and model == spec.perturbed_model and s == spec.seeds[0]:
                        arts.append(Artifact(suite=spec.suite, dataset=dataset, model=model, kind="hallucination",
                                             payload_json=json.dumps(_hallucination_payload(rng, dataset))))
                    store.add_run(_run_row(spec, model, dataset, s, variant, vecs, idx), vecs, arts)
                    idx += 1
    if spec.failed_run:
        store.add_run(_run_row(spec, spec.failed_model, spec.datasets[0], 0, "", {}, idx, status="failed"))
    return store


#: Stored names that read as HTML, markdown, a spreadsheet formula or plotly's markup (the last): the dashboard must
#: show them as text.
HOSTILE_NAMES = ("<img src=x onerror=alert(1)>", "[click](javascript:alert(1))", "**bold**",
                 '=HYPERLINK("http://x","y")', '<a href="https://example.com/">link</a><b>b</b>')
HOSTILE_HTML = "<h2 id=pwned>x</h2>"
#: code versions of the study grid's runs: the Study page's footers print the first 12 characters of each
HOSTILE_SHORT = ("![x](x)", "[a](http:x)", "**bold**")


def build_hostile_store(url: str, seed: int = 0) -> Store:
    """A store whose stored text is hostile, for the dashboard's output-safety tests: every model is named as one
    of :data:`HOSTILE_NAMES` (two seeds on synth4/beauty, a perturbation run, a hallucination artifact), every run's
    code version and host are :data:`HOSTILE_HTML`, the failed run's model and error are hostile too; and runs of
    the study's grid (pop and sasrec in the default budget's configuration) whose code versions are
    :data:`HOSTILE_SHORT`, so that the Study page's footers carry stored text; and a malformed hallucination artifact
    of a hostile model."""
    from mmsr_bench.results import study, study_report
    from mmsr_bench.suites.spec import load_suite

    spec = FixtureSpec(datasets=("beauty",), seeds=(0, 1), perturbations=("blank:0.5",), n_users=80,
                       skill=tuple((name, 0.2 + 0.08 * i) for i, name in enumerate(HOSTILE_NAMES)),
                       perturbed_model=HOSTILE_NAMES[1], real_fingerprint=True, code_version=HOSTILE_HTML,
                       host=HOSTILE_HTML, failed_model=HOSTILE_NAMES[0],
                       failed_error=f"ValueError: {' '.join(HOSTILE_NAMES)} {HOSTILE_HTML}")
    store = build_fixture_store(url, spec, seed=seed)
    suite = load_suite(spec.suite)
    metrics = sorted(set(study_report.table_metrics(suite)) | set(METRICS))
    rng = np.random.default_rng(seed + 1)
    for i, (model, version) in enumerate(zip(("pop", "sasrec", "pop"), HOSTILE_SHORT)):
        vecs = {m: rng.random(spec.n_users) * (0.3 + 0.3 * (model == "sasrec")) for m in metrics}
        run = _run_row(spec, model, "beauty", i, "", vecs, 1000 + i)
        run.config_hash = study.expected_config_hash(model, "default")
        run.code_version, run.code_dirty, run.host = version, False, "bench-host"
        store.add_run(run, vecs)
    store.add_artifact(Artifact(suite=spec.suite, dataset="beauty", model=HOSTILE_NAMES[3], kind="hallucination",
                                payload_json="{not json"))  # its problem, naming the model, is shown on the page
    return store


def build_reference_folder(folder: Path, spec: FixtureSpec | None = None, seed: int = 1) -> Path:
    """Simulated reference runs: a fixture store exported as run files into ``folder`` (what ``reference-runs/``
    holds), for the dashboard's tests and ``screenshots --demo --reference``. Demo data, never benchmark results."""
    from mmsr_bench.results.store_copy import export_store

    spec = spec or FixtureSpec(skill=(("pop", 0.17), ("sasrec", 0.41), ("mllm-srec-qlora", 0.52)), seeds=(0, 1),
                               perturbations=("blank:0.5",), n_users=150, failed_run=False)
    spec = replace(spec, real_fingerprint=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'reference.db'}"
        build_fixture_store(url, spec, seed=seed)
        export_store(url, Path(folder))
    return Path(folder)


def bulk_fill(url: str, n_runs: int, *, n_users: int = 1000, datasets: tuple[str, ...] = ("beauty", "sports",
              "toys", "baby"), seeds: tuple[int, ...] = (0, 1, 2, 3, 4), seed: int = 0) -> Store:
    """``n_runs`` runs with per-user vectors in ONE transaction (fast enough to time the dashboard at scale):
    models ``model-000`` ... cycle over datasets and seeds."""
    store = Store(url)
    rng = np.random.default_rng(seed)
    spec = FixtureSpec(datasets=datasets, seeds=seeds, n_users=n_users)
    ease = {d: np.random.default_rng(1000 + i).normal(0, 0.15, n_users) for i, d in enumerate(datasets)}
    per_model = len(datasets) * len(seeds)
    with store.session() as s:
        with s.begin():
            for i in range(n_runs):
                model = f"model-{i // per_model:03d}"
                dataset = datasets[(i // len(seeds)) % len(datasets)]
                vecs = _per_user(rng, 0.2 + 0.4 * ((i // per_model) % 17) / 17, ease[dataset])
                run = _run_row(spec, model, dataset, seeds[i % len(seeds)], "", vecs, i)
                s.add(run)
                s.flush()
                for name, v in vecs.items():
                    s.add(UserMetric(run_id=run.id, metric=name, values=encode_vector(v)))
    return store
