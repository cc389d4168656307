"""CLIP caption distances: the distance itself, calibration, contradiction labels, and a tiny end-to-end analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from harness import hallucination as h
from harness.errors import BenchError
from harness.store import Artifact, Store


def test_cosine_distance_controlled_pairs():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    b = np.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(h.cosine_distance(a, b), [0.0, 1.0, 2.0, 0.0], atol=1e-12)
    with pytest.raises(BenchError):
        h.cosine_distance(np.zeros((1, 2)), np.ones((1, 2)))


def test_threshold_derangement_and_labels():
    mism = np.linspace(0.5, 1.5, 101)
    assert h.threshold_from_mismatched(mism, 0.05) == pytest.approx(0.55)
    perm = h.derangement(50, seed=1)
    assert sorted(perm) == list(range(50)) and not np.any(perm == np.arange(50))
    assert h.contradicts("a blue round rattle", "a red round rattle")
    assert h.contradicts("a red square rattle", "a red round rattle")
    assert not h.contradicts("a red round rattle with stripes", "a plain red round rattle")
    assert h.auroc([True, False, True, False], [0.9, 0.1, 0.8, 0.2]) == 1.0
    assert h.auroc([False, False], [0.1, 0.2]) is None


def test_tiny_clip_analysis_and_artifact(tmp_path):
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30), "yellow": (230, 220, 30)}
    paths, refs, caps = [], [], []
    for k, (name, rgb) in enumerate(list(colours.items()) * 2):
        p = tmp_path / f"{k}.png"
        Image.new("RGB", (64, 64), rgb).save(p)
        paths.append(str(p))
        refs.append(f"a {name} round ball")
        caps.append(f"a {name} round ball" if k % 2 == 0 else "a purple round ball")  # odd ones contradict
    payload = h.analyse("toy", paths, caps, refs, clip_spec=h.ClipTrainSpec(steps=3, batch_size=8))
    for key in ("dataset", "distances", "mismatched", "threshold", "flagged_share", "auroc"):
        assert key in payload
    assert len(payload["distances"]) == len(payload["mismatched"]) == 8
    assert payload["contradicting"] == 4 and 0.0 <= payload["auroc"] <= 1.0
    assert 0.0 <= payload["flagged_share"] <= 1.0
    assert payload["clip_trained_on"].startswith("(image, image_description)")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.add_artifact(Artifact(kind="hallucination", suite="s", dataset="toy", model="m",
                                payload_json=json.dumps(payload)))
    (art,) = store.artifacts(kind="hallucination")
    assert json.loads(art.payload_json)["threshold"] == pytest.approx(payload["threshold"])
