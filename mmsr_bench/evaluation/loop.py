"""The one training loop the harness owns (as RecBole's ``Trainer.fit`` does), for every trained family: units
(epochs of SASRec, BERT4Rec, GPTRec, MMGCN, MMSR; optimizer steps of the LoRA fine-tuning of TALLRec and
MLLM-SRec), validation every ``eval_every`` units with early stopping on a named validation metric, a deadline,
resume points that survive the process, and one selection record. Why one loop: the rules that choose the reported
epoch or step (which split, which metric, what counts as an improvement, what a deadline does, where a killed fit
continues) must be the same for every model, and written once.

A family supplies ``step(n) -> loss`` (train unit ``n``, counted from 1, and leave the model ready to score) and a
validation; :func:`train_loop` runs the rest. :func:`fit_epochs` is the same loop with the epoch unit and a
:class:`~mmsr_bench.evaluation.training.Validator`.

A resume point (:class:`ResumePoint`) keeps the weights that train, the optimizer's state, the best state so far,
torch's, numpy's and Python's global generators, every generator the family names (:class:`Resumable`) and the
loop's position, written atomically as safetensors plus JSON after every validation and every ``save_every`` units.
A fit started again with the same fingerprint continues from it and ends in the same weights as an uninterrupted
one (tests/test_training.py, tests/test_backbones.py); it is removed once the loop completes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.training import EarlyStopping, Validator, report_validation, selection_record
from mmsr_bench.progress import track

log = logging.getLogger(__name__)

UNITS = ("epoch", "step")


# ------------------------------------------------------------------------------------------ resume points
@dataclass
class Resumable:
    """What a resume point keeps besides the loop's position: the weights that train (``state()`` name -> tensor,
    loaded back by ``load_state``), the optimizer, and every generator the training steps draw from, by name
    (``numpy.random.Generator`` or ``torch.Generator``); ``extra()``/``load_extra`` carry JSON-able state a family
    accumulates across units (MMSR's gate history)."""

    state: Callable[[], dict[str, Any]]
    load_state: Callable[[dict[str, Any]], None]
    optimizer: Any = None
    generators: Mapping[str, Any] = field(default_factory=dict)
    extra: Callable[[], dict[str, Any]] | None = None
    load_extra: Callable[[dict[str, Any]], None] | None = None

    @classmethod
    def of_module(cls, module: Any, optimizer: Any = None, generators: Mapping[str, Any] | None = None,
                  **kw: Any) -> "Resumable":
        """Every state tensor of a torch module (its ``state_dict``)."""
        return cls(lambda: {k: v.detach() for k, v in module.state_dict().items()}, module.load_state_dict,
                   optimizer, dict(generators or {}), **kw)


def _generator_states(gens: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, JSON) of the named generators and of torch's, numpy's and Python's global ones."""
    import torch

    tensors: dict[str, Any] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from its own generators
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    legacy = np.random.get_state()
    py = random.getstate()
    js: dict[str, Any] = {"numpy_global": [legacy[0], np.asarray(legacy[1]).tolist(), *map(_plain, legacy[2:])],
                          "python": [py[0], list(py[1]), py[2]], "named": {}}
    for name, g in gens.items():
        if isinstance(g, np.random.Generator):
            js["named"][name] = g.bit_generator.state
        else:
            tensors[f"gen.{name}"] = g.get_state()
    return tensors, js


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _restore_generators(gens: Mapping[str, Any], tensors: Mapping[str, Any], js: Mapping[str, Any]) -> None:
    import torch

    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    if "numpy_global" in js:  # resume points of the LLM loop written before 2026-12-07 (session 12) have none
        name, keys, *rest = js["numpy_global"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        version, internal, gauss = js["python"]
        random.setstate((version, tuple(internal), gauss))
    for name, g in gens.items():
        if isinstance(g, np.random.Generator):
            g.bit_generator.state = js["named"][name]
        else:
            g.set_state(tensors[f"gen.{name}"])


class ResumePoint:
    """The training state at one point of :func:`train_loop`, in ``folder`` (safetensors + ``position.json``,
    written atomically). ``fingerprint`` is what a later fit must match to continue from it (settings, data, the
    trained tensors' names): a point of another configuration is ignored with a warning, never loaded."""

    def __init__(self, folder: str | Path, fingerprint: str, parts: Resumable) -> None:
        self.folder, self.fingerprint, self.parts = Path(folder), fingerprint, parts

    def save(self, best_state: dict | None, position: dict) -> None:
        import torch
        from safetensors.torch import save_file

        # copies: tied weights (GPT-2's embedding and head) share storage, which safetensors refuses to write
        tensors = {f"param.{n}": t.detach().cpu().clone() for n, t in self.parts.state().items()}
        for n, t in (best_state or {}).items():
            tensors[f"best.{n}"] = t.contiguous().cpu()
        meta: dict[str, Any] = {"fingerprint": self.fingerprint, "position": position, "has_best": best_state is not None}
        if self.parts.optimizer is not None:
            opt_state = self.parts.optimizer.state_dict()
            scalars: dict[str, dict] = {}
            for idx, st in opt_state["state"].items():
                for key, val in st.items():
                    if torch.is_tensor(val):
                        tensors[f"opt.{idx}.{key}"] = val.contiguous().cpu()
                    else:
                        scalars.setdefault(str(idx), {})[key] = val
            meta.update(param_groups=opt_state["param_groups"], opt_scalars=scalars)
        gen_tensors, meta["generators"] = _generator_states(self.parts.generators)
        tensors.update(gen_tensors)
        if self.parts.extra is not None:
            meta["extra"] = self.parts.extra()
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "position.json").write_text(json.dumps(meta))
        shutil.rmtree(self.folder, ignore_errors=True)
        tmp.rename(self.folder)

    def load(self) -> tuple[dict, dict | None] | None:
        """(position, best_state) with the weights, optimizer and generators restored; None when there is no
        usable point (none, unreadable, or of another fingerprint)."""
        from safetensors.torch import load_file

        try:
            meta = json.loads((self.folder / "position.json").read_text())
            tensors = load_file(str(self.folder / "state.safetensors"))
        except (OSError, ValueError) as exc:
            if self.folder.exists():
                log.warning("%s: unreadable resume point (%s); training from the start", self.folder, exc)
            return None
        if meta.get("fingerprint") != self.fingerprint:
            log.warning("%s: resume point of another configuration or data; training from the start", self.folder)
            return None
        self.parts.load_state({k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")})
        if self.parts.optimizer is not None:
            state: dict = {}
            for key, val in tensors.items():
                if key.startswith("opt."):
                    _, idx, name = key.split(".", 2)
                    state.setdefault(int(idx), {})[name] = val
            for idx, scal in meta["opt_scalars"].items():
                state.setdefault(int(idx), {}).update(scal)
            self.parts.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        _restore_generators(self.parts.generators, tensors, meta.get("generators", {}))
        if self.parts.load_extra is not None and "extra" in meta:
            self.parts.load_extra(meta["extra"])
        best = ({k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
                if meta["has_best"] else None)
        return _position(meta["position"]), best

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _position(pos: dict) -> dict:
    """A stored loop position; the LLM loop's resume points written before the loops became one name the same
    facts otherwise (steps, best_auc, best_step)."""
    if "done" in pos:
        return pos
    return {"unit": "step", "done": pos["steps"], "bad": pos["bad"], "best": pos["best_auc"],
            "chosen": pos["best_step"], "history": pos["history"], "losses": pos["losses"], "unit_seconds": []}


@contextlib.contextmanager
def fit_lock(folder: str | Path) -> Iterator[None]:
    """An exclusive lock beside ``folder``, held while one process fits into it (Linux/macOS ``flock``): the shards
    of one cell, started together, never write the same resume point or kept fit at once."""
    import fcntl

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------ the loop
@dataclass
class LoopResult:
    """What the loop did, in ``unit`` (epoch or step) counted from 1. ``history`` holds one row per validation:
    ``{<unit>: n, "loss": mean training loss since the previous validation, <metric>: value, "valid_seconds",
    "elapsed_seconds"}`` plus the family's own fields; ``losses`` and ``unit_seconds`` one entry per unit trained."""

    metric: str
    split: str
    unit: str = "epoch"
    best_value: float = -math.inf
    chosen: int | None = None
    done: int = 0
    stopped_by: str = "budget"  # budget | patience | deadline
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    unit_seconds: list[float] = field(default_factory=list)
    resumed_at: int = 0  # the unit a resume point gave back (0: trained from the start)

    def selection_record(self) -> dict[str, Any]:
        """The kept unit in the one schema of every trained family (:func:`selection_record`)."""
        return selection_record(split=self.split, metric=self.metric, value=self.best_value, unit=self.unit,
                                chosen=self.chosen, last=int(self.history[-1][self.unit]) if self.history else None,
                                stopped_by=self.stopped_by, n_validations=len(self.history))

    def position(self, stopper: EarlyStopping) -> dict[str, Any]:
        return {"unit": self.unit, "done": self.done, "bad": stopper.bad,
                "best": stopper.best if math.isfinite(stopper.best) else None, "chosen": stopper.best_epoch,
                "history": self.history, "losses": self.losses, "unit_seconds": self.unit_seconds}


def train_loop(step: Callable[[int], float], validate: Callable[[], float] | None, stopper: EarlyStopping, *,
               unit: str, total: int, metric: str, split: str, eval_every: int = 1, validate_last: bool = True,
               save_every: int = 1, deadline: float | None = None, resume: ResumePoint | None = None,
               row_extra: Callable[[int], dict[str, Any]] | None = None,
               on_improve: Callable[[int], None] | None = None, description: str = "training",
               log_level: int = logging.INFO) -> LoopResult:
    """Run ``step(n)`` for units ``n = 1..total``; validate after every ``eval_every`` units (and after the last
    one when ``validate_last``); stop once ``stopper.patience`` validations in a row did not improve, or once
    ``time.perf_counter()`` passes ``deadline`` (validating that state too, so it is a candidate); restore the best
    state at the end. Without ``validate`` every unit trains and the last state stays.

    With ``resume``, the loop starts from its point when one of the same fingerprint exists, writes one after every
    validation and every ``save_every`` units, and removes it on completion. ``on_improve(n)`` runs after each
    improving validation (the LLM loop writes its adapter checkpoint there)."""
    if unit not in UNITS:
        raise BenchError(f"training loop: unit {unit!r} is neither epoch nor step")
    result = LoopResult(metric, split, unit)
    if resume is not None:
        loaded = resume.load()
        if loaded is not None:
            pos, stopper.state = loaded
            result.done = result.resumed_at = int(pos["done"])
            result.history, result.losses = list(pos["history"]), list(pos["losses"])
            result.unit_seconds = list(pos.get("unit_seconds") or [])
            stopper.bad, stopper.best_epoch = int(pos["bad"]), pos["chosen"]
            stopper.best = -math.inf if pos["best"] is None else float(pos["best"])
            log.info("%s: resuming after %s %d from %s", description, unit, result.done, resume.folder)
    t0 = time.perf_counter()
    last_validated = result.history[-1][unit] if result.history else 0

    def run_validation(n: int) -> bool:
        """Validate the state after unit ``n`` and keep it if it is the best; True when it improved."""
        nonlocal last_validated
        tv = time.perf_counter()
        value = float(validate())  # type: ignore[misc]
        since = result.losses[last_validated:n]
        row = {unit: n, "loss": float(np.mean(since)) if since else float("nan"), metric: value,
               "valid_seconds": round(time.perf_counter() - tv, 2), "elapsed_seconds": round(time.perf_counter() - t0, 2)}
        result.history.append({**row, **(row_extra(n) if row_extra else {})})
        last_validated = n
        improved = stopper.update(value, n)
        log.log(log_level, "%s %s %d: loss %.4f, valid %s %.5f%s", description, unit, n, row["loss"], metric, value,
                " *" if improved else "")
        if improved and on_improve is not None:
            on_improve(n)
        try:
            report_validation(n, value)
        except Exception:  # a tuner stopped this fit on purpose (pruning): nothing to resume
            if resume is not None:
                resume.clear()
            raise
        return improved

    with track(description + (f" from {unit} {result.done}" if result.done else ""),
               total=max(total - result.done, 0)) as task:
        while result.done < total:
            n = result.done + 1
            tu = time.perf_counter()
            loss = float(step(n))
            result.unit_seconds.append(round(time.perf_counter() - tu, 4))
            result.losses.append(loss)
            result.done = n
            task.advance(1)
            validated = False
            if validate is not None and (n % max(1, eval_every) == 0 or (validate_last and n == total)):
                validated = True
                if not run_validation(n) and stopper.should_stop:
                    result.stopped_by = "patience"
                    break
            if resume is not None and n < total and (validated or n % max(1, save_every) == 0):
                resume.save(stopper.state, result.position(stopper))
            if deadline is not None and time.perf_counter() > deadline:
                result.stopped_by = "deadline"
                if validate is not None and not validated:
                    run_validation(n)  # the state at the deadline is a candidate too
                break
    if resume is not None:
        resume.clear()
    stopper.restore()
    result.best_value, result.chosen = stopper.best, stopper.best_epoch
    log.info("%s: best %s %.4f at %s %s of %d (stopped by %s)", description, metric, result.best_value, unit,
             result.chosen, result.done, result.stopped_by)
    return result


def fit_epochs(train_epoch: Callable[[int], float], validator: Validator, stopper: EarlyStopping, *,
               epochs: int, eval_every: int = 1, description: str = "training", deadline: float | None = None,
               resume: ResumePoint | None = None, log_level: int = logging.INFO) -> LoopResult:
    """:func:`train_loop` in epochs: ``train_epoch(epoch)`` for epochs ``1..epochs``, ``validator`` after every
    ``eval_every`` epochs and after the last one, a resume point after every epoch when ``resume`` is given."""
    return train_loop(train_epoch, validator, stopper, unit="epoch", total=epochs, metric=validator.metric,
                      split=validator.split.name, eval_every=eval_every, deadline=deadline, resume=resume,
                      description=description, log_level=log_level)
