"""TALLRec (Bao et al., "TALLRec: An Effective and Efficient Tuning Framework to Align Large Language Model with
Recommendation", RecSys 2023, arXiv 2305.00447), written against the harness contract.

Method: LoRA instruction tuning ("rec-tuning") of a causal LM on the paper's Alpaca-style Yes/No prompt
(:data:`INSTRUCTION`): 'Given the user's preference, identify whether the user will like the target item by
answering "Yes." or "No.".', input 'User Preference: "t1", "t2", ...' (history titles) then 'Whether the user will
like the target item "t"?', output "Yes." or "No.". Training examples are the harness's balanced pointwise pairs
(``TrainData.pointwise_pairs(negatives_per_positive=1)``: positive = the real next item, negative = a random unseen
item), identical for every Yes/No model. A candidate's score is p(Yes)/(p(Yes)+p(No)) of the first answer token
("Yes"/"No", checked at fit time to be the answers' first tokens; used as the log-odds, same ranking, no saturation
ties), computed with the prefix-sharing engine (:mod:`mmsr_bench.models.toolkits.llm_scoring`): the instruction and history are the
shared prefix (it ends at a newline, so split and joint tokenisation agree), the target line the suffix.

Backbone (``backbone``): by default the real SmolLM2-135M-Instruct (``smollm2-135m``, installed offline from a
package, :mod:`mmsr_bench.models.toolkits.backbones`); any folder or hub id of a causal LM (LLaMA-7B in the paper) goes through the
same path; a ``tiny-*`` model built locally (random weights) is the fast pipeline check for CI. ``run_info`` records
the backbone name, source, weights hash, dtype, ``random_init`` and ``train_mode``, so a tiny-backbone result can
never pass for an LLM result. ``quantization="4bit"`` = QLoRA (NF4 via bitsandbytes).

Recipe (the paper's): LoRA r=8, alpha=16, dropout 0.05 on q_proj/v_proj, lr 1e-4, Alpaca template with the
instruction "Given the user's preference ..., identify whether the user will like the target ... by answering
"Yes." or "No."", answers "Yes." / "No." (the scorer reads the first token, "Yes" / "No").

Deviations (CPU budget / benchmark protocol):
- TALLRec's datasets carry ratings and list "preferred" and "unpreferred" items; these implicit-feedback
  sequences only have interactions, so "User Preference:" lists the history (the last ``max_history`` titles) and
  there is no "User Unpreference:" line; "movie" reads "item".
- Training pairs are subsampled to ``max_pairs`` (positive/negative groups kept together) for CPU budgets; the
  paper's few-shot settings used 16-256 samples.
- Early stopping on validation AUC of the harness validation split, evaluated every ``eval_every`` optimizer
  steps (0 = each epoch) on a deterministic subsample of ``valid_users`` users (0 = all) on the split's shared
  candidates; under full ranking, validation uses the target plus ``valid_negatives`` sampled unseen items.
  The choice is ``run_info["selection"]``.
- ``tiny-*`` backbones are trained in full (``train_mode="auto"``; LoRA on frozen random weights cannot learn word
  matching) at lr 1e-3; ``lr`` left at None picks :data:`mmsr_bench.models.toolkits.yes_no_recipe.AUTO_LR` and the run records the value used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mmsr_bench.data.splits import EvalSplit, ScoreBatch, TrainData
from mmsr_bench.errors import BenchError, MissingModality
from mmsr_bench.evaluation.training import balanced_subsample, pointwise_validation_set
from mmsr_bench.models.adapter import Adapter, Needs, register
from mmsr_bench.models.toolkits.llm_scoring import PromptWrap
from mmsr_bench.models.toolkits.trainable import resolve_train_mode
from mmsr_bench.models.toolkits.yes_no_recipe import YesNoLLMConfig, resolve_lr

log = logging.getLogger(__name__)

#: TALLRec's Alpaca template (Bao et al. 2023) with the instruction adapted to implicit feedback: items
#: instead of movies and no "unpreference" (module docstring, Deviations).
INSTRUCTION = ("Below is an instruction that describes a task, paired with an input that provides further context. "
               "Write a response that appropriately completes the request.\n\n### Instruction:\n"
               "Given the user's preference, identify whether the user will like the target item by answering "
               "\"Yes.\" or \"No.\".\n\n### Input:\n")
def quote(title: str, max_chars: int) -> str:
    title = " ".join(str(title).split())
    return '"' + (title[:max_chars].rstrip() if max_chars > 0 else title) + '"'


#: The question's words are the same for every candidate, so they close the shared prefix; only the target title
#: and the response header are per candidate (half the tokens per candidate of a suffix holding the question).
QUESTION = "Whether the user will like the target item"


def build_prefix(history_titles: Sequence[str]) -> str:
    """Everything the user's candidates share. It ends at a word, and every suffix starts with a space, which
    byte-level BPE pre-tokenizers always split off, so split and joint tokenisation agree (checked in fit)."""
    hist = ", ".join(history_titles) if history_titles else "(none)"
    return f"{INSTRUCTION}User Preference: {hist}\n{QUESTION}"


def build_suffix(target_title: str) -> str:
    return f" {target_title}?\n\n### Response:\n"


@dataclass(frozen=True)
class TALLRecConfig(YesNoLLMConfig):
    """The shared Yes/No LLM configuration (its defaults are TALLRec's) and the fields of TALLRec's prompt."""

    yes: str = "Yes"  # first token of the answer "Yes." (the scored token)
    no: str = "No"
    max_title_chars: int = 60


@register()
class TALLRec(Adapter):
    name = "tallrec"
    #: the conformance kit's tiny budget (and the study's ``--budget tiny``), inherited by variants
    conformance_overrides = {"backbone": "tiny-llama", "max_pairs": "16", "epochs": "1", "pretrain_steps": "0",
                             "valid_users": "4", "max_history": "3", "train_batch_size": "8"}
    config_cls = TALLRecConfig
    needs = Needs(text=True)
    description = "TALLRec (Bao et al. 2023): LoRA-tuned causal LM (SmolLM2-135M) answering Yes/No on title prompts"

    def __init__(self, config: TALLRecConfig, **kw) -> None:
        super().__init__(config, **kw)
        self.model = None
        self.tokenizer = None
        self.titles: list[str] = []
        self._wrap = PromptWrap()

    # ------------------------------------------------------------------ prompts
    def _hist_titles(self, hist: np.ndarray) -> list[str]:
        hist = np.asarray(hist, dtype=np.int64)
        hist = hist[hist > 0][-self.config.max_history:] if self.config.max_history > 0 else hist[:0]
        return [self.titles[i] for i in hist]

    def _prefix(self, hist: np.ndarray) -> str:
        return self._wrap.head + build_prefix(self._hist_titles(hist))

    def _options(self):
        from mmsr_bench.models.toolkits.llm_scoring import ScoringOptions

        return ScoringOptions(max_rows=self.config.score_rows, users_per_batch=self.config.users_per_batch,
                              max_prefix_tokens=self.config.max_prefix_tokens)

    def _score_lists(self, histories: Sequence[np.ndarray], candidates: Sequence[Sequence[int]]) -> list[np.ndarray]:
        from mmsr_bench.models.toolkits.llm_scoring import yes_no_scores

        prefixes = [self._prefix(h) for h in histories]
        suffixes = [[self._suffix_cache[int(i)] for i in row] for row in candidates]
        return yes_no_scores(self.model, self.tokenizer, prefixes, suffixes, yes=self.config.yes, no=self.config.no,
                             options=self._options(), output="logit")

    # ------------------------------------------------------------------ fit
    def fit(self, train: TrainData, valid: EvalSplit) -> "TALLRec":
        import torch

        from mmsr_bench.models.toolkits.backbones import PretrainSpec, load_backbone
        from mmsr_bench.models.toolkits.finetune import SFTExample
        from mmsr_bench.models.toolkits.yes_no_recipe import fine_tune, make_trainable
        from mmsr_bench.models.toolkits.llm_scoring import answer_token_id, chat_wrap, check_split_tokenisation

        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        t0 = time.perf_counter()
        if not train.items.has("title"):
            raise MissingModality(f"tallrec needs item titles; dataset {train.dataset} has no 'title' column")
        self.titles = [""] + [quote(train.items.text(i, ("title",)) or f"item {i}", c.max_title_chars)
                              for i in range(1, train.n_items + 1)]
        self._suffix_cache = [build_suffix(t) for t in self.titles]
        corpus = [train.items.text(i, ("title", "categories")) for i in range(1, train.n_items + 1)]
        mode = resolve_train_mode(c.train_mode, c.backbone, c.quantization, "tallrec")
        lr = resolve_lr(c, mode)
        bb = load_backbone(c.backbone, texts=corpus + [build_prefix(['"item"']) + build_suffix('"item"') + "Yes. No."] * 5,
                           pretrain=PretrainSpec(steps=c.pretrain_steps, seed=self.seed),
                           quantization=c.quantization, device=self.device, allow_hub=c.allow_hub, seed=self.seed,
                           dtype=c.dtype, device_map=c.device_map)
        self.tokenizer = bb.tokenizer
        answers = {1: f"{c.yes}.", 0: f"{c.no}."}
        self._wrap = chat_wrap(self.tokenizer, c.chat_template, f"tallrec on {train.dataset}")
        self._suffix_cache = [suffix + self._wrap.tail for suffix in self._suffix_cache]
        check_split_tokenisation(self.tokenizer, self._prefix(np.arange(1, min(train.n_items, 5) + 1)),
                                 self._suffix_cache[1], f"tallrec on {train.dataset}")
        for word, answer in ((c.yes, answers[1]), (c.no, answers[0])):  # the scorer reads the answer's first token
            if self.tokenizer.encode(answer, add_special_tokens=False)[:1] != [answer_token_id(self.tokenizer, word)]:
                raise BenchError(f"tallrec: the answer {answer!r} does not start with the token {word!r} for the "
                                 f"{c.backbone} tokenizer")
        self.model = make_trainable(self, bb, mode, fallback="attention")

        pairs = train.pointwise_pairs(negatives_per_positive=1, seed=self.seed, max_history=max(1, c.max_history))
        examples = []
        for hist, pair in balanced_subsample(pairs, c.max_pairs, self.seed, f"tallrec on {train.dataset}"):
            examples.append(SFTExample(self._prefix(hist), self._suffix_cache[pair.item],
                                       answers[pair.label]))

        fine_tune(self, bb, examples, self._validation_set(valid), lambda split, cands: self._score_lists(
                      split.histories, cands), lr=lr, mode=mode, decision_words=(c.yes, c.no),
                  checkpoint_name="tallrec", dataset=train.dataset, description=f"tallrec {mode} tuning")
        self.run_info.update({"n_available_pairs": len(pairs), "fit_seconds": time.perf_counter() - t0})
        return self

    def _validation_set(self, valid: EvalSplit) -> tuple[EvalSplit, np.ndarray]:
        return pointwise_validation_set(valid, self.config.valid_users, self.config.valid_negatives, self.seed)

    # ------------------------------------------------------------------ score
    def score(self, batch: ScoreBatch) -> np.ndarray:
        if self.model is None:
            raise BenchError("tallrec: score() called before fit()")
        return np.stack(self._score_lists(batch.histories, np.asarray(batch.candidates)))
