"""Posing and rendering synthetic faces: orthographic VoxCeleb2-style crops and perspective multi-view frames."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from avface.face_model import FaceModel, FaceModelData, load_face_model
from avface.face_model.flame_loader import load_flame
from avface.render import FaceRenderer
from avface.render.cameras import PerspectiveCamera, ndc_to_pixels
from avface.synth.face import FaceSequence, Identity
from avface.synth.scene import draw_head_silhouette
from avface.synth.style import RealLook, hair_fringe, shade_real

__all__ = ["FaceContext", "PosedSequence", "RealSkin", "VoxRender", "render_vox", "render_perspective"]

_CHUNK = 16  # frames per renderer call (bounds memory)


@dataclass
class PosedSequence:
    vertices: np.ndarray  # (T, V, 3) float32, metres, model space (global pose applied)
    landmarks3d: np.ndarray  # (T, 68, 3) static embedding
    landmarks3d_dynamic: np.ndarray  # (T, 68, 3) yaw-dependent contour
    joints: np.ndarray  # (T, J, 3)


class FaceContext:
    """Face model + renderers of one process, cached by (face model path, landmark embedding)."""

    _cache: dict[tuple, FaceContext] = {}
    _lock = threading.Lock()

    def __init__(self, data: FaceModelData) -> None:
        self.data = data
        self.model = FaceModel(data).eval()
        self._renderers: dict[tuple[int, int], FaceRenderer] = {}

    @classmethod
    def get(cls, face_model: str | None = None, landmark_embedding: str | None = None) -> FaceContext:
        key = (face_model, landmark_embedding)
        with cls._lock:
            if key not in cls._cache:
                if face_model is None:
                    data = load_face_model(None)
                else:
                    data = load_flame(face_model, landmark_embedding=landmark_embedding)
                cls._cache[key] = cls(data)
            return cls._cache[key]

    @property
    def name(self) -> str:
        return self.data.name

    def renderer(self, h: int, w: int) -> FaceRenderer:
        if (h, w) not in self._renderers:
            d = self.data
            self._renderers[(h, w)] = FaceRenderer(d.faces, d.uv_coords, d.uv_faces, image_size=(h, w), uv_size=64,
                                                   backend="auto")
        return self._renderers[(h, w)]

    @torch.no_grad()
    def pose(self, seq: FaceSequence, with_global: bool = True) -> PosedSequence:
        """Run the face model over a sequence (``with_global=False``: head-space mesh, global pose zero)."""
        outs = []
        def tt(a: np.ndarray, sl: slice) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a[sl], dtype=np.float32))

        for i in range(0, len(seq.shape), 64):
            sl = slice(i, i + 64)
            gp = tt(seq.global_pose, sl) if with_global else torch.zeros(len(seq.shape[sl]), 3)
            lip_detail = None if seq.lip_detail is None else tt(seq.lip_detail, sl)
            outs.append(self.model(tt(seq.shape, sl), tt(seq.expression, sl), gp, tt(seq.neck_pose, sl),
                                   tt(seq.jaw_pose, sl), tt(seq.eye_pose, sl), lip_detail=lip_detail))
        cat = lambda name: torch.cat([getattr(o, name) for o in outs]).numpy().astype(np.float32)  # noqa: E731
        return PosedSequence(cat("vertices"), cat("landmarks68"), cat("landmarks68_dynamic"), cat("joints"))

    @torch.no_grad()
    def albedo(self, identity: Identity) -> np.ndarray:
        """(V, 3) per-vertex albedo in [0, 1] (tinted)."""
        if self.model.has_albedo and len(identity.albedo):
            a = self.model.albedo(torch.from_numpy(identity.albedo[None]))[0].numpy()
        else:
            a = np.full((self.data.v_template.shape[0], 3), (0.78, 0.6, 0.5), np.float32)
        return np.clip(a * identity.skin_tint[None], 0.0, 1.0).astype(np.float32)


@dataclass
class RealSkin:
    """What the ``real`` style adds to a render (:mod:`avface.synth.style`): the video's look, the speaker's
    skin maps (``skin_maps``), hair strand texture (H, W, 3) float32, the fringe's reach above the brows
    (inter-ocular distances; None: no fringe) and its waves' phase."""

    look: RealLook
    skin_mod: np.ndarray  # (3, U, U)
    oil: np.ndarray  # (1, U, U)
    hair: np.ndarray  # (H, W, 3)
    fringe: float | None
    fringe_phase: float


@dataclass
class VoxRender:
    frames: np.ndarray  # (T, H, W, 3) uint8
    alpha: np.ndarray  # (T, H, W) bool: face mesh coverage
    landmarks2d: np.ndarray  # (T, 68, 2) pixels (dynamic contour)
    landmarks2d_static: np.ndarray  # (T, 68, 2) pixels


def _to_u8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


@torch.no_grad()
def render_vox(ctx: FaceContext, posed: PosedSequence, cam: np.ndarray, albedo: np.ndarray, sh: np.ndarray,
               background: np.ndarray, identity: Identity, global_pose: np.ndarray,
               real: RealSkin | None = None) -> VoxRender:
    """Orthographic render of every frame over ``background`` (H, W, 3) u8, with a head silhouette that follows
    the face. cam (T, 3); albedo (V, 3); sh (9, 3); ``real``: the ``real`` style's skin, specular and hair (the
    geometry and landmarks are the same with and without it)."""
    h, w = background.shape[:2]
    r = ctx.renderer(h, w)
    t = len(posed.vertices)
    frames, alphas, lm_dyn, lm_sta = [], [], [], []
    skin = (albedo.mean(0) * 255 * 0.9).astype(np.float32)
    from scipy.spatial.transform import Rotation

    roll = Rotation.from_rotvec(global_pose).as_euler("YXZ")[:, 2]
    for i in range(0, t, _CHUNK):
        sl = slice(i, min(i + _CHUNK, t))
        b = sl.stop - sl.start
        verts = torch.from_numpy(posed.vertices[sl])
        camt = torch.from_numpy(cam[sl].astype(np.float32))
        lms = torch.from_numpy(np.concatenate([posed.landmarks3d_dynamic[sl], posed.landmarks3d[sl]], axis=1))
        # background with the head silhouette, per frame
        bgs = []
        for k in range(b):
            j = sl.start + k
            s, tx, ty = cam[j]
            head = posed.joints[j, 0] if posed.joints.shape[1] else posed.vertices[j].mean(0)
            face_c = posed.vertices[j].mean(0)
            cx = (s * (face_c[0] + tx) + 1) * w / 2
            cy = (-s * (0.5 * (face_c[1] + head[1]) + ty) + 1) * h / 2
            face_px = s * 0.16 * w / 2
            bgs.append(draw_head_silhouette(background, (cx, cy), face_px, float(-roll[j]), identity.hair_color,
                                            identity.shirt_color, skin, None if real is None else real.hair))
        bg = torch.from_numpy(np.stack(bgs)).permute(0, 3, 1, 2).float() / 255.0
        out = r(verts, camt, torch.from_numpy(albedo)[None].expand(b, -1, -1),
                torch.from_numpy(sh)[None].expand(b, -1, -1), landmarks3d=lms, background=bg)
        image = out.image
        if real is not None:
            image = shade_real(image, out.alpha, out.albedo, out.shading, out.normals, out.uv_grid, bg, real.look,
                               torch.from_numpy(real.skin_mod)[None], torch.from_numpy(real.oil)[None])
        u8 = _to_u8(image)
        alpha = out.alpha[:, 0].numpy() > 0.5
        px = ndc_to_pixels(out.landmarks2d, (h, w)).numpy()
        if real is not None and real.fringe is not None:
            u8 = np.stack([hair_fringe(u8[k], px[k, :68], alpha[k], real.hair, real.fringe, real.fringe_phase)
                           for k in range(b)])
        frames.append(u8)
        alphas.append(alpha)
        lm_dyn.append(px[:, :68])
        lm_sta.append(px[:, 68:])
    return VoxRender(np.concatenate(frames), np.concatenate(alphas), np.concatenate(lm_dyn).astype(np.float32),
                     np.concatenate(lm_sta).astype(np.float32))


@torch.no_grad()
def render_perspective(ctx: FaceContext, vertices_world: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
                       albedo: np.ndarray, sh: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole render (OpenCV convention) of world-space vertices (T, V, 3) with one camera (K, R, t) over
    ``background`` (H, W, 3) u8 -> (frames (T, H, W, 3) u8, alpha (T, H, W) bool)."""
    h, w = background.shape[:2]
    r = ctx.renderer(h, w)
    frames, alphas = [], []
    bg_t = torch.from_numpy(background).permute(2, 0, 1).float()[None] / 255.0
    for i in range(0, len(vertices_world), _CHUNK):
        v = torch.from_numpy(vertices_world[i:i + _CHUNK].astype(np.float32))
        b = len(v)
        cam = PerspectiveCamera(torch.from_numpy(K.astype(np.float32))[None].expand(b, -1, -1),
                                torch.from_numpy(R.astype(np.float32))[None].expand(b, -1, -1),
                                torch.from_numpy(t.astype(np.float32))[None].expand(b, -1), (h, w))
        out = r(v, cam, torch.from_numpy(albedo)[None].expand(b, -1, -1), torch.from_numpy(sh)[None].expand(b, -1, -1),
                background=bg_t.expand(b, -1, -1, -1))
        frames.append(_to_u8(out.image))
        alphas.append(out.alpha[:, 0].numpy() > 0.5)
    return np.concatenate(frames), np.concatenate(alphas)
