"""The combined AVFace model: coarse stage (E_c + expression-jaw branch), lip refinement, fine stage.

Contract (nerfstudio style)::

    model = AVFace(config, face_model)            # face_model: avface.face_model.FaceModel; stage "coarse"
    model.set_stage(Stage.LIP)                    # a model stage (MODEL_STAGES): what forward runs and what trains
    opt = torch.optim.Adam(model.trainable_parameters(), lr=1e-4, weight_decay=5e-4)
    outputs = model(batch)                        # Batch -> AVFaceOutput, (B, T, ...) everywhere
    torch.save(model.trainable_state_dict(), p)   # every stage's networks, no frozen pretrained perceptual nets

``batch`` is an :class:`avface.data.batch.Batch`, ``outputs`` an :class:`avface.models.outputs.AVFaceOutput`;
their fields and shapes are documented there. Each stage's objective (the weighted loss terms) is a function of
``avface/train/objectives.py``; the model holds what they use (its renderer, the frozen perceptual networks, the
lip stage's re-fitted frame ``refit_frame``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avface.face_model.flame import vertices2landmarks
from avface.face_model.lbs import batch_rodrigues
from avface.face_model.lip_detail import canonical_offsets_to_posed
from avface.losses.geometry import submesh_neighbours
from avface.models.config import AVFaceConfig
from avface.models.detail import DetailUNet, displacement_to_detail
from avface.models.encoders import CoarseEncoder, ExpressionJawEncoder
from avface.models.inputs import Batch
from avface.models.lip import LipRefiner
from avface.models.outputs import AVFaceOutput
from avface.models.perceptual import IdentityLoss, IDMRFLoss
from avface.models.stages import MODEL_STAGES, STAGE_TABLE, Stage
from avface.render.cameras import fit_orthographic_camera, orthographic_project, pixels_to_ndc
from avface.render.renderer import FaceRenderer

#: iBUG-68 points the lip stage re-fits its frame to (``LossWeights.lip_frame``): brows, nose, eyes; not the
#: contour (it slides with the yaw) and not the lips (what the stage corrects)
REFIT_LANDMARKS = tuple(range(17, 48))


def _bt(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


class AVFace(nn.Module):
    def __init__(self, config: AVFaceConfig, face_model: nn.Module | None = None,
                 renderer: nn.Module | bool | None = True, stage: str | None = None):
        super().__init__()
        self.config = cfg = config
        landmarks = cfg.landmarks if cfg.landmark_input else None  # the geometry channel of E_c and E_v
        self.coarse = CoarseEncoder(cfg.coarse, landmarks)
        self.expression = ExpressionJawEncoder(cfg.expression, cfg.audio_dim, cfg.audio_window, cfg.audio_mean,
                                               cfg.audio_std, landmarks)
        self.face_model = face_model
        self.lip: LipRefiner | None = None
        self.detail: DetailUNet | None = None
        if Stage.LIP in cfg.stages:
            if face_model is None:
                raise ValueError("the lip stage needs a face model (lip vertex ids)")
            self.register_buffer("lip_ids", face_model.region("lips").long(), persistent=False)
            self.lip = LipRefiner(cfg.lip, int(self.lip_ids.numel()), cfg.audio_dim, cfg.audio_window,
                                  cfg.audio_mean, cfg.audio_std)
            ring, ring_mask = submesh_neighbours(face_model.faces, self.lip_ids)
            self.register_buffer("lip_ring", ring, persistent=False)
            self.register_buffer("lip_ring_mask", ring_mask, persistent=False)
        if Stage.DETAIL in cfg.stages:
            self.detail = DetailUNet(cfg.detail, cfg.audio_dim, cfg.audio_window)
        self.renderer = None
        if renderer is True and face_model is not None:
            self.renderer = FaceRenderer(face_model.faces, face_model.uv_coords, face_model.uv_faces,
                                         image_size=cfg.image_size, uv_size=cfg.detail.uv_size)
        elif isinstance(renderer, nn.Module):
            self.renderer = renderer
        if face_model is not None:
            faces = face_model.faces
            nv = face_model.num_vertices

            def face_flags(name: str, how: str) -> torch.Tensor:
                ind = torch.zeros(nv, dtype=torch.bool)
                if name in face_model.regions:
                    ind[torch.as_tensor(face_model.regions[name]).long()] = True
                f = ind.to(faces.device)[faces]
                return f.any(-1) if how == "any" else f.all(-1)

            self.register_buffer("lip_faces", face_flags("lips", "any"), persistent=False)
            self.register_buffer("face_faces", face_flags("face", "all"), persistent=False)
        # Losses needing user-provided weights: absent -> warning once, term skipped. Their networks are frozen
        # pretrained perceptual nets: never trained, never in trainable_parameters() or the checkpoint.
        self.identity_loss = IdentityLoss(cfg.identity_weights) if cfg.losses.identity > 0 else None
        self.mrf_loss = IDMRFLoss(cfg.vgg19_weights) if self.detail is not None and cfg.losses.mrf > 0 else None
        self._frozen: list[nn.Module] = []
        self.batchnorm_frozen = False
        self.set_stage(stage or cfg.stages[0])

    # ------------------------------------------------------------------------------------------ stages
    def stage_modules(self) -> dict[Stage, list[nn.Module]]:
        """The trainable networks of each model stage (``STAGE_TABLE[stage].networks``; stage "coarse": E_c and
        the expression-jaw branch)."""
        return {s: [m for m in (getattr(self, n) for n in STAGE_TABLE[s].networks) if m is not None]
                for s in MODEL_STAGES}

    def set_stage(self, stage: str, networks: tuple[str, ...] | None = None) -> None:
        """Select the model stage (one of ``MODEL_STAGES`` the config has): how far ``forward`` goes and what
        trains.

        "coarse" trains E_c + the expression-jaw branch, "lip" the lip refiner only, "detail" the detail network
        only; every other network is frozen (``requires_grad`` False) and kept in eval mode (see ``train``).
        ``networks``: only these of the stage's networks train (e.g. ``("expression",)``: the coarse stage with
        E_c frozen, as the ablation grid trains each row's expression-jaw branch on one shared E_c).
        """
        if stage not in MODEL_STAGES or stage not in self.config.stages:
            raise ValueError(f"stage {stage!r} not in {self.config.stages}")
        own = STAGE_TABLE[Stage(stage)].networks
        if networks is not None and (not networks or set(networks) - set(own)):
            raise ValueError(f"networks {tuple(networks)} must be some of stage {stage}'s networks {own}")
        self.stage = Stage(stage)
        self._frozen = []
        for s, names in ((s, STAGE_TABLE[s].networks) for s in MODEL_STAGES):
            for name in names:
                m = getattr(self, name)
                if m is None:
                    continue
                trains = s == stage and (networks is None or name in networks)
                m.requires_grad_(trains)
                if not trains:
                    m.zero_grad(set_to_none=True)  # no stale gradient of an earlier stage on a frozen net
                    self._frozen.append(m)
        self.train(self.training)

    def train(self, mode: bool = True) -> AVFace:
        """Like ``nn.Module.train``, but networks frozen by ``set_stage`` stay in eval mode: training a later stage
        neither moves their BatchNorm statistics (DECA: frozen E_flame in eval mode) nor applies their modality
        dropout (a dropped audio window would zero the lip offsets and starve the lip refiner of signal)."""
        super().train(mode)
        for m in getattr(self, "_frozen", ()):
            m.eval()
        if getattr(self, "batchnorm_frozen", False):
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def freeze_batchnorm(self, frozen: bool = True) -> None:
        """Keep every BatchNorm layer in eval mode, also while training (its affine weights still train).

        Why: a fine-tuning batch holds a few windows of two or three speakers (shape consistency), so its frame
        statistics are far from the running ones. In train mode the network then predicts something else than it
        does in eval mode (on the tiny model's pretrained E_c: head pose about 0.05 rad apart) and the losses
        correct the train-mode prediction. Detectron2's FrozenBatchNorm fine-tunes the same way.
        """
        self.batchnorm_frozen = bool(frozen)
        self.train(self.training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly the current stage's trainable parameters (what the optimiser gets)."""
        return [p for m in self.stage_modules()[self.stage] for p in m.parameters() if p.requires_grad]

    def _trainable_modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in ("coarse", "expression", "lip", "detail")
                if getattr(self, name) is not None}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict of the trainable networks of ALL stages (keys as in ``state_dict``: ``coarse.*``,
        ``expression.*``, ``lip.*``, ``detail.*``): the checkpoint's content. The face model, the renderer and
        the frozen pretrained perceptual networks (VGG19, face recognition) are not in it."""
        return {f"{name}.{k}": v for name, m in self._trainable_modules().items() for k, v in m.state_dict().items()}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what ``trainable_state_dict`` wrote; missing or unexpected keys are a ValueError naming them."""
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ValueError(f"trainable state dict does not match the model: missing {missing[:5]} "
                             f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
        for name, m in self._trainable_modules().items():
            prefix = name + "."
            m.load_state_dict({k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)})

    def _runs(self, stage: Stage) -> bool:
        return MODEL_STAGES.index(self.stage) >= MODEL_STAGES.index(stage)

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, batch: Batch, generator: torch.Generator | None = None, render: bool = True) -> AVFaceOutput:
        """``render=False`` skips the coarse rendering (a caller that uses no image-space output: pretraining)."""
        images, audio = batch.images, batch.audio
        if self.config.landmark_input and batch.points is None:
            raise ValueError("this model takes landmark input (model.landmark_input) but the batch has no detector "
                             "points (Batch.points): preprocess with landmarks.store_points=true and a detector")
        code = self.coarse(images, points=batch.points, points_valid=batch.points_valid, generator=generator)
        ej = self.expression(images, audio, batch.audio_valid, batch.video_valid, generator, points=batch.points,
                             points_valid=batch.points_valid)
        out = AVFaceOutput(shape=code.shape, albedo=code.albedo, light=code.light, global_pose=code.global_pose,
                           cam=code.cam, expression=ej.expression, jaw=ej.jaw, audio_keep=ej.audio_keep,
                           video_keep=ej.video_keep)
        if self.face_model is None:
            return out
        out = self.decode(out)
        if self._runs(Stage.LIP) and self.lip is not None:
            out = self.refine_lips(out, audio, ej.audio_keep if audio is not None else None)
        if render and self.renderer is not None and self.stage in (Stage.COARSE, Stage.LIP):
            out = self._render(out, "coarse")
        if self._runs(Stage.DETAIL) and self.detail is not None:
            if self.renderer is None:
                raise ValueError("the detail stage needs a renderer (UV maps and detailed rendering)")
            out = self.fine(out, images, audio, batch.occlusion_mask)
        return out

    def decode(self, code: AVFaceOutput) -> AVFaceOutput:
        """Codes (B,T,...) -> ``code`` with the FaceModel geometry set: vertices (B,T,V,3), landmarks3d (B,T,68,3)
        (yaw-dependent contour), landmarks2d (B,T,68,2) NDC, root joint (B,T,3)."""
        fm = self.face_model
        b, t = code.shape.shape[:2]
        geo = fm(shape=_bt(code.shape), expression=_bt(code.expression), global_pose=_bt(code.global_pose),
                 jaw_pose=_bt(code.jaw))
        lmk3 = geo.landmarks68_dynamic
        lmk2 = orthographic_project(lmk3, _bt(code.cam))[..., :2]
        return code.replace(vertices=geo.vertices.reshape(b, t, -1, 3), landmarks3d=lmk3.reshape(b, t, 68, 3),
                            landmarks2d=lmk2.reshape(b, t, 68, 2), root=geo.joints[:, 0].reshape(b, t, 3))

    def canonical_vertices(self, out: AVFaceOutput) -> torch.Tensor:
        """The face of ``out``'s shape, expression and jaw with no global pose: (B,T,V,3). What the 3D metrics
        score after their similarity alignment, without the head pose and camera that the alignment removes."""
        b, t = out.shape.shape[:2]
        geo = self.face_model(shape=_bt(out.shape), expression=_bt(out.expression),
                              global_pose=torch.zeros_like(_bt(out.global_pose)), jaw_pose=_bt(out.jaw))
        return geo.vertices.reshape(b, t, -1, 3)

    def refine_lips(self, out: AVFaceOutput, audio: torch.Tensor | None,
                    audio_valid: torch.Tensor | None) -> AVFaceOutput:
        """Lip offsets predicted in the canonical (un-rotated) frame, rotated into the posed mesh.

        With global rotation R about the root joint J0, posed = R (canonical - J0) + J0 exactly (LBS), so
        canonical lips = R^T (posed - J0) + J0 and the refined posed lips = posed + R offsets.
        """
        b, t = out.vertices.shape[:2]
        rot = batch_rodrigues(_bt(out.global_pose)).reshape(b, t, 3, 3)
        j0 = out.root[:, :, None]
        posed_lips = out.vertices[:, :, self.lip_ids]
        canon = torch.einsum("btji,btkj->btki", rot, posed_lips - j0) + j0  # R^T (v - J0) + J0
        off = self.lip(canon, audio, audio_valid)  # (B,T,K,3)
        delta = canonical_offsets_to_posed(_bt(off), _bt(rot), self.lip_ids, out.vertices.shape[2])
        delta = delta.reshape(out.vertices.shape)
        verts = out.vertices + delta
        fm = self.face_model
        dl = vertices2landmarks(_bt(delta), fm.faces, fm.lmk68_faces[None].expand(b * t, -1),
                                fm.lmk68_bary[None].expand(b * t, -1, -1)).reshape(b, t, 68, 3)
        lmk3 = out.landmarks3d + dl
        lmk2 = orthographic_project(_bt(lmk3), _bt(out.cam))[..., :2].reshape(b, t, 68, 2)
        return out.replace(lip_offsets=off, vertices_coarse=out.vertices, vertices=verts, landmarks3d=lmk3,
                           landmarks2d=lmk2)

    def _albedo(self, out: AVFaceOutput) -> torch.Tensor:
        fm = self.face_model
        if getattr(fm, "has_albedo", False):
            k = min(out.albedo.shape[-1], fm.n_albedo)
            return fm.albedo(_bt(out.albedo)[:, :k]).clamp(0.0, 1.0)
        v = out.vertices
        return torch.full((v.shape[0] * v.shape[1], v.shape[2], 3), 0.7, device=v.device, dtype=v.dtype)

    def render(self, out: AVFaceOutput, tag: str = "coarse") -> AVFaceOutput:
        """``out`` with ``render_{tag}``, ``alpha_{tag}``, ``normals_{tag}`` and the lip/face pixel masks of its
        surface set (e.g. the coarse rendering of a detail-stage output, for validation against its normals)."""
        return self._render(out, tag)

    def _render(self, out: AVFaceOutput, tag: str, uv_normals: torch.Tensor | None = None) -> AVFaceOutput:
        b, t = out.vertices.shape[:2]
        r = self.renderer(_bt(out.vertices), _bt(out.cam), self._albedo(out), _bt(out.light), uv_normals=uv_normals)
        res = {f"render_{tag}": r.image.reshape(b, t, *r.image.shape[1:]),
               f"alpha_{tag}": r.alpha.reshape(b, t, *r.alpha.shape[1:]),
               f"normals_{tag}": r.normals.reshape(b, t, *r.normals.shape[1:])}
        p2f = r.pix_to_face.clamp_min(0)
        for name, flags in (("lip", self.lip_faces), ("face", self.face_faces)):
            m = flags[p2f] & (r.pix_to_face >= 0)
            res[f"{name}_mask_{tag}"] = m[:, None].to(r.image.dtype).reshape(b, t, 1, *m.shape[1:])
        return out.replace(**res)

    def fine(self, out: AVFaceOutput, images: torch.Tensor, audio: torch.Tensor | None,
             occlusion_mask: torch.Tensor | None = None) -> AVFaceOutput:
        """Fine stage: unwrap the image into UV space with the (lip-refined) coarse mesh, predict D, build the
        detailed UV positions/normals (eq. 2) and render with the detailed normals.

        ``uv_visible`` = texels inside the UV layout whose coarse normal faces the camera (n_z > 0.05, DECA's
        self-occlusion test) and, with ``occlusion_mask`` (B,T,S,S), that are not covered by an occluder.
        """
        b, t = out.vertices.shape[:2]
        uv = self.renderer.uv_maps(_bt(out.vertices))
        n, _, u, _ = uv.position.shape
        proj = orthographic_project(uv.position.permute(0, 2, 3, 1).reshape(n, u * u, 3), _bt(out.cam))
        grid = proj[..., :2].reshape(n, u, u, 2)
        uv_image = F.grid_sample(_bt(images), grid, mode="bilinear", align_corners=False) * uv.mask
        visible = uv.mask * (uv.normal[:, 2:3] > 0.05).to(uv.mask)
        if occlusion_mask is not None:
            occ = F.grid_sample(_bt(occlusion_mask)[:, None].to(grid), grid, mode="bilinear", align_corners=False)
            visible = visible * (occ < 0.5).to(visible)
        x = uv_image if self.config.detail.in_channels == 3 else torch.cat([uv_image, uv.normal], dim=1)
        a = _bt(audio) if audio is not None else None
        if a is not None and out.audio_keep is not None:
            a = a * _bt(out.audio_keep)[:, None, None]
        d = self.detail(x, a) * uv.mask
        v_d, n_d = displacement_to_detail(uv.position, uv.normal, d, uv.mask)
        out = out.replace(displacement=d.reshape(b, t, 1, u, u), uv_mask=uv.mask.reshape(b, t, 1, u, u),
                          uv_visible=visible.detach().reshape(b, t, 1, u, u),
                          uv_normals_detail=n_d.reshape(b, t, 3, u, u), uv_positions_detail=v_d.reshape(b, t, 3, u, u))
        return self._render(out, "detail", uv_normals=n_d)

    def refit_frame(self, batch: Batch, out: AVFaceOutput) -> AVFaceOutput:
        """``out`` seen through a rotation and camera re-fitted per frame to the image's rigid landmarks (brows,
        nose, eyes: ``REFIT_LANDMARKS``), rendered in that frame when there is a renderer: the lip stage's frame
        (``LossWeights.lip_frame = "landmarks"``). The fit is detached and uses no lip point, so the lip terms
        measure the lips relative to the upper face, not the coarse stage's pose and camera error. Frames without
        valid landmarks keep the model's own pose and camera. Vertices and landmarks (B,T,...,3) are rotated about
        the model-space origin, ``cam`` (B,T,3) replaced."""
        b, t = out.vertices.shape[:2]
        h, wd = batch.images.shape[-2:]
        ids = torch.as_tensor(REFIT_LANDMARKS, device=out.vertices.device)
        with torch.no_grad():
            gt = pixels_to_ndc(batch.landmarks.to(out.vertices.dtype), (h, wd))
            rot, cam = fit_orthographic_camera(_bt(out.landmarks3d)[:, ids], _bt(gt)[:, ids])
            keep = _bt(batch.landmarks_valid).bool() if batch.landmarks_valid is not None else \
                torch.ones(b * t, dtype=torch.bool, device=rot.device)
            keep = keep & torch.isfinite(rot).all((1, 2)) & torch.isfinite(cam).all(1) & (cam[:, 0] > 0)
            eye = torch.eye(3, dtype=rot.dtype, device=rot.device).expand_as(rot)
            rot = torch.where(keep[:, None, None], rot, eye)
            cam = torch.where(keep[:, None], cam, _bt(out.cam).detach())

        def turn(x: torch.Tensor) -> torch.Tensor:  # (B,T,N,3) -> rotated
            return torch.einsum("nij,nkj->nki", rot, _bt(x)).reshape(x.shape)

        lmk3 = turn(out.landmarks3d)
        lmk2 = orthographic_project(_bt(lmk3), cam)[..., :2].reshape(b, t, 68, 2)
        root = None if out.root is None else turn(out.root[:, :, None])[:, :, 0]
        refit = out.replace(vertices=turn(out.vertices), landmarks3d=lmk3, landmarks2d=lmk2,
                            cam=cam.reshape(b, t, 3), root=root)
        if self.renderer is not None:
            refit = self._render(refit, "coarse")
        return refit
