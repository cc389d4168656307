"""MLLM-SRec's text side: item multimodal summaries, the sliding-window recurrent user preference, and a user profile.

Item summary: an LLM fuses item text (title, brand, categories, description) with the image caption into one short
summary. Two modes (``mode``):

- ``"llm"``: a causal LM generates the summary from :data:`ITEM_SUMMARY_PROMPT` (greedy, cached on disk as JSON per
  (model hash, prompt hash, content hash)); the path for real checkpoints.
- ``"template"``: a deterministic, short fusion "title. Looks like: caption". A ``tiny-*``
  LM (random or briefly pretrained) cannot summarise, so tiny backbones default to this; the adapter records
  ``summary_mode`` in ``run_info``.

Temporal-aware preference: the history is cut into windows of ``size`` items moved by ``step``
(:func:`windows`); a summary is produced window by window, each step receiving the previous summary
(:func:`recurrent_preference`). Step functions: an LLM prompt (:func:`llm_preference_step`), or for tiny backbones the
deterministic :class:`KeywordPreference`: "prefers w1, w2, ..." listing the *descriptive* words of the window's
item summaries that occur more often than chance (count minus window length x document frequency, like TF-IDF) (words in 2 items or more but in at most ``max_df`` of all items: colours, materials,
shapes, product nouns; not stopwords or boilerplate), plus the previous summary's words with a decayed weight
(read back from the previous summary's text, so the only state passed between steps is the text itself).

Profile: derived from the data only (activity length, main categories); no demographics exist here.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mmsr_bench.data.splits import ItemTable
from mmsr_bench.errors import BenchError
from mmsr_bench.paths import cache_dir, read_verified_json, write_verified_json

log = logging.getLogger(__name__)

ITEM_SUMMARY_PROMPT = ("Summarize the product in one short sentence using its text and its image description.\n"
                       "{content}\nSummary:")
PREFERENCE_PROMPT = ("Previous preference summary: {previous}\nItems the user interacted with next:\n{items}\n"
                     "Update the summary of what the user likes in one short sentence.\nSummary:")
PREFIX = "prefers "
_WORD = re.compile(r"[a-z][a-z\-]+")
STOPWORDS = frozenset(
    "a an the and or of for with to in on at by from this that these those is are be it its as your you our "
    "we all any each more most very also can will into out up made has have set one two new use used using "
    "looks like plain".split())


def item_content(items: ItemTable, item: int, caption: str, modalities: str) -> list[tuple[str, str]]:
    """(label, text) parts of an item for the given modalities ("text+image" | "text" | "image")."""
    parts: list[tuple[str, str]] = []
    if modalities in ("text+image", "text"):
        row = items.frame.loc[item]
        for col, label in (("title", "Title"), ("brand", "Brand"), ("categories", "Category"),
                           ("description", "Description")):
            val = row[col] if col in row.index else None
            if isinstance(val, str) and val.strip():
                if col == "categories":
                    val = val.split("|")[-1].split(">")[-1].strip() or val
                parts.append((label, " ".join(val.split())))
    if modalities in ("text+image", "image") and caption:
        parts.append(("Looks like", caption))
    if modalities not in ("text+image", "text", "image"):
        raise BenchError(f"modalities {modalities!r}: expected text+image, text or image")
    return parts


TEMPLATE_FIELDS = ("Title", "Looks like")


def template_summary(parts: Sequence[tuple[str, str]], max_chars: int = 160,
                     fields: Sequence[str] = TEMPLATE_FIELDS) -> str:
    """Deterministic fusion of an item's parts (the documented tiny-backbone stand-in for LLM summarisation).

    Short on purpose (title + caption by default): brand, category and the distinguishing description words
    repeat the title, and every candidate's summary is scored, so its length drives the scoring cost. With
    image only, the caption alone is the summary. Lower-cased, like the preference's keywords: a small
    tokenizer gives "Coconut" and "coconut" different tokens, and a tiny recommender must see the *same* token in
    the preference and in the target to learn to match them (measured on synth4: a word-match probe reaches AUC
    0.99 in 500 LoRA steps when both sides are lower-case, 0.68 when the target keeps the title's capitals)."""
    chosen = [(k, v) for k, v in parts if k in fields] or list(parts[:1])
    text = ". ".join(v if k == "Title" else f"{k}: {v}" for k, v in chosen) or "(no content)"
    return text[:max_chars].rstrip().lower()


# ----------------------------------------------------------------------------------------------- LLM generation
@contextmanager
def frozen_base(model: Any) -> Iterator[None]:
    """Generate with the base weights alone, in eval mode: LoRA layers that fine-tuning later injected into the
    same modules (peft wraps them in place) are switched off and dropout is off, so every summary of one input is
    the same text before, during and after training, in train, validation and test prompts alike (the study's
    summarizing MLLM is frozen; only the recommender is tuned). Modes and adapters are restored afterwards."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # peft absent: nothing can have been injected
        BaseTunerLayer = ()  # noqa: N806
    layers = [m for m in model.modules() if BaseTunerLayer and isinstance(m, BaseTunerLayer) and not m.disable_adapters]
    was_training = model.training
    for m in layers:
        m.enable_adapters(False)
    model.eval()
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)
        model.train(was_training)


def generate_texts(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 40,
                   batch_size: int = 16, cache_key: str = "") -> list[str]:
    """Greedy generation for each prompt, cached on disk (JSON) under ``cache_key`` (e.g. the weights hash)."""
    import torch

    cache_file = None
    cache: dict[str, str] = {}
    if cache_key:
        cache_file = cache_dir("summaries", cache_key[:16]) / f"gen-{max_new_tokens}.json"
        cache = read_verified_json(cache_file)
    keys = [hashlib.sha256(p.encode()).hexdigest() for p in prompts]
    todo = list(dict.fromkeys(k for k in keys if k not in cache))
    by_key = dict(zip(keys, prompts))
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for s in range(0, len(todo), batch_size):
            chunk = todo[s:s + batch_size]
            enc = tokenizer([by_key[k] for k in chunk], return_tensors="pt", padding=True)
            dev = next(model.parameters()).device
            enc = {k: v.to(dev) for k, v in enc.items()}
            with torch.inference_mode(), frozen_base(model):
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            cache.update({k: " ".join(t.split("\n")[0].split()) for k, t in zip(chunk, texts)})
    finally:
        tokenizer.padding_side = side
    if cache_file is not None and todo:
        write_verified_json(cache_file, cache)
    return [cache[k] for k in keys]


def item_summaries(items: ItemTable, captions: Sequence[str], modalities: str, *, mode: str = "template",
                   model: Any = None, tokenizer: Any = None, cache_key: str = "", max_new_tokens: int = 40,
                   wrap: Any = None, batch_size: int = 16) -> list[str]:
    """One summary per item (index 0 = padding ""). ``captions[i]`` is item ``i``'s caption ("" when none)."""
    parts = [item_content(items, i, captions[i] if i < len(captions) else "", modalities)
             for i in range(1, items.n_items + 1)]
    if mode == "template":
        return [""] + [template_summary(p) for p in parts]
    if mode == "llm":
        if model is None or tokenizer is None:
            raise BenchError("item summaries in llm mode need a model and tokenizer")
        prompts = [_wrapped(ITEM_SUMMARY_PROMPT.format(content="\n".join(f"{k}: {v}" for k, v in p)), wrap)
                   for p in parts]
        gen = generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, cache_key=cache_key,
                             batch_size=batch_size)
        return [""] + [g or template_summary(p) for g, p in zip(gen, parts)]
    raise BenchError(f"summary_mode {mode!r}: expected template or llm")


# -------------------------------------------------------------------------------------------- sliding windows
def windows(n: int, size: int, step: int) -> list[tuple[int, int]]:
    """Half-open [start, end) windows over ``n`` chronological items: starts 0, step, 2*step, ...; the last window
    always ends at ``n`` (so the most recent items are always covered); one window when ``n <= size``."""
    if size < 1 or step < 1:
        raise BenchError(f"window size {size} and step {step} must be >= 1")
    if n <= 0:
        return []
    if n <= size:
        return [(0, n)]
    out = [(s, s + size) for s in range(0, n - size + 1, step)]
    if out[-1][1] < n:
        out.append((n - size, n))
    return out


StepFn = Callable[[str, Sequence[str]], str]


def recurrent_preference(item_texts: Sequence[str], size: int, step: int, step_fn: StepFn,
                         initial: str = "") -> list[str]:
    """Summaries after each window, oldest first: ``s_k = step_fn(s_{k-1}, window_k)``; ``[-1]`` is the final one."""
    out: list[str] = []
    prev = initial
    for a, b in windows(len(item_texts), size, step):
        prev = step_fn(prev, list(item_texts[a:b]))
        out.append(prev)
    return out


def words(text: str) -> list[str]:
    return [w.strip("-") for w in _WORD.findall(text.lower()) if w.strip("-") and w not in STOPWORDS]


@dataclass(frozen=True)
class KeywordPreference:
    """Deterministic preference step for tiny backbones: "prefers w1, w2, ..." (see the module docstring)."""

    vocabulary: frozenset[str]
    doc_freq: tuple[tuple[str, float], ...] = ()
    top_k: int = 8
    decay: float = 0.5

    @staticmethod
    def fit(texts: Sequence[str], max_df: float = 0.3, min_items: int = 2, top_k: int = 8,
            decay: float = 0.5) -> "KeywordPreference":
        """Descriptive vocabulary from the item summaries: in >= ``min_items`` items and <= ``max_df`` of them."""
        texts = [t for t in texts if t]
        df = Counter(w for t in texts for w in set(words(t)))
        n = max(len(texts), 1)
        vocab = frozenset(w for w, c in df.items() if c >= min_items and c / n <= max_df)
        return KeywordPreference(vocab, tuple(sorted((w, df[w] / n) for w in vocab)), top_k, decay)

    def keywords(self, text: str) -> list[str]:
        return [w for w in words(text) if w in self.vocabulary]

    @staticmethod
    def parse(summary: str) -> list[str]:
        return [w.strip() for w in summary[len(PREFIX):].split(",") if w.strip()] if summary.startswith(PREFIX) else []

    def __call__(self, previous: str, window_texts: Sequence[str]) -> str:
        score: Counter = Counter()
        prev = self.parse(previous)
        for r, w in enumerate(prev):  # earlier windows: decayed, rank-weighted
            score[w] += self.decay * 2.0 * (len(prev) - r) / len(prev)
        df = dict(self.doc_freq)
        counts: Counter = Counter(w for t in window_texts for w in set(self.keywords(t)))
        for w, k in counts.items():  # excess over chance: words the user picks more often than items carry them
            score[w] += k - len(window_texts) * df.get(w, 0.0)
        best = [kv for kv in sorted(score.items(), key=lambda kv: (-kv[1], kv[0])) if kv[1] > 0][:self.top_k]
        return PREFIX + ", ".join(w for w, _ in best) if best else ""


def _wrapped(prompt: str, wrap: Any) -> str:
    """``prompt`` inside a chat template's user turn (``wrap``: llm_scoring.PromptWrap; None = the raw prompt)."""
    return prompt if wrap is None else f"{wrap.head}{prompt}{wrap.tail}"


class LLMPreferenceStep:
    """An LLM-generated recurrent step: the previous summary and the window's item summaries -> a new summary.
    :meth:`batch` runs many users' steps as one list of prompts (``batch_size`` per generate call), which is what
    :func:`recurrent_preferences` feeds it."""

    def __init__(self, model: Any, tokenizer: Any, *, cache_key: str = "", max_new_tokens: int = 40,
                 wrap: Any = None, batch_size: int = 16) -> None:
        self.model, self.tokenizer, self.cache_key = model, tokenizer, cache_key
        self.max_new_tokens, self.wrap, self.batch_size = max_new_tokens, wrap, batch_size

    def prompt(self, previous: str, window_texts: Sequence[str]) -> str:
        return _wrapped(PREFERENCE_PROMPT.format(previous=previous or "(none)",
                                                 items="\n".join(f"- {t}" for t in window_texts)), self.wrap)

    def batch(self, steps: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        return generate_texts(self.model, self.tokenizer, [self.prompt(p, w) for p, w in steps],
                              max_new_tokens=self.max_new_tokens, cache_key=self.cache_key,
                              batch_size=self.batch_size)

    def __call__(self, previous: str, window_texts: Sequence[str]) -> str:
        return self.batch([(previous, window_texts)])[0]


def llm_preference_step(model: Any, tokenizer: Any, *, cache_key: str = "", max_new_tokens: int = 40,
                        wrap: Any = None, batch_size: int = 16) -> LLMPreferenceStep:
    return LLMPreferenceStep(model, tokenizer, cache_key=cache_key, max_new_tokens=max_new_tokens, wrap=wrap,
                             batch_size=batch_size)


def recurrent_preferences(histories: Sequence[Sequence[str]], size: int, step: int, step_fn: StepFn) -> list[str]:
    """The final summary of each history (item texts, oldest first; "" for an empty one), with every history's
    windows stepped in lockstep: window k of all histories that have one is one ``step_fn.batch`` call (one list of
    prompts for the LLM instead of one generate call per user and window). Equal to ``recurrent_preference(...)[-1]``
    per history: each history's own steps run in their order on their own previous summary."""
    plans = [windows(len(texts), size, step) for texts in histories]
    state = [""] * len(histories)
    run = getattr(step_fn, "batch", None) or (lambda steps: [step_fn(p, w) for p, w in steps])
    for k in range(max((len(p) for p in plans), default=0)):
        active = [h for h, plan in enumerate(plans) if k < len(plan)]
        steps = [(state[h], list(histories[h][plans[h][k][0]:plans[h][k][1]])) for h in active]
        for h, text in zip(active, run(steps)):
            state[h] = text
    return state


# ------------------------------------------------------------------------------------------------------- profile
def user_profile(items: ItemTable, history: np.ndarray, *, with_categories: bool = True, top: int = 2) -> str:
    """A data-derived profile: activity length and (when item text may be used) the main categories."""
    hist = [int(i) for i in np.asarray(history) if int(i) > 0]
    n = len(hist)
    level = "new" if n < 5 else "regular" if n < 15 else "very active"
    text = f"{level} user with {n} past interactions"
    if with_categories and "categories" in items.frame.columns and n:
        cats = Counter()
        for i in hist:
            c = items.frame.at[i, "categories"]
            if isinstance(c, str) and c:
                cats[c.split("|")[-1].split(">")[-1].strip()] += 1
        if cats:
            main = sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
            text += "; main categories: " + ", ".join(f"{c} ({k})" for c, k in main)
    return text
