"""SASRec and BERT4Rec through RecBole 1.2.1, trained by RecBole's Trainer, early-stopped by the harness.

Why this shape:
- The RecBole dataset is built from ``TrainData.sequences`` only (atomic files in a scratch directory), with the
  *position* in the sequence as RecBole's timestamp, so RecBole's time ordering and prefix augmentation reproduce
  the harness order exactly (no real timestamps exist here, and float32 would reorder long unix times anyway).
  An ``.item`` file lists every harness item so the embedding table covers all ``1..n_items``.
- Every epoch runs RecBole's ``Trainer._train_epoch`` inside the harness loop (:mod:`mmsr_bench.evaluation.training`);
  validation, early stopping and best-epoch selection use the harness validation split and metric engine, never
  RecBole's evaluator. RecBole's own ``early_stopping`` rule (ties update the best; patience counted in validation
  checks) decides when to stop, as :meth:`mmsr_bench.evaluation.training.EarlyStopping.recbole`.
- Scoring calls the model's ``full_sort_predict`` on ``item_seq``/``item_seq_len`` built from the histories
  (last ``max_seq_length`` items, left-aligned and right-padded as RecBole's datasets are) and gathers the
  harness candidates from the all-item scores.

Budget: SASRec defaults to 6 epochs with patience 2 and BERT4Rec to 5 epochs with patience 2 (CPU-sized caps;
the papers train for hundreds of epochs, one ``--set epochs=200 stopping_step=10`` away, or ``bench tune``). The
measured cost per epoch on real Amazon data, and what the caps leave on the table, are in docs/results.md ("RecBole
training budgets").
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np

from mmsr_bench.data.splits import EvalSplit, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation import metrics
from mmsr_bench.evaluation.loop import Resumable, fit_epochs
from mmsr_bench.evaluation.training import EarlyStopping, Validator, evenly_spaced, module_restore, module_snapshot
from mmsr_bench.models.adapter import Adapter, AdapterConfig, register
from mmsr_bench.models.toolkits.resume import resumable_fit
from mmsr_bench.models.search_space import Choice, Range

# torch, pandas and RecBole are imported where a model is fitted or scored (after
# mmsr_bench.models.recbole_compat, whose shims must precede every recbole import), so that importing this module
# for a configuration, its hash or the catalog imports none of them.

log = logging.getLogger(__name__)

_DATASET_NAME = "mmsr_train"  # no RecBole property file of this name exists, so none is merged in


@dataclass(frozen=True)
class RecBoleSeqConfig(AdapterConfig):
    """Shared training hyper-parameters. ``batch_size`` is the scoring batch (the runner's), ``train_batch_size``
    RecBole's training batch. ``epochs``/``stopping_step``/``eval_step`` bound the CPU budget (see module doc):
    patience ``stopping_step`` counts validation checks without improvement (RecBole's rule, ">=" updates)."""

    batch_size: int = 256
    train_batch_size: int = 128
    max_seq_length: int = 50
    n_layers: int = 2
    n_heads: int = 1
    hidden_size: int = 64
    inner_size: int = 256
    hidden_dropout_prob: float = 0.5
    attn_dropout_prob: float = 0.5
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    loss_type: str = "CE"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 6
    eval_step: int = 1
    stopping_step: int = 2
    valid_metric: str = "ndcg@10"
    #: Validate on at most this many (evenly spaced) validation users; 0 = all of them.
    valid_max_users: int = 0
    #: Stop starting new epochs after this many minutes of fitting; 0 = no limit (the default keeps runs
    #: reproducible across machines). Recorded in run_info["selection"]["stopped_by"].
    max_train_minutes: float = 0.0
    #: torch intra-op threads for fit/score; 0 leaves torch's default (all cores). Default 1: CPU reductions are
    #: split by thread, so the numbers depend on the thread count (synth4/beauty NDCG@10 0.3201 with 1 thread,
    #: 0.3190 with 2; docs/history/results-2026-12-06.md), and a fixed default gives the same numbers on every machine. It costs
    #: little here: 1 thread is a bit slower on 2 idle cores and several times faster on contended ones.
    num_threads: int = 1


@dataclass(frozen=True)
class SASRecConfig(RecBoleSeqConfig):
    """Kang & McAuley (ICDM 2018): 2 self-attention blocks, 1 head, d=50 with a d x d point-wise FFN and ReLU,
    dropout 0.5 for the sparse Amazon data, max length 50, Adam lr 1e-3, batch 128.

    Loss: RecBole's default full-softmax cross-entropy ("CE") over all items; the paper's binary cross-entropy
    with one sampled negative per position is not offered by RecBole ("BPR", one negative, is).
    """

    hidden_size: int = 50
    inner_size: int = 50
    n_heads: int = 1
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.5
    attn_dropout_prob: float = 0.5

    #: Ranges around the paper's own study (Kang & McAuley 2018, section IV): Adam lr 1e-3 (searched one decade
    #: either side, log scale), d up to 50 and beyond (its Figure 3 varies d from 10 to 50), 1-3 blocks, dropout 0.2
    #: (dense MovieLens) to 0.5 (sparse Amazon); the epoch cap with patience ``stopping_step`` deciding earlier.
    search_space: ClassVar[Mapping[str, Any]] = {
        "learning_rate": Range(1e-4, 1e-2, log=True),
        "hidden_size": Choice((16, 32, 50, 64)),
        "n_layers": Range(1, 3),
        "hidden_dropout_prob": Range(0.1, 0.5),
        "attn_dropout_prob": Range(0.1, 0.5),
        "epochs": Range(5, 30, step=5),
    }


@dataclass(frozen=True)
class BERT4RecConfig(RecBoleSeqConfig):
    """Sun et al. (CIKM 2019): 2 layers, 2 heads, d=64 (FFN 4d=256, GELU), dropout 0.1, max length 50 for
    Amazon, batch 256, mask proportion 0.2 (RecBole's default; the paper tunes it per dataset).

    Deviations, for CPU practicality: Adam lr 1e-3 without the paper's weight decay and linear lr decay (paper:
    1e-4, 0.01, 400k steps).
    """

    train_batch_size: int = 256
    n_heads: int = 2
    hidden_size: int = 64
    inner_size: int = 256
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attn_dropout_prob: float = 0.1
    mask_ratio: float = 0.2
    epochs: int = 5

    #: Ranges around the paper's own study (Sun et al. 2019, section 4.7): lr 1e-4 in the paper, 1e-3 here
    #: (searched 1e-4 to 1e-2, log scale), hidden size 16-256 (64 on Amazon), mask proportion 0.1-0.9 (0.6 best on
    #: Beauty, 0.2 RecBole's default); dropout 0.1 in the paper; the epoch cap, since BERT4Rec needs far longer
    #: training than common defaults (Petrov & Macdonald 2022), with patience ``stopping_step`` deciding earlier.
    search_space: ClassVar[Mapping[str, Any]] = {
        "learning_rate": Range(1e-4, 1e-2, log=True),
        "hidden_size": Choice((32, 64, 128)),
        "mask_ratio": Range(0.1, 0.6),
        "hidden_dropout_prob": Range(0.1, 0.5),
        "attn_dropout_prob": Range(0.1, 0.5),
        "epochs": Range(5, 30, step=5),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


class _RecBoleSequential(Adapter):
    """Shared fit/score for RecBole sequential models (``recbole_model`` names the RecBole class)."""

    recbole_model: ClassVar[str] = "SASRec"  # a class of recbole.model.sequential_recommender
    config_cls: ClassVar[type[AdapterConfig]] = RecBoleSeqConfig

    def __init__(self, config: AdapterConfig, *, seed: int = 0, device: str = "cpu", cache_dir: str = "") -> None:
        super().__init__(config, seed=seed, device=device, cache_dir=cache_dir)
        self._model = None  # the RecBole model (a torch module) once fitted
        self._h2r: np.ndarray | None = None  # harness item id -> RecBole internal item id
        metrics.parse_metric(self.config.valid_metric)  # a typo fails before any work

    # ----------------------------------------------------------------------------------------------- config
    def _model_settings(self) -> dict[str, Any]:
        c = self.config
        return {k: getattr(c, k) for k in ("n_layers", "n_heads", "hidden_size", "inner_size", "hidden_dropout_prob",
                                           "attn_dropout_prob", "hidden_act", "layer_norm_eps", "initializer_range",
                                           "loss_type")}

    def _recbole_config_dict(self, data_path: str, checkpoint_dir: str) -> dict[str, Any]:
        c = self.config
        if c.loss_type not in ("CE", "BPR"):
            raise BenchError(f"{self.name}: loss_type must be CE or BPR, got {c.loss_type!r}")
        if c.hidden_size % c.n_heads:
            raise BenchError(f"{self.name}: hidden_size {c.hidden_size} is not divisible by n_heads {c.n_heads}")
        neg = None if c.loss_type == "CE" else {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                                  "dynamic": False, "candidate_num": 0}
        return {
            "data_path": data_path,
            "checkpoint_dir": checkpoint_dir,
            "device": self.device,
            "gpu_id": "",
            "seed": int(self.seed),
            "reproducibility": True,
            "show_progress": False,
            "save_dataset": False,
            "save_dataloaders": False,
            "log_wandb": False,
            "worker": 0,
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id"]},
            "MAX_ITEM_LIST_LENGTH": int(c.max_seq_length),
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            "repeatable": True,
            "metrics": ["NDCG"],  # unused (RecBole's evaluator never runs) but RecBole validates the key
            "topk": [10],
            "valid_metric": "NDCG@10",
            "train_batch_size": int(c.train_batch_size),
            "eval_batch_size": int(c.batch_size),
            "learner": "adam",
            "learning_rate": float(c.learning_rate),
            "weight_decay": float(c.weight_decay),
            "epochs": int(c.epochs),
            "eval_step": int(c.eval_step),
            "stopping_step": int(c.stopping_step),
            "train_neg_sample_args": neg,
            **self._model_settings(),
        }

    # ------------------------------------------------------------------------------------------------- data
    @staticmethod
    def _write_atomic_files(train: TrainData, folder: str) -> int:
        """Write ``.inter`` (user, item, position-as-timestamp) and ``.item`` (all items); return #interactions."""
        import pandas as pd

        os.makedirs(folder, exist_ok=True)
        lengths = np.array([len(s) for s in train.sequences], dtype=np.int64)
        if lengths.sum() == 0:
            raise BenchError(f"{train.dataset}: TrainData has no training interactions")
        users = np.repeat(np.arange(train.n_users), lengths)
        items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train.sequences if len(s)])
        if items.min() < 1 or items.max() > train.n_items:
            raise BenchError(f"{train.dataset}: training item ids must lie in 1..{train.n_items} "
                             f"(found {items.min()}..{items.max()})")
        pos = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths if n])
        inter = pd.DataFrame({"user_id:token": users, "item_id:token": items, "timestamp:float": pos})
        inter.to_csv(os.path.join(folder, f"{_DATASET_NAME}.inter"), sep="\t", index=False)
        item = pd.DataFrame({"item_id:token": np.arange(1, train.n_items + 1)})
        item.to_csv(os.path.join(folder, f"{_DATASET_NAME}.item"), sep="\t", index=False)
        return int(lengths.sum())

    # -------------------------------------------------------------------------------------------------- fit
    def fit(self, train: TrainData, valid: EvalSplit) -> "_RecBoleSequential":
        with self._threads():
            return self._fit(train, valid)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """Apply ``num_threads`` (when > 0) for the duration of a call and restore torch's setting after."""
        import torch

        before = torch.get_num_threads()
        if self.config.num_threads > 0:
            torch.set_num_threads(int(self.config.num_threads))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _fit(self, train: TrainData, valid: EvalSplit) -> "_RecBoleSequential":
        import torch

        import mmsr_bench.models.recbole_compat as compat  # before every recbole import (its shims)
        from recbole.data import create_dataset
        from recbole.data.dataloader import TrainDataLoader
        from recbole.model import sequential_recommender
        from recbole.sampler import RepeatableSampler
        from recbole.utils import init_seed

        c = self.config
        model_cls = getattr(sequential_recommender, self.recbole_model)
        t_start = time.perf_counter()
        self.run_info["torch_threads"] = torch.get_num_threads()
        if self.cache_dir:
            os.makedirs(self.cache_dir, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=f"recbole-{self.name}-", dir=self.cache_dir or None)
        try:
            n_inter = self._write_atomic_files(train, os.path.join(scratch, _DATASET_NAME))
            config = compat.SafeConfig(model=self.recbole_model, dataset=_DATASET_NAME,
                                       config_dict=self._recbole_config_dict(scratch, os.path.join(scratch, "ckpt")))
            init_seed(int(self.seed), True)
            with compat.dataset_warnings_silenced():
                dataset = create_dataset(config)
                # What Dataset.build() does before splitting: DataFrame -> Interaction plus RecBole's prefix
                # augmentation. No split: all training interactions stay in training (valid/test live in the harness).
                dataset._change_feat_format()
            tokens = [str(i) for i in range(1, train.n_items + 1)]
            self._h2r = np.concatenate([[0], dataset.token2id(dataset.iid_field, tokens)]).astype(np.int64)
            sampler = None
            if c.loss_type == "BPR":
                sampler = RepeatableSampler(["train"], dataset, "uniform", 1.0).set_phase("train")
            # The loader first: its transform (BERT4Rec's mask_itemseq) registers the MASK_* field names in the
            # config that the model reads in __init__ (RecBole's own order: data_preparation, then the model).
            train_loader = TrainDataLoader(config, dataset, sampler, shuffle=True)
            init_seed(int(self.seed), True)
            model = model_cls(config, dataset).to(torch.device(self.device))
            trainer = compat.HarnessTrainer(config, model)
            self._model = model
            log.info("%s: %d training interactions -> %d training sequences, %d batches/epoch", self.name,
                     n_inter, len(dataset), len(train_loader))
            history = self._train_loop(trainer, train_loader, train, valid, t_start)  # restores the best state
            self._model.eval()
            self.run_info.update(history)
            self.run_info.update({
                "validated_by": "mmsr_bench.evaluation.metrics on the validation split (RecBole's evaluator never runs)",
                "recbole_model": self.recbole_model,
                "n_train_interactions": n_inter,
                "n_train_sequences": len(dataset),
                "recbole_config": _jsonable({k: config[k] for k in sorted(config.final_config_dict)
                                             if k not in ("data_path", "checkpoint_dir")}),
                "fit_seconds": round(time.perf_counter() - t_start, 2),
            })
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return self

    def _train_loop(self, trainer, train_loader, train: TrainData, valid: EvalSplit,
                    t_start: float) -> dict[str, Any]:
        """RecBole epochs in the harness loop (:func:`mmsr_bench.evaluation.loop.fit_epochs`): harness validation every
        ``eval_step`` epochs, RecBole's ``early_stopping`` rule (:meth:`EarlyStopping.recbole`), a resume point after
        every epoch. The choice is ``run_info["selection"]``; the curve keeps RecBole's 0-based epoch numbers, as
        stored runs have it."""
        c = self.config

        def train_epoch(epoch: int) -> float:
            loss = trainer._train_epoch(train_loader, epoch - 1)
            loss = float(sum(loss) if isinstance(loss, tuple) else loss)
            if not math.isfinite(loss):
                raise BenchError(f"{self.name}: training loss became {loss} at epoch {epoch - 1}; lower "
                                 f"learning_rate (now {c.learning_rate})")
            return loss

        stopper = EarlyStopping.recbole(c.stopping_step, snapshot=module_snapshot(trainer.model),
                                        restore_fn=module_restore(trainer.model))
        deadline = t_start + 60 * c.max_train_minutes if c.max_train_minutes else None
        validator = self._validator(valid)
        # what a resumed fit needs to take the same steps: weights, Adam's state and the loader's shuffling generator
        # (RecBole's samplers and BERT4Rec's masking draw from the global generators, which every resume point keeps)
        parts = Resumable.of_module(trainer.model, trainer.optimizer, {"train_loader": train_loader.generator})
        with resumable_fit(self, train, validator.split, parts) as point:
            loop = fit_epochs(train_epoch, validator, stopper, epochs=c.epochs, eval_every=c.eval_step,
                              description=f"training {self.name}", deadline=deadline, resume=point)
        return {
            "selection": loop.selection_record(),
            "valid_curve": [[h["epoch"] - 1, round(h["loss"], 6), h[c.valid_metric]] for h in loop.history],
            "mean_epoch_seconds": round(float(np.mean(loop.unit_seconds)), 3) if loop.unit_seconds else None,
        }

    def _validator(self, valid: EvalSplit) -> Validator:
        c = self.config
        return Validator(evenly_spaced(valid, c.valid_max_users), c.valid_metric, self.score, c.batch_size)

    def validate(self, valid: EvalSplit) -> float:
        """Mean ``config.valid_metric`` on the validation split's shared candidates (harness metric engine)."""
        return self._validator(valid)()

    # ------------------------------------------------------------------------------------------------ score
    def _item_seq(self, histories: list[np.ndarray]):
        """Left-aligned, right-padded RecBole ids of the last ``max_seq_length`` items, and the lengths (>= 1), as
        tensors on the model's device."""
        import torch

        assert self._h2r is not None
        L = self.config.max_seq_length
        seq = np.zeros((len(histories), L), dtype=np.int64)
        lens = np.ones(len(histories), dtype=np.int64)
        n_items = len(self._h2r) - 1
        for row, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)
            h = h[(h >= 1) & (h <= n_items)][-L:]
            if len(h):
                seq[row, : len(h)] = self._h2r[h]
                lens[row] = len(h)
        device = torch.device(self.device)
        return torch.from_numpy(seq).to(device), torch.from_numpy(lens).to(device)

    def score(self, batch: ScoreBatch) -> np.ndarray:
        if self._model is None or self._h2r is None:
            raise BenchError(f"{self.name}: score() called before fit()")
        with self._threads():
            return self._score(batch)

    def _score(self, batch: ScoreBatch) -> np.ndarray:
        import torch

        import mmsr_bench.models.recbole_compat  # noqa: F401  (before every recbole import: its shims)
        from recbole.data.interaction import Interaction

        self._model.eval()
        item_seq, item_len = self._item_seq(batch.histories)
        inter = Interaction({self._model.ITEM_SEQ: item_seq, self._model.ITEM_SEQ_LEN: item_len})
        with torch.no_grad():
            all_scores = self._model.full_sort_predict(inter).float().cpu().numpy()  # columns: RecBole ids
        if batch.full_ranking:
            return all_scores[:, self._h2r[1:]]
        cands = np.asarray(batch.candidates, dtype=np.int64)
        if cands.size and (cands.min() < 0 or cands.max() >= len(self._h2r)):
            raise BenchError(f"{self.name}: candidate item ids must lie in 1..{len(self._h2r) - 1}")
        return np.take_along_axis(all_scores, self._h2r[cands], axis=1)


@register()
class SASRecAdapter(_RecBoleSequential):
    """SASRec (Kang & McAuley 2018) as implemented in RecBole 1.2.1."""

    name = "sasrec"
    #: the conformance kit's tiny budget (and the study's ``--budget tiny``), inherited by variants
    conformance_overrides = {"epochs": "1"}
    description = "SASRec (Kang & McAuley, ICDM 2018) via RecBole 1.2.1; CE loss; harness early stopping"
    recbole_model = "SASRec"
    config_cls = SASRecConfig


@register()
class BERT4RecAdapter(_RecBoleSequential):
    """BERT4Rec (Sun et al. 2019) as implemented in RecBole 1.2.1 (masked-item training, mask token at scoring)."""

    name = "bert4rec"
    #: the conformance kit's tiny budget (and the study's ``--budget tiny``), inherited by variants
    conformance_overrides = {"epochs": "1"}
    description = "BERT4Rec (Sun et al., CIKM 2019) via RecBole 1.2.1; cloze training; harness early stopping"
    recbole_model = "BERT4Rec"
    config_cls = BERT4RecConfig

    def _model_settings(self) -> dict[str, Any]:
        return {**super()._model_settings(), "mask_ratio": float(self.config.mask_ratio),
                "transform": "mask_itemseq"}


__all__ = ["SASRecAdapter", "BERT4RecAdapter", "SASRecConfig", "BERT4RecConfig", "RecBoleSeqConfig"]
