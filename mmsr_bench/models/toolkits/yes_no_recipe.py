"""The fit recipe the Yes/No LLM recommenders share (TALLRec, MLLM-SRec): make the backbone trainable (LoRA on
its projections, or every weight of a tiny backbone), fine-tune it on the harness's balanced pairs with the
validation AUC of its own scorer choosing the step, and record the same run facts. What differs between the
models, the prompts and the items' text, stays in their modules; written once here, the recipe cannot drift
between them (the split-tokenisation and answer-token checks, the RNG order, the selection record)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Mapping, Sequence

import numpy as np

from mmsr_bench.data.splits import EvalSplit
from mmsr_bench.evaluation.metrics import aggregate, evaluate_scores
from mmsr_bench.models.adapter import AdapterConfig, later_field
from mmsr_bench.models.search_space import Choice

#: lr when ``lr`` is None: the paper's 1e-4 for a real checkpoint; 1e-3 for a tiny backbone trained in full (stable
#: where 3e-3 was not, on the planted tests of tests/test_gptrec_tallrec.py); 3e-3, the earlier tiny-LoRA default.
AUTO_LR = {("real", "lora"): 1e-4, ("real", "full"): 1e-4, ("tiny", "full"): 1e-3, ("tiny", "lora"): 3e-3}


@dataclass(frozen=True)
class YesNoLLMConfig(AdapterConfig):
    """The configuration every Yes/No LLM recommender shares (TALLRec, MLLM-SRec), each field with one meaning
    everywhere. A model's own class adds its prompt's fields and may give a field another default (declared again
    there, with the reason); the defaults here are TALLRec's."""

    backbone: str = "smollm2-135m"
    allow_hub: bool = False
    pretrain_steps: int = 300  # tiny backbones only: brief causal-LM pretraining on the items' text
    quantization: str = "none"  # "none" (LoRA) | "4bit" (QLoRA: NF4 weights through bitsandbytes)
    dtype: str = "auto"  # backbone weights: auto (float32 on CPU) | float32 | bfloat16 | float16
    #: "auto" = every weight for an unquantized tiny-* backbone, LoRA otherwise (mmsr_bench.models.toolkits.trainable)
    #: | "lora" | "full"
    train_mode: str = "auto"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float | None = None  # None = AUTO_LR for the backbone kind and train mode (the run records the value used)
    epochs: int = 2
    train_batch_size: int = 16
    grad_accum: int = 1
    #: Weight of the two-way Yes/No loss at the answer (mmsr_bench.models.toolkits.finetune); 0 = the plain LM loss.
    decision_loss: float = 0.0
    max_pairs: int = 4000  # balanced (positive, negative) training pairs drawn from the training sequences
    max_history: int = 10
    max_prefix_tokens: int = 1024
    valid_users: int = 200
    valid_negatives: int = 99
    eval_every: int = 0  # validate every N steps as well as after each epoch; 0 = after each epoch only
    patience: int = 2
    score_rows: int = 128
    users_per_batch: int = 4
    threads: int = 0
    batch_size: int = 32
    #: "none": the paper's raw prompt; "auto": inside the tokenizer's chat template where it has one (instruct
    #: checkpoints), recorded in run_info["chat_template"]
    chat_template: Literal["none", "auto"] = later_field("none")
    #: recompute activations in the backward pass (less accelerator memory, about a third more time)
    gradient_checkpointing: bool = later_field(False)
    #: "" = the whole backbone on --device; "auto" = accelerate spreads an unquantized checkpoint over the devices
    device_map: str = later_field("")
    #: stop training after this many minutes (validating that state too; run_info["selection"]["stopped_by"] =
    #: "deadline"); 0 = no limit, which keeps runs reproducible across machines
    max_train_minutes: float = later_field(0.0)

    #: Where ``bench tune`` searches (on a GPU machine: a trial is a whole LoRA fit): TALLRec's own setting is LoRA
    #: r=8 with lr 1e-4 (Bao et al. 2023), the CPU budget here lr 1e-3; searched 1e-4 to 3e-3, ranks 4-16, and the
    #: two-way Yes/No decision loss off or on (weight 1).
    search_space: ClassVar[Mapping[str, Any]] = {
        "lr": Choice((1e-4, 3e-4, 1e-3, 3e-3)),
        "lora_rank": Choice((4, 8, 16)),
        "decision_loss": Choice((0.0, 1.0)),
    }


def resolve_lr(config: YesNoLLMConfig, mode: str) -> float:
    """``config.lr``, or :data:`AUTO_LR` for the backbone's kind (tiny or real) and the train mode when it is None."""
    from mmsr_bench.models.toolkits.trainable import is_tiny

    if config.lr is not None:
        return float(config.lr)
    return AUTO_LR[("tiny" if is_tiny(config.backbone) else "real", mode)]


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
        "valid_users": len(vsplit), "steps": result.steps, "epochs_run": result.epochs_run,
        "n_train_pairs": len(examples), "history": result.history,
        "adapter_checkpoint": result.checkpoint, "loss_scaling": result.loss_scaling,
        "fit_reused_from": result.reused_from, "fitted_sha256": result.fitted_sha256,
        "selection": result.selection_record()})
    return result
