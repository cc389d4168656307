"""Fast pointwise scoring with a causal LM by sharing each user's prompt prefix across all their candidates.

An LLM recommender asks, per (user, candidate), "... history ... Target: <title> ... Answer:" and reads the
next-token distribution: score = p(Yes) / (p(Yes) + p(No)). Everything up to the candidate (instruction, history,
preference) is the same for all of a user's candidates, so the prefix runs once with ``use_cache=True``; its
key/value cache is then selected/repeated per candidate row (``Cache.batch_select_indices`` with repeated
indices, on a deep copy so the prefix cache can be reused by the next chunk), and all candidates' suffix tokens
run in one batch: suffixes right-padded, the attention mask covers prefix + suffix, positions continue from each
user's real prefix length, and each row's logits are read at its last real token. Several users are batched by
left-padding their prefixes (masked, with positions counted from the first real token).

Tokenisation contract: the prompt is ``encode_prefix(prefix) + encode_suffix(suffix)`` (prefix with the
tokenizer's special tokens, suffix without). Training (:mod:`mmsr_bench.models.toolkits.finetune`) uses the very same encoding, and
the naive reference path below feeds exactly these ids in one forward pass, so the two paths see identical
tokens. End the prefix at a natural boundary (e.g. a newline) so that split encoding equals joint encoding.

``output="logit"`` returns log p(Yes) - log p(No) (same ranking as the probability, but no float saturation
ties); ``output="prob"`` the probability. Works with peft-wrapped (LoRA) and bitsandbytes 4-bit models.

Why one module of this length: the one scoring engine of every LLM model; its prefix cache, row packing and masks
share one memory layout and are only correct together.
"""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from mmsr_bench.errors import BenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringOptions:
    """Batching knobs. ``max_rows``: candidate rows per suffix forward (bounds memory: rows x (prefix+suffix)
    keys/values per layer); ``users_per_batch``: prefixes run together; ``max_prefix_tokens``: left-truncate
    longer prefixes (keeping the first special token) so prompts fit the model; ``pack_tokens``: pack up to this
    many suffix tokens of one user into a single row with a block-diagonal 4-D mask (0 = one candidate per row).
    ``max_rows`` counts packed rows when packing."""

    max_rows: int = 128
    users_per_batch: int = 4
    max_prefix_tokens: int | None = None
    pack_tokens: int = 256


# --------------------------------------------------------------------------------------------- tokenisation


def answer_token_id(tokenizer: Any, word: str) -> int:
    """The single token id of an answer word (e.g. "Yes"); raises when the word is not one token."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise BenchError(f"answer word {word!r} is {len(ids)} tokens {pieces} for this tokenizer; choose answer "
                         f"strings that are single tokens (e.g. ' {word.strip()}' or '{word.strip()}')")
    return int(ids[0])


def encode_prefix(tokenizer: Any, prefix: str, max_tokens: int | None = None) -> list[int]:
    """Prefix ids with the tokenizer's special tokens (BOS); left-truncated to ``max_tokens`` keeping the first
    token when it is special, so the most recent history survives."""
    ids = list(tokenizer.encode(prefix, add_special_tokens=True))
    if max_tokens is not None and len(ids) > max_tokens:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        head = ids[:1] if ids and ids[0] in special else []
        ids = head + ids[len(ids) - (max_tokens - len(head)):]
    return ids


def encode_suffix(tokenizer: Any, suffix: str) -> list[int]:
    return list(tokenizer.encode(suffix, add_special_tokens=False))


@dataclass(frozen=True)
class PromptWrap:
    """Text around a recommender prompt: ``head`` before the shared prefix, ``tail`` after the candidate's suffix
    (and before any forced reasoning), so the answer is the first thing the model writes. Empty = the paper's raw
    prompt."""

    head: str = ""
    tail: str = ""
    source: str = "none"

    def info(self) -> dict[str, str]:
        return {"chat_template": self.source}


_SENTINEL = "MMSRBENCHPROMPTSLOT"


def chat_wrap(tokenizer: Any, mode: str, where: str) -> PromptWrap:
    """``mode="none"``: the raw prompt of the papers (TALLRec's and MLLM-SRec's Alpaca-style text). ``"auto"``:
    the tokenizer's own chat template where it has one: the prompt becomes one user turn, followed by the
    template's opening of the assistant turn (whatever system text the template adds by default stays, as the
    model was tuned with it); a tokenizer without a template keeps the raw prompt, and the run records which."""
    if mode == "none":
        return PromptWrap()
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return PromptWrap(source="none (the tokenizer has no chat template)")
    import hashlib

    text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], add_generation_prompt=True,
                                         tokenize=False)
    if not isinstance(text, str) or text.count(_SENTINEL) != 1:
        raise BenchError(f"{where}: the tokenizer's chat template does not place the user's message verbatim once; "
                         "use --set chat_template=none")
    head, tail = text.split(_SENTINEL)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and head.startswith(bos) and tokenizer.encode("x", add_special_tokens=True)[:1] == [tokenizer.bos_token_id]:
        head = head[len(bos):]  # the tokenizer adds BOS itself (encode_prefix): not twice
    digest = hashlib.sha256(str(template).encode()).hexdigest()[:16]
    return PromptWrap(head, tail, f"the tokenizer's (sha256 {digest})")


def context_length(model: Any) -> int | None:
    """The most positions the model reads (``max_position_embeddings``, GPT-2's ``n_positions``); None if unknown."""
    cfg = getattr(_base(model), "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_fits(model: Any, n_tokens: int, where: str) -> None:
    """Refuse prompts longer than the model's context (positions past it are garbage or an index error) with one
    line naming the fix, before the work that would use them."""
    limit = context_length(model)
    if limit is not None and n_tokens > limit:
        raise BenchError(f"{where}: a prompt of {n_tokens} tokens is longer than the {limit} positions "
                         f"{type(_base(model)).__name__} reads; lower max_prefix_tokens (the history is cut from "
                         "the oldest end) or use a model with a longer context")


def check_split_tokenisation(tokenizer: Any, prefix: str, suffix: str, where: str) -> None:
    """The prefix-sharing scorer and training encode prefix and suffix separately; refuse a tokenizer for which
    that differs from encoding the whole prompt (the scores would then not be the model's answer to the prompt)."""
    if encode_prefix(tokenizer, prefix) + encode_suffix(tokenizer, suffix) != encode_prefix(tokenizer, prefix + suffix):
        raise BenchError(f"{where}: this tokenizer encodes the prompt differently when split at the target item; "
                         "use a byte-level BPE tokenizer (Llama/GPT-2 style) or another backbone")


# ----------------------------------------------------------------------------------------------- model glue


def _base(model: Any) -> Any:
    """The causal LM to call: a peft wrapper's base model (its LoRA layers stay active inside)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _forward_kwargs(model: Any) -> tuple[str, str | None]:
    """Name of the cache argument (``cache`` in transformers 5.x, ``past_key_values`` before) and of the
    keep-last-logits argument, if any."""
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    keep = "logits_to_keep" if "logits_to_keep" in params else (
        "num_logits_to_keep" if "num_logits_to_keep" in params else None)
    return cache_kw, keep


def _out_cache(out: Any) -> Any:
    keys = list(out.keys())
    if "cache" in keys:
        return out["cache"]
    return out["past_key_values"]


#: Config fields of models whose logits are not just ``head(hidden)`` (a cap or a scale applied after the head);
#: such models keep full logits.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def _body_and_head(lm: Any) -> tuple[Any, Any] | None:
    """(decoder body, LM head) of a Hugging Face causal LM, so a caller that needs logits at a few positions can
    run the body for hidden states and the head only there (a 49k-vocabulary head at every position dominates a
    small model's time and memory). Works for peft-wrapped models (pass :func:`_base`; the LoRA layers live
    inside the body), 4-bit bitsandbytes models and the tiny ones. None when the model does not expose both, or
    post-processes its logits; the caller then uses full logits."""
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    body = None
    if hasattr(lm, "get_decoder"):
        try:
            body = lm.get_decoder()
        except (AttributeError, NotImplementedError, ValueError):
            body = None
    if body is None or body is lm:
        body = getattr(lm, "model", None)
    cfg = getattr(lm, "config", None)
    if body is None or body is lm or head is None or any(getattr(cfg, k, None) for k in _LOGIT_POSTPROCESSING):
        return None
    return body, head


def _head_logits(head: Any, hidden: Any) -> Any:
    """Float32 logits of the LM head at a few gathered hidden states, whatever the model's dtype (and outside
    autocast): bfloat16 rounds logits of magnitude 16-32 to steps of 0.125, coarser than the spread of one user's
    Yes/No log-odds on SmolLM2 (benchmarks/llm_scoring.py), and at a few rows the float32 product costs nothing."""
    import torch

    w = getattr(head, "weight", None)
    plain = type(head) is torch.nn.Linear and isinstance(w, torch.Tensor)
    if not plain or (hidden.dtype == w.dtype == torch.float32 and not torch.is_autocast_enabled(hidden.device.type)):
        return head(hidden).float()
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        bias = None if head.bias is None else head.bias.float()
        return torch.nn.functional.linear(hidden.float(), w.float(), bias)


def _last_only(reduce: Any) -> bool:
    return bool(getattr(reduce, "last_only", False))


def _device(model: Any):
    import torch

    try:
        return next(p for p in model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


class _EvalMode:
    """Disable dropout while scoring and restore the caller's mode afterwards."""

    def __init__(self, model: Any) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.was_training)


# ------------------------------------------------------------------------------------------------ the engine

#: reduce(logits[R, S, V], suffix_ids[R, S], lengths[R], prefix_last_logits[R, V]) -> values[R]. A reducer
#: with the attribute ``last_only = True`` reads only each row's last real suffix token: the engine then
#: passes logits[R, 1, V] at that token (suffix_ids[R, 1], lengths all 1) and skips the head elsewhere.
Reducer = Callable[[Any, Any, Any, Any], Any]


def prefix_shared_reduce(model: Any, prefix_ids: Sequence[Sequence[int]], suffix_ids: Sequence[Sequence[Sequence[int]]],
                         reduce: Reducer, *, pad_id: int = 0, options: ScoringOptions = ScoringOptions()
                         ) -> list[np.ndarray]:
    """Run each prefix once, then all its suffixes against the shared cache; ``reduce`` turns each chunk's
    suffix logits into one value per candidate row. Returns one float64 array per user."""
    import torch

    if len(prefix_ids) != len(suffix_ids):
        raise BenchError(f"{len(prefix_ids)} prefixes but {len(suffix_ids)} suffix lists")
    lm = _base(model)
    cache_kw, keep_kw = _forward_kwargs(lm)
    dev = _device(lm)
    results: list[np.ndarray] = [np.zeros(len(s), dtype=np.float64) for s in suffix_ids]
    with _EvalMode(model), torch.no_grad():
        for g0 in range(0, len(prefix_ids), max(1, options.users_per_batch)):
            group = list(range(g0, min(len(prefix_ids), g0 + max(1, options.users_per_batch))))
            plens = [len(prefix_ids[u]) for u in group]
            if min(plens) == 0:
                raise BenchError("an empty prompt prefix; the prefix must hold at least one token (e.g. BOS)")
            pmax = max(plens)
            ids = torch.full((len(group), pmax), pad_id, dtype=torch.long)
            pmask = torch.zeros((len(group), pmax), dtype=torch.long)
            for i, u in enumerate(group):  # left padding: every prefix ends at column pmax-1
                ids[i, pmax - plens[i]:] = torch.tensor(list(prefix_ids[u]), dtype=torch.long)
                pmask[i, pmax - plens[i]:] = 1
            ppos = (pmask.cumsum(1) - 1).clamp(min=0)
            parts = _body_and_head(lm)
            if parts is not None:  # the head only at the last prefix token (left padding: column pmax-1)
                out = parts[0](input_ids=ids.to(dev), attention_mask=pmask.to(dev), position_ids=ppos.to(dev),
                               use_cache=True)
                last_logits = _head_logits(parts[1], out.last_hidden_state[:, -1, :])
            else:
                kwargs: dict[str, Any] = {"use_cache": True}
                if keep_kw:
                    kwargs[keep_kw] = 1
                out = lm(input_ids=ids.to(dev), attention_mask=pmask.to(dev), position_ids=ppos.to(dev), **kwargs)
                last_logits = out.logits[:, -1, :].float()
            prefix_cache = _out_cache(out)
            del out
            plen_t = torch.tensor(plens, dtype=torch.long)
            if options.pack_tokens > 0:
                _run_packed(lm, cache_kw, dev, group, suffix_ids, prefix_cache, last_logits, pmask, plen_t, reduce,
                            pad_id, options, results)
                continue
            rows = [(i, j) for i, u in enumerate(group) for j in range(len(suffix_ids[u]))]
            for r0 in range(0, len(rows), max(1, options.max_rows)):
                chunk = rows[r0:r0 + max(1, options.max_rows)]
                owner = torch.tensor([i for i, _ in chunk], dtype=torch.long)
                sfx = [list(suffix_ids[group[i]][j]) for i, j in chunk]
                lens = torch.tensor([len(s) for s in sfx], dtype=torch.long)
                if int(lens.min()) == 0:
                    raise BenchError("an empty candidate suffix; every suffix must hold at least one token")
                smax = int(lens.max())
                sids = torch.full((len(chunk), smax), pad_id, dtype=torch.long)
                for r, s in enumerate(sfx):
                    sids[r, :len(s)] = torch.tensor(s, dtype=torch.long)
                smask = (torch.arange(smax)[None, :] < lens[:, None]).long()
                mask = torch.cat([pmask[owner], smask], dim=1)
                pos = plen_t[owner][:, None] + torch.arange(smax)[None, :]
                cache = copy.deepcopy(prefix_cache)
                cache.batch_select_indices(owner.to(dev))
                parts = _body_and_head(lm) if _last_only(reduce) else None
                if parts is not None:  # hidden states everywhere, the head only at each row's last real token
                    body, head = parts
                    o = body(input_ids=sids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                             use_cache=True, **{_forward_kwargs(body)[0]: cache})
                    hid = o.last_hidden_state[torch.arange(len(chunk), device=dev), (lens - 1).to(dev)]
                    last_tok = sids[torch.arange(len(chunk)), lens - 1][:, None]
                    vals = reduce(_head_logits(head, hid)[:, None], last_tok.to(dev), torch.ones_like(lens).to(dev),
                                  last_logits[owner.to(dev)])
                else:
                    o = lm(input_ids=sids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                           use_cache=True, **{cache_kw: cache})
                    vals = reduce(o.logits.float(), sids.to(dev), lens.to(dev), last_logits[owner.to(dev)])
                vals = vals.double().cpu().numpy()
                for (i, j), v in zip(chunk, vals):
                    results[group[i]][j] = v
                del o, cache
    return results


def _run_packed(lm, cache_kw, dev, group, suffix_ids, prefix_cache, last_logits, pmask, plen_t, reduce, pad_id,
                options: ScoringOptions, results: list[np.ndarray]) -> None:
    """Pack several candidates' suffixes into one row per user ("tree attention"): a custom 4-D mask lets each
    suffix see its user's prefix and, causally, only itself; positions restart at the prefix length for every
    suffix. The prefix cache is then repeated per packed row (a few) instead of per candidate (hundreds), which
    removes most key/value copying."""
    import torch

    # rows: (owner, [(j, start, len), ...]) with at most pack_tokens suffix tokens each (one long suffix may exceed)
    rows: list[tuple[int, list[tuple[int, int, int]]]] = []
    for i, u in enumerate(group):
        cur: list[tuple[int, int, int]] = []
        used = 0
        for j, sfx in enumerate(suffix_ids[u]):
            n = len(sfx)
            if n == 0:
                raise BenchError("an empty candidate suffix; every suffix must hold at least one token")
            if cur and used + n > options.pack_tokens:
                rows.append((i, cur))
                cur, used = [], 0
            cur.append((j, used, n))
            used += n
        if cur:
            rows.append((i, cur))
    pmax = pmask.shape[1]
    eager = getattr(lm.config, "_attn_implementation", "sdpa") == "eager"
    for r0 in range(0, len(rows), max(1, options.max_rows)):
        chunk = rows[r0:r0 + max(1, options.max_rows)]
        q = max(sum(n for _, _, n in segs) for _, segs in chunk)
        owner = torch.tensor([i for i, _ in chunk], dtype=torch.long)
        ids = torch.full((len(chunk), q), pad_id, dtype=torch.long)
        pos = torch.zeros((len(chunk), q), dtype=torch.long)
        allow = torch.zeros((len(chunk), q, pmax + q), dtype=torch.bool)
        allow[:, :, :pmax] = pmask[owner][:, None, :].bool()
        cands: list[tuple[int, int, int, int, int]] = []  # (row, start, len, owner, j)
        for r, (i, segs) in enumerate(chunk):
            for j, st, n in segs:
                ids[r, st:st + n] = torch.tensor(list(suffix_ids[group[i]][j]), dtype=torch.long)
                pos[r, st:st + n] = plen_t[i] + torch.arange(n)
                allow[r, st:st + n, pmax + st:pmax + st + n] = torch.tril(torch.ones(n, n, dtype=torch.bool))
                cands.append((r, st, n, i, j))
            end = sum(n for _, _, n in segs)
            if end < q:  # padding queries: let them see themselves so no softmax row is empty
                idx = torch.arange(end, q)
                allow[r, idx, pmax + idx] = True
        mask = allow[:, None]
        if eager:
            mask = torch.zeros(mask.shape, dtype=last_logits.dtype).masked_fill(~mask, torch.finfo(last_logits.dtype).min)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_select_indices(owner.to(dev))
        own = torch.tensor([c[3] for c in cands])
        parts = _body_and_head(lm) if _last_only(reduce) else None
        if parts is not None:  # the head only at each candidate's last token (see the non-packed path)
            body, head = parts
            o = body(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True,
                     **{_forward_kwargs(body)[0]: cache})
            rr = torch.tensor([c[0] for c in cands], device=dev)
            end = torch.tensor([c[1] + c[2] - 1 for c in cands], device=dev)
            last = _head_logits(head, o.last_hidden_state[rr, end])[:, None]
            del o, cache
            ones = torch.ones(len(cands), dtype=torch.long, device=dev)
            first = ids[rr.cpu(), end.cpu()][:, None].to(dev)
            vals = reduce(last, first, ones, last_logits[own.to(dev)]).double().cpu().numpy()
            for (_, _, _, i, j), v in zip(cands, vals):
                results[group[i]][j] = v
            continue
        o = lm(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True,
               **{cache_kw: cache})
        logits = o.logits
        del o, cache
        smax = max(n for _, _, n, _, _ in cands)
        rr = torch.tensor([c[0] for c in cands])
        st = torch.tensor([c[1] for c in cands])
        lens = torch.tensor([c[2] for c in cands])
        gidx = (st[:, None] + torch.arange(smax)[None, :]).clamp(max=q - 1)
        sub = logits[rr[:, None].to(dev), gidx.to(dev)].float()  # (n_cands, smax, V)
        sids = ids[rr[:, None], gidx].masked_fill(torch.arange(smax)[None, :] >= lens[:, None], pad_id)
        vals = reduce(sub, sids.to(dev), lens.to(dev), last_logits[own.to(dev)]).double().cpu().numpy()
        for (_, _, _, i, j), v in zip(cands, vals):
            results[group[i]][j] = v


def _yes_no_reducer(yes_id: int, no_id: int) -> Reducer:
    def reduce(logits, sids, lens, prefix_last):
        import torch

        last = logits[torch.arange(len(lens), device=logits.device), lens - 1]  # (R, V)
        return last[:, yes_id].double() - last[:, no_id].double()

    reduce.last_only = True  # type: ignore[attr-defined]  # the engine may pass only the last position's logits
    return reduce


def _continuation_reducer() -> Reducer:
    def reduce(logits, sids, lens, prefix_last):
        import torch

        first = torch.log_softmax(prefix_last.double(), -1).gather(1, sids[:, :1]).squeeze(1)
        if sids.shape[1] == 1:
            return first
        lp = torch.log_softmax(logits[:, :-1].double(), -1).gather(2, sids[:, 1:, None]).squeeze(2)
        valid = torch.arange(1, sids.shape[1], device=sids.device)[None, :] < lens[:, None]
        return first + (lp * valid).sum(1)

    return reduce


def _finish(values: list[np.ndarray], output: str) -> list[np.ndarray]:
    if output == "logit":
        return values
    if output == "prob":
        return [1.0 / (1.0 + np.exp(-v)) for v in values]
    raise BenchError(f"output must be 'prob' or 'logit', got {output!r}")


def yes_no_scores_ids(model: Any, prefix_ids: Sequence[Sequence[int]], suffix_ids: Sequence[Sequence[Sequence[int]]],
                      yes_id: int, no_id: int, *, pad_id: int = 0, options: ScoringOptions = ScoringOptions(),
                      output: str = "prob") -> list[np.ndarray]:
    """p(Yes)/(p(Yes)+p(No)) (or its log-odds) after prefix+suffix, one array per user, prefix shared."""
    vals = prefix_shared_reduce(model, prefix_ids, suffix_ids, _yes_no_reducer(yes_id, no_id), pad_id=pad_id,
                                options=options)
    return _finish(vals, output)


def yes_no_scores(model: Any, tokenizer: Any, prefixes: Sequence[str], suffixes: Sequence[Sequence[str]],
                  *, yes: str = "Yes", no: str = "No", options: ScoringOptions = ScoringOptions(),
                  output: str = "prob") -> list[np.ndarray]:
    """String front-end of :func:`yes_no_scores_ids`: prompts given as (prefix, [suffix per candidate])."""
    pids = [encode_prefix(tokenizer, p, options.max_prefix_tokens) for p in prefixes]
    sids = [[encode_suffix(tokenizer, s) for s in ss] for ss in suffixes]
    longest = max((len(p) + max((len(s) for s in ss), default=0) for p, ss in zip(pids, sids)), default=0)
    check_prompt_fits(model, longest + 1, "scoring")  # + the answer position
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return yes_no_scores_ids(model, pids, sids, answer_token_id(tokenizer, yes), answer_token_id(tokenizer, no),
                             pad_id=pad, options=options, output=output)


def continuation_logprobs(model: Any, prefix_ids: Sequence[Sequence[int]],
                          continuation_ids: Sequence[Sequence[Sequence[int]]], *, pad_id: int = 0,
                          options: ScoringOptions = ScoringOptions()) -> list[np.ndarray]:
    """log p(continuation | prefix) summed over the continuation's tokens, prefix shared (e.g. GPTRec's
    sub-item tokens of each candidate)."""
    return prefix_shared_reduce(model, prefix_ids, continuation_ids, _continuation_reducer(), pad_id=pad_id,
                                options=options)


# ------------------------------------------------------------------------------------ naive reference paths


def _naive(model: Any, prefix_ids, suffix_ids, reduce: Reducer, pad_id: int, batch_size: int) -> list[np.ndarray]:
    """One full prompt per candidate (right-padded batches of ``batch_size``); the reference for tests/benchmarks."""
    import torch

    lm = _base(model)
    _, keep_kw = _forward_kwargs(lm)
    dev = _device(lm)
    out_vals = [np.zeros(len(s), dtype=np.float64) for s in suffix_ids]
    rows = [(u, j) for u in range(len(prefix_ids)) for j in range(len(suffix_ids[u]))]
    with _EvalMode(model), torch.no_grad():
        for r0 in range(0, len(rows), max(1, batch_size)):
            chunk = rows[r0:r0 + max(1, batch_size)]
            full = [list(prefix_ids[u]) + list(suffix_ids[u][j]) for u, j in chunk]
            plens = torch.tensor([len(prefix_ids[u]) for u, _ in chunk])
            slens = torch.tensor([len(suffix_ids[u][j]) for u, j in chunk])
            L = max(len(f) for f in full)
            ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
            for r, f in enumerate(full):
                ids[r, :len(f)] = torch.tensor(f)
            mask = (torch.arange(L)[None, :] < (plens + slens)[:, None]).long()
            logits = lm(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits.float()
            # Re-slice into the engine's (suffix logits, prefix-last logits) layout so the same reducer applies.
            smax = int(slens.max())
            ar = torch.arange(len(chunk))
            idx = (plens[:, None] + torch.arange(smax)[None, :]).clamp(max=L - 1)
            sfx_logits = logits[ar[:, None], idx.to(logits.device)]
            sids = torch.full((len(chunk), smax), pad_id, dtype=torch.long)
            for r, (u, j) in enumerate(chunk):
                sids[r, :len(suffix_ids[u][j])] = torch.tensor(list(suffix_ids[u][j]))
            prefix_last = logits[ar, (plens - 1).to(logits.device)]
            vals = reduce(sfx_logits, sids.to(dev), slens.to(dev), prefix_last).double().cpu().numpy()
            for (u, j), v in zip(chunk, vals):
                out_vals[u][j] = v
    return out_vals


def naive_yes_no_scores_ids(model: Any, prefix_ids, suffix_ids, yes_id: int, no_id: int, *, pad_id: int = 0,
                            batch_size: int = 1, output: str = "prob") -> list[np.ndarray]:
    return _finish(_naive(model, prefix_ids, suffix_ids, _yes_no_reducer(yes_id, no_id), pad_id, batch_size), output)


def naive_continuation_logprobs(model: Any, prefix_ids, continuation_ids, *, pad_id: int = 0,
                                batch_size: int = 1) -> list[np.ndarray]:
    return _naive(model, prefix_ids, continuation_ids, _continuation_reducer(), pad_id, batch_size)
