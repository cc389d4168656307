"""``synth4``: the embedded default suite, generated deterministically from a seed (no download).

Why it exists: a benchmark needs a dataset where we *know* what each modality can contribute, so modality ablations
(text+image vs text only vs image only) and ID-sequence models (SASRec vs popularity) can be validated against a
planted signal, and captioning models can be scored against ground truth. Four categories shaped like Amazon 5-core
data (``baby``, ``sports``, ``beauty``, ``toys``), ~2,000 users and ~300 items each, generated in about a second.

Generative model (for one ``(category, seed)``; every random draw comes from ``numpy.random.default_rng`` streams
spawned from ``SeedSequence([seed, crc32(category), GENERATOR_VERSION])``, so the output is a pure function of its
inputs):

Items ``i = 0..n_items-1`` (external id ``SYN<CAT><i:05d>``, e.g. ``SYNTO00042``) have latent attributes

- ``text_attr`` t(i), one of 8 category-specific words (material / ingredient / theme, e.g. ``"bamboo"``). It appears
  in the title and description and is **not** rendered in the image.
- ``image_attr`` v(i), one of 8 colours (:data:`COLOURS`). It is the object's fill colour in the image and is
  named in ``image_description``; it is **never** mentioned in the title, brand, categories or description.
  ``(t, v)`` is assigned from a random permutation so every one of the 64 cells holds ``n_items/64`` (+-1) items
  and ``t`` and ``v`` are independent.
- ``product``: one of 6 category nouns (e.g. ``"rattle"``), uniform. Shared information: the noun is in the title,
  the categories path and the image description, and it fixes the rendered ``shape`` (one shape per noun).
- ``pattern``: plain / stripes / polka dots / checkered, uniform; image-only noise (in ``image_description`` only).
- ``brand``: one of 12 invented brands, uniform; text-only noise.
- ``popularity`` w(i) ~ LogNormal(0, ``popularity_sigma``); a mild long tail.
- ``successor`` s(i): one random cyclic permutation of all items (a single cycle, so s(i) != i and chains never
  loop early), drawn independently of every attribute: the ID-only signal.

Users ``u`` (external id ``U<u:05d>``) have a preferred text value T(u) and a preferred colour V(u) (uniform,
independent) and a length ``L = min_len + Geometric`` with mean ``mean_len``, clipped to
``[min_len, min(max_len, n_items)]``.
Each step draws the next item from the mixture

    P(i | u, prev) ∝ [ p_text  * w(i)·1[t(i)=T(u)]              / Z_t
                     + p_image * w(i)·1[v(i)=V(u)]              / Z_v
                     + p_both  * w(i)·1[t(i)=T(u), v(i)=V(u)]   / Z_tv
                     + p_id    * 1[i = s(prev)]                 (absent at the first step)
                     + p_noise * w(i)                           / Z ]  * 1[i not yet in the sequence]

with ``p_noise = 1 - p_text - p_image - p_both - p_id`` and each Z normalising its component over all items.
Items already in the sequence are removed and the rest renormalised (no repeats, like Amazon 5-core), so the
successor component only fires when s(prev) is new (if no unseen item has mass left, the step is uniform over unseen
items). Defaults: p_text = p_image = p_id = 0.20, p_both = 0.30, p_noise = 0.10. Consequences, which
``tests/test_synth.py`` checks: a user's text value is recoverable only from item text, the colour only from images,
the successor only from IDs; items matching both preferences get ``p_both`` plus both single-modality masses, so a
predictor using text and image beats either alone; a transition-counting (ID) predictor beats popularity. On
``toys``/seed 7 the held-out last item's HR@10 (full ranking, unseen items) of such counting predictors is about:
popularity 0.06, text 0.17, image 0.16, text+image 0.25, transitions 0.32.

Images (``image_size`` square PNG, default 64) are drawn at 4x with Pillow and downsampled with LANCZOS: a
near-white background, the product's shape filled with the item's colour (small jitter in hue, saturation,
value, size, position and rotation), the pattern in a lighter tint of the same hue, and a darker outline. PNGs
are saved with fixed options and no metadata, so bytes are identical for identical inputs on the same Pillow/zlib.
``image_description`` is the ground-truth caption, e.g. ``"a red round rattle with stripes"``. It describes the
image, is NOT item text (it is not among :data:`mmsr_bench.data.splits.ITEM_TEXT_FIELDS`), and feeding it to a text model
leaks the image signal.

The returned item table follows the loader conventions of :mod:`mmsr_bench.data.loaders` (indexed by ``ext_id``, object
columns, the items that occur in the sequences in order of first appearance); :func:`latent_attributes` and
:func:`latent_users` expose the hidden variables for tests and diagnostics (never give them to a model).

Why one module of this length: the synthetic generator with every planted signal (sequences, titles, images) in one
place, so that the planted truth is defined once.
"""

from __future__ import annotations

import colorsys
import io
import logging
import math
import os
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from mmsr_bench.data.splits import RawDataset
from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)

#: Bump when the generative model or rendering changes, so cached suites built from an older generator are rebuilt.
GENERATOR_VERSION = 1

SYNTH4_CATEGORIES = ("baby", "sports", "beauty", "toys")

#: Image-only attribute values: colour name -> (hue in degrees, saturation, value).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.0, 0.85, 0.85),
    "orange": (28.0, 0.90, 0.95),
    "yellow": (54.0, 0.90, 0.95),
    "green": (125.0, 0.75, 0.65),
    "teal": (178.0, 0.85, 0.65),
    "blue": (222.0, 0.85, 0.85),
    "purple": (278.0, 0.70, 0.70),
    "pink": (325.0, 0.55, 1.00),
}
COLOUR_NAMES = tuple(COLOURS)

#: How each shape is worded in image descriptions.
SHAPES = ("round", "square", "triangular", "star-shaped", "heart-shaped", "hexagonal")
PATTERNS = ("plain", "stripes", "polka dots", "checkered")
_PATTERN_PHRASE = {"plain": "", "stripes": " with stripes", "polka dots": " with polka dots",
                   "checkered": " with a checkered pattern"}


@dataclass(frozen=True)
class _CategoryVocab:
    """Words for one category. ``products[k]`` is drawn with ``SHAPES[k]``."""

    department: str
    text_attrs: tuple[str, ...]          # 8 text-only attribute values
    products: tuple[str, ...]            # 6 nouns, one per shape
    subcategories: tuple[str, ...]       # category path element per product
    brands: tuple[str, ...]              # 12 noise brands
    suffixes: tuple[str, ...]            # title noise
    attr_phrase: str                     # description verb phrase with "{attr}"
    fillers: tuple[str, ...]             # description noise sentences


_VOCAB: dict[str, _CategoryVocab] = {
    "baby": _CategoryVocab(
        department="Baby",
        text_attrs=("organic cotton", "bamboo", "merino wool", "silicone", "muslin", "fleece", "linen", "cashmere"),
        products=("rattle", "blanket", "bib", "mobile", "pillow", "play mat"),
        subcategories=("Toys > Rattles", "Nursery > Blankets", "Feeding > Bibs", "Nursery > Mobiles",
                       "Nursery > Pillows", "Activity > Play Mats"),
        brands=("Lumo", "Nestling", "Tiny Oak", "Babbo", "Cuddlewise", "Pebble & Co", "Sprout", "Hushaby",
                "Little Wren", "Mamoo", "Dandelo", "Bunnet"),
        suffixes=("for Newborns", "0-12 Months", "2-Pack", "Gift Set", "for Infants", "Soft Touch", "", ""),
        attr_phrase="is made from {attr}",
        fillers=("Gentle on delicate skin.", "Machine washable and easy to care for.",
                 "A thoughtful gift for new parents.", "Tested for safety by an independent lab.",
                 "Lightweight and easy to pack for travel.", "Designed with pediatric experts."),
    ),
    "sports": _CategoryVocab(
        department="Sports & Outdoors",
        text_attrs=("carbon fiber", "neoprene", "titanium", "memory foam", "stainless steel", "leather",
                    "breathable mesh", "natural rubber"),
        products=("ball", "yoga mat", "pennant", "medal", "wristband", "dumbbell"),
        subcategories=("Team Sports > Balls", "Exercise & Fitness > Yoga", "Fan Shop > Pennants",
                       "Fan Shop > Awards", "Accessories > Wristbands", "Exercise & Fitness > Weights"),
        brands=("Apexa", "Stridon", "Kinetiq", "Vantor", "Summitry", "Pacero", "Ironbark", "Flexion",
                "Tracklin", "Northwake", "Velo & Co", "Gritwell"),
        suffixes=("for Training", "Pro Edition", "Size M", "2-Pack", "for Outdoor Use", "All Weather", "", ""),
        attr_phrase="is built with {attr}",
        fillers=("Built to last through intense workouts.", "Lightweight and easy to carry.",
                 "Trusted by amateur and professional athletes.", "Backed by a one-year warranty.",
                 "Performs well indoors and outdoors.", "Easy to clean after every session."),
    ),
    "beauty": _CategoryVocab(
        department="Beauty",
        text_attrs=("argan oil", "shea butter", "aloe vera", "tea tree", "vitamin c", "hyaluronic acid",
                    "charcoal", "coconut"),
        products=("compact", "soap bar", "sponge", "bath bomb", "lip balm", "cream jar"),
        subcategories=("Makeup > Face", "Bath & Body > Soaps", "Tools & Accessories > Sponges",
                       "Bath & Body > Bath Bombs", "Skin Care > Lips", "Skin Care > Face Creams"),
        brands=("Lumiere", "Velvetine", "Aurelle", "Dewy Days", "Solace", "Mirabel", "Glowth", "Puremist",
                "Elodie", "Nectarra", "Silka", "Bloomwell"),
        suffixes=("Travel Size", "Value Pack", "1.7 oz", "for All Skin Types", "Gift Set", "Vegan", "", ""),
        attr_phrase="is infused with {attr}",
        fillers=("Dermatologist tested.", "Free of parabens and sulfates.", "Cruelty free and vegan.",
                 "Suitable for daily use.", "Leaves skin feeling soft and smooth.", "Made in small batches."),
    ),
    "toys": _CategoryVocab(
        department="Toys & Games",
        text_attrs=("dinosaur", "space rocket", "pirate", "unicorn", "robot", "jungle safari", "fairy tale",
                    "race car"),
        products=("ball", "building block", "kite", "magic wand", "plush", "puzzle"),
        subcategories=("Sports & Outdoor Play > Balls", "Building Toys > Blocks", "Outdoor Play > Kites",
                       "Dress Up & Pretend Play > Wands", "Stuffed Animals & Plush", "Puzzles > Floor Puzzles"),
        brands=("Playmoor", "Wizzle", "Tinkerfox", "Jollyroo", "Bramblewood", "Zoomba", "Kiddoodle",
                "Funtastik", "Owlet Toys", "Gigglebug", "Marvella", "Toyhaven"),
        suffixes=("for Kids 3+", "Ages 5 and Up", "Deluxe Edition", "Party Favor", "Gift Set", "Travel Size",
                  "", ""),
        attr_phrase="has a {attr} theme",
        fillers=("Encourages imaginative play.", "Made from non-toxic materials.", "A great birthday gift.",
                 "Sturdy enough for everyday play.", "Fun for the whole family.", "Batteries not required."),
    ),
}


@dataclass(frozen=True)
class SynthConfig:
    """Size and signal strength of one synth4 category. Defaults give ~2,000 users x ~300 items, ~20k interactions.

    ``p_text``, ``p_image``, ``p_both``, ``p_id`` are the mixture weights of the next-item model (module docstring);
    the remainder ``1 - sum`` is popularity noise.
    """

    n_users: int = 2000
    n_items: int = 300
    image_size: int = 64
    min_len: int = 5
    max_len: int = 30
    p_text: float = 0.20
    p_image: float = 0.20
    p_id: float = 0.20
    p_both: float = 0.30
    mean_len: float = 10.0
    popularity_sigma: float = 0.5

    @property
    def p_noise(self) -> float:
        return 1.0 - self.p_text - self.p_image - self.p_both - self.p_id

    def validate(self) -> None:
        """Raise BenchError naming the offending field; called by every public entry point."""
        def bad(name: str, why: str) -> BenchError:
            return BenchError(f"SynthConfig.{name}={getattr(self, name)!r}: {why}")

        for f in fields(self):
            val = getattr(self, f.name)
            if f.name.startswith("p_"):
                if not isinstance(val, (int, float)) or not 0.0 <= float(val) <= 1.0:
                    raise bad(f.name, "must be a probability in [0, 1]")
        if self.p_noise < -1e-9:
            raise BenchError(f"SynthConfig: p_text + p_image + p_both + p_id = {1 - self.p_noise:.3f} exceeds 1; "
                             "lower them so the popularity-noise share is >= 0")
        if not isinstance(self.n_users, int) or self.n_users < 1:
            raise bad("n_users", "must be an integer >= 1")
        if not isinstance(self.n_items, int) or self.n_items < 2:
            raise bad("n_items", "must be an integer >= 2")
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 1024:
            raise bad("image_size", "must be an integer pixel size in [8, 1024]")
        if not isinstance(self.min_len, int) or self.min_len < 3:
            raise bad("min_len", "must be an integer >= 3 (leave-one-out needs train, valid and test items)")
        if not isinstance(self.max_len, int) or self.max_len < self.min_len:
            raise bad("max_len", f"must be an integer >= min_len ({self.min_len})")
        if self.min_len > self.n_items:
            raise bad("min_len", f"must be <= n_items ({self.n_items}); sequences never repeat an item")
        if not self.min_len <= self.mean_len <= self.max_len:
            raise bad("mean_len", f"must lie in [min_len, max_len] = [{self.min_len}, {self.max_len}]")
        if not 0.0 <= self.popularity_sigma <= 3.0:
            raise bad("popularity_sigma", "must be in [0, 3]")


@dataclass(frozen=True)
class _Items:
    ext_ids: list[str]
    text_attr: np.ndarray     # int, index into vocab.text_attrs
    image_attr: np.ndarray    # int, index into COLOUR_NAMES
    product: np.ndarray       # int, index into vocab.products (== shape index)
    pattern: np.ndarray       # int, index into PATTERNS
    brand: np.ndarray         # int, index into vocab.brands
    suffix: np.ndarray
    fillers: np.ndarray       # (n, 2) int, indices into vocab.fillers
    popularity: np.ndarray    # float weights
    successor: np.ndarray     # int item index
    render: np.ndarray        # (n, 8) float jitter parameters for the renderer


def _check_category(category: str) -> _CategoryVocab:
    if category not in _VOCAB:
        raise BenchError(f"unknown synth4 category {category!r}; known categories: {', '.join(SYNTH4_CATEGORIES)}")
    return _VOCAB[category]


def _streams(category: str, seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent RNG streams for items and users, so item latents do not depend on the user simulation."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BenchError(f"synth4 seed must be a non-negative integer, got {seed!r}")
    root = np.random.SeedSequence([int(seed), zlib.crc32(category.encode("utf-8")), GENERATOR_VERSION])
    item_ss, user_ss = root.spawn(2)
    return np.random.default_rng(item_ss), np.random.default_rng(user_ss)


def _make_items(category: str, vocab: _CategoryVocab, rng: np.random.Generator, cfg: SynthConfig) -> _Items:
    n = cfg.n_items
    n_t, n_v = len(vocab.text_attrs), len(COLOUR_NAMES)
    cell = rng.permutation(n)  # balanced (text, colour) cells, independent of the item id
    text_attr = cell % n_t
    image_attr = (cell // n_t) % n_v
    product = rng.integers(0, len(vocab.products), n)
    pattern = rng.integers(0, len(PATTERNS), n)
    brand = rng.integers(0, len(vocab.brands), n)
    suffix = rng.integers(0, len(vocab.suffixes), n)
    fillers = np.stack([rng.permutation(len(vocab.fillers))[:2] for _ in range(n)])
    popularity = rng.lognormal(0.0, cfg.popularity_sigma, n)
    order = rng.permutation(n)  # one cycle through all items: successor[order[j]] = order[j + 1]
    successor = np.empty(n, dtype=np.int64)
    successor[order] = np.roll(order, -1)
    # hue jitter, saturation jitter, value jitter, scale, dx, dy, rotation, background shade
    render = rng.random((n, 8))
    code = category[:2].upper()
    return _Items(ext_ids=[f"SYN{code}{i:05d}" for i in range(n)], text_attr=text_attr, image_attr=image_attr,
                  product=product, pattern=pattern, brand=brand, suffix=suffix, fillers=fillers,
                  popularity=popularity, successor=successor, render=render)


def _simulate_users(items: _Items, rng: np.random.Generator, cfg: SynthConfig,
                    n_text: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Draw user preferences and sequences of item indices from the mixture in the module docstring."""
    n, n_v = cfg.n_items, len(COLOUR_NAMES)
    pref_t = rng.integers(0, n_text, cfg.n_users)
    pref_v = rng.integers(0, n_v, cfg.n_users)
    extra_mean = cfg.mean_len - cfg.min_len
    if extra_mean > 0:
        extra = rng.geometric(1.0 / (extra_mean + 1.0), cfg.n_users) - 1
    else:
        extra = np.zeros(cfg.n_users, dtype=np.int64)
    # sequences never repeat an item, so no sequence can be longer than n_items
    lengths = np.clip(cfg.min_len + extra, cfg.min_len, min(cfg.max_len, cfg.n_items))

    w = items.popularity / items.popularity.sum()

    def component(mask: np.ndarray) -> np.ndarray:
        m = w * mask
        s = m.sum()
        return m / s if s > 0 else m

    t_comp = np.stack([component(items.text_attr == t) for t in range(n_text)])
    v_comp = np.stack([component(items.image_attr == v) for v in range(n_v)])
    base = (cfg.p_text * t_comp[:, None, :] + cfg.p_image * v_comp[None, :, :] + cfg.p_noise * w[None, None, :])
    for t in range(n_text):
        for v in range(n_v):
            base[t, v] += cfg.p_both * component((items.text_attr == t) & (items.image_attr == v))

    sequences: list[np.ndarray] = []
    for u in range(cfg.n_users):
        row = base[pref_t[u], pref_v[u]]
        seen = np.zeros(n, dtype=bool)
        seq = np.empty(lengths[u], dtype=np.int64)
        prev = -1
        for step in range(lengths[u]):
            p = row.copy()
            if prev >= 0:
                p[items.successor[prev]] += cfg.p_id
            p[seen] = 0.0
            cum = np.cumsum(p)
            if cum[-1] <= 0.0:  # every item with mass is already taken: fall back to uniform over unseen
                cum = np.cumsum(~seen, dtype=np.float64)
            nxt = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
            nxt = min(nxt, n - 1)
            while seen[nxt]:  # guard against float edge cases at the boundary
                nxt = (nxt + 1) % n
            seq[step] = nxt
            seen[nxt] = True
            prev = nxt
        sequences.append(seq)
    return pref_t, pref_v, sequences


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    """Outline points of a shape centred at (cx, cy) with radius r, rotated by ``rot`` radians."""
    if shape == "round":
        pts = [(math.cos(2 * math.pi * j / 48), math.sin(2 * math.pi * j / 48)) for j in range(48)]
    elif shape == "square":
        pts = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    elif shape == "triangular":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        pts = [(x, y + 0.15) for x, y in pts]
    elif shape == "star-shaped":
        pts = []
        for j in range(10):
            a = -math.pi / 2 + j * math.pi / 5
            rr = 1.0 if j % 2 == 0 else 0.45
            pts.append((rr * math.cos(a), rr * math.sin(a)))
    elif shape == "heart-shaped":
        pts = []
        for j in range(64):
            a = 2 * math.pi * j / 64
            x = 16 * math.sin(a) ** 3
            y = -(13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a))
            pts.append((x / 17.0, (y + 2.5) / 17.0))
    elif shape == "hexagonal":
        pts = [(math.cos(math.pi / 3 * j), math.sin(math.pi / 3 * j)) for j in range(6)]
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)
    c, s = math.cos(rot), math.sin(rot)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _render(shape: str, colour: str, pattern: str, jitter: np.ndarray, size: int) -> bytes:
    """Draw one product image and return deterministic PNG bytes (fixed options, no metadata)."""
    ss = 4
    big = size * ss
    h, s, v = COLOURS[colour]
    h += (jitter[0] - 0.5) * 12.0
    s += (jitter[1] - 0.5) * 0.16
    v += (jitter[2] - 0.5) * 0.16
    fill = _rgb(h, s, v)
    tint = _rgb(h, s * 0.35, min(1.0, v + 0.25))
    dark = _rgb(h, min(1.0, s + 0.1), v * 0.55)
    bg_level = int(232 + jitter[7] * 20)
    radius = big * (0.30 + 0.10 * jitter[3])
    cx = big / 2 + (jitter[4] - 0.5) * big * 0.12
    cy = big / 2 + (jitter[5] - 0.5) * big * 0.12
    rot = (jitter[6] - 0.5) * math.radians(30)

    # Fill layer: colour plus pattern in a lighter tint of the same hue, so the colour stays dominant.
    layer = Image.new("RGB", (big, big), fill)
    draw = ImageDraw.Draw(layer)
    step = big // 8
    if pattern == "stripes":
        for off in range(-big, 2 * big, step):
            draw.line([(off, 0), (off + big, big)], fill=tint, width=max(1, step // 3))
    elif pattern == "polka dots":
        rr = step * 0.22
        for yi in range(0, big + step, step):
            for xi in range(0, big + step, step):
                x0 = xi + (step // 2 if (yi // step) % 2 else 0)
                draw.ellipse([x0 - rr, yi - rr, x0 + rr, yi + rr], fill=tint)
    elif pattern == "checkered":
        cs = step // 2
        for yi in range(0, big, cs):
            for xi in range(0, big, cs):
                if ((xi // cs) + (yi // cs)) % 2 == 0:
                    draw.rectangle([xi, yi, xi + cs - 1, yi + cs - 1], fill=tint)

    pts = _polygon(shape, cx, cy, radius, rot)
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    canvas = Image.new("RGB", (big, big), (bg_level, bg_level, bg_level))
    canvas.paste(layer, (0, 0), mask)
    ImageDraw.Draw(canvas).line(pts + [pts[0]], fill=dark, width=ss * max(1, size // 48), joint="curve")
    img = canvas.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _title(vocab: _CategoryVocab, items: _Items, i: int) -> str:
    attr = vocab.text_attrs[items.text_attr[i]].title()
    noun = vocab.products[items.product[i]].title()
    suffix = vocab.suffixes[items.suffix[i]]
    title = f"{vocab.brands[items.brand[i]]} {attr} {noun}"
    return f"{title}, {suffix}" if suffix else title


def _description(vocab: _CategoryVocab, items: _Items, i: int) -> str:
    attr = vocab.text_attrs[items.text_attr[i]]
    noun = vocab.products[items.product[i]]
    f1, f2 = (vocab.fillers[j] for j in items.fillers[i])
    return f"{f1} This {noun} {vocab.attr_phrase.format(attr=attr)}. {f2}"


def _image_description(vocab: _CategoryVocab, items: _Items, i: int) -> str:
    colour = COLOUR_NAMES[items.image_attr[i]]
    shape = SHAPES[items.product[i]]
    noun = vocab.products[items.product[i]]
    pattern = PATTERNS[items.pattern[i]]
    words = f"plain {colour}" if pattern == "plain" else colour
    article = "an" if words[0] in "aeiou" else "a"
    return f"{article} {words} {shape} {noun}{_PATTERN_PHRASE[pattern]}"


def latent_attributes(category: str, seed: int, config: SynthConfig = SynthConfig()) -> pd.DataFrame:
    """Hidden item variables (for tests and diagnostics only): one row per item, indexed by external id.

    Columns: text_attr, image_attr (colour), product, shape, pattern, brand, popularity, successor (external id).
    Covers all ``n_items`` items, including any that no user happened to interact with.
    """
    vocab = _check_category(category)
    config.validate()
    item_rng, _ = _streams(category, seed)
    items = _make_items(category, vocab, item_rng, config)
    frame = pd.DataFrame({
        "text_attr": [vocab.text_attrs[t] for t in items.text_attr],
        "image_attr": [COLOUR_NAMES[v] for v in items.image_attr],
        "product": [vocab.products[p] for p in items.product],
        "shape": [SHAPES[p] for p in items.product],
        "pattern": [PATTERNS[p] for p in items.pattern],
        "brand": [vocab.brands[b] for b in items.brand],
        "popularity": items.popularity,
        "successor": [items.ext_ids[j] for j in items.successor],
    }, index=pd.Index(items.ext_ids, dtype=object, name="ext_id"))
    return frame


def latent_users(category: str, seed: int, config: SynthConfig = SynthConfig()) -> pd.DataFrame:
    """Hidden user preferences (tests and diagnostics only): text_pref and image_pref per external user id."""
    vocab = _check_category(category)
    config.validate()
    item_rng, user_rng = _streams(category, seed)
    items = _make_items(category, vocab, item_rng, config)
    pref_t, pref_v, _ = _simulate_users(items, user_rng, config, len(vocab.text_attrs))
    return pd.DataFrame({"text_pref": [vocab.text_attrs[t] for t in pref_t],
                         "image_pref": [COLOUR_NAMES[v] for v in pref_v]},
                        index=pd.Index([f"U{u:05d}" for u in range(config.n_users)], dtype=object, name="user_id"))


def generate(category: str, seed: int, image_dir: Path, config: SynthConfig = SynthConfig()) -> RawDataset:
    """Generate one synth4 category: sequences, item table, and ``image_dir/<item_ext_id>.png`` images.

    Deterministic in ``(category, seed, config)``. Existing PNGs with the same name are overwritten (atomically).
    """
    vocab = _check_category(category)
    config.validate()
    item_rng, user_rng = _streams(category, seed)
    items = _make_items(category, vocab, item_rng, config)
    _, _, seqs = _simulate_users(items, user_rng, config, len(vocab.text_attrs))

    order: list[int] = []  # items in order of first appearance (loader convention)
    seen: set[int] = set()
    for seq in seqs:
        for i in seq.tolist():
            if i not in seen:
                seen.add(i)
                order.append(i)
    if len(order) < config.n_items:
        log.warning("synth4/%s seed=%d: %d of %d items never occur and are left out of the item table",
                     category, seed, config.n_items - len(order), config.n_items)

    image_dir = Path(image_dir)
    try:
        image_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create the synth4 image folder {image_dir}: {exc}; "
                         "pass a writable image_dir") from exc
    image_dir = image_dir.resolve()
    rows: dict[str, dict[str, object]] = {}
    for i in order:
        ext = items.ext_ids[i]
        png = _render(SHAPES[items.product[i]], COLOUR_NAMES[items.image_attr[i]], PATTERNS[items.pattern[i]],
                      items.render[i], config.image_size)
        path = image_dir / f"{ext}.png"
        tmp = path.with_name(f".{ext}.png.tmp{os.getpid()}")
        tmp.write_bytes(png)
        os.replace(tmp, path)
        rows[ext] = {
            "title": _title(vocab, items, i),
            "brand": vocab.brands[items.brand[i]],
            "categories": f"{vocab.department} > {vocab.subcategories[items.product[i]]}",
            "description": _description(vocab, items, i),
            "image": str(path),
            "image_description": _image_description(vocab, items, i),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index", dtype=object)
    frame.index = pd.Index(list(rows), dtype=object, name="ext_id")
    sequences = [[items.ext_ids[i] for i in seq.tolist()] for seq in seqs]
    n_inter = sum(len(s) for s in sequences)
    log.info("synth4/%s seed=%d: %d users, %d items, %d interactions, images in %s",
             category, seed, len(sequences), len(frame), n_inter, image_dir)
    return RawDataset(name=f"synth4-{category}", user_ids=[f"U{u:05d}" for u in range(config.n_users)],
                      sequences=sequences, items=frame, ratings=None,
                      source=f"synth4 generator v{GENERATOR_VERSION} category={category} seed={seed}")
