"""Discover a VoxCeleb2 tree and write the clip manifest (parquet, pyarrow).

Layout (VoxCeleb2's release)::

    <root>/vox2_meta.csv                              VoxCeleb2 ID, VGGFace2 ID, Gender, Set (trailing spaces)
    <root>/{dev,test}/mp4/idNNNNN/<ytid>/NNNNN.mp4    video (+ AAC audio in the same file)
    <root>/{dev,test}/aac/idNNNNN/<ytid>/NNNNN.m4a    optional separate audio (used when present; also .aac)
    <root>/{dev,test}/txt/idNNNNN/<ytid>/NNNNN.txt    optional: Identity, Reference, Offset, FV Conf, FRAME rows
    <root>/gt/{dev,test}/idNNNNN/<ytid>/NNNNN.npz     synthetic ground-truth sidecar (pipelines/synthesize.py)

One manifest row per video, sorted by (split, identity, ytid, utterance); that order fixes the shard plan. Each
file is probed (container facts, no decoding) in Ray tasks; a file that cannot be probed keeps its row with
``probe_error`` set, so it ends up in the failures table of its shard rather than vanishing.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

MANIFEST_SCHEMA = pa.schema([
    ("clip_id", pa.string()),  # <split>/<identity>/<ytid>/<utterance>
    ("split", pa.string()),  # VoxCeleb2 split directory (dev / test)
    ("identity", pa.string()),
    ("ytid", pa.string()),
    ("utterance", pa.string()),
    ("video_path", pa.string()),  # absolute
    ("audio_path", pa.string()),  # absolute, null: audio from the video file
    ("txt_path", pa.string()),
    ("gt_path", pa.string()),
    ("vggface2_id", pa.string()),
    ("gender", pa.string()),
    ("meta_set", pa.string()),
    ("txt_reference", pa.string()),
    ("txt_offset", pa.float64()),
    ("txt_conf", pa.float64()),
    ("txt_num_frames", pa.int64()),
    ("file_bytes", pa.int64()),
    ("num_frames", pa.int64()),
    ("fps", pa.float64()),
    ("duration", pa.float64()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("has_audio", pa.bool_()),
    ("audio_rate", pa.int64()),
    ("audio_channels", pa.int64()),
    ("probe_error", pa.string()),
])

_AUDIO_EXTS = (".m4a", ".aac", ".wav")


def read_meta_csv(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``vox2_meta.csv`` -> ``{voxceleb2_id: {vggface2_id, gender, set}}`` (fields stripped of spaces)."""
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        for row in reader:
            row = [c.strip() for c in row]
            if not row or not row[0]:
                continue
            rec = dict(zip(header, row, strict=False))
            out[row[0]] = {"vggface2_id": rec.get("vggface2 id", ""), "gender": rec.get("gender", ""),
                           "set": rec.get("set", "")}
    return out


def read_txt(path: str | os.PathLike) -> dict[str, Any]:
    """A VoxCeleb2 ``txt`` file: header fields and the number of ``FRAME`` rows."""
    info: dict[str, Any] = {"reference": None, "offset": None, "conf": None, "num_frames": 0}
    with open(path, errors="replace") as f:
        in_frames = False
        for line in f:
            line = line.strip()
            if not line:
                continue
            if in_frames:
                if line[0].isdigit():
                    info["num_frames"] += 1
                continue
            key, _, val = line.partition(":")
            key, val = key.strip().lower(), val.strip()
            if key == "reference":
                info["reference"] = val
            elif key == "offset":
                info["offset"] = _float(val)
            elif key in ("fv conf", "conf"):
                info["conf"] = _float(val.split()[0] if val else "")
            elif key.startswith("frame"):
                in_frames = True
    return info


def _float(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def walk_voxceleb2(root: str | os.PathLike, splits: list[str]) -> list[dict[str, Any]]:
    """Rows (without probe results) for every ``<split>/mp4/<id>/<ytid>/<utt>.mp4`` under ``root``, sorted."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root is not a directory: {root}")
    meta = read_meta_csv(root / "vox2_meta.csv") if (root / "vox2_meta.csv").is_file() else {}
    rows: list[dict[str, Any]] = []
    for split in splits:
        video_root = root / split / "mp4"
        if not video_root.is_dir():
            continue
        for ident in sorted(os.listdir(video_root)):
            id_dir = video_root / ident
            if not id_dir.is_dir():
                continue
            for ytid in sorted(os.listdir(id_dir)):
                yt_dir = id_dir / ytid
                if not yt_dir.is_dir():
                    continue
                for name in sorted(os.listdir(yt_dir)):
                    if not name.endswith(".mp4") or name.startswith("."):
                        continue
                    utt = name[: -len(".mp4")]
                    rows.append(_row(root, split, ident, ytid, utt, meta))
    return rows


def _row(root: Path, split: str, ident: str, ytid: str, utt: str, meta: dict) -> dict[str, Any]:
    audio = None
    for ext in _AUDIO_EXTS:
        p = root / split / "aac" / ident / ytid / f"{utt}{ext}"
        if p.is_file():
            audio = str(p)
            break
    txt = root / split / "txt" / ident / ytid / f"{utt}.txt"
    gt = root / "gt" / split / ident / ytid / f"{utt}.npz"
    video = root / split / "mp4" / ident / ytid / f"{utt}.mp4"
    m = meta.get(ident, {})
    row: dict[str, Any] = {
        "clip_id": f"{split}/{ident}/{ytid}/{utt}", "split": split, "identity": ident, "ytid": ytid,
        "utterance": utt, "video_path": str(video), "audio_path": audio,
        "txt_path": str(txt) if txt.is_file() else None, "gt_path": str(gt) if gt.is_file() else None,
        "vggface2_id": m.get("vggface2_id"), "gender": m.get("gender"), "meta_set": m.get("set"),
        "txt_reference": None, "txt_offset": None, "txt_conf": None, "txt_num_frames": None,
        "file_bytes": video.stat().st_size,
    }
    if row["txt_path"]:
        try:
            t = read_txt(txt)
            row.update(txt_reference=t["reference"], txt_offset=t["offset"], txt_conf=t["conf"],
                       txt_num_frames=t["num_frames"])
        except OSError:
            pass
    return row


def probe_row(row: dict[str, Any]) -> dict[str, Any]:
    """Container facts of one row's files (no decoding); errors go to ``probe_error``."""
    from avface.io.media import probe

    out = {"num_frames": None, "fps": None, "duration": None, "width": None, "height": None, "has_audio": False,
           "audio_rate": None, "audio_channels": None, "probe_error": None}
    if row["file_bytes"] == 0:
        out["probe_error"] = "zero-length file"
        return out
    try:
        info = probe(row["video_path"])
    except Exception as e:  # noqa: BLE001 - any decoder error is a data error here
        out["probe_error"] = f"{type(e).__name__}: {e}"[:500]
        return out
    if info.get("video_codec") is None:
        out["probe_error"] = "no video stream"
        return out
    fps = info.get("fps")
    n = info.get("num_frames")
    dur = info.get("video_duration")
    if dur is None and n and fps:
        dur = n / fps
    out.update(num_frames=n, fps=fps, duration=dur, width=info.get("width"), height=info.get("height"))
    if row.get("audio_path"):
        try:
            a = probe(row["audio_path"])
            out.update(has_audio=a.get("audio_codec") is not None, audio_rate=a.get("sample_rate"),
                       audio_channels=a.get("audio_channels"))
        except Exception as e:  # noqa: BLE001
            out["probe_error"] = f"audio file: {type(e).__name__}: {e}"[:500]
    else:
        out.update(has_audio=info.get("audio_codec") is not None, audio_rate=info.get("sample_rate"),
                   audio_channels=info.get("audio_channels"))
    return out


def probe_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, **probe_row(r)} for r in rows]


def build_manifest(root: str | os.PathLike, splits: list[str], max_clips_per_split: int | None = None,
                   probe_batch: int = 64, use_ray: bool = True) -> pa.Table:
    """Walk, probe (in Ray tasks when ``use_ray`` and Ray is initialised) and return the manifest table."""
    rows = walk_voxceleb2(root, splits)
    if max_clips_per_split is not None:
        kept, count = [], {}
        for r in rows:
            count[r["split"]] = count.get(r["split"], 0) + 1
            if count[r["split"]] <= max_clips_per_split:
                kept.append(r)
        rows = kept
    batches = [rows[i:i + probe_batch] for i in range(0, len(rows), probe_batch)]
    import ray

    if use_ray and ray.is_initialized() and len(batches) > 1:
        remote = ray.remote(num_cpus=0.5, max_retries=3)(probe_rows)
        probed = [r for batch in ray.get([remote.remote(b) for b in batches]) for r in batch]
    else:
        probed = [r for b in batches for r in probe_rows(b)]
    return pa.Table.from_pylist(probed, schema=MANIFEST_SCHEMA)
