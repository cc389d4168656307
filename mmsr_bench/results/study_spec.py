"""A study as data: its research questions (models, row labels, the reference each table is tested against), its
full model and which models it proposes, in a TOML file validated here. The MLLM-SRec study ships as
``mmsr_bench/results/studies/mllm-srec.toml``; ``bench study --study FILE`` runs a researcher's own study the same
way (planning, running the missing cells, ``bench report study``)."""

from __future__ import annotations

import difflib
import fnmatch
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from mmsr_bench.errors import BenchError, UnknownName

STUDIES_DIR = Path(__file__).with_name("studies")
DEFAULT_STUDY = "mllm-srec"


class RQ(BaseModel):
    """One research question: its table's models (rows, in order), their labels, and its reference:
    ``best-baseline`` (the best model the study does not propose, per dataset) or ``full`` (the study's full
    model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    title: str
    models: tuple[str, ...]
    reference: Literal["best-baseline", "full"] = "full"
    labels: dict[str, str] = {}

    @property
    def against_baseline(self) -> bool:
        return self.reference == "best-baseline"

    @field_validator("models")
    @classmethod
    def _models(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one model")
        twice = sorted({m for m in v if v.count(m) > 1})
        if twice:
            raise ValueError(f"model {twice[0]!r} is listed twice")
        return v

    @model_validator(mode="after")
    def _labels(self) -> "RQ":
        stray = sorted(set(self.labels) - set(self.models))
        if stray:
            raise ValueError(f"labels name {stray[0]!r}, which is not one of its models")
        return self


class StudySpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    full: str
    proposed: tuple[str, ...] = ()
    rq: tuple[RQ, ...]
    path: str = ""

    @model_validator(mode="after")
    def _check(self) -> "StudySpec":
        keys = [r.key for r in self.rq]
        if not keys:
            raise ValueError("give at least one [[rq]]")
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"research question key {twice[0]!r} is used twice")
        if any(r.reference == "full" for r in self.rq) and not any(self.full in r.models for r in self.rq):
            raise ValueError(f"full = {self.full!r} is in no research question, but a table is tested against it")
        return self

    @property
    def rqs(self) -> dict[str, RQ]:
        return {r.key: r for r in self.rq}

    def is_proposed(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, g) for g in self.proposed)

    def grid_models(self, keys: list[str] | None = None) -> list[str]:
        """The study's models, in first-appearance order over the research questions (``keys``: only those)."""
        out: list[str] = []
        for key in keys or list(self.rqs):
            out += [m for m in self.rqs[key].models if m not in out]
        return out


def study_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(STUDIES_DIR.glob("*.toml"))}


def load_study(name_or_path: str | None = None) -> StudySpec:
    """A study by name (``mmsr_bench/results/studies/<name>.toml``) or by path to a TOML file; one error line naming
    the file and the field on bad input, and every model checked against the model catalog."""
    name_or_path = name_or_path or DEFAULT_STUDY
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        path = p
    else:
        files = study_files()
        if name_or_path not in files:
            close = difflib.get_close_matches(name_or_path, list(files), n=3, cutoff=0.4)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UnknownName(f"--study {name_or_path!r}: no such study file or shipped study.{hint} Shipped: "
                              f"{', '.join(files)}.")
        path = files[name_or_path]
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"--study {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"--study {path}: not valid TOML ({exc})") from None
    try:
        spec = StudySpec(**doc, path=str(path))
    except TypeError as exc:
        raise BenchError(f"--study {path}: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise BenchError(f"--study {path}: {where or 'the file'}: {msg}") from None
    from mmsr_bench.models.adapter import catalog, registry

    known = set(catalog())
    for r in spec.rq:
        for m in r.models:
            if m not in known and m not in registry():
                close = difflib.get_close_matches(m, sorted(known), n=3)
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                raise BenchError(f"--study {path}: rq {r.key!r}: unknown model {m!r}.{hint}")
    return spec
