"""Reader for the Multiface on-disk layout (Wuu et al. 2022), as released and as ``avface.synth.multiface``
writes it. Per identity directory (e.g. ``m--20180227--0000--6795937--GHS/``)::

    KRT                                    per camera: name, 3 lines K, 1 line distortion, 3 lines [R|t], blank
    frame_list.txt                         "<SEG> <frame>" per line
    images/<SEG>/<cam>/<frame:06d>.png     (2048 x 1334 portrait in the release)
    tracked_mesh/<SEG>/<frame:06d>.bin     float32 (V, 3) millimetres, head space (V = 7,306 in the release)
    tracked_mesh/<SEG>/<frame:06d>.obj     the same mesh as OBJ (read when the .bin is missing)
    tracked_mesh/<SEG>/<frame:06d>_transform.txt   3x4 head pose [R_f | t_f]: world = R_f v + t_f (mm)
    audio/<SEG>.wav                        (the release names its sentences SEN_*); frame 0 at audio t = 0

Projection: pixel ~ K [R_C R_f | R_C t_f + t_C] [v; 1] (divide by z), with (R_C, t_C) the camera's [R|t].
Frames are 30 fps; :func:`resample_sequence` gives the model's 25 fps.

Bad or partial data does not stop the reader: a missing camera, a frame without its mesh, an unreadable file or a
segment / split with no usable frame becomes a :class:`MultifaceFailure` row (identity, segment, frame, camera,
problem) in ``failures``; everything else stays readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avface.io import read_audio

__all__ = ["FRONTAL_CAMERAS", "MULTIFACE_FPS", "MultifaceFormatError", "MultifaceCamera", "MultifaceFailure",
           "MultifaceSegment", "MultifaceIdentity", "MultifaceDataset", "read_krt", "read_head_pose", "read_mesh",
           "read_obj_faces", "project_points", "resample_times", "resample_sequence", "read_multiface_identity",
           "read_multiface"]

FRONTAL_CAMERAS: tuple[str, ...] = ("400030", "400291")  # v1 rig, v2 rig
MULTIFACE_FPS = 30.0


class MultifaceFormatError(ValueError):
    """A Multiface file is missing or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class MultifaceCamera:
    """One KRT entry. K: (3, 3), dist: (D,), R: (3, 3), t: (3,) world (mm) -> camera."""

    name: str
    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray


@dataclass(frozen=True)
class MultifaceFailure:
    """One unusable item: the frame / camera are None when the whole segment / identity is affected."""

    identity: str
    segment: str | None
    frame: int | None
    camera: str | None
    problem: str

    def as_row(self) -> dict:
        return asdict(self)


def read_krt(path: str | Path) -> dict[str, MultifaceCamera]:
    """KRT -> {camera name: MultifaceCamera}; a malformed block raises naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MultifaceFormatError(f"{path}: KRT file missing")
    lines = path.read_text().splitlines()
    cams: dict[str, MultifaceCamera] = {}
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        name = lines[i].strip()
        try:
            block = [[float(x) for x in lines[i + r].split()] for r in range(1, 8)]
        except (IndexError, ValueError) as e:
            raise MultifaceFormatError(f"{path}:{i + 1}: camera {name!r}: expected 7 numeric lines ({e})") from e
        if any(len(row) != 3 for row in block[:3]) or any(len(row) != 4 for row in block[4:7]):
            raise MultifaceFormatError(f"{path}:{i + 1}: camera {name!r}: K must be 3x3 and [R|t] 3x4")
        rt = np.array(block[4:7])
        cams[name] = MultifaceCamera(name, np.array(block[:3]), np.array(block[3]), rt[:, :3], rt[:, 3])
        i += 8
    if not cams:
        raise MultifaceFormatError(f"{path}: no camera in KRT")
    return cams


def read_head_pose(path: str | Path) -> np.ndarray:
    """<frame>_transform.txt -> (3, 4) [R_f | t_f] (mm)."""
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise MultifaceFormatError(f"{path}: unreadable head pose ({e})") from e
    if m.shape != (3, 4):
        raise MultifaceFormatError(f"{path}: head pose must be 3x4, got {m.shape}")
    return m


def _read_obj_vertices(path: Path) -> np.ndarray:
    rows = [ln.split()[1:4] for ln in path.read_text().splitlines() if ln.startswith("v ")]
    if not rows:
        raise MultifaceFormatError(f"{path}: no 'v' lines")
    return np.asarray(rows, dtype=np.float32)


def read_obj_faces(path: str | Path) -> np.ndarray:
    """Triangles of an OBJ's ``f`` lines (``v``, ``v/vt`` or ``v/vt/vn``; polygons fan-triangulated) -> (F, 3) int64,
    0-based vertex ids."""
    path = Path(path)
    if not path.is_file():
        raise MultifaceFormatError(f"{path}: OBJ missing (the mesh faces come from the .obj)")
    tris = []
    for n, ln in enumerate(path.read_text().splitlines(), 1):
        if not ln.startswith("f "):
            continue
        try:
            ids = [int(tok.split("/")[0]) - 1 for tok in ln.split()[1:]]
        except ValueError as e:
            raise MultifaceFormatError(f"{path}:{n}: bad face line {ln!r}") from e
        if len(ids) < 3:
            raise MultifaceFormatError(f"{path}:{n}: a face needs 3 vertices, got {ln!r}")
        tris += [(ids[0], ids[i], ids[i + 1]) for i in range(1, len(ids) - 1)]
    if not tris:
        raise MultifaceFormatError(f"{path}: no 'f' lines")
    return np.asarray(tris, dtype=np.int64)


def read_mesh(stem: str | Path, num_vertices: int | None = None) -> np.ndarray:
    """tracked_mesh/<SEG>/<frame> (without suffix) -> (V, 3) float32 mm, from the .bin, else the .obj."""
    stem = Path(stem)
    b, o = stem.with_suffix(".bin"), stem.with_suffix(".obj")
    if b.is_file():
        raw = np.fromfile(b, dtype="<f4")
        if raw.size == 0 or raw.size % 3:
            raise MultifaceFormatError(f"{b}: {raw.size} floats is not a (V, 3) mesh")
        v = raw.reshape(-1, 3)
    elif o.is_file():
        v = _read_obj_vertices(o)
    else:
        raise MultifaceFormatError(f"{b}: mesh missing (no .bin or .obj)")
    if num_vertices is not None and len(v) != num_vertices:
        raise MultifaceFormatError(f"{b}: {len(v)} vertices, the identity's other meshes have {num_vertices}")
    return v


def _mesh_vertex_count(stem: Path, num_vertices: int | None) -> int:
    """V of tracked_mesh/<SEG>/<frame> without reading a .bin (its size), checked like :func:`read_mesh`."""
    b = stem.with_suffix(".bin")
    if b.is_file():
        size = b.stat().st_size
        if size == 0 or size % 12:
            raise MultifaceFormatError(f"{b}: {size} bytes is not a float32 (V, 3) mesh")
        n = size // 12
        if num_vertices is not None and n != num_vertices:
            raise MultifaceFormatError(f"{b}: {n} vertices, the identity's other meshes have {num_vertices}")
        return n
    return len(read_mesh(stem, num_vertices))


def project_points(vertices: np.ndarray, camera: MultifaceCamera,
                   head_pose: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Head-space vertices (..., 3) mm -> (pixels (..., 2), depth (...,)) with K [R_C R_f | R_C t_f + t_C].
    head_pose: (3, 4) [R_f | t_f] or None (vertices already in world space)."""
    v = np.asarray(vertices, dtype=np.float64)
    R, t = camera.R, camera.t
    if head_pose is not None:
        R, t = camera.R @ head_pose[:, :3], camera.R @ head_pose[:, 3] + camera.t
    cam = v @ R.T + t
    p = cam @ camera.K.T
    return p[..., :2] / p[..., 2:3], cam[..., 2]


def resample_times(num_frames: int, src_fps: float = MULTIFACE_FPS, dst_fps: float = 25.0) -> np.ndarray:
    """Positions (fractional source frame indices) of the frames of a ``dst_fps`` sequence covering the same time
    as ``num_frames`` source frames, starting together: (M,) with M = floor((num_frames - 1) dst / src) + 1."""
    if num_frames < 1:
        return np.zeros(0)
    m = int(np.floor((num_frames - 1) * dst_fps / src_fps + 1e-9)) + 1
    return np.arange(m) * (src_fps / dst_fps)


def resample_sequence(x: np.ndarray, src_fps: float = MULTIFACE_FPS, dst_fps: float = 25.0,
                      mode: str = "linear") -> np.ndarray:
    """(T, ...) at src_fps -> (M, ...) at dst_fps. ``linear`` interpolates (meshes, landmarks), ``nearest`` picks
    frames (images)."""
    x = np.asarray(x)
    pos = resample_times(len(x), src_fps, dst_fps)
    if mode == "nearest":
        return x[np.minimum(np.round(pos).astype(np.int64), len(x) - 1)]
    if mode != "linear":
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    i0 = np.minimum(np.floor(pos).astype(np.int64), len(x) - 1)
    i1 = np.minimum(i0 + 1, len(x) - 1)
    w = (pos - i0).reshape(-1, *([1] * (x.ndim - 1)))
    return (1 - w) * x[i0] + w * x[i1]


@dataclass
class MultifaceSegment:
    """One sentence / expression segment of one identity seen by one camera. ``frames``: (T,) frame numbers that
    have a mesh, a head pose and an image of ``camera`` (the others are in the identity's failures)."""

    root: Path
    identity: str
    segment: str
    camera: MultifaceCamera
    frames: np.ndarray
    audio_path: Path | None
    num_vertices: int
    fps: float = MULTIFACE_FPS

    def image_path(self, frame: int) -> Path:
        return self.root / "images" / self.segment / self.camera.name / f"{frame:06d}.png"

    def mesh(self, frame: int) -> np.ndarray:
        """(V, 3) float32 mm, head space."""
        return read_mesh(self.root / "tracked_mesh" / self.segment / f"{frame:06d}", self.num_vertices)

    def meshes(self) -> np.ndarray:
        """(T, V, 3) float32 mm."""
        return np.stack([self.mesh(int(f)) for f in self.frames])

    def faces(self) -> np.ndarray:
        """(F, 3) int64 triangles of the tracked-mesh topology, from the first frame that has an .obj."""
        d = self.root / "tracked_mesh" / self.segment
        for f in self.frames:
            if (d / f"{int(f):06d}.obj").is_file():
                return read_obj_faces(d / f"{int(f):06d}.obj")
        raise MultifaceFormatError(f"{d}: no .obj for segment {self.segment} (the faces come from the .obj)")

    def synthetic_ground_truth(self) -> dict[str, np.ndarray] | None:
        """The synthetic stand-in's sidecar ``<multiface>/gt/<identity>/<segment>.npz`` (FLAME-like parameters,
        ``landmarks3d_mm`` (T, 68, 3) head space, ``frames``), or None for real captures."""
        path = self.root.parent / "gt" / self.identity / f"{self.segment}.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def head_pose(self, frame: int) -> np.ndarray:
        """(3, 4) [R_f | t_f]."""
        return read_head_pose(self.root / "tracked_mesh" / self.segment / f"{frame:06d}_transform.txt")

    def image(self, frame: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        import cv2

        img = cv2.imread(str(self.image_path(frame)), cv2.IMREAD_COLOR)
        if img is None:
            raise MultifaceFormatError(f"{self.image_path(frame)}: unreadable image")
        return img[..., ::-1].copy()

    def project(self, vertices: np.ndarray, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Head-space vertices (V, 3) of ``frame`` -> (pixels (V, 2), depth (V,)) in this segment's camera."""
        return project_points(vertices, self.camera, self.head_pose(frame))

    def times(self) -> np.ndarray:
        """(T,) seconds from the segment's first frame (= audio t 0)."""
        return (self.frames - self.frames[0]) / self.fps

    def audio(self, sample_rate: int = 16000) -> np.ndarray:
        if self.audio_path is None:
            raise MultifaceFormatError(f"{self.root / 'audio'}: no audio for segment {self.segment}")
        return read_audio(self.audio_path, sample_rate=sample_rate)


@dataclass
class MultifaceIdentity:
    root: Path
    name: str
    cameras: dict[str, MultifaceCamera]
    segments: list[MultifaceSegment]
    failures: list[MultifaceFailure] = field(default_factory=list)


@dataclass
class MultifaceDataset:
    identities: list[MultifaceIdentity]
    failures: list[MultifaceFailure]

    @property
    def segments(self) -> list[MultifaceSegment]:
        return [s for i in self.identities for s in i.segments]

    def failure_rows(self) -> list[dict]:
        return [f.as_row() for f in self.failures]


def _frame_list(path: Path) -> dict[str, list[int]]:
    if not path.is_file():
        raise MultifaceFormatError(f"{path}: frame_list.txt missing")
    out: dict[str, list[int]] = {}
    for n, ln in enumerate(path.read_text().splitlines(), 1):
        if not ln.strip():
            continue
        parts = ln.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise MultifaceFormatError(f"{path}:{n}: expected '<SEG> <frame>', got {ln!r}")
        out.setdefault(parts[0], []).append(int(parts[1]))
    return out


def _audio_for(root: Path, segment: str) -> Path | None:
    for cand in (root / "audio" / f"{segment}.wav", root / "audio" / f"SEN_{segment}.wav"):
        if cand.is_file():
            return cand
    return None


def read_multiface_identity(root: str | Path, camera: str | None = None,
                            segments: Sequence[str] | None = None) -> MultifaceIdentity:
    """Read one identity directory. ``camera``: a KRT name, or None for the frontal camera of either rig
    (:data:`FRONTAL_CAMERAS`). ``segments``: restrict to these (None = all in frame_list.txt). Problems become
    ``failures``; a missing / malformed KRT or frame_list.txt fails the whole identity (one failure row)."""
    root = Path(root)
    name = root.name
    ident = MultifaceIdentity(root, name, {}, [])

    def fail(problem: str, segment: str | None = None, frame: int | None = None, cam: str | None = None) -> None:
        ident.failures.append(MultifaceFailure(name, segment, frame, cam, problem))

    try:
        ident.cameras = read_krt(root / "KRT")
        frame_list = _frame_list(root / "frame_list.txt")
    except MultifaceFormatError as e:
        fail(str(e))
        return ident
    cam_name = camera or next((c for c in FRONTAL_CAMERAS if c in ident.cameras), None)
    if cam_name is None or cam_name not in ident.cameras:
        want = camera or f"a frontal camera {FRONTAL_CAMERAS}"
        fail(f"{root / 'KRT'}: camera {want} missing (has {sorted(ident.cameras)})", cam=camera)
        return ident
    cam = ident.cameras[cam_name]
    wanted = list(frame_list) if segments is None else list(segments)
    num_vertices: int | None = None
    for seg in wanted:
        if seg not in frame_list:
            fail(f"{root / 'frame_list.txt'}: segment {seg} not listed", seg)
            continue
        img_dir = root / "images" / seg / cam_name
        if not img_dir.is_dir():
            fail(f"{img_dir}: camera {cam_name} has no images for this segment", seg, cam=cam_name)
            continue
        good = []
        for fr in frame_list[seg]:
            stem = root / "tracked_mesh" / seg / f"{fr:06d}"
            try:
                num_vertices = _mesh_vertex_count(stem, num_vertices)
                read_head_pose(stem.parent / f"{stem.name}_transform.txt")
            except MultifaceFormatError as e:
                fail(str(e), seg, fr)
                continue
            if not (img_dir / f"{fr:06d}.png").is_file():
                fail(f"{img_dir / f'{fr:06d}.png'}: image missing", seg, fr, cam_name)
                continue
            good.append(fr)
        if not good:
            fail(f"{root / 'tracked_mesh' / seg}: no frame with mesh, head pose and image", seg, cam=cam_name)
            continue
        audio = _audio_for(root, seg)
        if audio is None:
            fail(f"{root / 'audio' / (seg + '.wav')}: audio missing (video-only evaluation still possible)", seg)
        ident.segments.append(MultifaceSegment(root, name, seg, cam, np.asarray(good, dtype=np.int64), audio,
                                               int(num_vertices)))
    return ident


def read_multiface(root: str | Path, camera: str | None = None, identities: Sequence[str] | None = None,
                   segments: Sequence[str] | None = None) -> MultifaceDataset:
    """Every identity directory under ``root`` (directories holding a KRT or frame_list.txt, or the ones named in
    ``identities``). An empty split is itself a failure row; the call never raises for bad data."""
    root = Path(root)
    if identities is not None:
        dirs = [root / i for i in identities]
    else:
        dirs = sorted(d for d in root.iterdir() if d.is_dir() and ((d / "KRT").exists()
                                                                   or (d / "frame_list.txt").exists())) \
            if root.is_dir() else []
    idents, failures = [], []
    for d in dirs:
        if not d.is_dir():
            failures.append(MultifaceFailure(d.name, None, None, None, f"{d}: identity directory missing"))
            continue
        ident = read_multiface_identity(d, camera, segments)
        idents.append(ident)
        failures += ident.failures
    if not any(i.segments for i in idents):
        failures.append(MultifaceFailure("", None, None, camera, f"{root}: empty split (no readable segment)"))
    return MultifaceDataset(idents, failures)
