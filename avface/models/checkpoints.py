"""Loaders of third-party weights as initialisation: DECA's coarse encoder (``deca_model.tar``, key ``E_flame``)
and the normals network of Abrevaya et al. 2020 (``ResNetUNet`` state dict). Both read with
``torch.load(weights_only=True)``; a file that needs unsafe unpickling is refused with a clear error unless the
caller trusts it (``allow_unsafe=True``). Each returns a ``LoadReport`` of what mapped and what did not.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)

# DECA's code layout: shape 100 | tex 50 | exp 50 | pose 6 (global 3, jaw 3) | cam 3 | light 27 = 236
DECA_OFFSETS = {"shape": 0, "tex": 100, "exp": 150, "global_pose": 200, "jaw": 203, "cam": 206, "light": 209}


class UnsafeCheckpointError(RuntimeError):
    pass


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # our parameters that got no value
    unexpected: list[str] = field(default_factory=list)  # checkpoint entries we did not use
    mismatched: list[str] = field(default_factory=list)  # same name, incompatible shape

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                f"mismatched {len(self.mismatched)}")


def safe_load(path: str | os.PathLike, allow_unsafe: bool = False) -> dict:
    """``torch.load(path, weights_only=True)``; on a pickle that needs arbitrary code raise
    ``UnsafeCheckpointError`` (or, with ``allow_unsafe``, load it fully: only for files you trust)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if allow_unsafe:
            log.warning("loading %s with full unpickling (allow_unsafe=True)", path)
            return torch.load(path, map_location="cpu", weights_only=False)
        raise UnsafeCheckpointError(
            f"{path} cannot be loaded with torch.load(weights_only=True): it pickles objects beyond tensors and "
            f"plain containers ({e}). Re-save only the state dict (torch.save(ckpt['E_flame'], ...)) or pass "
            "allow_unsafe=True if you trust the file.") from e


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> bool:
    """Copy ``src`` into ``dst``; when only the input-channel dim (1) of ``dst`` is larger, copy the first
    channels and zero the extra ones (new inputs start switched off). False if incompatible."""
    with torch.no_grad():
        if dst.shape == src.shape:
            dst.copy_(src)
            return True
        if (dst.ndim == src.ndim and dst.ndim >= 2 and dst.shape[0] == src.shape[0]
                and dst.shape[2:] == src.shape[2:] and dst.shape[1] > src.shape[1]):
            dst.zero_()
            dst[:, : src.shape[1]].copy_(src)
            return True
    return False


def load_mapped(module: nn.Module, mapped: dict[str, torch.Tensor], unexpected: list[str],
                prefix: str = "") -> LoadReport:
    """Copy ``mapped`` (our names relative to ``module`` -> tensors) into the module's parameters/buffers."""
    rep = LoadReport(unexpected=list(unexpected))
    own = module.state_dict(keep_vars=True)
    for name, src in mapped.items():
        if name not in own:
            rep.unexpected.append(name)
            continue
        if _copy_into(own[name].data if isinstance(own[name], nn.Parameter) else own[name], src):
            rep.loaded.append(prefix + name)
        else:
            rep.mismatched.append(f"{prefix}{name}: ours {tuple(own[name].shape)} vs {tuple(src.shape)}")
    rep.missing = [prefix + k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    return rep


def _select_deca_rows(w: torch.Tensor, n_shape: int, n_albedo: int, n_light: int) -> torch.Tensor:
    o = DECA_OFFSETS
    parts = [w[o["shape"]: o["shape"] + n_shape], w[o["tex"]: o["tex"] + n_albedo],
             w[o["light"]: o["light"] + n_light], w[o["global_pose"]: o["global_pose"] + 3],
             w[o["cam"]: o["cam"] + 3]]
    return torch.cat(parts, dim=0)


def load_deca_encoder(module: nn.Module, path: str | os.PathLike, allow_unsafe: bool = False) -> LoadReport:
    """Initialise a ``CoarseEncoder`` (backbone + head rows for shape/albedo/light/global pose/camera) or the
    video backbone of an ``ExpressionJawEncoder`` from DECA's ``deca_model.tar`` (``E_flame``: ResNet-50
    ``encoder.*`` + ``layers.{0,2}.*`` 2048 -> 1024 -> 236)."""
    from avface.models.encoders import CoarseEncoder, ExpressionJawEncoder

    ckpt = safe_load(path, allow_unsafe)
    sd = ckpt.get("E_flame", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: no E_flame state dict")
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    if isinstance(module, CoarseEncoder):
        bb = "backbone."
    elif isinstance(module, ExpressionJawEncoder):
        if not module.use_video:
            raise ValueError("this expression encoder has no video backbone")
        bb = "video_backbone."
    else:
        raise TypeError(f"cannot load DECA weights into {type(module).__name__}")
    for k, v in sd.items():
        if k.startswith("encoder.") and not k.startswith("encoder.fc."):
            mapped[bb + k[len("encoder."):]] = v
        elif isinstance(module, CoarseEncoder) and k in ("layers.0.weight", "layers.0.bias"):
            mapped[k] = v
        elif isinstance(module, CoarseEncoder) and k in ("layers.2.weight", "layers.2.bias"):
            c = module.cfg
            if v.shape[0] != 236:
                unexpected.append(k)
                continue
            mapped[k] = _select_deca_rows(v, c.n_shape, c.n_albedo, c.n_light)
        else:
            unexpected.append(k)
    rep = load_mapped(module, mapped, unexpected)
    if isinstance(module, ExpressionJawEncoder):  # only the backbone is meant to be covered
        rep.missing = [k for k in rep.missing if k.startswith(bb)]
    log.info("DECA weights from %s: %s", path, rep.summary())
    return rep


def load_normals_net(module: nn.Module, path: str | os.PathLike, allow_unsafe: bool = False) -> LoadReport:
    """Initialise a ``DetailUNet`` from Abrevaya et al.'s ``ResNetUNet`` checkpoint (image branch).

    Their encoder is saved both as ``base_model.*`` (torchvision ResNet-18 names) and ``layer0..4.*``; we take
    ``base_model.*`` (fc dropped) or fall back to ``layerK``. Decoder names are identical. Their second (normal
    input / image output) branch, ``*_2.*``, is unused and reported as unexpected; ``conv_last`` (3 channels
    there, 1 here) is reported as mismatched. Extra audio input channels are zero-initialised.
    """
    ckpt = safe_load(path, allow_unsafe)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not a state dict")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    has_base = any(k.startswith("base_model.") for k in sd)
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for k, v in sd.items():
        head = k.split(".")[0]
        if head.endswith("_2"):
            unexpected.append(k)
        elif k.startswith("base_model."):
            rest = k[len("base_model."):]
            if rest.startswith("fc."):
                unexpected.append(k)
            else:
                mapped["encoder." + rest] = v
        elif head in ("layer0", "layer1", "layer2", "layer3", "layer4"):
            if has_base:
                continue  # the same tensors under base_model.*
            parts = k.split(".")
            if head == "layer0":
                name = {"0": "conv1", "1": "bn1"}.get(parts[1])
                if name is None:
                    unexpected.append(k)
                    continue
                mapped["encoder." + ".".join([name, *parts[2:]])] = v
            elif head == "layer1":  # Sequential(maxpool, layer1)
                mapped["encoder.layer1." + ".".join(parts[2:])] = v
            else:
                mapped["encoder." + k] = v
        else:
            mapped[k] = v
    rep = load_mapped(module, mapped, unexpected)
    log.info("normals-net weights from %s: %s", path, rep.summary())
    return rep
