"""Image perturbations for robustness runs (``bench run --perturb SPEC``): a share of items whose image is blanked,
noised or swapped with another item's.

Specs: ``blank:P`` (the image becomes a uniform mid-grey picture of the same size), ``noise:P`` (Gaussian pixel
noise, sigma = 64 grey levels, clipped), ``swap:P`` (the chosen items' images are permuted among themselves by a
random derangement, so every chosen item shows another chosen item's image). ``P`` in (0, 1]; the number of items
is ``round(P * n_with_image)``. Everything is a pure function of (items, spec, seed): the chosen items, the noise
and the permutation come from ``numpy.random.default_rng([seed, crc32(spec)])``. Perturbed images are written as PNG
under ``out_dir`` (originals are never modified); unperturbed items keep their original paths.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmsr_bench.data.splits import ItemTable
from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)

KINDS = ("blank", "noise", "swap")
BLANK_VALUE = 128
NOISE_SIGMA = 64.0


@dataclass(frozen=True)
class Perturbation:
    kind: str
    share: float

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.share:g}"


def parse(spec: str) -> Perturbation:
    """``"blank:0.2"`` -> Perturbation("blank", 0.2); a clear error otherwise."""
    kind, sep, share = str(spec).strip().partition(":")
    if not sep or kind not in KINDS:
        raise BenchError(f"--perturb {spec!r}: expected KIND:SHARE with KIND one of {', '.join(KINDS)}, "
                         f"e.g. blank:0.2")
    try:
        value = float(share)
    except ValueError:
        raise BenchError(f"--perturb {spec!r}: share {share!r} is not a number (e.g. blank:0.2)") from None
    if not 0.0 < value <= 1.0:
        raise BenchError(f"--perturb {spec!r}: share must be in (0, 1], got {value}")
    return Perturbation(kind, value)


def _local_images(items: ItemTable) -> list[int]:
    if "image" not in items.frame.columns:
        return []
    out = []
    for item, p in items.frame["image"].items():
        if isinstance(p, str) and p and not p.startswith(("http://", "https://")) and Path(p).is_file():
            out.append(int(item))
    return out


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn permutation without fixed points (rejection sampling; n >= 2)."""
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def chosen_items(items: ItemTable, spec: str, seed: int) -> tuple[Perturbation, list[int], np.random.Generator]:
    p = parse(spec)
    rng = np.random.default_rng([int(seed), zlib.crc32(p.spec.encode())])
    pool = _local_images(items)
    if not pool:
        raise BenchError(f"--perturb {spec}: no item has a local image file to perturb; run `bench data images` first")
    k = int(round(p.share * len(pool)))
    if p.kind == "swap" and k == 1:
        k = 2 if len(pool) >= 2 else 0
    chosen = sorted(int(i) for i in rng.choice(pool, size=k, replace=False)) if k else []
    return p, chosen, rng


def apply_to_items(items: ItemTable, spec: str, seed: int, out_dir: Path) -> ItemTable:
    """A new ItemTable whose chosen items point to perturbed copies written under ``out_dir``."""
    from PIL import Image

    p, chosen, rng = chosen_items(items, spec, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = items.frame.copy()
    originals = {i: str(items.frame.at[i, "image"]) for i in chosen}
    sources = dict(originals)
    if p.kind == "swap" and len(chosen) >= 2:
        perm = _derangement(len(chosen), rng)
        sources = {i: originals[chosen[j]] for i, j in zip(chosen, perm)}
    for i in chosen:
        with Image.open(sources[i]) as im:
            rgb = im.convert("RGB")
        if p.kind == "blank":
            out = Image.new("RGB", rgb.size, (BLANK_VALUE,) * 3)
        elif p.kind == "noise":
            arr = np.asarray(rgb, dtype=np.float64)
            arr = arr + rng.normal(0.0, NOISE_SIGMA, size=arr.shape)
            out = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
        else:
            out = rgb
        dest = out_dir / f"{p.kind}-{i}.png"
        out.save(dest, format="PNG", optimize=False)
        frame.at[i, "image"] = str(dest)
    log.info("perturbation %s: %d of %d items changed (seed %d) under %s", p.spec, len(chosen), items.n_items, seed,
             out_dir)
    return dataclasses.replace(items, frame=frame)
