"""Frozen benchmark suite specs: which data, preprocessing, split, candidate protocol, metrics, and the sha256 of
every artifact a run consumes. Specs are TOML files in ``mmsr_bench/suites/specs/`` (package data; a file may
``extends`` another) loaded into frozen pydantic models."""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmsr_bench.errors import BenchError, UnknownName
from mmsr_bench.paths import SUITES_DIR, check_safe_name
from mmsr_bench.suites.metric_names import MAX_CUTOFF, METRIC_NAMES, metric_names, parse_metric


def _safe(value: str, what: str) -> str:
    try:
        return check_safe_name(value, what)
    except BenchError as exc:
        raise ValueError(str(exc)) from None


def _relative_data_path(value: str, what: str) -> str:
    """Paths in a suite are relative to the data root and stay below it (no absolute path, no ``..``)."""
    if value and (Path(value).is_absolute() or ".." in Path(value).parts or "\\" in value):
        raise ValueError(f"{what} {value!r} must be a relative path below the data root (no leading '/', no '..')")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Preprocess(_Frozen):
    """k-core filtering (iterated to a fixed point), optional rating threshold, duplicate handling."""

    kcore: int = Field(5, ge=0)
    min_rating: float | None = None  # keep interactions with rating >= this as positives (where ratings exist)
    duplicates: Literal["keep", "drop", "drop_consecutive"] = "keep"


class Protocol(_Frozen):
    split: Literal["leave_one_out"] = "leave_one_out"
    candidates: Literal["sampled", "popularity", "full"] = "sampled"
    n_negatives: int = Field(99, ge=1, le=100_000)  # bounded: it sizes the candidate arrays (users x (n + 1))
    seed: int = Field(2024, ge=0, lt=2 ** 32)  # numpy's seed range
    max_eval_users: int = Field(0, ge=0, lt=2 ** 31)  # 0 = every user; else a frozen, seeded sample of this many


class Evaluation(_Frozen):
    metrics: tuple[str, ...] = Field(("hr", "ndcg", "recall", "mrr", "auc"), min_length=1)
    cutoffs: tuple[int, ...] = Field((1, 5, 10, 20), min_length=1)
    primary: str = "ndcg@10"

    @field_validator("cutoffs")
    @classmethod
    def _check_cutoffs(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [k for k in v if not 1 <= k <= MAX_CUTOFF]
        if bad:
            raise ValueError(f"cutoffs {bad} out of range: each must be between 1 and {MAX_CUTOFF}")
        if len(set(v)) != len(v):
            raise ValueError(f"cutoffs {list(v)} repeat a value")
        return v

    @field_validator("metrics")
    @classmethod
    def _check_metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"metrics {list(v)} repeat a value")
        unknown = [m for m in v if m not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {', '.join(sorted(METRIC_NAMES))}")
        return v

    @model_validator(mode="after")
    def _check_primary(self) -> "Evaluation":
        try:
            parse_metric(self.primary)
        except BenchError as exc:
            raise ValueError(str(exc)) from None
        if self.primary not in self.names():
            raise ValueError(f"primary {self.primary!r} is not one of the suite's metrics ({', '.join(self.names())}); "
                             "add its family to metrics and its cutoff to cutoffs")
        return self

    def names(self) -> list[str]:
        return metric_names(list(self.metrics), list(self.cutoffs))


class DatasetSpec(_Frozen):
    """Where a dataset comes from. ``source``: ``synth`` (generated), ``sequence`` (one user per line, under the
    data root), ``amazon2014`` / ``amazon2023`` (raw files imported with ``bench data import`` into the cache)."""

    name: str
    source: Literal["synth", "sequence", "amazon2014", "amazon2023"]
    category: str = ""
    seed: int = 0
    path: str = ""  # sequence file, relative to the data root
    items: str = ""  # item table TSV, relative to the data root
    users: str = ""  # user table TSV, relative to the data root
    meta: str = ""  # sequence only: a raw Amazon meta file (imported into the cache) joined by ASIN for text/images
    synth_users: int = 0  # synth only: overrides the generator's default size (0 = default)
    synth_items: int = 0
    # sequence only: a TSV (item id, asin, descriptor) under the data root whose text becomes every item's title,
    # for datasets with no titles offline (Sports). ``item_text_kind`` says what that text is, and runs record it
    # (``item_text_note`` says more), because numbers on derived text are not comparable with runs on raw titles.
    item_text: str = ""
    item_text_kind: Literal["title", "derived-descriptor"] = "title"
    item_text_note: str = ""

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _safe(v, "dataset name")

    @field_validator("category")
    @classmethod
    def _check_category(cls, v: str) -> str:
        """The category becomes raw file names in the cache (``reviews_<category>_5.json.gz``), so it is one safe
        name like ``name``: no separator, no ``..``."""
        return _safe(v, "dataset category") if v else v

    @field_validator("path", "items", "users", "meta", "item_text")
    @classmethod
    def _check_paths(cls, v: str, info) -> str:
        return _relative_data_path(v, info.field_name)

    @model_validator(mode="after")
    def _check_item_text(self) -> "DatasetSpec":
        if self.item_text and self.source != "sequence":
            raise ValueError(f"dataset {self.name!r}: item_text joins by the sequence file's item ids, so it needs "
                             f"source = \"sequence\" (not {self.source!r})")
        if self.item_text and self.meta:
            raise ValueError(f"dataset {self.name!r}: item_text and meta both supply titles; use one of them")
        if not self.item_text and (self.item_text_kind != "title" or self.item_text_note):
            raise ValueError(f"dataset {self.name!r}: item_text_kind/item_text_note describe an item_text file, "
                             "but item_text is not set")
        return self

    def item_text_source(self, has_titles: bool) -> str:
        """What a run's item text is, for its record: derived descriptors must never pass for Amazon titles."""
        if self.item_text_kind == "derived-descriptor":
            return f"derived-descriptors ({self.item_text_note or self.item_text})"
        if not has_titles:
            return "none"
        return f"titles ({self.item_text})" if self.item_text else "titles"


class SuiteSpec(_Frozen):
    name: str
    description: str = ""
    datasets: tuple[DatasetSpec, ...]
    preprocess: Preprocess = Preprocess()
    protocol: Protocol = Protocol()
    evaluation: Evaluation = Evaluation()
    hashes: dict[str, dict[str, str]] = Field(default_factory=dict)
    extends: str | None = None  # the suite this one was declared against (its file's ``extends`` key)
    path: str = Field("", exclude=True)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return _safe(v, "suite name")

    @field_validator("datasets")
    @classmethod
    def _check_datasets(cls, v: tuple[DatasetSpec, ...]) -> tuple[DatasetSpec, ...]:
        if not v:
            raise ValueError("a suite needs at least one [[datasets]] entry")
        names = [d.name for d in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"dataset names {dup} appear more than once")
        return v

    @model_validator(mode="after")
    def _check_cutoffs_fit(self) -> "SuiteSpec":
        if self.protocol.candidates != "full":
            n = self.protocol.n_negatives + 1
            bad = [k for k in self.evaluation.cutoffs if k > n]
            if bad:
                raise ValueError(f"evaluation.cutoffs {bad} exceed the {n} candidates per user "
                                 f"(protocol.n_negatives = {self.protocol.n_negatives} plus the target)")
        unknown = set(self.hashes) - {d.name for d in self.datasets}
        if unknown:
            raise ValueError(f"hashes for {sorted(unknown)}, which are not datasets of this suite")
        return self

    def dataset(self, name: str) -> DatasetSpec:
        for d in self.datasets:
            if d.name == name:
                return d
        names = [d.name for d in self.datasets]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownName(f"suite {self.name!r} has no dataset {name!r}.{hint} Datasets: {', '.join(names)}.")

    def select(self, datasets: str | list[str] | None) -> list[DatasetSpec]:
        """``"beauty,toys"`` or a list -> specs; ``None`` -> all datasets of the suite."""
        if not datasets:
            return list(self.datasets)
        if isinstance(datasets, str):
            datasets = [d.strip() for d in datasets.split(",") if d.strip()]
        return [self.dataset(d) for d in datasets]

    def build_spec(self, dataset: str) -> dict[str, dict]:
        """The fields that determine one dataset's artifacts (its source, preprocessing, split and candidate
        protocol), as recorded in its build: a later edit of any of them must not meet the old artifacts silently."""
        return {"datasets": self.dataset(dataset).model_dump(exclude={"item_text_note"}),
                "preprocess": self.preprocess.model_dump(), "protocol": self.protocol.model_dump()}

    def build_spec_drift(self, dataset: str, recorded: dict[str, dict]) -> list[str]:
        """``section.field: built with X, the spec now says Y`` for each field that differs from a build's record. A
        field the record lacks (added to the spec format later) counts as changed only if it is not at its default."""
        sections = {"datasets": DatasetSpec, "preprocess": Preprocess, "protocol": Protocol}
        out = []
        for section, now in self.build_spec(dataset).items():
            then = recorded.get(section, {})
            for key, value in now.items():
                if key in then:
                    if then[key] != value:
                        out.append(f"{section}.{key}: built with {then[key]!r}, the spec now says {value!r}")
                elif value != sections[section].model_fields[key].default:
                    out.append(f"{section}.{key}: not in the build record, the spec now says {value!r}")
        return out

    def protocol_fingerprint(self, dataset: str, artifact_hashes: dict[str, str] | None = None) -> str:
        """Hash of what one dataset's evaluation consumed: the sha256 of every artifact (sequences, items, split,
        evaluation users, candidates), which already encode preprocessing, split and candidate protocol. Two runs
        are comparable only when this agrees. Content-based on purpose: a new spec field with a default, or a
        reworded description, does not make stored runs incomparable."""
        hashes = artifact_hashes if artifact_hashes is not None else self.hashes.get(dataset, {})
        payload = {"suite": self.name, "dataset": dataset, "artifacts": dict(sorted(hashes.items()))}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def suite_files(directory: Path = SUITES_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.glob("*.toml"))}


#: Keys a suite never inherits from the suite it extends: its identity and its own frozen artifact hashes.
NOT_INHERITED = ("name", "description", "hashes", "extends")


def _merged(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: tables merge key by key, everything else (arrays included) replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve_extends(raw: dict, path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A suite file with ``extends = "other"`` declares only what differs from ``other.toml`` beside it (e.g. the
    lite and full-ranking suites differ from amazon4 in one protocol field); the rest, datasets included, is
    inherited. The result is the spec as if written out in full, so hashes and fingerprints do not change."""
    parent_name = raw.get("extends")
    if parent_name is None:
        return raw
    if not isinstance(parent_name, str):
        raise BenchError(f"{path}: field extends: expected a suite name, got {parent_name!r}")
    try:
        check_safe_name(parent_name, "extends")
    except BenchError as exc:
        raise BenchError(f"{path}: field {exc}") from None
    parent_path = path.with_name(f"{parent_name}.toml")
    if parent_path.resolve() in {p.resolve() for p in (*chain, path)}:
        raise BenchError(f"{path}: field extends: {parent_name!r} extends back to this file (a cycle)")
    if len(chain) + 1 >= MAX_EXTENDS:
        raise BenchError(f"{path}: field extends: a chain of more than {MAX_EXTENDS} suites; flatten it")
    if not parent_path.is_file():
        raise BenchError(f"{path}: field extends: no suite file {parent_path.name} beside it")
    parent = _resolve_extends(_read_toml(parent_path), parent_path, (*chain, path))
    inherited = {k: v for k, v in parent.items() if k not in NOT_INHERITED}
    return _merged(inherited, raw)


def load_suite_file(path: Path) -> SuiteSpec:
    raw = _resolve_extends(_read_toml(path), path)
    try:
        spec = SuiteSpec(**raw, path=str(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        # a check across fields (a model validator) has no single field: its message names them
        raise BenchError(f"{path}: field {loc}: {msg}" if loc else f"{path}: {msg}") from None
    if spec.name != path.stem:
        raise BenchError(f"{path}: name {spec.name!r} must equal the file name {path.stem!r}")
    return spec


#: The longest ``extends`` chain and the largest suite file read (a suite is a few kB; bounds keep a hostile file
#: from exhausting the stack or the memory).
MAX_EXTENDS = 16
MAX_SUITE_BYTES = 1 << 20


def _read_toml(path: Path) -> dict:
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        raise BenchError(f"suite file {path} does not exist") from None
    except OSError as exc:
        raise BenchError(f"suite file {path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise BenchError(f"suite file {path} is a folder, not a TOML file")
    if not stat.S_ISREG(st.st_mode):
        raise BenchError(f"suite file {path} is not a regular file (a FIFO, device or socket); refusing to read it")
    if st.st_size > MAX_SUITE_BYTES:
        raise BenchError(f"suite file {path} is {st.st_size:,} bytes; a suite file is at most {MAX_SUITE_BYTES:,}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise BenchError(f"{path}: invalid TOML: nested too deeply") from None
    except FileNotFoundError:
        raise BenchError(f"suite file {path} does not exist") from None
    except IsADirectoryError:
        raise BenchError(f"suite file {path} is a folder, not a TOML file") from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not a UTF-8 text file (byte {exc.start}); a suite is a TOML file") from None
    except OSError as exc:
        raise BenchError(f"suite file {path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: invalid TOML: {exc}") from None


def load_suite(name_or_path: str) -> SuiteSpec:
    """A suite by name (``mmsr_bench/suites/specs/<name>.toml``) or by path to a TOML file."""
    p = Path(name_or_path)
    try:
        is_file = p.suffix == ".toml" and p.exists()
    except OSError as exc:  # a name too long for the file system, and the like
        raise BenchError(f"suite {str(name_or_path)[:80]!r}…: not a usable path ({exc.strerror})") from None
    if is_file:
        return load_suite_file(p)
    files = suite_files()
    if name_or_path not in files:
        close = difflib.get_close_matches(name_or_path, list(files), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownName(f"unknown suite {name_or_path!r}.{hint} Known suites: {', '.join(files)}.")
    return load_suite_file(files[name_or_path])


def write_hashes(spec: SuiteSpec, dataset: str, hashes: dict[str, str]) -> Path:
    """Write one dataset's artifact hashes into the spec file, preserving its layout (a reviewable diff)."""
    path = Path(spec.path)
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    if "hashes" not in doc:
        doc.add(tomlkit.nl())
        doc["hashes"] = tomlkit.table(is_super_table=True)
    table = tomlkit.table()
    for key in sorted(hashes):
        table[key] = hashes[key]
    doc["hashes"][dataset] = table
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return path
