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
from tests.tiny_vlms import FAMILIES, LM_ARCHITECTURES, build, build_lm




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


@pytest.mark.parametrize("arch", LM_ARCHITECTURES)
def test_tallrec_on_each_llm_architecture_with_default_settings(arch, tmp_path, monkeypatch):
    """TALLRec fits (LoRA on the architecture's own attention projections, no --set target_modules) and scores
    on a saved tiny model of each architecture, loaded through --set backbone=FOLDER like a real checkpoint."""
    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    items, train, valid = _dataset(tmp_path)
    from mmsr_bench.models.toolkits.backbones import PROMPT_VOCABULARY

    folder = str(build_lm(arch, tmp_path / arch, list(items.frame["title"]) + [PROMPT_VOCABULARY] * 5))
    m = adapter.build("tallrec", {"backbone": folder, "max_pairs": "8", "valid_users": "2", "train_batch_size": "8"})
    m.fit(train, valid)
    info = m.run_info
    assert info["backbone_path"] == folder and info["train_mode"] == "lora" and info["n_trainable_parameters"] > 0
    scores = m.score(ScoreBatch(users=valid.users[:2], histories=valid.histories[:2], candidates=valid.candidates[:2]))
    assert scores.shape == (2, 4) and np.isfinite(scores).all()


def test_mllm_srec_refuses_a_wordpiece_tokenizer_before_captioning(tmp_path, monkeypatch):
    """A tokenizer that encodes prefix + suffix differently from the whole prompt is refused by MLLM-SRec as by
    TALLRec, and before the first caption is generated (minutes on a real VLM)."""
    import transformers as tf
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    from mmsr_bench.errors import BenchError
    from mmsr_bench.models.toolkits import vlm as vlm_module

    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    items, train, valid = _dataset(tmp_path)
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer, wp.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(list(items.frame["title"]) * 5 + ["please deduce whether the user Yes No"] * 5,
                           trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]", "[PAD]", "[CLS]", "[SEP]"]))
    wp.post_processor = processors.TemplateProcessing(  # BERT's: [CLS] text [SEP]
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", wp.token_to_id("[CLS]")), ("[SEP]", wp.token_to_id("[SEP]"))])
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                     sep_token="[SEP]")
    folder = tmp_path / "wordpiece-llama"
    tok.save_pretrained(str(folder))
    tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2)).save_pretrained(str(folder))
    monkeypatch.setattr(vlm_module, "caption_items", lambda *a, **k: pytest.fail("captioned before the check"))
    m = adapter.build("mllm-srec-lora", {"backbone": str(folder), "max_pairs": "8"})
    with pytest.raises(BenchError, match="mllm-srec-lora on toy: this tokenizer encodes the prompt differently"):
        m.fit(train, valid)


@pytest.mark.parametrize("name", ["tallrec", "mllm-srec-text"])
def test_chat_template_wraps_every_prompt_when_asked(name, tmp_path, monkeypatch):
    """--set chat_template=auto puts the recommender's prompt (and the summarizer's) inside an instruct tokenizer's
    chat template, answer in the assistant's turn, recorded; the default keeps the paper's raw prompt."""
    from tests.tiny_vlms import CHATML_TEMPLATE

    from mmsr_bench.models.toolkits.backbones import PROMPT_VOCABULARY

    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    items, train, valid = _dataset(tmp_path)
    folder = str(build_lm("qwen2", tmp_path / "chat", list(items.frame["title"]) + [PROMPT_VOCABULARY] * 5,
                          chat_template=CHATML_TEMPLATE))
    budget = {"backbone": folder, "max_pairs": "8", "valid_users": "2", "train_batch_size": "8"}
    h = valid.histories[0]
    from mmsr_bench.models.toolkits import summaries

    seen: dict[str, list[str]] = {"auto": [], "none": []}
    real_generate = summaries.generate_texts
    mode = "auto"

    def recording(model, tokenizer, prompts, **kw):
        seen[mode].extend(prompts)
        return real_generate(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(summaries, "generate_texts", recording)
    for mode in ("auto", "none"):
        m = adapter.build(name, {**budget, "chat_template": mode})
        m.fit(train, valid)
        prefix = m._prefix(h) if name == "tallrec" else m.prefix(0, h)
        suffix = m._suffix_cache[3] if name == "tallrec" else m.suffix(h, 3)
        if mode == "auto":
            assert m.run_info["chat_template"].startswith("the tokenizer's (sha256 ")
            assert prefix.startswith("<|im_start|>user\n") and suffix.endswith("<|im_end|>\n<|im_start|>assistant\n")
        else:
            assert m.run_info["chat_template"] == "none" and "<|im_start|>" not in prefix + suffix
        scores = m.score(ScoreBatch(users=valid.users[:2], histories=valid.histories[:2],
                                    candidates=valid.candidates[:2]))
        assert np.isfinite(scores).all()
    if name != "tallrec":  # the summarizer (item summaries, window preferences) got the same template
        assert seen["auto"] and all(p.startswith("<|im_start|>user\n") and p.endswith("<|im_start|>assistant\n")
                                    for p in seen["auto"])
        assert seen["none"] and not any("<|im_start|>" in p for p in seen["none"])


def test_batched_preferences_equal_the_recurrent_ones_per_user():
    """The lockstep batch over users gives each user exactly the sequential recurrent summary, in fewer calls."""
    from mmsr_bench.models.toolkits.summaries import (KeywordPreference, recurrent_preference,
                                                      recurrent_preferences)

    texts = ["red cotton ball", "blue plastic bottle", "red soft toy", "green cotton bib", "blue cotton hat",
             "red plastic cup", "soft toy bear"]
    histories = [texts[:n] for n in (0, 1, 3, 5, 7)] + [texts[2:]]
    kp = KeywordPreference.fit(texts, max_df=0.6)
    calls = []

    class Step:  # an LLM-like step: deterministic text from (previous, window); counts batch calls
        def __call__(self, prev, window):
            return f"[{prev}|{'+'.join(w.split()[0] for w in window)}]"

        def batch(self, steps):
            calls.append(len(steps))
            return [self(p, w) for p, w in steps]

    for step_fn in (kp, Step()):
        batched = recurrent_preferences(histories, 3, 2, step_fn)
        single = [(recurrent_preference(h, 3, 2, step_fn) or [""])[-1] for h in histories]
        assert batched == single
    assert len(calls) == 3 and sum(calls) == sum(len(__import__("mmsr_bench.models.toolkits.summaries",
                                                                  fromlist=["windows"]).windows(len(h), 3, 2))
                                                 for h in histories)


def test_prompts_longer_than_the_context_are_refused_before_training(tmp_path, monkeypatch):
    import transformers as tf

    from mmsr_bench.errors import BenchError
    from mmsr_bench.models.toolkits.backbones import PROMPT_VOCABULARY

    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    items, train, valid = _dataset(tmp_path)
    folder = build_lm("llama", tmp_path / "short", list(items.frame["title"]) + [PROMPT_VOCABULARY] * 5)
    cfg = tf.AutoConfig.from_pretrained(str(folder))
    cfg.max_position_embeddings = 48
    cfg.save_pretrained(str(folder))
    m = adapter.build("tallrec", {"backbone": str(folder), "max_pairs": "8", "valid_users": "2"})
    with pytest.raises(BenchError, match=r"training: a prompt of \d+ tokens is longer than the 48 positions "
                                         r"LlamaForCausalLM reads; lower max_prefix_tokens"):
        m.fit(train, valid)


def test_throughput_and_placement_knobs_run_and_are_recorded(tmp_path, monkeypatch):
    """GPU knobs on the CPU path: gradient accumulation and checkpointing, accelerate's device_map, caption and
    summary batch sizes, the VLM's dtype; each validated like any field and recorded."""
    from mmsr_bench.errors import BenchError
    from mmsr_bench.models.toolkits.backbones import PROMPT_VOCABULARY

    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    items, train, valid = _dataset(tmp_path)
    lm = str(build_lm("llama", tmp_path / "lm", list(items.frame["title"]) + [PROMPT_VOCABULARY] * 5))
    vlm = str(build("llava", tmp_path / "vlm"))
    m = adapter.build("mllm-srec-lora", {
        "backbone": lm, "vlm": vlm, "max_pairs": "8", "valid_users": "2", "train_batch_size": "4", "grad_accum": "2",
        "gradient_checkpointing": "true", "device_map": "auto", "caption_batch_size": "2", "summary_batch_size": "3",
        "vlm_dtype": "bfloat16", "caption_tokens": "3", "summary_tokens": "4"})
    m.fit(train, valid)
    info = m.run_info
    assert info["steps"] == 1 and info["vlm_dtype"] == "bfloat16" and info["captions_generated"] == 3
    assert info["backbone_device_map"] == {"": "cpu"} and info["summary_mode"] == "llm"
    assert np.isfinite(m.score(ScoreBatch(users=valid.users[:1], histories=valid.histories[:1],
                                          candidates=valid.candidates[:1]))).all()
    for bad in ({"caption_batch_size": "0"}, {"summary_batch_size": "-1"}, {"vlm_quantization": "8bit"},
                {"summary_tokens": "0"}):
        with pytest.raises(BenchError):
            adapter.build("mllm-srec-lora", bad)
    from mmsr_bench.models.toolkits.captioner import load_vlm
    from mmsr_bench.models.toolkits.vlm import caption_items

    nf4 = load_vlm(vlm, quantization="4bit")  # real NF4 weights through bitsandbytes, on the CPU here
    assert nf4.info["vlm_dtype"].endswith("(nf4 weights)")
    assert any(type(mod).__name__ == "Linear4bit" for mod in nf4.model.modules())
    caps, _ = caption_items(nf4, list(items.frame["image"][:2]), max_new_tokens=3)
    assert len(caps) == 2


def test_float16_weights_train_with_loss_scaling(tmp_path, monkeypatch):
    from mmsr_bench.models.toolkits.backbones import PROMPT_VOCABULARY

    monkeypatch.setenv("MMSR_BENCH_HOME", str(tmp_path / "home"))
    items, train, valid = _dataset(tmp_path)
    lm = str(build_lm("llama", tmp_path / "lm", list(items.frame["title"]) + [PROMPT_VOCABULARY] * 5))
    for dtype, scaling in (("float16", "dynamic"), ("bfloat16", "none")):
        m = adapter.build("tallrec", {"backbone": lm, "dtype": dtype, "max_pairs": "8", "valid_users": "2"})
        m.fit(train, valid)
        assert m.run_info["backbone_dtype"] == dtype and m.run_info["loss_scaling"].startswith(scaling)
        assert np.isfinite(m.score(ScoreBatch(users=valid.users[:1], histories=valid.histories[:1],
                                              candidates=valid.candidates[:1]))).all()


def test_vlm_inputs_follow_the_model_device(folders, tmp_path):
    """The device audit without a GPU: with the VLM on torch's ``meta`` device, every tensor the processor makes
    for it (ids, masks, pixels, grids) is moved there before the forward."""
    from mmsr_bench.models.toolkits.captioner import load_vlm
    from mmsr_bench.models.toolkits.vlm import _processor_inputs, _read_rgb, caption_prompt

    items, _, _ = _dataset(tmp_path)
    for family in ("qwen2-vl", "idefics3"):
        vlm = load_vlm(_folder(folders, family))
        vlm.model.to("meta")
        vlm.device = "meta"
        enc = _processor_inputs(vlm, [caption_prompt(vlm)] * 2, [_read_rgb(p) for p in items.frame["image"][:2]])
        assert {v.device.type for v in enc.values() if hasattr(v, "device")} == {"meta"}
