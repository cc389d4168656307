"""The shared image-text space the hallucination analysis measures captions in, built here (the models stage) so the
results stage only computes distances from embeddings: by default ``lit``, the locked-image-tuning space of
:mod:`mmsr_bench.models.toolkits.lit_clip` (frozen real EfficientNet-Lite0 and MiniLM towers, linear heads trained on
the dataset's (image, reference description) pairs); a real open_clip checkpoint wherever one is given
(``clip_encoder``/``clip_weights``); or ``tiny-clip``, the earlier small open_clip config trained from scratch on the
same pairs. ``trained_on`` says which pairs a trained space saw, so no trained space can pass for a pretrained CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.tiny_clip import ClipTrainSpec, embed, register_tiny_clip, train_tiny_clip

SPACES = ("lit", "tiny-clip")


@dataclass(frozen=True)
class EmbeddedPairs:
    """Images, captions and (where given) reference descriptions of the same items, embedded in one space.
    ``holdout``: the items the space was not trained on (every item for a given checkpoint)."""

    images: np.ndarray
    captions: np.ndarray
    references: np.ndarray | None
    holdout: np.ndarray
    encoder: str
    weights_sha256: str | None
    random_init: bool
    trained_on: str | None
    record: dict[str, Any] = field(default_factory=dict)  # the trained space's own facts (held-out accuracy)


def embed_pairs(dataset: str, image_paths: Sequence[str], captions: Sequence[str],
                references: Sequence[str] | None = None, *, clip_encoder: str | None = None,
                clip_weights: str | None = None, clip_spec: ClipTrainSpec = ClipTrainSpec(), seed: int = 0,
                space: str = "lit") -> EmbeddedPairs:
    """Embed every (image, caption[, reference]) of ``dataset`` in the chosen space, training it first when it is
    ``lit`` or ``tiny-clip`` without a checkpoint (on the references, which must then be given)."""
    from mmsr_bench.models.toolkits.features import load_clip

    if space not in SPACES:
        raise BenchError(f"hallucination space {space!r}: choose lit or tiny-clip (or give clip_encoder)")
    paths, caps = list(image_paths), list(captions)
    refs = list(references) if references is not None and all(isinstance(r, str) and r for r in references) else None
    if clip_encoder is None and space == "lit":
        if refs is None:
            raise BenchError(f"{dataset}: no pretrained CLIP given (clip_encoder/clip_weights) and no reference "
                             "descriptions to train the LiT space on; pass a real open_clip checkpoint")
        from mmsr_bench.models.toolkits.lit_clip import LitSpec, fit_lit

        trained_on = f"(image, image_description) pairs of {dataset} ({len(refs)} items)"
        lit = fit_lit(paths, refs, LitSpec(seed=seed), trained_on=trained_on)
        hold = np.asarray(lit.record.get("holdout_indices") or np.arange(len(refs)), dtype=np.int64)
        return EmbeddedPairs(lit.embed_images(paths), lit.embed_texts(caps), lit.embed_texts(refs), hold,
                             "lit:efficientnet-lite0+all-MiniLM-L6-v2", lit.weights_sha256, False, trained_on,
                             {"lit_holdout_image_to_text_accuracy": lit.record["holdout_image_to_text_accuracy"],
                              "lit_chance_accuracy": lit.record["chance_accuracy"]})
    trained_on = None
    if clip_encoder is None:  # space == "tiny-clip": the earlier tiny open_clip trained from scratch
        if refs is None:
            raise BenchError(f"{dataset}: no reference descriptions to train the tiny CLIP on")
        clip_weights = str(train_tiny_clip(paths, refs, clip_spec))
        clip_encoder = register_tiny_clip()
        trained_on = f"(image, image_description) pairs of {dataset} ({len(refs)} items, {clip_spec.steps} steps)"
    clip = load_clip(clip_encoder, clip_weights, "cpu", seed)
    img, txt = embed(clip, paths, caps)
    ref_txt = embed(clip, paths, refs)[1] if refs is not None else None
    return EmbeddedPairs(img, txt, ref_txt, np.arange(len(caps)), clip_encoder, clip.weights_hash, clip.random_init,
                         trained_on or ("checkpoint" if clip_weights else None))
