"""Which weights a Yes/No recommender trains: LoRA adapters on a frozen real checkpoint, or every weight of a
``tiny-*`` backbone. LoRA on frozen *random* weights (frozen random embeddings included) cannot learn word matching
(docs/history/results-2026-12-06.md, benchmarks/yes_no_learnability.py), so a tiny backbone is trained as a from-scratch model."""

from __future__ import annotations

from typing import Any

from mmsr_bench.errors import BenchError

TRAIN_MODES = ("auto", "lora", "full")


def is_tiny(backbone: str) -> bool:
    return backbone.startswith("tiny-")


def resolve_train_mode(train_mode: str, backbone: str, quantization: str | None, where: str) -> str:
    """``auto`` = every weight trained for an unquantized ``tiny-*`` backbone, LoRA for a real checkpoint and for
    4-bit weights; an explicit ``full`` on 4-bit weights is refused."""
    if train_mode not in TRAIN_MODES:
        raise BenchError(f"{where}: train_mode={train_mode!r}; expected one of {', '.join(TRAIN_MODES)}")
    quantized = quantization not in (None, "", "none")
    # A quantized tiny backbone (a QLoRA variant's pipeline check) keeps LoRA: 4-bit weights cannot be trained.
    mode = train_mode if train_mode != "auto" else ("full" if is_tiny(backbone) and not quantized else "lora")
    if mode == "full" and quantized:
        raise BenchError(f"{where}: train_mode=full cannot train {quantization} quantized weights; "
                         f"use train_mode=lora (QLoRA) or quantization=none")
    return mode


def prepare_trainable(model: Any, mode: str, settings: Any, quantized: bool) -> Any:
    """LoRA adapters on a frozen base (``lora``), or every parameter trainable (``full``)."""
    from mmsr_bench.models.toolkits.finetune import apply_lora

    if mode == "lora":
        return apply_lora(model, settings, quantized=quantized)
    for param in model.parameters():
        param.requires_grad_(True)
    if getattr(settings, "gradient_checkpointing", False):
        model.gradient_checkpointing_enable()
    return model
