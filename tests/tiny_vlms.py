"""Tiny random-weight copies of the real image-text-to-text families, built from configs and saved with
``save_pretrained`` (no hub, seconds on a CPU). Each keeps what makes its family different for captioning: its
processor class, its special image tokens, its chat template (the shape of the real model's template) and its
vision tower. Random weights: these test that a path runs, never what a caption says.
"""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("llava", "qwen2-vl", "qwen2.5-vl", "idefics3", "smolvlm", "blip-2")

_WORDS = ("Question Answer about the product in the image what is it colour material style use red blue cotton "
          "plastic bottle toy cream ball soft USER ASSISTANT User Assistant system user assistant").split()

# The shapes of the real chat templates (role markers and where the image goes), reduced to what a caption prompt
# uses; the real templates add system prompts, videos and tool calls.
_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: {% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
_IDEFICS_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


def _tokenizer(cls_name: str, specials: list[str], *, bos: str | None = "<s>", eos: str = "</s>"):
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    base = [t for t in (bos, eos, "<pad>") if t]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=base, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([" ".join(_WORDS)] * 20, trainer=trainer)
    cls = getattr(transformers, cls_name)
    kw = {"bos_token": bos} if bos else {}
    fast = cls(tokenizer_object=tok, eos_token=eos, pad_token="<pad>", **kw)
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast


def _text_dims(vocab: int) -> dict:
    return dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, max_position_embeddings=2048)


def build(family: str, folder: Path) -> Path:
    """Build, save and return a tiny ``family`` model folder that ``AutoProcessor`` / ``AutoModelForImageTextToText``
    load back like a real checkpoint."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    folder = Path(folder)
    if family == "llava":
        tok = _tokenizer("LlamaTokenizerFast", ["<image>"])
        proc = tf.LlavaProcessor(
            image_processor=tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
            tokenizer=tok, patch_size=16, vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=_LLAVA_TEMPLATE)
        cfg = tf.LlavaConfig(
            vision_config=tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, image_size=32, patch_size=16),
            text_config=tf.LlamaConfig(**_text_dims(len(tok)), pad_token_id=tok.pad_token_id,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
            image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
            vision_feature_layer=-1)
        model = tf.LlavaForConditionalGeneration(cfg)
    elif family in ("qwen2-vl", "qwen2.5-vl"):
        specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                    "<|video_pad|>"]
        tok = _tokenizer("Qwen2TokenizerFast", specials, bos=None, eos="<|im_end|>")
        ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
        improc = tf.Qwen2VLImageProcessor(min_pixels=32 * 32, max_pixels=64 * 64, patch_size=14, merge_size=2)
        v25 = family == "qwen2.5-vl"
        text = dict(**_text_dims(len(tok)), rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        if v25:
            vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                          fullatt_block_indexes=[0])
            proc_cls, cfg_cls, model_cls = tf.Qwen2_5_VLProcessor, tf.Qwen2_5_VLConfig, \
                tf.Qwen2_5_VLForConditionalGeneration
        else:
            vision = dict(depth=1, embed_dim=32, hidden_size=32, mlp_ratio=2, num_heads=2, patch_size=14,
                          spatial_merge_size=2, temporal_patch_size=2)
            proc_cls, cfg_cls, model_cls = tf.Qwen2VLProcessor, tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration
        proc = proc_cls(image_processor=improc, tokenizer=tok, video_processor=tf.Qwen2VLVideoProcessor(),
                        chat_template=_QWEN_TEMPLATE)
        cfg = cfg_cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                      video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                      vision_end_token_id=ids["<|vision_end|>"])
        model = model_cls(cfg)
    elif family in ("idefics3", "smolvlm"):
        specials = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", "<|im_start|>"]
        specials += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
        tok = _tokenizer("PreTrainedTokenizerFast", specials, bos="<|endoftext|>", eos="<end_of_utterance>")
        improc_cls = tf.SmolVLMImageProcessor if family == "smolvlm" else tf.Idefics3ImageProcessor
        improc = improc_cls(do_image_splitting=False, size={"longest_edge": 32},
                            max_image_size={"longest_edge": 32})
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=32, patch_size=8)
        text = tf.LlamaConfig(**_text_dims(len(tok)), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id)
        seq = (32 // 8) ** 2 // 4  # patches / scale_factor**2
        if family == "smolvlm":
            proc = tf.SmolVLMProcessor(image_processor=improc, tokenizer=tok,
                                       video_processor=tf.SmolVLMVideoProcessor(), image_seq_len=seq,
                                       chat_template=_IDEFICS_TEMPLATE)
            cfg = tf.SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2,
                                   image_token_id=tok.convert_tokens_to_ids("<image>"))
            model = tf.SmolVLMForConditionalGeneration(cfg)
        else:
            proc = tf.Idefics3Processor(image_processor=improc, tokenizer=tok, image_seq_len=seq,
                                        chat_template=_IDEFICS_TEMPLATE)
            cfg = tf.Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                                    image_token_id=tok.convert_tokens_to_ids("<image>"))
            model = tf.Idefics3ForConditionalGeneration(cfg)
    elif family == "blip-2":
        tok = _tokenizer("GPT2TokenizerFast", ["<image>"], bos="</s>", eos="</s>")
        proc = tf.Blip2Processor(image_processor=tf.BlipImageProcessor(size={"height": 32, "width": 32}),
                                 tokenizer=tok, num_query_tokens=4)
        cfg = tf.Blip2Config(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=16),
            qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                encoder_hidden_size=32, vocab_size=100),
            text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                             num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=256,
                             pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id),
            num_query_tokens=4, image_token_id=tok.convert_tokens_to_ids("<image>"))
        model = tf.Blip2ForConditionalGeneration(cfg)
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    folder.mkdir(parents=True, exist_ok=True)
    proc.save_pretrained(str(folder))
    model.save_pretrained(str(folder))
    return folder


LM_ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma", "phi", "phi3", "gpt2")


#: The shape of ChatML (Qwen2, SmolLM2): what an instruct checkpoint's tokenizer carries as ``chat_template``.
CHATML_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                   "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_lm(arch: str, folder: Path, texts: list[str], *, chat_template: str | None = None) -> Path:
    """A tiny random-weight causal LM of a real architecture with a byte-level BPE tokenizer trained on ``texts``
    (and a chat template, for instruct checkpoints), saved like a hub checkpoint (for ``--set backbone=FOLDER``)."""
    import torch
    import transformers as tf

    from mmsr_bench.models.toolkits.backbones import _train_tokenizer

    torch.manual_seed(0)
    tok = _train_tokenizer(texts, 600)
    if chat_template:
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = chat_template
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, n_positions=1024, **ids)
    else:
        small = dict(vocab_size=len(tok), num_hidden_layers=1, num_attention_heads=2, hidden_size=16,
                     intermediate_size=32, max_position_embeddings=1024, **ids)
        cls = {"llama": tf.LlamaConfig, "phi": tf.PhiConfig, "phi3": tf.Phi3Config, "qwen2": tf.Qwen2Config,
               "mistral": tf.MistralConfig, "gemma": tf.GemmaConfig}[arch]
        extra = {} if arch == "phi" else {"num_key_value_heads": 2}
        if arch == "gemma":
            extra["head_dim"] = 8
        cfg = cls(**small, **extra)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    model.save_pretrained(str(folder))
    return folder
