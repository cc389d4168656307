"""The base of adapters that train on frozen item features (MMGCN, MMSR): the configured modalities, the needs
they imply, the features built before any training (so a missing modality refuses before any work) and the
thread budget while training. In the harness so that no adapter module imports another."""

from __future__ import annotations

import abc
import logging
from typing import Any, Callable

from mmsr_bench.data.splits import EvalSplit, TrainData
from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.loop import LoopResult, Resumable, fit_epochs
from mmsr_bench.evaluation.training import EarlyStopping, Validator, module_restore, module_snapshot, torch_threads
from mmsr_bench.models.adapter import Adapter, Needs
from mmsr_bench.models.toolkits.features import FeatureMatrix, FeatureSpec, item_features, parse_modalities
from mmsr_bench.models.toolkits.resume import resumable_fit


def needs_for(modalities: tuple[str, ...]) -> Needs:
    return Needs(text="text" in modalities, images="image" in modalities)


def build_features(train: TrainData, modalities: tuple[str, ...], config: Any, device: str, seed: int
                   ) -> dict[str, FeatureMatrix]:
    """Frozen text/image features for the requested modalities (raises MissingModality before any training)."""
    spec = FeatureSpec(text_encoder=config.text_encoder, text_fields=tuple(config.text_fields),
                       image_encoder=config.image_encoder, clip_weights=config.clip_weights or None,
                       allow_network=config.allow_network, device=device, seed=0)
    feats = item_features(train.items, train.dataset, modalities, spec)
    for name, fm in feats.items():
        if fm.values.shape[0] != train.n_items + 1:
            raise BenchError(f"{train.dataset}: {name} features have {fm.values.shape[0] - 1} rows for "
                             f"{train.n_items} items")
    return feats


def feature_run_info(feats: dict[str, FeatureMatrix]) -> dict[str, Any]:
    return {"features": {m: fm.identity for m, fm in feats.items()},
            "random_init": any(bool(fm.identity.get("random_init")) for fm in feats.values())}


class FeatureAdapter(Adapter):
    """What MMGCN and MMSR share: ``config.modalities``, the needs they imply (``effective_needs``), the cached
    item features built before training, and ``config.threads`` while training. Subclasses implement ``_fit``."""

    def __init__(self, config, *, seed: int = 0, device: str = "cpu", cache_dir: str = "") -> None:
        super().__init__(config, seed=seed, device=device, cache_dir=cache_dir)
        self.modalities = parse_modalities(config.modalities)

    @property
    def effective_needs(self) -> Needs:
        return needs_for(self.modalities)

    def recorded_modalities(self, feats: dict[str, FeatureMatrix]) -> list[str]:
        return list(self.modalities)

    def fit(self, train: TrainData, valid: EvalSplit) -> "FeatureAdapter":
        cfg = self.config
        feats = build_features(train, self.modalities, cfg, self.device, self.seed)  # may raise MissingModality
        self.run_info.update(feature_run_info(feats), modalities=self.recorded_modalities(feats))
        with torch_threads(cfg.threads):
            self._fit(train, valid, feats)
        return self

    def _train_epochs(self, train_epoch: Callable[[int], float], train: TrainData, valid: EvalSplit,
                      parts: Resumable, net: Any, description: str) -> LoopResult:
        """The harness's loop over ``net``: validation with ``config.valid_metric``, early stopping with
        ``config.patience`` and best-state restore, a resume point of ``parts`` after every epoch; records the
        chosen epoch in ``run_info["selection"]``."""
        cfg = self.config
        stopper = EarlyStopping(cfg.patience, module_snapshot(net), module_restore(net))
        with resumable_fit(self, train, valid, parts) as point:
            loop = fit_epochs(train_epoch, Validator(valid, cfg.valid_metric, self.score, cfg.eval_batch_size),
                              stopper, epochs=cfg.epochs, description=description, resume=point,
                              log_level=logging.DEBUG)
        self.run_info.update(selection=loop.selection_record())
        return loop

    @abc.abstractmethod
    def _fit(self, train: TrainData, valid: EvalSplit, feats: dict[str, FeatureMatrix]) -> None:
        """Train on ``train`` with the built features; early-stop on ``valid``."""
