"""Item understanding for MLLM-SRec: a vision-language model answers fixed visual questions about each item image,
and the answer is the item's caption (cached on disk).

Loading: every VLM goes through transformers' image-text-to-text path (``AutoModelForImageTextToText`` +
``AutoProcessor``) from a local folder or a hub id already in the local Hugging Face cache: LLaVA, Qwen2-VL,
Qwen2.5-VL, Idefics3, SmolVLM, BLIP-2 (``tests/test_vlm_families.py``). The caption prompt is built in each family's
own format (:func:`caption_prompt`: the processor's chat template where it has one).
Because this project runs without any hub, ``tiny-llava`` is *built* here: a tiny CLIP vision tower + a tiny Llama
text model joined by LLaVA's projector (``LlavaForConditionalGeneration`` from config), a byte-level BPE tokenizer
trained on the reference descriptions plus an ``<image>`` token, a ``CLIPImageProcessor`` at the images' size. It is
then TRAINED briefly on (image, ``image_description``) pairs of the dataset's items (item content only, never
interactions), saved, and loaded back through the same ``from_pretrained`` path. A share of items
(``holdout``) is kept out of VLM training, so their captions measure generalisation; which items were held out is
part of the recorded identity. :class:`VLM` records ``random_init=False, trained_on=...`` so captions of a tiny VLM
can never pass for a real MLLM's.

``effnet-smollm2`` (:mod:`mmsr_bench.models.toolkits.captioner`) is the LLaVA recipe with real parts: frozen EfficientNet-Lite0
(ImageNet) and frozen SmolLM2-135M-Instruct joined by a projector trained on the same pairs with the same held-out
items; :class:`VLM` carries its ``captioner`` (own prompt layout and greedy decoding) and records that its towers are
real pretrained weights.

Questions: MLLM-SRec asks the MLLM fixed questions (what is it, colour, material, style, use). Here one prompt
combines them (:data:`CAPTION_PROMPT`), so each item costs one generation; the answer is the caption.

Cache: ``cache_dir("captions", <model hash>)/<prompt hash>.json`` maps sha256(image bytes) -> caption (JSON, no
pickle), so captions are computed once per (model, prompt, image content).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.paths import cache_dir, read_verified_json, write_verified_json

log = logging.getLogger(__name__)

CAPTION_PROMPT = ("Answer about the product in the image: what is it, what colour is it, what material, which "
                  "style and what use?")
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class TinyVLMSpec:
    """Architecture and training budget of the locally built ``tiny-llava`` (must train on 2 CPU cores)."""

    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 96
    text_layers: int = 2
    heads: int = 4
    vocab_size: int = 2048
    train_steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    holdout: float = 0.25
    seed: int = 0


@dataclass
class VLM:
    """A loaded image-text-to-text model, its processor, and provenance facts for ``run_info``."""

    model: Any
    processor: Any
    name: str
    path: str
    weights_sha256: str
    random_init: bool
    trained_on: str | None
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)
    #: a captioner with its own prompt and generation (:mod:`mmsr_bench.models.toolkits.captioner`); None = transformers' generate
    captioner: Any = None

    def run_info(self) -> dict[str, Any]:
        return {"vlm": self.name, "vlm_path": self.path, "vlm_sha256": self.weights_sha256,
                "vlm_random_init": self.random_init, "vlm_trained_on": self.trained_on, **self.info}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _prompt_text(question: str = CAPTION_PROMPT) -> str:
    return f"{IMAGE_TOKEN}\nQuestion: {question}\nAnswer:"


def _read_rgb(path: str | Path):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as exc:
        raise BenchError(f"image {path}: cannot be read ({exc}); re-run `bench data images` or drop the item") from None


def holdout_mask(keys: Sequence[str], share: float) -> np.ndarray:
    """True for items kept out of VLM training: a hash of the item key (stable, independent of row order)."""
    vals = np.array([int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for k in keys])
    return vals < share


def _build_processor(spec: TinyVLMSpec, texts: Sequence[str]):
    from transformers import CLIPImageProcessor, LlavaProcessor

    from mmsr_bench.models.toolkits.backbones import _train_tokenizer

    tok = _train_tokenizer(list(texts) + [_prompt_text()] * 20, spec.vocab_size)
    tok.add_tokens([IMAGE_TOKEN], special_tokens=True)
    improc = CLIPImageProcessor(size={"shortest_edge": spec.image_size},
                                crop_size={"height": spec.image_size, "width": spec.image_size})
    return LlavaProcessor(image_processor=improc, tokenizer=tok, patch_size=spec.patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          image_token=IMAGE_TOKEN)


def _build_model(spec: TinyVLMSpec, tok):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_size=spec.vision_hidden, intermediate_size=2 * spec.vision_hidden,
                              num_hidden_layers=spec.vision_layers, num_attention_heads=spec.heads,
                              image_size=spec.image_size, patch_size=spec.patch_size, projection_dim=spec.vision_hidden)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=spec.text_hidden, intermediate_size=2 * spec.text_hidden,
                       num_hidden_layers=spec.text_layers, num_attention_heads=spec.heads,
                       num_key_value_heads=spec.heads, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                      vision_feature_select_strategy="default", vision_feature_layer=-1,
                      projector_hidden_act="gelu")
    return LlavaForConditionalGeneration(cfg)


def _train(model, processor, images: list, captions: list[str], spec: TinyVLMSpec) -> float:
    """Caption loss on (image, reference description) pairs; only the answer tokens carry loss."""
    import torch

    tok = processor.tokenizer
    rng = np.random.default_rng(spec.seed)
    torch.manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    model.train()
    prompt = _prompt_text()
    n_prompt = len(processor(text=[prompt], images=[images[0]], return_tensors="pt")["input_ids"][0])
    loss_val = float("nan")
    tok.padding_side = "right"
    for step in range(spec.train_steps):
        idx = rng.integers(0, len(images), spec.batch_size)
        texts = [f"{prompt} {captions[i]}{tok.eos_token}" for i in idx]
        enc = processor(text=texts, images=[images[i] for i in idx], return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        labels[:, :n_prompt] = -100
        labels[enc["attention_mask"] == 0] = -100
        out = model(**enc, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_val = float(out.loss.detach())
        if step % 50 == 0:
            log.info("tiny VLM training step %d/%d loss %.3f", step, spec.train_steps, loss_val)
    model.eval()
    return loss_val


def build_tiny_vlm(image_paths: Sequence[str], descriptions: Sequence[str], keys: Sequence[str],
                   spec: TinyVLMSpec = TinyVLMSpec()) -> Path:
    """Build (once) and train ``tiny-llava`` on (image, description) pairs; return its folder (hash-named)."""
    import torch

    pairs = [(p, d, k) for p, d, k in zip(image_paths, descriptions, keys) if p and isinstance(d, str) and d]
    if not pairs:
        raise BenchError("tiny VLM: no (image, image_description) pairs to train on; a tiny VLM can only be built "
                         "on data with reference descriptions (e.g. synth4). For real data pass --set vlm=FOLDER "
                         "with a LLaVA-style checkpoint")
    img_hash = hashlib.sha256()
    for p, d, k in pairs:
        img_hash.update(sha256_bytes(Path(p).read_bytes()).encode())
        img_hash.update(d.encode())
        img_hash.update(k.encode())
    ident = {"spec": spec.__dict__, "data": img_hash.hexdigest()[:16], "prompt": _prompt_text(), "format": 1}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir("vlm", f"tiny-llava-{key}")
    if (folder / "config.json").exists() and list(folder.glob("*.safetensors")):
        return folder
    held = holdout_mask([k for _, _, k in pairs], spec.holdout)
    train_pairs = [pr for pr, h in zip(pairs, held) if not h] or pairs
    log.info("training tiny VLM on %d (image, description) pairs (%d held out) for %d steps", len(train_pairs),
             int(held.sum()), spec.train_steps)
    processor = _build_processor(spec, [d for _, d, _ in pairs])
    torch.manual_seed(spec.seed)
    model = _build_model(spec, processor.tokenizer)
    images = [_read_rgb(p) for p, _, _ in train_pairs]
    final = _train(model, processor, images, [d for _, d, _ in train_pairs], spec)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(str(tmp))
    model.save_pretrained(str(tmp), safe_serialization=True)
    from mmsr_bench.models.toolkits.backbones import weights_sha256

    meta = {**ident, "name": "tiny-llava", "n_train": len(train_pairs), "held_out": sorted(k for (_, _, k), h in
            zip(pairs, held) if h), "final_loss": final, "weights_sha256": weights_sha256(tmp)}
    (tmp / "mmsr_vlm.json").write_text(json.dumps(meta, indent=2))
    for f in tmp.iterdir():
        f.replace(folder / f.name)
    tmp.rmdir()
    return folder


#: Families whose processor inserts the image's placeholder tokens itself, so the text carries none (the
#: format of their model cards: "Question: ... Answer:").
PROCESSOR_INSERTS_IMAGE = frozenset({"blip-2", "instructblip"})


def caption_prompt(vlm: VLM, question: str = CAPTION_PROMPT) -> str:
    """The caption prompt in the model's own format.

    A processor with a chat template (Qwen2-VL, Qwen2.5-VL, Idefics3, SmolVLM, LLaVA-1.5/NeXT checkpoints) gets one
    user turn of an image and the question, rendered by ``apply_chat_template`` with the generation prompt, so the
    template places the family's image tokens. Without one, the family's documented raw format: BLIP-2 and
    InstructBLIP take the bare question (their processors prepend the query tokens), LLaVA-style models
    ``<image>\nQuestion: ...\nAnswer:`` (the format the local ``tiny-llava`` is trained on).
    """
    if vlm.captioner is not None:
        return vlm.captioner.prompt(question)
    proc = vlm.processor
    if getattr(proc, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if getattr(getattr(vlm.model, "config", None), "model_type", None) in PROCESSOR_INSERTS_IMAGE:
        return f"Question: {question} Answer:"
    return _prompt_text(question)


def _processor_inputs(vlm: VLM, texts: list[str], images: list) -> dict:
    """Tokenised texts and processed images on the model's device; one image per text. Idefics3-style processors
    take one list of images per text, the others a flat list."""
    nested = type(vlm.processor).__name__ in ("Idefics3Processor", "SmolVLMProcessor", "Idefics2Processor")
    enc = vlm.processor(text=texts, images=[[im] for im in images] if nested else images, return_tensors="pt",
                        padding=True)
    return {k: v.to(vlm.device) if hasattr(v, "to") else v for k, v in enc.items()}


def _generate(vlm: VLM, images: list, prompt: str, max_new_tokens: int) -> list[str]:
    import torch

    tok = vlm.processor.tokenizer
    tok.padding_side = "left"
    enc = _processor_inputs(vlm, [prompt] * len(images), images)
    with torch.inference_mode():
        out = vlm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    n_in = enc["input_ids"].shape[1]
    # Decoder-only families return prompt + answer; an encoder-decoder or query-token family may return the answer
    # alone (then it is shorter than the prompt, or does not start with it).
    if out.shape[1] > n_in and bool((out[:, :n_in] == enc["input_ids"]).all()):
        out = out[:, n_in:]
    return [" ".join(t.split()) for t in tok.batch_decode(out.cpu(), skip_special_tokens=True)]


def image_features(vlm: VLM, images: list) -> np.ndarray:
    """One vector per image: the family's ``get_image_features`` output (for LLaVA, Qwen2-VL and Idefics3 the
    projected features its language model receives), mean-pooled over each image's tokens. The inputs come from the family's own processor (so Qwen2-VL
    gets its ``image_grid_thw``, Idefics3 its ``pixel_attention_mask``); a family whose output cannot be split into
    one block per image is refused with one line."""
    import inspect

    import torch

    enc = _processor_inputs(vlm, [caption_prompt(vlm)] * len(images), images)
    params = inspect.signature(vlm.model.get_image_features).parameters
    kw = {k: v for k, v in enc.items() if k in params and params[k].kind is not inspect.Parameter.VAR_KEYWORD}
    with torch.inference_mode():
        out = vlm.model.get_image_features(**kw)
    feats = getattr(out, "pooler_output", None)
    if feats is None:
        feats = out[0] if isinstance(out, tuple) and out and isinstance(out[0], (list, tuple)) else out
    if hasattr(feats, "last_hidden_state"):
        feats = feats.last_hidden_state
    n = len(images)
    if torch.is_tensor(feats) and feats.dim() == 2 and feats.shape[0] != n and "image_grid_thw" in kw:
        merge = int(getattr(getattr(vlm.model.config, "vision_config", None), "spatial_merge_size", 1) or 1)
        feats = torch.split(feats, (kw["image_grid_thw"].prod(-1) // merge ** 2).tolist())
    pix = kw.get("pixel_values")
    if torch.is_tensor(feats) and torch.is_tensor(pix) and pix.dim() == 5 and feats.shape[0] != n:
        # Idefics3/SmolVLM: each image is split into sub-images padded to the batch's maximum; the model drops the
        # all-zero padding ones, so an image's block is as long as its real sub-images
        real = (pix.reshape(pix.shape[0], pix.shape[1], -1) != 0).any(-1).sum(1)
        if int(real.sum()) == feats.shape[0]:
            feats = torch.split(feats, real.tolist())
    if isinstance(feats, (list, tuple)) and len(feats) == n:
        pooled = torch.stack([f.float().reshape(-1, f.shape[-1]).mean(0) for f in feats])
    elif torch.is_tensor(feats) and feats.shape[0] % n == 0:
        pooled = feats.float().reshape(n, -1, feats.shape[-1]).mean(1)
    else:
        shape = tuple(feats.shape) if torch.is_tensor(feats) else type(feats).__name__
        raise BenchError(f"visual tokens: {vlm.name} returned image features {shape} for {n} images, which cannot "
                         "be split per image; use visual_input=caption with this VLM")
    return pooled.cpu().numpy()


def caption_items(vlm: VLM, image_paths: Sequence[str | None], *, question: str = CAPTION_PROMPT,
                  max_new_tokens: int = 24, batch_size: int = 32) -> tuple[list[str], dict[str, int]]:
    """Caption every image (``None`` -> empty caption), reusing the on-disk cache. Returns captions and counts."""
    prompt = caption_prompt(vlm, question)
    cache_file = cache_dir("captions", vlm.weights_sha256[:16]) / f"{sha256_bytes(prompt.encode())[:16]}.json"
    cache: dict[str, str] = read_verified_json(cache_file)
    keys: list[str | None] = []
    todo: dict[str, str] = {}
    for p in image_paths:
        if not p:
            keys.append(None)
            continue
        k = sha256_bytes(Path(p).read_bytes())
        keys.append(k)
        if k not in cache:
            todo.setdefault(k, str(p))
    items = list(todo.items())
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        if vlm.captioner is not None:
            caps = vlm.captioner.caption([p for _, p in chunk], question, max_new_tokens)
        else:
            caps = _generate(vlm, [_read_rgb(p) for _, p in chunk], prompt, max_new_tokens)
        cache.update({k: c for (k, _), c in zip(chunk, caps)})
    if items:
        write_verified_json(cache_file, cache)
    log.info("captions: %d images, %d from cache, %d generated", sum(k is not None for k in keys),
             sum(k is not None for k in keys) - len(items), len(items))
    return [cache[k] if k else "" for k in keys], {"cached": len(keys) - len(items), "generated": len(items)}
