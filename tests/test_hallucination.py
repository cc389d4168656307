"""CLIP caption distances: the distance itself, calibration, contradiction labels, and a tiny end-to-end analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.image_text_space import embed_pairs
from mmsr_bench.models.toolkits.tiny_clip import ClipTrainSpec
from mmsr_bench.results import hallucination as h
from mmsr_bench.results.store import Artifact, Store


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
    with pytest.raises(BenchError, match="toy: fewer than 2 items"):
        h.usable_items("toy", ["a.png", None, "c.png"], ["x", "y", ""])
    assert h.usable_items("toy", ["a.png", None, "c.png", "d.png"], ["x", "y", "", "w"]) == [0, 3]


def test_tiny_clip_analysis_and_artifact(tmp_path):
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30), "yellow": (230, 220, 30)}
    paths, refs, caps = [], [], []
    for k, (name, rgb) in enumerate(list(colours.items()) * 2):
        p = tmp_path / f"{k}.png"
        Image.new("RGB", (64, 64), rgb).save(p)
        paths.append(str(p))
        refs.append(f"a {name} round ball")
        caps.append(f"a {name} round ball" if k % 2 == 0 else "a purple round ball")  # odd ones contradict
    pairs = embed_pairs("toy", paths, caps, refs, clip_spec=ClipTrainSpec(steps=3, batch_size=8), space="tiny-clip")
    payload = h.analyse("toy", pairs, caps, refs)
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


def test_lit_space_from_real_encoders_separates_contradicting_captions(tmp_path):
    """The default space: frozen EfficientNet-Lite0 + MiniLM, trained heads, on synth images and descriptions.
    Half the captions swap the colour word for another (contradicting), half are the reference (agreeing)."""
    from mmsr_bench.data import synth

    raw = synth.generate("toys", 3, tmp_path / "img", synth.SynthConfig(n_users=60, n_items=256))
    items = raw.items
    paths = [str(p) for p in items["image"]]
    refs = list(items["image_description"])
    rng = np.random.default_rng(0)
    caps, bad = [], []
    for k, ref in enumerate(refs):
        words = ref.split()
        colour = next(w for w in words if w in synth.COLOUR_NAMES)
        if k % 2:
            other = rng.choice([c for c in synth.COLOUR_NAMES if c != colour])
            caps.append(ref.replace(colour, str(other), 1))
        else:
            caps.append(ref)
        bad.append(bool(k % 2))
    payload = h.analyse("toys", embed_pairs("toys", paths, caps, refs), caps, refs)
    assert payload["clip"].startswith("lit:") and payload["clip_random_init"] is False
    assert payload["lit_holdout_image_to_text_accuracy"] > 3 * payload["lit_chance_accuracy"]
    assert payload["contradicting"] == sum(bad)
    assert payload["auroc"] > 0.75
    assert payload["flagged_share_contradicting"] > payload["flagged_share_agreeing"] + 0.3
    assert "Youden" in payload["threshold_rule"] and payload["calibration_auroc"] > 0.75
    again = h.analyse("toys", embed_pairs("toys", paths, caps, refs), caps, refs)  # heads from the cache, by hash
    assert again["clip_weights_sha256"] == payload["clip_weights_sha256"] and again["auroc"] == payload["auroc"]


@pytest.mark.parametrize("sets, message", [
    (["vlmm=effnet-smollm2"], "has no field 'vlmm'. Did you mean: vlm"),
    (["caption_tokens=many"], "caption_tokens: cannot parse 'many'"),
    (["vlm"], "expected key=value"),
])
def test_hallucination_set_is_checked_before_any_work(tmp_path, monkeypatch, sets, message):
    """`bench hallucination --set vlm=...` analyses the captioner a run used; a bad pair fails in one line before
    any captioning, and no store is created."""
    from typer.testing import CliRunner

    from mmsr_bench.cli.main import app

    monkeypatch.chdir(tmp_path)
    args = ["hallucination", "--suite", "synth4-lite", "--model", "mllm-srec-lora"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and message in " ".join(res.output.split()), res.output
    assert not (tmp_path / "results.db").exists()
