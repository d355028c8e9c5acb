"""Losses that own pretrained networks and need user-provided weights: ID-MRF (VGG19 features, Wang et al. 2018 as
used by DECA) and the identity loss (face-recognition ResNet-50). No weights are downloaded: without a weights
file the module logs one warning and returns None, so the term is absent from the loss dict (never a fake zero).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from avface.losses.perceptual import id_mrf
from avface.models.blocks import ResNet
from avface.models.checkpoints import safe_load
from avface.models.config import BackboneConfig

__all__ = ["IDMRFLoss", "IdentityLoss", "vgg19_features_to_relu4_2"]

log = logging.getLogger(__name__)
_warned: set[str] = set()


def warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(msg)


_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512]  # up to conv4_2
_VGG19_NAMES = {13: "relu3_2", 22: "relu4_2"}


def vgg19_features_to_relu4_2() -> nn.Sequential:
    """torchvision ``vgg19().features[:23]`` (same indices, so its state-dict keys load)."""
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


class IDMRFLoss(nn.Module):
    """DECA's ID-MRF: style layers relu3_2 and relu4_2, content layer relu4_2, each weight 1; images (N,3,H,W)
    in [0,1], ImageNet-normalised before VGG19. ``weights_path``: a torchvision VGG19 state dict (``features.*``
    keys) loaded with weights_only=True. ``forward`` -> scalar, or None when no weights are available."""

    def __init__(self, weights_path: str | os.PathLike | None, style_layers=("relu3_2", "relu4_2"),
                 content_layers=("relu4_2",)):
        super().__init__()
        self.style_layers, self.content_layers = tuple(style_layers), tuple(content_layers)
        self.vgg: nn.Sequential | None = None
        if weights_path is None or not os.path.exists(weights_path):
            warn_once("idmrf", f"ID-MRF loss disabled: no VGG19 weights ({weights_path!r}); the term is skipped")
            return
        sd = safe_load(weights_path)
        sd = {k.removeprefix("features."): v for k, v in sd.items() if not k.startswith("classifier.")}
        vgg = vgg19_features_to_relu4_2()
        own = vgg.state_dict()
        missing = [k for k in own if k not in sd]
        if missing:
            raise ValueError(f"{weights_path}: VGG19 weights lack {missing[:4]}...")
        vgg.load_state_dict({k: sd[k] for k in own})
        for p in vgg.parameters():
            p.requires_grad_(False)
        self.vgg = vgg.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[None, :, None, None], persistent=False)

    @property
    def available(self) -> bool:
        return self.vgg is not None

    def train(self, mode: bool = True):  # the VGG stays in eval mode
        super().train(mode)
        if self.vgg is not None:
            self.vgg.eval()
        return self

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        assert self.vgg is not None
        x = (x - self.mean) / self.std
        out = {}
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in _VGG19_NAMES:
                out[_VGG19_NAMES[i]] = x
        return out

    def forward(self, gen: torch.Tensor, tar: torch.Tensor) -> torch.Tensor | None:
        if self.vgg is None:
            return None
        fg, ft = self._features(gen), self._features(tar.detach())
        style = sum(id_mrf(fg[k], ft[k]) for k in self.style_layers)
        content = sum(id_mrf(fg[k], ft[k]) for k in self.content_layers)
        return style + content


# ----------------------------------------------------------------------------------------------- identity
class IdentityLoss(nn.Module):
    """1 - cos(f(rendered), f(image)) with f a face-recognition ResNet (pooled features).

    ``weights_path``: a state dict in torchvision ResNet layout (``conv1``, ``bn1``, ``layer1..4``; ``fc`` and
    anything else ignored), e.g. a VGGFace2 ResNet-50 converted to tensors. ``preprocess`` "vggface2" (DECA:
    x255, BGR, mean [91.4953, 103.8827, 131.0912]) or "imagenet". Input resized to 224. Note: Caffe-style
    ResNets stride in the first 1x1 convolution; ours strides in the 3x3 (torchvision v1.5), so such weights
    load but their features differ slightly from the original network's.
    """

    def __init__(self, weights_path: str | os.PathLike | None, backbone: BackboneConfig | None = None,
                 preprocess: str = "vggface2", input_size: int = 224):
        super().__init__()
        self.net: ResNet | None = None
        self.preprocess, self.input_size = preprocess, input_size
        if weights_path is None or not os.path.exists(weights_path):
            warn_once("identity", f"identity loss disabled: no face-recognition weights ({weights_path!r})")
            return
        sd = safe_load(weights_path)
        sd = sd.get("state_dict", sd)
        net = ResNet(backbone or BackboneConfig())
        own = net.state_dict()
        missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"{weights_path}: face-recognition weights lack {missing[:4]}...")
        net.load_state_dict({k: sd[k] for k in own if k in sd}, strict=False)
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.eval()

    @property
    def available(self) -> bool:
        return self.net is not None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.net is not None:
            self.net.eval()
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        assert self.net is not None
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.preprocess == "vggface2":
            x = x.flip(1) * 255.0 - x.new_tensor([91.4953, 103.8827, 131.0912])[None, :, None, None]
        else:
            x = (x - x.new_tensor([0.485, 0.456, 0.406])[None, :, None, None]) / x.new_tensor(
                [0.229, 0.224, 0.225])[None, :, None, None]
        return self.net(x)

    def forward(self, rendered: torch.Tensor, image: torch.Tensor) -> torch.Tensor | None:
        if self.net is None:
            return None
        return (1.0 - F.cosine_similarity(self.embed(rendered), self.embed(image).detach(), dim=-1)).mean()
