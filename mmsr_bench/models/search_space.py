"""Hyper-parameter search spaces: declared once, on each adapter's config class (``search_space``), read by
``bench tune`` and shown by ``bench models NAME``; a researcher's ``--space FILE.toml`` replaces them.

A space maps config fields to one of three kinds of range. The value type comes from the field itself (an ``int``
field gets integers, a ``float`` field floats), so a space cannot disagree with the config it tunes:

- :class:`Range` ``low..high`` (``log`` for a log scale, ``step`` for a grid of integers or floats);
- :class:`Choice` a list of values (any type the field parses, e.g. ``"relu"``).

The space file format (TOML), one table per model, one inline table per field::

    [sasrec]
    learning_rate = { low = 1e-4, high = 1e-2, log = true }
    hidden_size = { choices = [32, 64, 128] }
    n_layers = { low = 1, high = 3 }

No optimizer is imported here: :mod:`mmsr_bench.runner.tune` turns a space into Optuna distributions.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mmsr_bench.errors import BenchError


@dataclass(frozen=True)
class Range:
    """Numbers between ``low`` and ``high`` (both included), on a log scale with ``log``, or on a grid of ``step``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def describe(self) -> str:
        grid = f" step {self.step:g}" if self.step else ""
        return f"{self.low:g} .. {self.high:g}" + (" (log)" if self.log else "") + grid

    def grid_values(self, is_int: bool) -> list:
        """The values a grid search tries: the ``step`` grid, else (no step) low, the geometric or arithmetic
        middle, and high."""
        if self.step:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            vals = [self.low + i * self.step for i in range(n)]
        elif self.log:
            vals = [self.low, math.sqrt(self.low * self.high), self.high]
        else:
            vals = [self.low, (self.low + self.high) / 2, self.high]
        return sorted({int(round(v)) if is_int else float(v) for v in vals})


@dataclass(frozen=True)
class Choice:
    """One of ``choices``."""

    choices: tuple

    def describe(self) -> str:
        return "{" + ", ".join(str(c) for c in self.choices) + "}"


Param = Range | Choice
SearchSpace = Mapping[str, Param]


def field_kind(config_cls: type, name: str) -> str:
    """``"int"``, ``"float"`` or ``"other"``: the type a field's sampled values take."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is "other"
        hints = {}
    typ = hints.get(name)
    if typ is bool:
        return "other"
    if typ is int:
        return "int"
    if typ is float:
        return "float"
    return "other"


def check_space(config_cls: type, space: Mapping[str, Any], where: str) -> dict[str, Param]:
    """``space`` validated against ``config_cls``: every key a field, every range numeric on a numeric field with
    ``low < high`` (``low > 0`` on a log scale), every choice list non-empty. One error line naming ``where`` and
    the key."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out: dict[str, Param] = {}
    for key, param in space.items():
        at = f"{where}: {key}"
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(key, sorted(fields), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise BenchError(f"{at}: {config_cls.__name__} has no field {key!r}.{hint}")
        kind = field_kind(config_cls, key)
        if isinstance(param, Choice):
            if not param.choices:
                raise BenchError(f"{at}: give at least one choice")
        elif isinstance(param, Range):
            if kind not in ("int", "float"):
                raise BenchError(f"{at}: a low..high range needs a numeric field; {key} is not one (use choices)")
            for name in ("low", "high", "step"):
                v = getattr(param, name)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                    raise BenchError(f"{at}: {name} = {v!r} is not a finite number")
            if not param.low < param.high:
                raise BenchError(f"{at}: low ({param.low:g}) must be below high ({param.high:g})")
            if param.log and param.low <= 0:
                raise BenchError(f"{at}: a log scale needs low > 0 (got {param.low:g})")
            if param.step is not None and (param.step <= 0 or param.log):
                raise BenchError(f"{at}: step must be > 0 and cannot be combined with log")
            if kind == "int" and any(v is not None and float(v) != int(v)
                                     for v in (param.low, param.high, param.step)):
                raise BenchError(f"{at}: {key} is an integer field; give integer low, high and step")
        else:
            raise BenchError(f"{at}: expected a Range or Choice, got {type(param).__name__}")
        out[key] = param
    return out


def declared_space(config_cls: type) -> dict[str, Param]:
    """The space the config class declares (``search_space``), checked; empty when it declares none."""
    return check_space(config_cls, getattr(config_cls, "search_space", {}) or {},
                       f"{config_cls.__name__}.search_space")


def parse_space_table(config_cls: type, table: Mapping[str, Any], where: str) -> dict[str, Param]:
    """One model's table of a space file (``{field: {low, high, log?, step?} | {choices}}``) as a checked space."""
    raw: dict[str, Param] = {}
    for key, spec in table.items():
        at = f"{where}: {key}"
        if not isinstance(spec, dict):
            raise BenchError(f"{at}: expected an inline table such as {{ low = 1e-4, high = 1e-2, log = true }} or "
                             f"{{ choices = [32, 64] }}, got {type(spec).__name__}")
        extra = set(spec) - {"low", "high", "log", "step", "choices"}
        if extra:
            raise BenchError(f"{at}: unknown key(s) {', '.join(sorted(extra))} (allowed: low, high, log, step, "
                             "choices)")
        if "choices" in spec:
            if set(spec) != {"choices"}:
                raise BenchError(f"{at}: give either choices or low/high, not both")
            if not isinstance(spec["choices"], list):
                raise BenchError(f"{at}: choices must be a list")
            raw[key] = Choice(tuple(spec["choices"]))
        else:
            if "low" not in spec or "high" not in spec:
                raise BenchError(f"{at}: give low and high (or choices)")
            if not isinstance(spec.get("log", False), bool):
                raise BenchError(f"{at}: log must be true or false")
            raw[key] = Range(spec["low"], spec["high"], spec.get("log", False), spec.get("step"))
    return check_space(config_cls, raw, where)


def load_space_file(path: Path, model: str, config_cls: type) -> dict[str, Param]:
    """The space for ``model`` from a TOML space file (its ``[model]`` table). A missing file, bad TOML, a
    missing table or a bad range is one error line naming the file and key."""
    import tomllib

    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"--space {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"--space {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"--space {path}: not valid TOML ({exc})") from None
    if model not in doc:
        raise BenchError(f"--space {path}: no [{model}] table (tables: {', '.join(doc) or 'none'})")
    if not isinstance(doc[model], dict) or not doc[model]:
        raise BenchError(f"--space {path}: [{model}] must be a non-empty table of fields")
    return parse_space_table(config_cls, doc[model], f"--space {path} [{model}]")


def space_json(space: Mapping[str, Param]) -> dict[str, dict]:
    """A space as plain JSON (stored with a tuning study; part of its identity)."""
    out = {}
    for key, p in sorted(space.items()):
        out[key] = ({"choices": list(p.choices)} if isinstance(p, Choice)
                    else {"low": p.low, "high": p.high, "log": p.log, "step": p.step})
    return out


def as_overrides(params: Mapping[str, Any]) -> dict[str, str]:
    """Sampled or tuned values as ``--set`` strings (``repr`` of a float round-trips exactly)."""
    return {k: (repr(v) if isinstance(v, float) else str(v)) for k, v in params.items()}
