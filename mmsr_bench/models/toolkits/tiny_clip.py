"""A tiny open_clip model trained from scratch on a dataset's (image, reference text) pairs: the fallback space of the
CLIP-based hallucination analysis (:mod:`mmsr_bench.results.hallucination`) when no pretrained CLIP is given and the
LiT space (:mod:`mmsr_bench.models.toolkits.lit_clip`) is not chosen. Training lives here, in the models stage; the
results stage only measures distances in the trained space. The weights are cached by the content of the pairs and
the training settings; the analysis records ``clip_trained_on`` so a trained space never passes for a pretrained one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from mmsr_bench.paths import cache_dir

log = logging.getLogger(__name__)

TINY_CLIP = "mmsr-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}


@dataclass(frozen=True)
class ClipTrainSpec:
    """Contrastive training of the tiny CLIP: steps, batch, AdamW lr, seed (all part of the cached weights' key)."""

    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0


def register_tiny_clip() -> str:
    """Make ``mmsr-tiny-clip`` known to open_clip (a JSON config under the cache); returns the encoder name."""
    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        path = cache_dir("clip") / f"{TINY_CLIP}.json"
        path.write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(path)
    return f"open_clip:{TINY_CLIP}"


def _image_tensor(clip, paths: Sequence[str]):
    import torch
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(clip.preprocess(im.convert("RGB")))
    return torch.stack(out)


def train_tiny_clip(image_paths: Sequence[str], texts: Sequence[str], spec: ClipTrainSpec = ClipTrainSpec()) -> Path:
    """Contrastive training of the tiny CLIP on (image, reference text) pairs; returns the safetensors file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from mmsr_bench.models.toolkits.features import load_clip

    encoder = register_tiny_clip()
    h = hashlib.sha256(json.dumps({"cfg": TINY_CLIP_CONFIG, "spec": spec.__dict__}, sort_keys=True).encode())
    for p, t in zip(image_paths, texts):
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
        h.update(t.encode())
    folder = cache_dir("clip", f"{TINY_CLIP}-{h.hexdigest()[:16]}")
    target = folder / "open_clip_model.safetensors"
    if target.exists():
        return target
    base = load_clip(encoder, None, "cpu", spec.seed)
    model = base.model
    import copy

    model = copy.deepcopy(model)
    tokenizer = open_clip.get_tokenizer(TINY_CLIP)
    images = _image_tensor(base, image_paths)
    tokens = tokenizer(list(texts))
    rng = np.random.default_rng(spec.seed)
    torch.manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    model.train()
    for step in range(spec.steps):
        idx = torch.as_tensor(rng.choice(len(images), min(spec.batch_size, len(images)), replace=False))
        img = torch.nn.functional.normalize(model.encode_image(images[idx]), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokens[idx]), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        # Same texts can occur twice in a batch: targets are every column with the same text (soft labels).
        same = (tokens[idx][:, None, :] == tokens[idx][None, :, :]).all(-1).float()
        same = same / same.sum(1, keepdim=True)
        loss = 0.5 * (torch.nn.functional.cross_entropy(logits, same) + torch.nn.functional.cross_entropy(logits.T, same))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            log.info("tiny CLIP contrastive step %d/%d loss %.3f", step, spec.steps, float(loss.detach()))
    model.eval()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(target))
    (folder / "mmsr_clip.json").write_text(json.dumps({"config": TINY_CLIP_CONFIG, "spec": spec.__dict__,
                                                         "n_pairs": len(texts), "final_loss": float(loss.detach())}))
    return target


def embed(clip, image_paths: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    import open_clip
    import torch

    name = clip.name.split(":", 1)[1]
    tokenizer = open_clip.get_tokenizer(name)
    with torch.inference_mode():
        img = clip.model.encode_image(_image_tensor(clip, image_paths).to(clip.device)).float().cpu().numpy()
        txt = clip.model.encode_text(tokenizer(list(texts)).to(clip.device)).float().cpu().numpy()
    return img, txt
