"""Tests for the synth4 generator: determinism, shape, ground truth, and the planted multimodal signal."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsr_bench.data.splits import ITEM_TEXT_FIELDS, RawDataset
from mmsr_bench.data.synth import (COLOURS, PATTERNS, SHAPES, SYNTH4_CATEGORIES, SynthConfig, generate,
                                   latent_attributes, latent_users)
from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)

SMALL = SynthConfig(n_users=150, n_items=70, image_size=32)
COLOUR_RE = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def toys(tmp_path_factory: pytest.TempPathFactory) -> tuple[RawDataset, pd.DataFrame, pd.DataFrame]:
    """One full-size category at the default config (generated once for the signal and shape tests)."""
    start = time.perf_counter()
    ds = generate("toys", 7, tmp_path_factory.mktemp("synth_toys"))
    log.info("generate('toys', 7) at the default config took %.2fs", time.perf_counter() - start)
    return ds, latent_attributes("toys", 7), latent_users("toys", 7)


def _hue_of(path: str) -> float:
    """Circular mean hue (degrees) of the saturated pixels: the object's fill colour, background excluded."""
    hsv = np.asarray(Image.open(path).convert("HSV")).reshape(-1, 3).astype(float)
    sat = hsv[hsv[:, 1] > 60]
    assert len(sat) > 0.05 * len(hsv), f"{path}: almost no coloured pixels"
    ang = sat[:, 0] / 255.0 * 2 * np.pi
    return float(np.degrees(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())) % 360)


def _nearest_colour(hue: float) -> str:
    return min(COLOURS, key=lambda c: min(abs(COLOURS[c][0] - hue), 360 - abs(COLOURS[c][0] - hue)))


def test_deterministic_bytes(tmp_path: Path) -> None:
    a = generate("beauty", 3, tmp_path / "a", SMALL)
    b = generate("beauty", 3, tmp_path / "b", SMALL)
    assert a.user_ids == b.user_ids
    assert a.sequences == b.sequences
    cols = [c for c in a.items.columns if c != "image"]
    pd.testing.assert_frame_equal(a.items[cols], b.items[cols])
    assert list(a.items.index) == list(b.items.index)
    for ext in a.items.index:
        pa, pb = Path(a.items.at[ext, "image"]), Path(b.items.at[ext, "image"])
        assert pa.name == pb.name == f"{ext}.png"
        assert pa.read_bytes() == pb.read_bytes(), ext
    pd.testing.assert_frame_equal(latent_attributes("beauty", 3, SMALL), latent_attributes("beauty", 3, SMALL))
    # a different seed or category gives different data
    assert generate("beauty", 4, tmp_path / "c", SMALL).sequences != a.sequences
    assert generate("toys", 3, tmp_path / "d", SMALL).sequences != a.sequences


def test_shape_and_images(toys: tuple[RawDataset, pd.DataFrame, pd.DataFrame]) -> None:
    ds, lat, users = toys
    cfg = SynthConfig()
    assert ds.ratings is None
    assert len(ds.user_ids) == len(ds.sequences) == cfg.n_users == len(users)
    assert len(set(ds.user_ids)) == cfg.n_users
    lens = np.array([len(s) for s in ds.sequences])
    assert lens.min() >= cfg.min_len and lens.max() <= cfg.max_len
    assert 8 <= lens.mean() <= 12  # Amazon 5-core-like (~9 per user)
    assert all(len(set(s)) == len(s) for s in ds.sequences), "an item repeats within a sequence"
    counts = Counter(i for s in ds.sequences for i in s)
    assert len(ds.items) == len(counts) == cfg.n_items == len(lat)
    assert min(counts.values()) >= 5, "default config should be 5-core on items too"
    # loader conventions: indexed by ext_id, items in order of first appearance, exactly the occurring items
    assert ds.items.index.name == "ext_id"
    first = list(dict.fromkeys(i for s in ds.sequences for i in s))
    assert list(ds.items.index) == first
    assert set(ds.items.columns) == {*ITEM_TEXT_FIELDS, "image", "image_description"}
    for ext, path in ds.items["image"].items():
        p = Path(path)
        assert p.is_absolute() and p.name == f"{ext}.png"
        with Image.open(p) as im:
            im.load()
            assert im.format == "PNG" and im.size == (cfg.image_size, cfg.image_size) and im.mode == "RGB"


@pytest.mark.parametrize("category", SYNTH4_CATEGORIES)
def test_ground_truth_text_and_caption(category: str, tmp_path: Path) -> None:
    ds = generate(category, 11, tmp_path, SMALL)
    lat = latent_attributes(category, 11, SMALL)
    assert lat["text_attr"].nunique() == 8 and lat["image_attr"].nunique() == len(COLOURS)
    for ext, row in ds.items.iterrows():
        truth = lat.loc[ext]
        # text attribute in title and description; no colour word in any item text field
        assert truth["text_attr"] in row["title"].lower(), (ext, row["title"])
        assert truth["text_attr"] in row["description"].lower(), (ext, row["description"])
        for field in ITEM_TEXT_FIELDS:
            assert not COLOUR_RE.search(row[field]), (ext, field, row[field])
            for pat in ("stripe", "polka", "checkered", "dots"):
                assert pat not in row[field].lower(), (ext, field, row[field])
        # the reference description names exactly the latent colour, shape, product and pattern
        desc = row["image_description"]
        assert COLOUR_RE.findall(desc) == [truth["image_attr"]], (ext, desc)
        assert truth["shape"] in desc and truth["product"] in desc, (ext, desc)
        assert [s for s in SHAPES if re.search(rf"\b{s}\b", desc)] == [truth["shape"]]
        assert truth["text_attr"] not in desc
        if truth["pattern"] == "plain":
            assert desc.startswith("a plain "), desc
        else:
            assert truth["pattern"] in desc, (ext, desc)
        assert truth["pattern"] in PATTERNS
        # and the pixels show that colour
        assert _nearest_colour(_hue_of(row["image"])) == truth["image_attr"], (ext, desc)


def test_latents_are_independent() -> None:
    cfg = SynthConfig()
    lat = latent_attributes("sports", 5, cfg)
    cells = pd.crosstab(lat["text_attr"], lat["image_attr"]).to_numpy()
    assert cells.shape == (8, 8)
    assert cells.min() >= cfg.n_items // 64 and cells.max() <= cfg.n_items // 64 + 1
    succ = lat.loc[lat["successor"]]
    # one cycle through all items, unrelated to the attributes (chance is 1/8)
    assert sorted(lat["successor"]) == sorted(lat.index)
    node, visited = lat.index[0], set()
    while node not in visited:
        visited.add(node)
        node = lat.at[node, "successor"]
    assert len(visited) == cfg.n_items
    assert (succ["text_attr"].to_numpy() == lat["text_attr"].to_numpy()).mean() < 0.25
    assert (succ["image_attr"].to_numpy() == lat["image_attr"].to_numpy()).mean() < 0.25


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="baby, sports, beauty, toys"):
        generate("garden", 0, tmp_path)
    with pytest.raises(BenchError, match="known categories"):
        latent_attributes("Toys", 0)
    with pytest.raises(BenchError, match="p_text"):
        generate("toys", 0, tmp_path, SynthConfig(p_text=1.5))
    with pytest.raises(BenchError, match="exceeds 1"):
        generate("toys", 0, tmp_path, SynthConfig(p_text=0.5, p_image=0.5, p_id=0.2))
    with pytest.raises(BenchError, match="min_len"):
        generate("toys", 0, tmp_path, SynthConfig(min_len=2))
    with pytest.raises(BenchError, match="seed"):
        generate("toys", -1, tmp_path)


def test_planted_signal(toys: tuple[RawDataset, pd.DataFrame, pd.DataFrame]) -> None:
    """Users follow their text and colour preferences; text+image beats either alone; transitions beat popularity."""
    ds, lat, users = toys
    ids = list(lat.index)
    pos = {e: k for k, e in enumerate(ids)}
    t_code, t_names = pd.factorize(lat["text_attr"])
    v_code, v_names = pd.factorize(lat["image_attr"])
    seqs = [np.array([pos[e] for e in s]) for s in ds.sequences]

    # per-user match with the latent preference, far above chance (1/8)
    t_pref = pd.Index(t_names).get_indexer(users["text_pref"])
    v_pref = pd.Index(v_names).get_indexer(users["image_pref"])
    t_match = np.mean([(t_code[s] == t_pref[u]).mean() for u, s in enumerate(seqs)])
    v_match = np.mean([(v_code[s] == v_pref[u]).mean() for u, s in enumerate(seqs)])
    assert t_match > 3 / 8 and v_match > 3 / 8, (t_match, v_match)

    # counting predictors on the held-out last item; everything is fitted on seq[:-1] only
    n = len(ids)
    pop = np.zeros(n)
    trans = np.zeros((n, n))
    for s in seqs:
        h = s[:-1]
        np.add.at(pop, h, 1)
        np.add.at(trans, (h[:-1], h[1:]), 1)
    tie = pop / (pop.max() + 1)  # popularity only breaks ties
    hits = Counter()
    for s in seqs:
        h, target = s[:-1], s[-1]
        ht = np.bincount(t_code[h], minlength=len(t_names))[t_code]
        hv = np.bincount(v_code[h], minlength=len(v_names))[v_code]
        scores = {"pop": tie, "text": ht + tie, "image": hv + tie, "text+image": ht + hv + tie,
                  "id": trans[h[-1]] + tie}
        for name, sc in scores.items():
            sc = sc.astype(float).copy()
            sc[h] = -np.inf
            hits[name] += int((sc > sc[target]).sum() < 10)
    hr = {k: v / len(seqs) for k, v in hits.items()}
    log.info("HR@10 of counting predictors: %s", hr)
    assert hr["text"] > hr["pop"] + 0.04 and hr["image"] > hr["pop"] + 0.04, hr
    assert hr["text+image"] > max(hr["text"], hr["image"]) + 0.05, hr
    assert hr["id"] > hr["pop"] + 0.10, hr


def test_tiny_catalogue(tmp_path: Path) -> None:
    """Fewer items than max_len: sequences are capped at n_items (no repeats) instead of failing."""
    cfg = SynthConfig(n_users=40, n_items=12, image_size=16)
    ds = generate("baby", 0, tmp_path, cfg)
    lens = [len(s) for s in ds.sequences]
    assert min(lens) >= cfg.min_len and max(lens) <= cfg.n_items
    assert all(len(set(s)) == len(s) for s in ds.sequences)
