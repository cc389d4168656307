"""LoRA / QLoRA fine-tuning of a causal LM on (prompt, answer) pairs, with early stopping on a validation AUC.

LoRA adapters come from peft. QLoRA = the base model loaded in 4-bit NF4 by bitsandbytes (see
:func:`mmsr_bench.models.toolkits.backbones.load_backbone` with ``quantization="4bit"``), then ``prepare_model_for_kbit_training``,
then LoRA. bitsandbytes 0.50 runs NF4 on CPU too (slow pure-torch kernels, verified by the tests).

The SFT loop is generic: every example is ``prefix + suffix`` (encoded exactly as :mod:`mmsr_bench.models.toolkits.llm_scoring`
encodes prompts, so training and scoring see the same tokens) followed by the answer tokens; the loss is the
cross-entropy of the answer tokens only. The caller passes ``validate() -> AUC``; the best adapter (by that AUC)
is kept, written as safetensors to the checkpoint folder and restored at the end.

Decision loss (``decision_weight`` > 0, with ``decision_words=("Yes", "No")``): adds a two-way cross-entropy on
the (Yes, No) logits at the position that predicts the answer word (the last answer label equal to either id, so it
also finds the answer after a chain of thought). Why: the scorer reads exactly p(Yes)/(p(Yes)+p(No)), and a tiny
backbone with tied, small-norm embeddings cannot raise p(Yes)+p(No) against a 4,096-token vocabulary, so the plain
LM loss sits on a plateau (measured: first-answer-token loss stuck at 4.77 nats for 120 steps on synth4) and its
gradient is spent on that instead of on telling Yes from No. ``decision_weight=0`` is the plain LM loss.

The loop itself (steps, validation, deadline, resume points) is the harness's one loop,
:func:`mmsr_bench.evaluation.loop.train_loop`; this module supplies the step and keeps the completed fit.

Why one module of this length: the fine-tuning step of the LLM recommenders, its resume fingerprint and its kept
fits, which must agree on one fingerprint.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import logging
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.evaluation.loop import Resumable, ResumePoint, fit_lock, train_loop
from mmsr_bench.evaluation.training import EarlyStopping
from mmsr_bench.models.toolkits.llm_scoring import answer_token_id, check_prompt_fits, encode_prefix, encode_suffix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters (TALLRec's defaults: r=8, alpha=16, dropout=0.05 on q_proj/v_proj)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    gradient_checkpointing: bool = False
    #: When ``target_modules`` is the adapter's default and the architecture names its layers otherwise (GPT-2's
    #: ``c_attn``, Phi-3's fused ``qkv_proj``): ``"attention"`` takes peft's per-architecture attention targets (else
    #: every linear layer inside attention blocks), ``"all-linear"`` every linear layer but the output head; ``""``
    #: refuses. A target list the user gave is never replaced.
    fallback: str = ""


@dataclass(frozen=True)
class SFTConfig:
    """Training loop settings. ``eval_every``: validate every N optimizer steps (0 = once per epoch);
    ``patience``: validations without improvement before stopping."""

    lr: float = 1e-4
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_prefix_tokens: int | None = None
    append_eos: bool = False
    eval_every: int = 0
    patience: int = 2
    seed: int = 0
    decision_words: tuple[str, str] | None = None  # (yes, no) answer words, each one token
    decision_weight: float = 0.0
    #: Stop after this many minutes of training (validating once more if none ran yet); 0 = no limit. Left out
    #: of the resume fingerprint at 0, so earlier resume points and kept fits stay valid.
    max_minutes: float = 0.0


@dataclass(frozen=True)
class SFTExample:
    prefix: str
    suffix: str
    answer: str


@dataclass
class SFTResult:
    steps: int = 0
    epochs_run: int = 0
    best_auc: float | None = None
    best_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    checkpoint: str | None = None
    seconds: float = 0.0
    loss_scaling: str = "none"
    reused_from: str | None = None  # the folder of an earlier completed fit that was loaded instead of training
    fitted_sha256: str | None = None  # of the fitted trainable weights (what the shards of one cell must share)
    stopped_by: str = "budget"  # budget (the epochs ran out) | patience | deadline (max_minutes)

    def selection_record(self, split: str = "valid") -> dict[str, Any]:
        """The kept step in the one schema of every trained family
        (:func:`mmsr_bench.evaluation.training.selection_record`)."""
        from mmsr_bench.evaluation.training import selection_record

        return selection_record(split=split, metric="auc", value=self.best_auc, unit="step", chosen=self.best_step,
                                last=int(self.history[-1]["step"]) if self.history else None,
                                stopped_by=self.stopped_by, n_validations=len(self.history))


def apply_lora(model: Any, settings: LoraSettings = LoraSettings(), *, quantized: bool = False) -> Any:
    """Wrap a causal LM with fresh LoRA adapters (after ``prepare_model_for_kbit_training`` when 4-bit)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing)
    elif settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    cfg = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                     target_modules=lora_targets(model, settings), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def _linear_names(model: Any) -> dict[str, str]:
    """Qualified name -> leaf name of every linear layer (``nn.Linear``, GPT-2's ``Conv1D``, 4-bit linears)."""
    import torch

    out = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, torch.nn.Linear) or kind in ("Conv1D", "Linear4bit", "Linear8bitLt"):
            out[name] = name.rsplit(".", 1)[-1]
    return out


def lora_targets(model: Any, settings: LoraSettings) -> list[str] | str:
    """The LoRA target modules for this architecture: the configured names where the model has them all, else the
    fallback of :class:`LoraSettings` (peft's per-architecture mapping, attention linears, or ``all-linear``);
    a clear error naming the model's linear layers when nothing fits."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    linear = _linear_names(model)
    leaves = set(linear.values())
    missing = [t for t in settings.target_modules if t not in leaves]
    if not missing:
        return list(settings.target_modules)
    if settings.fallback == "all-linear" and leaves:
        return "all-linear"
    if settings.fallback == "attention":
        mapped = PEFT_TARGETS.get(getattr(getattr(model, "config", None), "model_type", ""), [])
        if mapped and all(m in leaves for m in mapped):
            return list(mapped)
        attn = sorted({leaf for name, leaf in linear.items() if "attn" in name or "attention" in name})
        if attn:
            return attn
    shown = sorted(leaves)[:12]
    raise BenchError(f"LoRA target_modules {missing} do not exist in {type(model).__name__}; its linear layers are "
                     f"named {shown}: give --set target_modules=NAME,NAME")


def encode_example(tokenizer: Any, ex: SFTExample, max_prefix_tokens: int | None = None,
                   append_eos: bool = False) -> tuple[list[int], int]:
    """(ids, n_prompt): prompt ids exactly as the scorer builds them, then the answer ids."""
    prompt = encode_prefix(tokenizer, ex.prefix, max_prefix_tokens) + encode_suffix(tokenizer, ex.suffix)
    answer = list(tokenizer.encode(ex.answer, add_special_tokens=False))
    if append_eos and tokenizer.eos_token_id is not None:
        answer.append(tokenizer.eos_token_id)
    if not answer:
        raise BenchError(f"SFT example with an empty answer (answer={ex.answer!r})")
    return prompt + answer, len(prompt)


def _collate(encoded: list[tuple[list[int], int]], pad_id: int):
    import torch

    L = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), L), dtype=torch.long)
    labels = torch.full((len(encoded), L), -100, dtype=torch.long)
    for r, (seq, n_prompt) in enumerate(encoded):
        ids[r, :len(seq)] = torch.tensor(seq)
        mask[r, :len(seq)] = 1
        labels[r, n_prompt:len(seq)] = torch.tensor(seq[n_prompt:])
    return ids, mask, labels


def answer_loss(model: Any, ids, mask, labels, decision_tokens: tuple[int, int] | None = None,
                decision_weight: float = 0.0):
    """Mean cross-entropy over answer tokens (labels != -100), plus ``decision_weight`` x the two-way (Yes, No)
    cross-entropy at the answer-word position (module docstring).

    The decoder body runs for hidden states and the LM head only at the positions that predict answer tokens (a
    Yes/No answer is one or two of a prompt's hundreds of positions, and a 49k-vocabulary head over all of them
    dominates a step's time and memory); the decision term reads the same gathered logits. Under peft the base
    model's body is called, with its LoRA layers active. Models that do not expose body and head fall back to
    full logits. Same value either way (the softmax runs in float32)."""
    import torch

    from mmsr_bench.models.toolkits.llm_scoring import _base, _body_and_head, _head_logits

    shift_labels = labels[:, 1:]
    # row-major order: within a row, answer positions come left to right (the decision term relies on it)
    rows, cols = torch.nonzero(shift_labels != -100, as_tuple=True)
    if rows.numel() == 0:
        raise BenchError("answer_loss: a batch without answer tokens (every label is -100)")
    parts = _body_and_head(_base(model))
    if parts is not None:
        body, head = parts
        hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        picked = _head_logits(head, hidden[rows, cols])  # (n_answer_tokens, V), float32
    else:
        picked = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1][rows, cols].float()
    targets = shift_labels[rows, cols]
    loss = torch.nn.functional.cross_entropy(picked, targets)
    if decision_weight > 0 and decision_tokens is not None:
        yes, no = decision_tokens
        sel = torch.nonzero((targets == yes) | (targets == no), as_tuple=True)[0]
        if sel.numel():
            # the last Yes/No label of each row (after a chain of thought, the answer word comes last)
            r = rows[sel]
            idx = sel[torch.cat([r[1:] != r[:-1], torch.ones(1, dtype=torch.bool, device=r.device)])]
            two = picked[idx][:, [yes, no]]
            target = (targets[idx] == no).long()  # class 0 = Yes, 1 = No
            loss = loss + decision_weight * torch.nn.functional.cross_entropy(two, target)
    return loss


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model: Any, state: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, v in state.items():
            params[n].copy_(v)


def save_trainable(model: Any, folder: str | Path) -> str:
    """Adapter weights as safetensors: peft's ``save_pretrained`` for peft models, else the trainable tensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(folder), safe_serialization=True)
    else:
        from safetensors.torch import save_file

        save_file({n: t.contiguous().cpu() for n, t in _trainable_state(model).items()},
                  str(folder / "trainable.safetensors"))
    return str(folder)


def _fingerprint(config: SFTConfig, encoded: list[tuple[list[int], int]], model: Any) -> str:
    """What a resume point must match: the loop settings (epochs may grow), the encoded examples and the
    trainable parameters' names and shapes."""
    import hashlib

    h = hashlib.sha256(json.dumps({k: v for k, v in dataclasses.asdict(config).items()
                                   if k != "epochs" and not (k == "max_minutes" and not v)},
                                  sort_keys=True, default=str).encode())
    for ids, n_prompt in encoded:
        h.update(np.asarray(ids + [n_prompt], dtype=np.int64).tobytes())
    for n, p in model.named_parameters():
        if p.requires_grad:
            h.update(f"{n}{tuple(p.shape)}".encode())
    return h.hexdigest()


_REUSE_FITS: contextvars.ContextVar[bool] = contextvars.ContextVar("reuse_fits", default=False)


@contextmanager
def reusing_fits():
    """Within this block, :func:`sft_train` loads a completed fit with the same fingerprint instead of training."""
    token = _REUSE_FITS.set(True)
    try:
        yield
    finally:
        _REUSE_FITS.reset(token)


def split_digest(split: Any, candidates: np.ndarray) -> str:
    """sha256 of what a validation closure scores (users, histories, candidates): part of a fit's ``identity``."""
    import hashlib

    h = hashlib.sha256(np.asarray(split.users, dtype=np.int64).tobytes())
    for hist in split.histories:
        h.update(np.asarray(hist, dtype=np.int64).tobytes() + b"|")
    h.update(np.ascontiguousarray(candidates, dtype=np.int64).tobytes())
    return h.hexdigest()


def _save_fitted(model: Any, folder: Path, fingerprint: str, result: SFTResult) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    from mmsr_bench.models.toolkits.backbones import file_sha256

    save_file({n: t.contiguous().cpu() for n, t in _trainable_state(model).items()}, str(folder / "fitted.safetensors"))
    result.fitted_sha256 = file_sha256(folder / "fitted.safetensors")
    record = {"fingerprint": fingerprint, "result": dataclasses.asdict(result)}
    tmp = folder / "fitted.json.tmp"
    tmp.write_text(json.dumps(record, default=str))
    tmp.replace(folder / "fitted.json")


def _load_fitted(model: Any, folder: Path, fingerprint: str) -> SFTResult | None:
    from safetensors.torch import load_file

    try:
        record = json.loads((folder / "fitted.json").read_text())
        if record.get("fingerprint") != fingerprint:
            return None
        state = load_file(str(folder / "fitted.safetensors"))
    except (OSError, ValueError):
        return None
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != names:
        return None
    _load_trainable(model, state)
    model.eval()
    return SFTResult(**{**record["result"], "reused_from": str(folder)})


def sft_train(model: Any, tokenizer: Any, examples: Sequence[SFTExample], config: SFTConfig = SFTConfig(), *,
              validate: Callable[[], float] | None = None, checkpoint_dir: str | Path | None = None,
              description: str = "fine-tuning", identity: str = "") -> SFTResult:
    """Train the model's trainable parameters on answer-token cross-entropy; early-stop on ``validate()``.

    With ``validate`` the best state (highest AUC) is restored at the end and saved to ``checkpoint_dir``. With a
    ``checkpoint_dir``, a resume point is also written after every epoch and validation (``<dir>/resume``): an
    interrupted run, started again with the same settings and examples, continues from the last one (and ends in
    the same weights as an uninterrupted run); it is removed when training completes.

    A completed fit is kept there too (``fitted.safetensors`` + ``fitted.json``). Inside :func:`reusing_fits` (the
    runner's ``bench run --shard K/N``), a call with the same fingerprint (settings with epochs, examples, trainable
    parameters, and ``identity``, which the adapter sets to everything else its validation depends on) loads the
    fitted weights and the recorded curve instead of training again, so the shards of one cell fit once;
    concurrent calls wait on a lock file for the first one's fit. Outside it every call trains (the conformance
    kit's determinism checks train twice).
    """
    import torch

    if not examples:
        raise BenchError("sft_train: no training examples")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise BenchError("sft_train: the model has no trainable parameters (apply LoRA first)")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [encode_example(tokenizer, ex, config.max_prefix_tokens, config.append_eos) for ex in examples]
    check_prompt_fits(model, max((len(ids) for ids, _ in encoded), default=0), "training")
    decision = (tuple(answer_token_id(tokenizer, w) for w in config.decision_words)
                if config.decision_words and config.decision_weight > 0 else None)
    if checkpoint_dir is not None:
        fingerprint = _fingerprint(config, encoded, model)  # hashes every example: once, for both records
        done = f"{fingerprint}:{config.epochs}:{identity}"
        with fit_lock(Path(checkpoint_dir)) if _REUSE_FITS.get() else nullcontext():
            reused = _load_fitted(model, Path(checkpoint_dir), done) if _REUSE_FITS.get() else None
            if reused is not None:
                log.info("%s: reusing the completed fit in %s", description, checkpoint_dir)
                return reused
            result = _train_loop(model, tokenizer, encoded, config, params, pad, decision, validate, checkpoint_dir,
                                 description, rng, fingerprint)
            _save_fitted(model, Path(checkpoint_dir), done, result)
            return result
    return _train_loop(model, tokenizer, encoded, config, params, pad, decision, validate, None, description, rng)


def _train_loop(model: Any, tokenizer: Any, encoded: list, config: SFTConfig, params: list, pad: int,
                decision: tuple | None, validate: Callable[[], float] | None, checkpoint_dir: str | Path | None,
                description: str, rng: np.random.Generator, fingerprint: str = "") -> SFTResult:
    """The harness loop (:func:`mmsr_bench.evaluation.loop.train_loop`) in optimizer steps: one step = one group of
    ``grad_accum`` micro-batches of the epoch's seeded order; validation every ``eval_every`` steps (0: after every
    epoch), a resume point after every validation and every epoch."""
    import torch

    dev = next(p.device for p in params)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    # float16 weights: dynamic loss scaling, so small gradients through half-precision activations do not flush to
    # zero (steps with inf/nan gradients are skipped and the scale lowered); bfloat16 and float32 need none.
    scaler = (torch.amp.GradScaler(dev.type) if any(p.dtype == torch.float16 for p in model.parameters())
              else None)
    steps_per_epoch = math.ceil(len(encoded) / (config.batch_size * config.grad_accum))
    orders: list[np.ndarray] = []  # one seeded order per epoch, drawn in epoch order (a resumed run draws the same)

    def step(n: int) -> float:
        epoch, k = divmod(n - 1, steps_per_epoch)
        while len(orders) <= epoch:
            orders.append(rng.permutation(len(encoded)))
        order = orders[epoch]
        micro = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        group = micro[k * config.grad_accum:(k + 1) * config.grad_accum]
        model.train()
        total = 0.0
        for mb in group:
            ids, mask, labels = _collate([encoded[i] for i in mb], pad)
            loss = answer_loss(model, ids.to(dev), mask.to(dev), labels.to(dev), decision,
                               config.decision_weight) / len(group)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            total += float(loss.detach())
        if scaler is not None:
            scaler.unscale_(opt)
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    checkpoint: list[str] = []

    def keep_checkpoint(n: int) -> None:
        if checkpoint_dir is not None:
            checkpoint[:] = [save_trainable(model, checkpoint_dir)]

    def validate_then_train() -> float:
        value = float(validate())  # type: ignore[misc]
        model.train()
        return value

    # Strict improvement of the validation AUC; the kept state is the trainable tensors only (LoRA or all).
    stopper = EarlyStopping(config.patience, lambda: _trainable_state(model), lambda s: _load_trainable(model, s))
    resume = (ResumePoint(Path(checkpoint_dir) / "resume", fingerprint,
                          Resumable(lambda: _trainable_state(model), lambda s: _load_trainable(model, s), opt))
              if checkpoint_dir is not None else None)
    t0 = time.perf_counter()
    loop = train_loop(step, validate_then_train if validate is not None else None, stopper, unit="step",
                      total=steps_per_epoch * config.epochs, metric="auc", split="valid",
                      eval_every=config.eval_every or steps_per_epoch, validate_last=not config.eval_every,
                      save_every=steps_per_epoch, deadline=t0 + 60.0 * config.max_minutes if config.max_minutes else None,
                      resume=resume, row_extra=lambda n: {"epoch": n // steps_per_epoch}, on_improve=keep_checkpoint,
                      description=description)
    if checkpoint_dir is not None and (validate is None or stopper.state is None):
        checkpoint[:] = [save_trainable(model, checkpoint_dir)]
    model.eval()
    validated = bool(loop.history)
    return SFTResult(steps=loop.done, epochs_run=math.ceil(loop.done / steps_per_epoch),
                     best_auc=loop.best_value if validated else None, best_step=loop.chosen if validated else None,
                     history=loop.history, losses=loop.losses, checkpoint=checkpoint[0] if checkpoint else None,
                     seconds=time.perf_counter() - t0, stopped_by=loop.stopped_by,
                     loss_scaling="dynamic (torch.amp.GradScaler, float16 weights)" if scaler is not None else "none")
