"""The adapter contract and the model registry.

An adapter is a scikit-learn-like estimator with nothing hidden: ``fit(train, valid)`` then
``score(batch) -> scores[users, candidates]``. The harness gives ``fit`` training sequences only (plus the
validation split for early stopping), and ``score`` only histories and the shared candidates; it never lets an
adapter sample its own test candidates. Adapters register by name with :func:`register`; third-party packages
expose adapters through the entry-point group ``mmsr_bench.adapters`` (each entry point loads a module or a
class that registers itself on import).

Why one module of this length: the facts every model shares are kept together on purpose: the contract, the registry
and its generated catalog, the one ``--set`` grammar and a configuration's identity (hash, plan).
"""

from __future__ import annotations

import abc
import dataclasses
import difflib
import hashlib
import importlib
import json
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import numpy as np

from mmsr_bench.data.splits import EvalSplit, ItemTable, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError, MissingModality, UnknownName

if TYPE_CHECKING:
    from mmsr_bench.suites.build import SuiteData

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mmsr_bench.adapters"

def builtin_adapter_modules() -> tuple[str, ...]:
    """The modules of this project that define adapters: the ones the catalog (``registry.toml``) names, in order of
    first appearance; imported lazily by :func:`load_builtin_adapters`. No hand-kept list: a new model's module is
    known as soon as its catalog entry exists (``bench adapter new`` writes it)."""
    return tuple(dict.fromkeys(e.module for e in catalog().values()))


@dataclass(frozen=True)
class AdapterConfig:
    """Base class of adapter configs: frozen dataclasses whose fields are the hyper-parameters.

    Subclasses add typed fields with the original papers' defaults. ``--set key=value`` overrides are parsed
    against the field's type by :func:`parse_overrides`.
    """

    batch_size: int = 256

    #: Numeric fields that must be > 0 (sizes, counts of layers/steps, learning rates) and fields that are
    #: probabilities in [0, 1). Every other int/float field must be a finite number >= 0 (0 means "off" or
    #: "all" where a field says so). Subclasses may extend the sets; :meth:`__post_init__` checks them.
    POSITIVE: ClassVar[frozenset[str]] = frozenset({
        "batch_size", "train_batch_size", "eval_batch_size", "epochs", "n_layers", "n_heads", "n_layer", "n_head",
        "n_embd", "inner_size", "hidden_size", "embedding_size", "latent_size", "users_per_batch", "score_rows",
        "lora_rank", "lora_alpha", "grad_accum", "window_size", "window_step", "max_len", "max_seq_length",
        "codes_per_item", "svd_bins", "n_clusters", "sv_clusters", "caption_batch_size", "summary_batch_size", "summary_tokens", "caption_tokens", "lr", "learning_rate", "layer_norm_eps",
        "initializer_range", "eval_step", "stopping_step", "patience", "max_df", "logit_scale"})
    PROBABILITY: ClassVar[frozenset[str]] = frozenset({
        "dropout", "hidden_dropout_prob", "attn_dropout_prob", "lora_dropout", "mask_ratio", "vlm_holdout"})

    #: The hyper-parameter search space ``bench tune`` samples (field -> :class:`mmsr_bench.models.search_space.Range`
    #: or ``Choice``), declared beside the defaults it searches around, with the source of its ranges in a comment;
    #: empty: the model is not tuned unless a ``--space`` file gives one. ``bench models NAME`` shows it.
    search_space: ClassVar[Mapping[str, Any]] = {}

    def __post_init__(self) -> None:
        import math

        where = type(self).__name__
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                raise BenchError(f"{where}.{f.name} = {value!r}: must be a finite number")
            if f.name in self.PROBABILITY:
                if not 0.0 <= value < 1.0:
                    raise BenchError(f"{where}.{f.name} = {value!r}: must be a probability in [0, 1)")
            elif f.name in self.POSITIVE:
                if value <= 0:
                    raise BenchError(f"{where}.{f.name} = {value!r}: must be > 0")
            elif value < 0:
                raise BenchError(f"{where}.{f.name} = {value!r}: must be >= 0")


@dataclass(frozen=True)
class Needs:
    """What input an adapter consumes. The runner refuses, before any training, when the dataset lacks it."""

    text: bool = False
    images: bool = False


class Adapter(abc.ABC):
    """Base class. Subclasses set ``name``, ``config_cls``, ``needs`` and implement ``fit`` and ``score``."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[AdapterConfig]] = AdapterConfig
    needs: ClassVar[Needs] = Needs()
    #: Registered variant names map to config overrides, e.g. {"mllm-srec-text": {"modalities": "text"}}.
    description: ClassVar[str] = ""
    #: Whether the model computes with torch: the runner then seeds torch and asks it for deterministic kernels.
    #: Numpy-only baselines set False, so running them never imports torch.
    uses_torch: ClassVar[bool] = True
    #: The conformance kit's tiny budget for this adapter (config fields -> values), so ``bench adapter check``
    #: takes seconds; None: the kit's table for built-ins, else no overrides.
    conformance_overrides: ClassVar[Mapping[str, Any] | None] = None

    def __init__(self, config: AdapterConfig, *, seed: int = 0, device: str = "cpu", cache_dir: str = "") -> None:
        self.config = config
        self.seed = seed
        self.device = device
        self.cache_dir = cache_dir
        #: Facts a run must record beyond the config (backbone hash, random weights, chosen epoch, ...).
        self.run_info: dict[str, Any] = {}

    @property
    def registered_name(self) -> str:
        """The name this instance was built under (a variant's, e.g. ``mllm-srec-text``; :func:`build` sets it)."""
        return getattr(self, "_registered_name", self.name)

    @registered_name.setter
    def registered_name(self, value: str) -> None:
        self._registered_name = value

    @property
    def effective_needs(self) -> Needs:
        """What this configured instance consumes: a variant may need less than its class (``mllm-srec-text``
        needs no images); the runner checks the data against this."""
        return getattr(self, "_effective_needs", type(self).needs)

    @effective_needs.setter
    def effective_needs(self, value: Needs) -> None:
        self._effective_needs = value

    @abc.abstractmethod
    def fit(self, train: TrainData, valid: EvalSplit) -> "Adapter":
        """Train on ``train`` only; ``valid`` (histories, targets, shared candidates) is for early stopping."""

    @abc.abstractmethod
    def score(self, batch: ScoreBatch) -> np.ndarray:
        """Return scores of shape ``batch.candidates.shape``; higher is better."""


@dataclass(frozen=True)
class Registration:
    name: str
    cls: type[Adapter]
    overrides: Mapping[str, Any]
    description: str


_REGISTRY: dict[str, Registration] = {}
_loaded = False


def register(name: str | None = None, *, overrides: Mapping[str, Any] | None = None, description: str = ""):
    """Class decorator: ``@register()`` uses ``cls.name``; ``@register("x-variant", overrides={...})`` adds a
    variant (a named set of config overrides) of the same class. Stackable."""

    def deco(cls: type[Adapter]) -> type[Adapter]:
        key = name or cls.name
        if not key:
            raise ValueError(f"{cls.__name__} has no name")
        if key in _REGISTRY and _REGISTRY[key].cls is not cls:
            raise ValueError(f"adapter name {key!r} is already registered by {_REGISTRY[key].cls.__name__}")
        _REGISTRY[key] = Registration(key, cls, dict(overrides or {}), description or cls.description)
        return cls

    return deco


def load_builtin_adapters() -> None:
    """Import the built-in adapter modules and third-party entry points (once). Importing registers."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in builtin_adapter_modules():
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            log.debug("built-in adapter module %s not present", mod)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not break the harness
            log.warning("could not load adapter entry point %s (%s): %s", ep.name, ep.value, exc)
    _disable_anomaly_detection()


def _disable_anomaly_detection() -> None:
    import sys

    if "torch" in sys.modules:
        # RecBole's sine.py calls torch.autograd.set_detect_anomaly(True) at import time, which checks every
        # backward pass for NaNs and more than doubles training time for every adapter in the process.
        sys.modules["torch"].autograd.set_detect_anomaly(False)


@dataclass(frozen=True)
class CatalogEntry:
    """A built-in model as listed in ``mmsr_bench/models/registry.toml``: known without importing its module."""

    name: str
    module: str
    needs: tuple[str, ...]
    description: str


def catalog() -> dict[str, CatalogEntry]:
    """The built-in models from ``mmsr_bench/models/registry.toml`` (data, read without importing any adapter)."""
    import tomllib
    from pathlib import Path

    path = Path(__file__).with_name("registry.toml")
    raw = tomllib.loads(path.read_text(encoding="utf-8")).get("models", {})
    return {n: CatalogEntry(n, e["module"], tuple(e.get("needs", ())), e.get("description", ""))
            for n, e in sorted(raw.items())}


CATALOG_HEADER = """\
# Built-in models: name -> the module that registers it, what it consumes, a one-line description.
# Read by mmsr_bench.models.adapter so that listing models or running one imports only that model's module
# (torch, RecBole and transformers stay unimported for pop, random and the listing). Generated from the
# registered classes by `bench adapter catalog --write` (their name, module, needs and description) and checked
# against them by tests/test_registry.py: edit the class, then regenerate.
"""


def catalog_text() -> str:
    """``registry.toml`` as the registered built-in classes say it should read (imports every built-in module)."""
    import tomlkit

    lines = [CATALOG_HEADER]
    for name, reg in registry().items():
        if not reg.cls.__module__.startswith("mmsr_bench.models."):
            continue  # third-party entry points are not part of the catalog
        need = effective_needs(build(name))
        needs = [k for k, v in (("text", need.text), ("images", need.images)) if v]
        description = (reg.description or "").split("\n")[0]
        lines.append(f"[models.{tomlkit.string(name).as_string()}]\nmodule = {tomlkit.string(reg.cls.__module__).as_string()}\n"
                     f"needs = [{', '.join(tomlkit.string(n).as_string() for n in needs)}]\n"
                     f"description = {tomlkit.string(description).as_string()}\n")
    return "\n".join(lines)


def registry() -> dict[str, Registration]:
    load_builtin_adapters()
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Registration:
    """The registration of ``name``, importing only the module the catalog names for it (a built-in), else
    every adapter module and entry point (a third-party name, or a typo to report)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry = catalog().get(name)
    if entry is not None:
        importlib.import_module(entry.module)
        _disable_anomaly_detection()
        if name in _REGISTRY:
            return _REGISTRY[name]
    reg = registry()
    if name not in reg:
        close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownName(f"unknown model {name!r}.{hint} `bench models` lists them all.")
    return reg[name]


def _resolved_types(config_cls: type) -> dict[str, Any]:
    """The config's field types as real types (adapter modules use ``from __future__ import annotations``)."""
    import typing

    try:
        return typing.get_type_hints(config_cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation keeps its string form
        return {f.name: f.type for f in dataclasses.fields(config_cls)}


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) if isinstance(typ, type) else str(typ).replace("typing.", "")


def _coerce(typ: Any, raw: Any, where: str) -> Any:
    """``raw`` (a ``--set`` string or a variant's value) validated by pydantic against the field's type ``typ``:
    ints, floats, bools (true/false, yes/no, on/off, 1/0), strings, ``Literal`` choices, ``X | None`` (``none``,
    ``null`` or empty for None) and tuples (comma-separated, optionally in brackets). A value that does not fit
    raises BenchError naming the field, the value, the type and pydantic's reason."""
    import typing

    import pydantic

    if isinstance(typ, str):  # unresolvable annotation: keep the value as given
        return raw
    args = typing.get_args(typ)
    optional = type(None) in args
    text = raw if isinstance(raw, str) else None
    value: Any = raw
    if text is not None:
        value = text.strip()
        if optional and value.lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)] if optional else [typ]
        if any(typing.get_origin(t) in (tuple, list) for t in inner):
            value = [t.strip() for t in value.strip("()[]").split(",") if t.strip()]
    elif isinstance(raw, (int, float, bool)) and typ is str:
        value = str(raw)
    try:
        out = pydantic.TypeAdapter(typ).validate_python(value)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(f"[{x}]" for x in err.get("loc", ()))
        reason = f"{err['msg']}" + (f" (item {loc})" if loc else "")
        raise BenchError(f"{where}: cannot parse {raw!r} as {_type_name(typ)}: {reason}") from None
    except pydantic.PydanticSchemaGenerationError:
        return raw
    for v in (out if isinstance(out, tuple) else (out,)):
        if isinstance(v, int) and not isinstance(v, bool) and not -2 ** 63 <= v < 2 ** 63:
            raise BenchError(f"{where}: {str(raw)[:40]!r} is beyond a 64-bit integer")
    return out


def parse_overrides(config_cls: type[AdapterConfig], pairs: Mapping[str, Any], where: str = "--set") -> dict:
    """Check override keys against the config's fields and validate the values (pydantic) against their types."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    types = _resolved_types(config_cls) if pairs else {}
    out = {}
    for key, raw in pairs.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Known keys: {', '.join(fields)}."
            raise BenchError(f"{where}: {config_cls.__name__} has no field {key!r}.{hint}")
        out[key] = _coerce(types.get(key, fields[key].type), raw, f"{where} {config_cls.__name__}.{key}")
    return out


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}`` with a clear error on a malformed item."""
    out = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise BenchError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        if k.strip() in out:
            raise BenchError(f"--set {k.strip()[:60]!r} is given twice ({out[k.strip()][:40]!r} and {v.strip()[:40]!r}); "
                             "give each key once")
        out[k.strip()] = v.strip()
    return out


def split_set_key(key: str) -> tuple[str | None, str]:
    """``"mllm-srec*:max_pairs"`` -> ``("mllm-srec*", "max_pairs")``: a ``--set`` key may name the models it is for
    (a glob on the model name), so that one command gives the LLM models a budget without touching SASRec's
    ``train_batch_size``; ``"backbone"`` -> ``(None, "backbone")``."""
    pattern, sep, field_name = key.rpartition(":")
    return (pattern, field_name) if sep else (None, key)


def config_fields(model: str) -> set[str]:
    return {f.name for f in dataclasses.fields(get(model).cls.config_cls)}


def scoped_overrides(model: str, pairs: Mapping[str, str]) -> dict[str, str]:
    """The ``--set`` pairs that reach ``model``: an unscoped ``key=value`` when its configuration has the field, a
    scoped ``GLOB:key=value`` when the glob matches its name (a scoped pair wins over an unscoped one of the same
    field). The one ``--set`` grammar of run, sweep, study and tune."""
    import fnmatch

    fields = config_fields(model)
    out: dict[str, str] = {}
    scoped = [(split_set_key(k), v) for k, v in pairs.items()]
    for (pattern, key), v in sorted(scoped, key=lambda item: item[0][0] is not None):
        if key in fields and (pattern is None or fnmatch.fnmatchcase(model, pattern)):
            out[key] = v
    return out


def resolve_sets(models: list[str], pairs: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Every model's overrides from one command's ``--set`` pairs (:func:`scoped_overrides`); a pair that reaches
    no model is one error line (a typo is never silently dropped)."""
    import fnmatch

    out = {m: scoped_overrides(m, pairs) for m in models}
    for key in pairs:
        pattern, field_name = split_set_key(key)
        if pattern is not None and not pattern.strip():
            raise BenchError(f"--set {key}: the part before ':' names no model (give a model name or a glob such as "
                             "mllm-srec*)")
        scope = [m for m in models if pattern is None or fnmatch.fnmatchcase(m, pattern)]
        if not scope:
            raise BenchError(f"--set {key}: {pattern!r} matches none of the models ({', '.join(models)})")
        if not any(field_name in config_fields(m) for m in scope):
            fields = sorted(set().union(*(config_fields(m) for m in scope)))
            close = difflib.get_close_matches(field_name, fields, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise BenchError(f"--set {key}: none of {', '.join(scope)} has a field {field_name!r}.{hint} "
                             "(`bench models NAME` lists the fields)")
    return out


def build(name: str, overrides: Mapping[str, str] | None = None, *, seed: int = 0, device: str = "cpu",
          cache_dir: str = "") -> Adapter:
    """Instantiate a registered adapter (or variant) with its defaults, variant overrides and user overrides."""
    reg = get(name)
    cfg_kwargs = parse_overrides(reg.cls.config_cls, reg.overrides, where=f"variant {name}")
    cfg_kwargs.update(parse_overrides(reg.cls.config_cls, overrides or {}))
    return _instantiate(name, reg.cls.config_cls(**cfg_kwargs), seed=seed, device=device, cache_dir=cache_dir)


def _instantiate(name: str, config: AdapterConfig, *, seed: int, device: str, cache_dir: str) -> Adapter:
    adapter = get(name).cls(config, seed=seed, device=device, cache_dir=cache_dir)
    adapter.registered_name = name
    return adapter


@dataclass(frozen=True)
class ModelPlan:
    """One model's configuration, resolved once per command: the overrides parsed and checked (by the adapter's
    constructor too), the inputs this configuration needs and its identity. Every cell of the command (each
    dataset and seed) then gets a fresh instance of exactly this configuration from :meth:`instantiate`, and the
    "is it stored" check, the data check and the stored run all use the same hash."""

    name: str
    config: AdapterConfig
    needs: Needs
    config_hash: str

    def instantiate(self, *, seed: int = 0, device: str = "cpu", cache_dir: str = "") -> Adapter:
        return _instantiate(self.name, self.config, seed=seed, device=device, cache_dir=cache_dir)


def plan(name: str, overrides: Mapping[str, str] | None = None) -> ModelPlan:
    """``name`` with ``overrides`` resolved into a :class:`ModelPlan`; a bad name, key or value is one error here,
    before any work."""
    probe = build(name, overrides, device="cpu")
    return ModelPlan(name, probe.config, effective_needs(probe), config_hash(probe))


def lacking(needs: Needs, items: ItemTable) -> tuple[str, ...]:
    """The inputs ``needs`` asks for that ``items`` lacks: ``"text"`` (no titles or descriptions), ``"images"``."""
    out = []
    if needs.text and not any(items.has(c) for c in ("title", "description")):
        out.append("text")
    if needs.images and not items.has("image"):
        out.append("images")
    return tuple(out)


def effective_needs(model: "Adapter") -> Needs:
    """What this configured adapter consumes (a variant may need less than its class, e.g. mllm-srec-text)."""
    return model.effective_needs


def check_needs(needs: Needs, data: "SuiteData", model: str) -> None:
    """Refuse, before any training, when the adapter needs a modality the dataset lacks."""
    missing = lacking(needs, data.items)
    if "text" in missing:
        raise MissingModality(
            f"model {model!r} needs item text, but dataset {data.dataset!r} of suite {data.suite.name!r} has none "
            f"(no titles or descriptions). Import the raw Amazon meta files with `bench data import`, or pick a "
            f"dataset with text.")
    if "images" in missing:
        raise MissingModality(
            f"model {model!r} needs item images, but dataset {data.dataset!r} of suite {data.suite.name!r} has none. "
            f"The amazon4-mm suite joins the raw Amazon 2014 meta files (titles and image URLs): download "
            f"meta_<Category>.json.gz, run `bench data import amazon4-mm --from DIR`, `bench suite freeze amazon4-mm` "
            f"(review the diff), `bench data images --suite amazon4-mm`, then run on --suite amazon4-mm; or pick a "
            f"text-only variant (e.g. mllm-srec-text).")


#: Field metadata of a configuration field added after runs were stored (see :func:`later_field`).
OMIT_AT_DEFAULT = "omit_at_default"


def later_field(default: Any) -> Any:
    """A configuration field added after runs were stored: at its default it is left out of the stored
    configuration and its hash, so every run made before the field existed keeps its identity. Its default must
    therefore reproduce the behaviour from before the field."""
    return dataclasses.field(default=default, metadata={OMIT_AT_DEFAULT: True})


def config_dict(model: Adapter) -> dict:
    """The configuration as plain JSON values (what a run stores as its config)."""
    cfg = dataclasses.asdict(model.config)
    for f in dataclasses.fields(model.config):
        if f.metadata.get(OMIT_AT_DEFAULT) and getattr(model.config, f.name) == f.default:
            cfg.pop(f.name)
    return json.loads(json.dumps(cfg, default=str))


def config_hash(model: Adapter) -> str:
    """The identity of a configuration: sha256 of its canonical JSON (what the store records as config_hash)."""
    return hashlib.sha256(json.dumps(config_dict(model), sort_keys=True).encode()).hexdigest()
