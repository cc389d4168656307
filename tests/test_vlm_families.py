"""Every supported image-text-to-text family captions, gives visual tokens, and runs MLLM-SRec end to end, loaded
from a saved folder through ``--set vlm=FOLDER`` exactly like a real checkpoint (tiny random weights built in the
test: these check the path, not caption quality)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from mmsr_bench.data.splits import ScoreBatch
from mmsr_bench.models import adapter
from tests.test_mllm_srec import _dataset, _one_thread  # noqa: F401  (_one_thread: the autouse fixture, one torch thread)
from tests.tiny_vlms import FAMILIES, build




def _needs(family: str) -> None:
    if family == "smolvlm" and importlib.util.find_spec("num2words") is None:
        pytest.skip("SmolVLM's processor needs the num2words package, which the lock does not install")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlms")
    return {f: root / f for f in FAMILIES}


def _folder(folders, family):
    if not (folders[family] / "config.json").exists():
        build(family, folders[family])
    return str(folders[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_captions_in_its_own_prompt_format(family, folders, tmp_path, monkeypatch):
    _needs(family)
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    from mmsr_bench.models.toolkits.captioner import load_vlm
    from mmsr_bench.models.toolkits.vlm import _read_rgb, caption_items, caption_prompt, image_features

    items, _, _ = _dataset(tmp_path)
    paths = list(items.frame["image"][:4])
    vlm = load_vlm(_folder(folders, family))
    prompt = caption_prompt(vlm)
    expected = {"qwen2-vl": "<|vision_start|><|image_pad|><|vision_end|>",
                "qwen2.5-vl": "<|vision_start|><|image_pad|><|vision_end|>",
                "idefics3": "User:<image>", "smolvlm": "User:<image>", "llava": "USER: <image>\n"}
    if family == "blip-2":  # no chat template; the processor adds the query tokens, the text carries none
        assert prompt.startswith("Question: ") and "<image>" not in prompt
    else:  # rendered by the processor's chat template, ending with the assistant's turn
        assert expected[family] in prompt and prompt.rstrip().endswith(("assistant", "Assistant:", "ASSISTANT:"))
    caps, stats = caption_items(vlm, paths + [None], max_new_tokens=4)
    assert len(caps) == 5 and caps[-1] == "" and stats["generated"] == 3  # 3 distinct images among the 4
    assert all(isinstance(c, str) for c in caps)
    again, stats = caption_items(vlm, paths, max_new_tokens=4)
    assert again == caps[:4] and stats["generated"] == 0  # cached by (model, prompt, image content)
    feats = image_features(vlm, [_read_rgb(p) for p in paths])
    assert feats.shape[0] == 4 and np.isfinite(feats).all()
    assert np.allclose(feats[0], image_features(vlm, [_read_rgb(paths[0])])[0], atol=1e-5)  # per image, not batch


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_runs_mllm_srec_end_to_end(family, folders, tmp_path, monkeypatch):
    _needs(family)
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    items, train, valid = _dataset(tmp_path)
    folder = _folder(folders, family)
    m = adapter.build("mllm-srec-lora", {"vlm": folder, "pretrain_steps": "0", "max_pairs": "8", "valid_users": "2",
                                         "caption_tokens": "4", "train_batch_size": "8", "lora_rank": "2"})
    m.fit(train, valid)
    assert m.run_info["vlm_path"] == folder and m.run_info["captions_generated"] == 3
    scores = m.score(ScoreBatch(users=valid.users[:2], histories=valid.histories[:2], candidates=valid.candidates[:2]))
    assert scores.shape == (2, 4) and np.isfinite(scores).all()
    sv = adapter.build("mllm-srec-sv", {"vlm": folder, "sv_clusters": "2"})
    sv._prepare_items(train)
    assert all(c.startswith("vis") for c in sv.captions[1:]) and sv.run_info["sv_clusters"] == 2
