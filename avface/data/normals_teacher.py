"""Pseudo-ground-truth normals for the fine stage: the ``NormalsTeacher`` interface and its two sources.

A teacher maps frames ``(T, H, W, 3) u8 RGB`` to normals ``(T, H, W, 3) f32``: unit vectors in the camera-aligned
axes of docs/ARCHITECTURE.md (+y up, +z towards the viewer), zeros where there is no face.

* :class:`UNetResNetTeacher`: the cross-modal face-normals network of Abrevaya et al. 2020 (UNet-ResNet, image
  branch) with the user's checkpoint. The architecture is the project's ``avface.models.detail.DetailUNet`` with a
  3-channel head (:func:`default_normals_net`), the checkpoint is mapped by
  ``avface.models.checkpoints.load_normals_net``; ``normals.arch="module:callable"`` plugs in another network
  (``callable(image_size) -> nn.Module`` returning raw 3-channel maps).
* :func:`sidecar_normals`: for synthetic clips, the renderer's exact normals stored in (or rendered from) the
  ground-truth sidecar.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from avface.face_model.loading import load_face_model
from avface.render.renderer import FaceRenderer


class NormalsTeacher(Protocol):
    name: str

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


def default_normals_net(image_size: int = 224) -> nn.Module:
    """Abrevaya et al.'s ResNetUNet image branch (ResNet-18 encoder) with a 3-channel normals head."""
    from avface.models.config import DetailConfig
    from avface.models.detail import DetailUNet

    class NormalsUNet(DetailUNet):
        """``DetailUNet`` without audio, ``conv_last`` with 3 outputs; forward returns the raw map."""

        def __init__(self, size: int):
            super().__init__(DetailConfig(uv_size=size, in_channels=3, use_audio=False, displacement_scale=1.0),
                             audio_dim=1)
            self.conv_last = nn.Conv2d(self.conv_last.in_channels, 3, 1)
            self._raw = True

        def forward(self, x: torch.Tensor, audio: torch.Tensor | None = None) -> torch.Tensor:
            # DetailUNet ends in tanh(conv_last(y)) * scale; capture conv_last's output instead
            captured: list[torch.Tensor] = []
            handle = self.conv_last.register_forward_hook(lambda m, i, o: captured.append(o))
            try:
                super().forward(x, None)
            finally:
                handle.remove()
            return captured[0]

    return NormalsUNet(image_size)


def _import(spec: str):
    mod, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"normals.arch must be 'module:callable', got {spec!r}")
    return getattr(importlib.import_module(mod), name)


class UNetResNetTeacher:
    """Normals network teacher: frames -> unit normals (batched, CPU or ``device``)."""

    name = "unet_resnet"

    def __init__(self, checkpoint: str, arch: str = "avface.data.normals_teacher:default_normals_net",
                 image_size: int = 224, batch_size: int = 16, device: str = "cpu"):
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"normals teacher checkpoint not found: {path}. Put the cross-modal face-normals network checkpoint "
                f"(Abrevaya et al. 2020, ResNetUNet state dict) there or set normals.checkpoint=/path/to/file."
            )
        self.net = _import(arch)(image_size).to(device).eval()
        if arch.endswith(":default_normals_net"):
            from avface.models.checkpoints import load_normals_net

            load_normals_net(self.net, path)
        else:
            self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.batch_size = batch_size
        self.device = device

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(frames), self.batch_size):
            x = torch.as_tensor(frames[i:i + self.batch_size]).permute(0, 3, 1, 2).float().div(255).to(self.device)
            n = self.net(x)[:, :3]
            n = torch.nn.functional.normalize(n, dim=1)
            out.append(n.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def sidecar_normals(gt: dict[str, np.ndarray], src_idx: np.ndarray) -> np.ndarray:
    """Renderer-exact normals ``(len(src_idx), H, W, 3)`` of a synthetic clip's sidecar frames ``src_idx``.

    Uses the sidecar's ``normals (T, H, W, 3)`` when present; otherwise renders ``vertices (T, V, 3)`` with
    ``cam (T, 3)`` through :class:`avface.render.renderer.FaceRenderer` of the sidecar's face model (starter model
    when unnamed), masked by the rendered alpha.
    """
    if "normals" in gt:
        n = gt["normals"]
        idx = np.clip(src_idx, 0, len(n) - 1)
        out = n[idx].astype(np.float32)
        if out.shape[-1] != 3 and out.shape[1] == 3:  # (T, 3, H, W) -> (T, H, W, 3)
            out = np.moveaxis(out, 1, -1)
        return out
    if "vertices" not in gt or "cam" not in gt:
        raise KeyError("sidecar has neither normals nor vertices + cam")
    data = load_face_model(None)
    h = int(gt["image_size"]) if "image_size" in gt else 224
    renderer = FaceRenderer(torch.as_tensor(data.faces), torch.as_tensor(data.uv_coords),
                            torch.as_tensor(data.uv_faces), image_size=h, uv_size=64)
    idx = np.clip(src_idx, 0, len(gt["vertices"]) - 1)
    verts = torch.as_tensor(gt["vertices"][idx], dtype=torch.float32)
    cam = torch.as_tensor(gt["cam"][idx], dtype=torch.float32)
    b = len(idx)
    with torch.no_grad():
        out = renderer(verts, cam, torch.full((b, verts.shape[1], 3), 0.5), torch.zeros(b, 9, 3))
    n = out.normals * (out.alpha > 0.5)
    return n.permute(0, 2, 3, 1).numpy().astype(np.float32)
