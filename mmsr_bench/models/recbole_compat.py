"""Every shim RecBole 1.2.1 needs on this stack (numpy 2, torch 2.14, a CLI host process), in one place.

Import this module before any ``recbole`` module. Each shim below carries one comment saying what breaks
without it. Nothing here patches RecBole source files; the shims are subclasses, a logging filter and one
scoped replacement of a module-level function. ``recbole.quick_start`` is never imported: it imports ``ray``
(``from ray import tune``), which fails on this stack and is not needed to train a model.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import yaml

from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)

#: numpy 2 removed these aliases; RecBole's ``Config.compatibility_settings`` dereferences ``np.float_``,
#: ``np.complex_`` and ``np.unicode_`` (AttributeError on every Config), and ``recbole.evaluator.metrics`` /
#: ``recbole.model.layers`` use ``np.float`` / ``np.long`` at call time. Values are the numpy 2 spellings.
_LEGACY_NUMPY_ALIASES: dict[str, Any] = {
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float64,
    "complex": np.complex128,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.str_,
}


def _add_numpy_aliases() -> None:
    """Add only the aliases numpy lacks (never overwrite a name numpy 2 still defines, e.g. ``np.bool``)."""
    for name, value in _LEGACY_NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


import recbole  # noqa: E402  (after the helpers above; importing recbole itself touches no removed alias)
import recbole.trainer.trainer as _recbole_trainer_module  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402

_RECBOLE_DIR = str(Path(recbole.__file__).resolve().parent)


class _SafeYamlLoader(yaml.SafeLoader):
    """SafeLoader plus RecBole's float resolver (so ``1e-12`` in its property files stays a float)."""


# RecBole parses its own property files with ``yaml.FullLoader`` and adds a resolver to that *global* class on
# every Config; a private SafeLoader subclass gives the same values without widening or mutating PyYAML's loaders.
_SafeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class SafeConfig(Config):
    """RecBole's Config without its process-wide side effects and without ``eval``.

    Pass every setting through ``config_dict``; the extra key ``device`` ("cpu", "cuda", "cuda:1") picks the
    torch device.
    """

    def compatibility_settings(self) -> None:
        # numpy 2: RecBole's version reads np.float_/np.complex_/np.unicode_, which no longer exist.
        _add_numpy_aliases()

    def _build_yaml_loader(self):  # type: ignore[override]
        # PyYAML: never FullLoader, and never mutate yaml.FullLoader globally (see _SafeYamlLoader).
        return _SafeYamlLoader

    def _convert_config_dict(self, config_dict: dict) -> dict:
        # RecBole calls eval() on every string value; literal_eval keeps "[1, 2]" -> list without running code.
        for key, param in list(config_dict.items()):
            if not isinstance(param, str):
                continue
            try:
                config_dict[key] = ast.literal_eval(param)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                low = param.lower()
                config_dict[key] = True if low == "true" else False if low == "false" else param
        return config_dict

    def _load_cmd_line(self) -> dict:
        # RecBole reads (and evals) the host process's sys.argv: pytest or `bench --x=y` flags would leak in.
        return {}

    def _init_device(self) -> None:
        # RecBole overwrites os.environ["CUDA_VISIBLE_DEVICES"] with gpu_id ("0"), which silently re-targets
        # the whole process; take the device from the adapter instead and leave the environment alone.
        cfg = self.final_config_dict
        cfg["gpu_id"] = str(cfg.get("gpu_id", ""))
        requested = str(cfg.get("device") or "cpu")
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise BenchError(f"RecBole config field 'device': cannot use {requested!r} ({exc})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BenchError(f"device {requested!r} requested but CUDA is not available; use --device cpu")
        cfg["single_spec"] = True
        cfg["local_rank"] = 0
        cfg["device"] = device
        cfg["use_gpu"] = device.type == "cuda"


class _NullSummaryWriter:
    """Accepts the SummaryWriter calls the Trainer makes and writes nothing."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        return None

    def add_hparams(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


@contextlib.contextmanager
def _no_tensorboard() -> Iterator[None]:
    """Scoped: while a Trainer is constructed, its ``get_tensorboard`` returns a writer that writes nothing."""
    original = _recbole_trainer_module.get_tensorboard
    # Trainer.__init__ creates a SummaryWriter under ./log_tensorboard in the *current directory* (the repo).
    _recbole_trainer_module.get_tensorboard = lambda logger: _NullSummaryWriter()
    try:
        yield
    finally:
        _recbole_trainer_module.get_tensorboard = original


class InMemoryTrainer(Trainer):
    """RecBole's Trainer whose checkpoints live in memory, with no tensorboard and no files in the cwd.

    ``config["checkpoint_dir"]`` must point to a scratch directory (Trainer.__init__ creates it).
    """

    def __init__(self, config: Config, model: torch.nn.Module) -> None:
        if not os.path.isabs(str(config["checkpoint_dir"])):
            raise BenchError("RecBole checkpoint_dir must be an absolute scratch path (nothing goes into the cwd)")
        with _no_tensorboard():
            super().__init__(config, model)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None

    def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
        # torch>=2.6 refuses RecBole's pickled checkpoints on torch.load (weights_only); keep the best weights
        # in memory instead of writing and re-reading a file (a pickle-enabled torch.load is never used).
        self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.best_epoch = epoch

    def load_best(self) -> None:
        """Restore the in-memory best weights (no file round trip)."""
        if self.best_state is not None:
            self.model.load_state_dict(copy.deepcopy(self.best_state))

    def resume_checkpoint(self, resume_file: Any) -> None:
        # RecBole's resume uses torch.load on a pickle (config object included); refuse instead of unpickling.
        raise BenchError("resuming RecBole checkpoints is disabled: they are pickles (see mmsr_bench.models.recbole_compat)")

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):  # type: ignore[override]
        # torch 2.x: RecBole builds torch.cuda.amp.GradScaler every epoch, a FutureWarning each time on CPU too.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.cuda\.amp.*")
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*GradScaler.*")
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=False)


@contextlib.contextmanager
def dataset_warnings_silenced() -> Iterator[None]:
    """Scoped: silence two warnings RecBole's Dataset raises on pandas 3 / torch 2 for every dataset."""
    import pandas as pd

    with warnings.catch_warnings():
        # pandas 3 (copy-on-write): RecBole's _fill_nan calls ``df[col].fillna(..., inplace=True)``, now a no-op
        # that warns. Harmless here: the adapters write atomic files without missing values (checked there).
        warnings.filterwarnings("ignore", category=getattr(pd.errors, "ChainedAssignmentError", FutureWarning))
        # torch 2 + pandas 3: RecBole wraps read-only DataFrame buffers with torch.LongTensor(values) and torch
        # warns about non-writable arrays; RecBole only reads those tensors (augmentation writes to new ones).
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*NumPy array is not writable.*")
        yield


class _QuietRecBoleRecords(logging.Filter):
    """Drop RecBole's own INFO/DEBUG records; keep its warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(_RECBOLE_DIR)


_quiet_filter = _QuietRecBoleRecords()
# RecBole logs dataset summaries and per-epoch lines straight to the *root* logger (getLogger()); a root-logger
# filter keyed on RecBole's source path silences exactly those and nothing logged by other libraries.
if not any(isinstance(f, _QuietRecBoleRecords) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_quiet_filter)

_add_numpy_aliases()  # numpy 2: for RecBole modules that touch the aliases before any Config is built.


class HarnessTrainer(InMemoryTrainer):
    """RecBole's Trainer that can never run RecBole's evaluator: validation belongs to the harness."""

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D401
        raise BenchError("RecBole's evaluator is disabled in mmsr-bench; validation uses mmsr_bench.evaluation.metrics")
