"""Which epoch or step a trained run kept, read in one schema from every shape stored runs have.

Every training loop now writes one record, ``run_info["selection"]``
(:func:`mmsr_bench.evaluation.training.selection_record`: ``{split, metric, value, unit, chosen, last, stopped_by,
n_validations}``). Runs stored before it keep the keys that grew per family (RecBole: ``valid_curve`` and a
0-based ``best_epoch``; GPTRec: ``history`` and a 1-based ``best_epoch``; MMSR/MMGCN: ``best_epoch`` with
``best_valid`` as a dict; the LLM loop: ``best_step`` and ``best_valid_auc``), and :func:`selection` maps each of
them to the same :class:`Selection`, so stored runs keep reading whatever their age. It also tells whether the run
**converged**: a run whose best validation is its last one while it stopped at its budget (epoch or pair cap) or
deadline was still improving; it is flagged ``not converged`` wherever runs are listed, because its number is a
lower bound of what the model does with more training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from mmsr_bench.evaluation.training import STOPPED_BY

#: The footnote mark tables put after a model trained past no optimum (and the note that explains it).
NOT_CONVERGED_MARK = "*"


@dataclass(frozen=True)
class Selection:
    """The validation choice of one trained run. ``chosen`` and ``last`` count from 1 in ``unit`` (epochs or
    optimizer steps); ``stopped_by``: ``patience`` (early stopping), ``budget`` (the epoch or step cap) or
    ``deadline`` (a time limit)."""

    split: str
    metric: str
    value: float | None
    unit: str
    chosen: int | None
    last: int | None
    stopped_by: str
    n_validations: int

    @property
    def converged(self) -> bool | None:
        """False when the run stopped at its budget or deadline with its best validation the last one (still
        improving); True when patience stopped it or the best came before the end; None with fewer than two
        validations (no curve to judge)."""
        if self.n_validations < 2 or self.chosen is None or self.last is None:
            return None
        if self.stopped_by == "patience":
            return True
        return self.chosen < self.last

    @property
    def status(self) -> str:
        return {True: "converged", False: "not converged", None: "one validation"}[self.converged]

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "metric": self.metric, "value": self.value, "unit": self.unit,
                "chosen": self.chosen, "last": self.last, "stopped_by": self.stopped_by,
                "n_validations": self.n_validations, "converged": self.converged}


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def selection(run_info: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> Selection | None:
    """The run's validation choice, or None for a model without a training loop (pop, random, frozen encoders)."""
    info, cfg = run_info or {}, config or {}
    split = str(info.get("early_stopping_split") or "valid")
    if isinstance(info.get("selection"), Mapping):  # the record every loop writes (evaluation.training.selection_record)
        s = info["selection"]
        return Selection(s.get("split", split), s.get("metric", ""), _finite(s.get("value")), s.get("unit", "epoch"),
                         s.get("chosen"), s.get("last"), STOPPED_BY.get(s.get("stopped_by"), "budget"),
                         int(s.get("n_validations", 0)))
    if "valid_curve" in info:  # RecBole: [[epoch (0-based), loss, value], ...], best_epoch 0-based
        curve = info.get("valid_curve") or []
        best = info.get("best_epoch")
        metric = str(info.get("valid_metric") or cfg.get("valid_metric") or "")
        return Selection(split, metric, _finite(info.get("best_valid")), "epoch",
                         None if best is None else int(best) + 1, int(curve[-1][0]) + 1 if curve else None,
                         STOPPED_BY.get(info.get("stopped_by"), "budget"), len(curve))
    if "best_step" in info:  # the LLM fine-tuning loop: steps, validations in history
        hist = [h for h in info.get("history") or [] if isinstance(h, Mapping)]
        best, chosen_at = info.get("best_step"), None
        if best is not None:
            chosen_at = int(best)
        after = sum(1 for h in hist if best is not None and h.get("step", 0) > best)
        patience = int(cfg.get("patience") or 0)
        stopped = STOPPED_BY.get(info.get("stopped_by"), "patience" if patience and after >= patience else "budget")
        return Selection(split, str(info.get("valid_metric") or "auc"), _finite(info.get("best_valid_auc")), "step",
                         chosen_at, int(hist[-1]["step"]) if hist else None, stopped, len(hist))
    if "best_epoch" in info and "epochs_run" in info:  # harness loop (GPTRec, MMSR, MMGCN): 1-based epochs
        best_valid = info.get("best_valid")
        metric = str(info.get("valid_metric") or cfg.get("valid_metric") or "")
        if isinstance(best_valid, Mapping):
            metric, best_valid = next(iter(best_valid.items()), (metric, None))
        hist = info.get("history")
        epochs_run = int(info["epochs_run"])
        cap = cfg.get("epochs")
        if hist:
            n_val, last = len(hist), int(hist[-1]["epoch"])
        else:  # validated after every epoch (the feature adapters' loop)
            n_val, last = epochs_run, epochs_run
        stopped = "budget" if cap is None or epochs_run >= int(cap) else "patience"
        best = info.get("best_epoch")
        return Selection(split, metric, _finite(best_valid), "epoch", None if best is None else int(best), last,
                         stopped, n_val)
    return None


def convergence_of(run: Any) -> Selection | None:
    """:func:`selection` of a stored run (its ``run_info`` and ``config``); None when either cannot be read."""
    try:
        return selection(run.run_info, run.config)
    except Exception:  # noqa: BLE001 - a damaged record is `bench store check`'s business, not a listing's
        return None
