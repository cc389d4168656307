"""The ``effnet-smollm2`` captioner (mmsr_bench.models.toolkits.captioner): frozen real EfficientNet-Lite0 + frozen real SmolLM2 joined
by a trained projector. Its training lowers the caption loss, captions are cached by (model, prompt, image content)
and reused, and the record says the towers are real pretrained weights. Needs the SmolLM2 and EfficientNet-Lite0
packages (skipped with the reason otherwise)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.captioner import (CAPTIONERS, Captioner, _new_projector, attribute_accuracy,
                                                  build_captioner, image_feature_matrix, train_projector)
from mmsr_bench.models.toolkits.vlm import CAPTION_PROMPT, caption_items
from tests.conftest import requires_smollm2

SPEC = replace(CAPTIONERS["effnet-smollm2"], steps=2, batch_size=4, n_tokens=2, hidden=64, holdout=0.0)
ITEMS = [("red", (220, 30, 30), "round"), ("blue", (30, 30, 220), "square"), ("green", (30, 170, 30), "round"),
         ("red", (220, 30, 30), "square"), ("blue", (30, 30, 220), "round"), ("green", (30, 170, 30), "square")]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def pairs(tmp_path):
    paths, descs, keys = [], [], []
    for i, (colour, rgb, shape) in enumerate(ITEMS):
        im = Image.new("RGB", (64, 64), (250, 250, 250))
        draw = ImageDraw.Draw(im)
        (draw.ellipse if shape == "round" else draw.rectangle)((12, 12, 52, 52), fill=rgb)
        p = tmp_path / f"{i}.png"
        im.save(p)
        paths.append(str(p))
        descs.append(f"a {colour} {shape} toy")
        keys.append(f"K{i}")
    return paths, descs, keys


def test_attribute_accuracy_scores_each_attribute():
    refs = ["a plain red round rattle", "a blue square bib with stripes", "a teal star-shaped mobile with polka dots"]
    caps = ["a plain red round rattle", "a blue round bib with stripes", "a teal star-shaped mobile"]
    acc = attribute_accuracy(caps, refs)
    assert acc["colour"] == 1.0 and acc["shape"] == pytest.approx(2 / 3) and acc["pattern"] == pytest.approx(2 / 3)
    assert acc["all_three"] == pytest.approx(1 / 3) and acc["mean"] == pytest.approx(7 / 9)
    assert attribute_accuracy(["red and blue"], ["a plain red cup"])["colour"] == 0.0  # two colours named: wrong
    with pytest.raises(BenchError):
        attribute_accuracy([], [])


@requires_smollm2
def test_projector_training_lowers_the_caption_loss(smollm2, pairs):
    paths, descs, _ = pairs
    feats = image_feature_matrix(paths, SPEC.image_encoder)
    spec = replace(SPEC, steps=12, batch_size=6, lr=1e-3)
    proj = _new_projector(smollm2, feats.shape[1], spec)
    proj.mean, proj.std = torch.as_tensor(feats.mean(0)), torch.as_tensor(feats.std(0) + 1e-6)
    cap = Captioner(smollm2, proj, spec)
    lm_before = [p.detach().clone() for p in list(smollm2.model.parameters())[:3]]
    with torch.no_grad():
        before = float(cap.loss(feats, descs, CAPTION_PROMPT))
    losses = train_projector(cap, feats, descs, spec, CAPTION_PROMPT)
    with torch.no_grad():
        after = float(cap.loss(feats, descs, CAPTION_PROMPT))
    assert len(losses) == 12 and np.isfinite(losses).all()
    assert after < before - 1.0, (before, after)
    # the LM stays frozen: only the projector trains
    assert all(torch.equal(a, b) for a, b in zip(lm_before, list(smollm2.model.parameters())[:3]))
    assert not any(p.requires_grad for p in smollm2.model.parameters())


@requires_smollm2
def test_captions_are_cached_and_reused_and_keyed_by_prompt(smollm2, pairs):
    paths, descs, keys = pairs
    vlm = build_captioner("effnet-smollm2", paths, descs, keys, spec=SPEC, backbone=smollm2)
    info = vlm.run_info()
    assert info["vlm"] == "effnet-smollm2" and info["vlm_random_init"] is False and info["vlm_towers_pretrained"]
    assert "frozen real pretrained weights" in info["vlm_trained_on"] and "ImageNet" in info["vlm_trained_on"]
    assert info["vlm_lm_sha256"] == smollm2.weights_sha256 and info["vlm_projector"]["steps"] == 2
    assert (vlm.captioner.record["n_train"], len(vlm.captioner.record["losses"])) == (6, 2)
    caps, stats = caption_items(vlm, paths, max_new_tokens=3)
    assert stats == {"cached": 0, "generated": 6} and vlm.captioner.generated == 6
    assert len(caps) == 6 and all(isinstance(c, str) for c in caps)
    again, stats = caption_items(vlm, paths + [None], max_new_tokens=3)
    assert again == caps + [""] and stats["generated"] == 0 and vlm.captioner.generated == 6  # model not run
    # the same projector comes back from its cache (same key: no training), captions from the caption cache
    vlm2 = build_captioner("effnet-smollm2", paths, descs, keys, spec=SPEC, backbone=smollm2)
    assert vlm2.path == vlm.path and vlm2.weights_sha256 == vlm.weights_sha256
    assert vlm2.captioner.record["losses"] == vlm.captioner.record["losses"]
    assert caption_items(vlm2, paths, max_new_tokens=3)[1]["generated"] == 0 and vlm2.captioner.generated == 0
    # another prompt is another cache entry: captioned again
    _, stats = caption_items(vlm2, paths, question="What colour is the product?", max_new_tokens=3)
    assert stats["generated"] == 6 and vlm2.captioner.generated == 6
    # other hyper-parameters are another projector (and so another caption cache)
    vlm3 = build_captioner("effnet-smollm2", paths, descs, keys, spec=replace(SPEC, steps=1), backbone=smollm2)
    assert vlm3.path != vlm.path and vlm3.weights_sha256 != vlm.weights_sha256


@requires_smollm2
def test_tampered_projector_is_trained_again(smollm2, pairs):
    paths, descs, keys = pairs
    vlm = build_captioner("effnet-smollm2", paths, descs, keys, spec=replace(SPEC, steps=1), backbone=smollm2)
    from pathlib import Path

    weights = Path(vlm.path) / "projector.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    again = build_captioner("effnet-smollm2", paths, descs, keys, spec=replace(SPEC, steps=1), backbone=smollm2)
    assert again.captioner.record["projector_sha256"] == vlm.captioner.record["projector_sha256"]


def test_load_vlm_selects_the_captioner_and_refuses_without_pairs(monkeypatch):
    import mmsr_bench.models.toolkits.captioner as captioner
    from mmsr_bench.models.toolkits.captioner import load_vlm
    from mmsr_bench.models.toolkits.vlm import TinyVLMSpec

    seen = {}
    monkeypatch.setattr(captioner, "build_captioner", lambda name, *a, spec, device: seen.update(
        name=name, holdout=spec.holdout, steps=spec.steps) or "built")
    assert load_vlm("effnet-smollm2", image_paths=["a"], descriptions=["b"], keys=["k"],
                    spec=TinyVLMSpec(holdout=0.4)) == "built"
    assert seen == {"name": "effnet-smollm2", "holdout": 0.4, "steps": CAPTIONERS["effnet-smollm2"].steps}
    monkeypatch.undo()
    with pytest.raises(BenchError, match="no \\(image, image_description\\) pairs"):
        build_captioner("effnet-smollm2", ["x.png"], [None], ["k"])


def test_every_captioner_tensor_follows_the_lm_device():
    """The device audit of the captioner without a GPU: with the LM on torch's ``meta`` device, a training loss and
    the visual-token features run only if the projector, its standardisation, the question ids and the labels all
    reached the LM's device (one CPU tensor left behind raises a device mismatch)."""
    import numpy as np

    from mmsr_bench.models.toolkits.backbones import load_backbone
    from mmsr_bench.models.toolkits.captioner import CAPTIONERS, Captioner, _new_projector

    bb = load_backbone("tiny-llama", texts=["a red ball", "a blue car"] * 10, seed=0)
    spec = CAPTIONERS["effnet-smollm2"]
    proj = _new_projector(bb, 8, spec)
    bb.model.to("meta")
    cap = Captioner(bb, proj, spec)
    loss = cap.loss(np.zeros((2, 8), dtype=np.float32), ["a red ball", "car"], "What is shown?")
    assert loss.device.type == "meta"
    assert {t.device.type for t in (proj.mean, proj.std, proj.emb_rms, *proj.mlp.parameters())} == {"meta"}
