"""A study's options: validated once, with each cell's expected configuration hash and whether it can run on a
dataset (the tables built from stored runs are :mod:`mmsr_bench.results.study_report`; planning and running the
missing cells is :mod:`mmsr_bench.runner.study`; the study itself is data, :mod:`mmsr_bench.results.study_spec`).

The shipped study, MLLM-SRec's research questions RQ1-RQ4, is ``mmsr_bench/results/studies/mllm-srec.toml``
(:data:`DEFAULT`); ``bench study --study FILE`` takes a researcher's own.

A cell is *stored* when a completed, untagged run of the model exists on the dataset with the suite's current
fingerprint, the seed and the configuration hash the study's budget gives that model: exactly the test
``bench run --resume`` applies (:func:`mmsr_bench.runner.execute.stored_cell`, used by :mod:`mmsr_bench.runner.study`). ``budget="tiny"`` applies
:func:`mmsr_bench.models.conformance.tiny_overrides` to every model; the overrides are part of the stored configuration,
so tiny and default runs have different configuration hashes and never meet in one table.

Library code: no printing; :mod:`mmsr_bench.cli.study` and ``mmsr_bench/dashboard/app_pages/study.py`` show the results.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Mapping

from mmsr_bench.errors import BenchError
from mmsr_bench.results.study_spec import RQ, StudySpec, load_study

log = logging.getLogger(__name__)

BUDGETS = ("default", "tiny")


#: The shipped MLLM-SRec study (mmsr_bench/results/studies/mllm-srec.toml): its research questions and full model.
DEFAULT = load_study()
RQS: dict[str, RQ] = DEFAULT.rqs
FULL = DEFAULT.full


def is_mllm_srec(model: str) -> bool:
    return DEFAULT.is_proposed(model)


def grid_models(rqs: list[str] | None = None, study: StudySpec = DEFAULT) -> list[str]:
    """The study's models, in first-appearance order over the research questions."""
    return study.grid_models(rqs)


# --------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class StudyOptions:
    """Validated arguments of ``bench study`` and ``bench report study``."""

    spec: object  # mmsr_bench.suites.spec.SuiteSpec
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    models: tuple[str, ...]
    rqs: tuple[str, ...]
    budget: str
    db: str | None
    device: str | None = None
    #: ``--set key=value`` pairs, applied to every grid model whose configuration has the field
    sets: tuple[tuple[str, str], ...] = ()
    #: ``--tuned``: model -> the ``tuned_from`` record of its tuning study, whose best configuration ``sets`` holds
    #: as ``model:field`` pairs; the runs record it.
    tuned_from: tuple[tuple[str, str], ...] = ()
    #: The study's definition (``--study``; default the shipped MLLM-SRec study)
    study: StudySpec = DEFAULT


def tuned_sets(store, spec, dataset: str, models: list[str]) -> tuple[dict[str, str], dict[str, dict]]:
    """``bench study --tuned``: for each model with a finished tuning study on (suite, dataset) in the store (the
    latest one), its best configuration as scoped ``--set`` pairs, and the ``tuned_from`` record its runs keep.
    Models never tuned there keep their default configuration."""
    pairs: dict[str, str] = {}
    records: dict[str, dict] = {}
    for m in models:
        studies = [t for t in store.tunings(suite=spec.name, dataset=dataset, model=m) if t.best_trial is not None]
        if not studies:
            continue
        t = max(studies, key=lambda t: (t.updated_at, t.id))
        trials = store.trials(t.id)
        best = json.loads(t.best_params_json or "{}")
        from mmsr_bench.models.search_space import as_overrides

        for k, v in as_overrides({**json.loads(t.fixed_json or "{}"), **best}).items():
            pairs[f"{m}:{k}"] = v
        budget = json.loads(t.budget_json or "{}")
        records[m] = {"tuning": t.uuid, "trials": sum(x.state == "complete" for x in trials),
                      "pruned": sum(x.state == "pruned" for x in trials),
                      "failed": sum(x.state == "failed" for x in trials),
                      "minutes": round(sum(x.seconds for x in trials) / 60.0, 2), "best_trial": t.best_trial,
                      "best_value": t.best_value, "metric": t.metric, "sampler": t.sampler,
                      "budget": {k: budget.get(k) for k in ("trials", "minutes", "threads")}}
    return pairs, records


def parse_names(value: str | list[str] | tuple[str, ...] | None, option: str) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [x for v in value for x in str(v).split(",")]
    names = [v.strip() for v in items if v.strip()]
    if not names:
        raise BenchError(f"{option} {value!r} names nothing; give comma-separated names or leave the option out")
    return list(dict.fromkeys(names))


def validate(suite: str, *, datasets=None, seeds=(0,), models=None, rqs=None, budget: str = "default",
             db: str | None = None, device: str | None = None, check_db: bool = True,
             sets: Mapping[str, str] | None = None, study: str | None = None, tuned: bool = False) -> StudyOptions:
    """Check every argument before any work (each error names its option); nothing is created or written.
    ``tuned`` (``bench study --tuned``): every grid model tuned on the one ``--dataset`` gets its tuning study's best
    configuration as scoped ``--set`` pairs (:func:`tuned_sets`), checked with the others in the same pass."""
    from mmsr_bench.models import adapter
    from mmsr_bench.suites import spec as suites

    if budget not in BUDGETS:
        raise BenchError(f"--budget {budget!r}: choose one of {', '.join(BUDGETS)}")
    spec_of_study = load_study(study)
    rq_keys = parse_names(rqs, "--rq")
    for key in rq_keys or []:
        if key.lower() not in spec_of_study.rqs:
            raise BenchError(f"--rq {key!r}: choose among {', '.join(spec_of_study.rqs)}")
    rq_keys = [k.lower() for k in rq_keys] if rq_keys else list(spec_of_study.rqs)
    wanted = parse_names(models, "--models")
    known = adapter.catalog()
    for m in wanted or []:
        if m not in known:
            raise BenchError(f"--models {m!r}: unknown model (see `bench models`)")
        if m not in spec_of_study.grid_models(rq_keys):
            raise BenchError(f"--models {m!r}: not in the study grid of {', '.join(rq_keys)} "
                             f"({', '.join(spec_of_study.grid_models(rq_keys))})")
    chosen = [m for m in spec_of_study.grid_models(rq_keys) if wanted is None or m in wanted]
    from mmsr_bench.evaluation.scoring import check_seeds

    seeds = check_seeds(list(dict.fromkeys(seeds or [])))
    spec = suites.load_suite(suite)
    wanted_ds = parse_names(datasets, "--dataset")
    try:
        names = [d.name for d in spec.select(wanted_ds)]
    except BenchError as exc:
        raise BenchError(f"--dataset {','.join(wanted_ds or [])!r}: {exc}") from None
    if device is not None:
        from mmsr_bench.paths import check_device

        check_device(device)
    if check_db:
        from mmsr_bench.results.store import check_store

        check_store(db)
    sets, tuned_from = dict(sets or {}), {}
    if tuned:
        if len(names) != 1:
            raise BenchError("--tuned: give one --dataset (a configuration is tuned on one dataset's validation split)")
        from mmsr_bench.results.store import Store

        best, tuned_from = tuned_sets(Store.for_reading(db), spec, names[0], chosen)
        if not tuned_from:
            raise BenchError(f"--tuned: no grid model has a finished tuning study on {spec.name}/{names[0]} in the "
                             "store; run `bench tune` first")
        clash = sorted(k for k in best if k in sets or k.split(":", 1)[1] in sets)
        if clash:
            raise BenchError(f"--tuned and --set both set {', '.join(clash)}; drop the --set")
        sets.update(best)
    pairs = tuple(sorted(sets.items()))
    from mmsr_bench.models.adapter import resolve_sets

    resolve_sets(chosen, dict(pairs))  # a pair that reaches no grid model fails here
    for m in chosen:  # an unknown name, a bad --set value or a configuration the budget cannot build fails here
        if pairs:  # builds the configuration once; plan and report reuse its cached hash
            expected_config_hash(m, budget, pairs)
        else:
            overrides_for(m, budget)
    return StudyOptions(spec, tuple(names), tuple(seeds), tuple(chosen), tuple(rq_keys), budget, db, device, pairs,
                        tuned_from=tuple(sorted((m, json.dumps(r)) for m, r in tuned_from.items())),
                        study=spec_of_study)


def overrides_for(model: str, budget: str, sets: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    """The configuration overrides of a study cell: the budget's (none by default, the conformance kit's tiny
    ones), then the ``--set`` pairs that reach the model (:func:`mmsr_bench.models.adapter.scoped_overrides`:
    ``backbone`` reaches the LLM recommenders and leaves SASRec alone)."""
    from mmsr_bench.models.adapter import scoped_overrides

    out: dict[str, str] = {}
    if budget == "tiny":
        from mmsr_bench.models.conformance import tiny_overrides

        out.update(tiny_overrides(model))
    if sets:
        out.update(scoped_overrides(model, dict(sets)))
    return out


_PROBES: dict[tuple[str, str, tuple], tuple[str, object]] = {}


def _probe(model: str, budget: str, sets: tuple[tuple[str, str], ...]) -> tuple[str, object]:
    """The configuration hash and the inputs (:class:`mmsr_bench.models.adapter.Needs`) of a study cell's model,
    from its resolved configuration (:func:`mmsr_bench.models.adapter.plan`, cached; no model framework is
    imported)."""
    from mmsr_bench.models import adapter

    overrides = overrides_for(model, budget, sets)
    key = (model, budget, tuple(sorted(overrides.items())))
    if key not in _PROBES:
        plan = adapter.plan(model, overrides)
        _PROBES[key] = (plan.config_hash, plan.needs)
    return _PROBES[key]


def expected_config_hash(model: str, budget: str, sets: tuple[tuple[str, str], ...] = ()) -> str:
    """The configuration hash a run of ``model`` under ``budget`` stores (:func:`mmsr_bench.models.adapter.config_hash`, as the runner records it)."""
    return _probe(model, budget, sets)[0]


_LACKING: dict[tuple[str, int], tuple[str, ...]] = {}


def cannot_run(model: str, budget: str, sets: tuple[tuple[str, str], ...], spec, dataset: str) -> str:
    """Why ``model`` cannot run on ``spec``'s ``dataset`` here: the inputs it needs that the built dataset lacks
    (e.g. item images on the S3-Rec Amazon files), as the runner would refuse before any work. "" when it can, or
    when the dataset is not built here (the run's own check decides then)."""
    from mmsr_bench.models import adapter
    from mmsr_bench.suites import build

    needs = _probe(model, budget, sets)[1]
    if not (needs.text or needs.images):
        return ""
    path = build.dataset_dir(spec, dataset) / "items.tsv"
    if not path.is_file():
        return ""
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _LACKING:
        everything = adapter.Needs(text=True, images=True)
        _LACKING[key] = adapter.lacking(everything, build.read_items(path, path.parent))
    missing = [x for x in _LACKING[key] if getattr(needs, x)]
    return f"{spec.name}/{dataset} has no item {' or '.join(missing)}" if missing else ""


def current_fingerprint(spec, dataset: str) -> str | None:
    """The protocol fingerprint runs on ``dataset`` carry now: from the frozen hashes, else from built artifacts
    (an unfrozen suite); None when neither exists."""
    if spec.hashes.get(dataset):
        return spec.protocol_fingerprint(dataset)
    from mmsr_bench.suites import build

    try:
        return spec.protocol_fingerprint(dataset, build.verify(spec, dataset, allow_unfrozen=True,
                                                               check_images=False))
    except BenchError:
        return None


def open_for_reading(db: str | None):
    """The store read-only, or None when there is none yet (a plan never creates one)."""
    from mmsr_bench.paths import default_db_url
    from mmsr_bench.results.store import Store, sqlite_file

    path = sqlite_file(db or default_db_url())
    if path is not None and not path.is_file():
        return None
    store = Store(db, read_only=True)
    return store if store.exists() else None
