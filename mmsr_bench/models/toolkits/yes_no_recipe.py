"""The fit recipe the Yes/No LLM recommenders share (TALLRec, MLLM-SRec): make the backbone trainable (LoRA on
its projections, or every weight of a tiny backbone), fine-tune it on the harness's balanced pairs with the
validation AUC of its own scorer choosing the step, and record the same run facts. What differs between the
models, the prompts and the items' text, stays in their modules; written once here, the recipe cannot drift
between them (the split-tokenisation and answer-token checks, the RNG order, the selection record)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from mmsr_bench.data.splits import EvalSplit
from mmsr_bench.evaluation.metrics import aggregate, evaluate_scores


def make_trainable(adapter: Any, bb: Any, mode: str, fallback: str) -> Any:
    """``bb.model`` with LoRA adapters (``mode="lora"``) or every weight trainable (``full``), seeded by the
    adapter's seed; the LoRA targets the architecture got are recorded in ``run_info``. ``fallback``: the targets
    when the class's default projections are absent (``LoraSettings.fallback``), only for the default targets."""
    import torch

    from mmsr_bench.models.toolkits.finetune import LoraSettings
    from mmsr_bench.models.toolkits.trainable import prepare_trainable

    c = adapter.config
    default_targets = tuple(c.target_modules) == type(c).target_modules  # the class default, not the user's
    settings = LoraSettings(rank=c.lora_rank, alpha=c.lora_alpha, dropout=c.lora_dropout,
                            target_modules=tuple(c.target_modules), fallback=fallback if default_targets else "",
                            gradient_checkpointing=c.gradient_checkpointing)
    torch.manual_seed(adapter.seed)
    model = prepare_trainable(bb.model, mode, settings, bb.quantized is not None)
    if hasattr(model, "peft_config"):  # the targets this architecture got (see LoraSettings.fallback)
        targets = model.peft_config["default"].target_modules
        adapter.run_info["lora_target_modules"] = targets if isinstance(targets, str) else sorted(targets)
    return model


def fine_tune(adapter: Any, bb: Any, examples: Sequence[Any], valid: tuple[EvalSplit, np.ndarray],
              score_lists: Callable[[EvalSplit, np.ndarray], list], *, lr: float, mode: str, decision_words: tuple,
              checkpoint_name: str, dataset: str, description: str) -> Any:
    """Fine-tune ``adapter.model`` on ``examples`` (``sft_train``: resume points, the kept fit, early stopping on
    the validation AUC of ``score_lists(split, candidates)``), then record the shared run facts. Returns the
    ``SFTResult``."""
    from mmsr_bench.models.adapter import config_hash
    from mmsr_bench.models.toolkits.finetune import SFTConfig, sft_train, split_digest
    from mmsr_bench.paths import cache_dir

    c = adapter.config
    vsplit, vcands = valid

    def validate() -> float:
        scores = np.stack(score_lists(vsplit, vcands))
        return aggregate(evaluate_scores(scores, ["auc"]))["auc"]

    sft = SFTConfig(lr=lr, epochs=c.epochs, batch_size=c.train_batch_size, grad_accum=c.grad_accum,
                    max_prefix_tokens=c.max_prefix_tokens, eval_every=c.eval_every, patience=c.patience,
                    seed=adapter.seed, decision_weight=c.decision_loss, decision_words=decision_words,
                    max_minutes=c.max_train_minutes)
    ckpt = cache_dir("checkpoints", checkpoint_name, f"{dataset}-{bb.weights_sha256[:12]}-s{adapter.seed}")
    result = sft_train(adapter.model, adapter.tokenizer, list(examples), sft, validate=validate, checkpoint_dir=ckpt,
                       description=description, identity=f"{config_hash(adapter)}:{split_digest(vsplit, vcands)}")
    adapter.run_info.update(bb.run_info())
    adapter.run_info.update(adapter._wrap.info())
    adapter.run_info.update({
        "train_mode": mode, "lr": lr,
        "n_trainable_parameters": sum(p.numel() for p in adapter.model.parameters() if p.requires_grad),
        "early_stopping_split": "valid", "valid_metric": "auc", "valid_users": len(vsplit),
        "best_valid_auc": result.best_auc, "best_step": result.best_step, "steps": result.steps,
        "epochs_run": result.epochs_run, "n_train_pairs": len(examples), "history": result.history,
        "adapter_checkpoint": result.checkpoint, "loss_scaling": result.loss_scaling,
        "fit_reused_from": result.reused_from, "fitted_sha256": result.fitted_sha256,
        "stopped_by": result.stopped_by})
    return result
