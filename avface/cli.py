"""The ``avface`` command (console script of the project; also ``python -m avface.cli``).

Subcommands::

    avface reconstruct INPUT -o OUT/ [--audio FILE] [--checkpoint PATH|models:/NAME@ALIAS] [--device auto|cpu|cuda]
                       [--batch-size N] [--stages coarse,lip,detail] [--export npz,obj,ply,mp4,glb] [--flame-sizes]
                       [--crop landmarks|none] [--crop-scale S] [--fps F] [--rule mean|centre] [--no-audio]
                       [--refine landmarks|none]

Exit status: 0 on success, 2 for bad input or a missing checkpoint (the message names the file and the problem),
1 for anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from avface.inference.checkpoint import CheckpointNotFoundError
from avface.inference.export import EXPORT_KINDS, export_all
from avface.inference.reconstruct import STAGES, ReconstructConfig, Reconstructor, summary_lines
from avface.inference.refine import REFINE_MODES
from avface.inference.tracking import NoFaceError
from avface.io.media import MediaError
from avface.io.video import InputError

log = logging.getLogger("avface")


def _csv(choices: Sequence[str], what: str):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(s.strip() for s in text.split(",") if s.strip())
        bad = [s for s in items if s not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{what}: {text!r}; choose from {','.join(choices)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avface", description="AVFace: audio-visual 4D face reconstruction.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    r = sub.add_parser("reconstruct", help="a talking-face video (+ audio) -> per-frame FLAME meshes and exports",
                       description="Reconstruct the face of a video: per-frame FLAME parameters (npz) and meshes.")
    r.add_argument("input", help="video file (mp4, mov, mkv, webm, avi, ...)")
    r.add_argument("-o", "--out", required=True, help="output folder")
    r.add_argument("--audio", help="separate audio file (default: the video's own audio; none: video-only mode)")
    r.add_argument("--checkpoint", help="checkpoint path or models:/NAME@ALIAS (default: the newest training "
                                        "checkpoint)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    r.add_argument("--batch-size", type=int, default=None,
                   help="frames per CNN batch (default: 8 on CPU, 32 on GPU)")
    r.add_argument("--stages", type=_csv(STAGES, "stages"), default=None,
                   help="comma-separated subset of coarse,lip,detail (default: every stage of the model)")
    r.add_argument("--export", type=_csv(EXPORT_KINDS, "export"), default=("npz",),
                   help="comma-separated subset of npz,obj,ply,mp4,glb (default npz)")
    r.add_argument("--flame-sizes", action="store_true", help="pad shape to 300 and expression to 100 in the npz")
    r.add_argument("--crop", choices=("landmarks", "none"), default="landmarks",
                   help="landmarks: track and crop the face (default) | none: the whole frame (face-crop videos)")
    r.add_argument("--crop-scale", type=float, default=None,
                   help="crop side / landmark extent (default: the framing of the model's training clips, from its "
                        "checkpoint; a different value warns)")
    r.add_argument("--fps", type=float, default=None,
                   help="frame rate of the model's timeline (default: the one it was trained at, from its "
                        "checkpoint; a different value warns)")
    r.add_argument("--rule", choices=("mean", "centre"), default="mean",
                   help="a frame's prediction from its sliding windows: their mean (default) or the centre-most")
    r.add_argument("--refine", choices=REFINE_MODES, default="landmarks",
                   help="landmarks (default): fit pose, camera and (near the network's values) expression, jaw and "
                        "shape to the tracked landmarks; none: the network alone (the paper's method)")
    r.add_argument("--no-audio", action="store_true", help="ignore the audio (video-only mode)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_reconstruct)
    return p


def cmd_reconstruct(args: argparse.Namespace) -> int:
    cfg = ReconstructConfig(stages=args.stages, batch_size=args.batch_size, crop=args.crop, rule=args.rule,
                            crop_scale=args.crop_scale, fps=args.fps, use_audio=not args.no_audio,
                            refine=args.refine, progress=not args.quiet)
    src = Path(args.input)
    try:
        with Reconstructor(args.checkpoint, args.device, cfg) as rec_:
            rec = rec_.run(src, args.audio)
            outputs = export_all(rec, rec_.face_model, args.out, src.stem, tuple(args.export), args.flame_sizes,
                                 video=src)
    except (CheckpointNotFoundError, InputError, NoFaceError, MediaError, FileNotFoundError, ImportError,
            ValueError) as e:
        print(f"avface reconstruct: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(rec, outputs)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # the training losses' pretrained networks (identity, ID-MRF): building the model says they are missing, which
    # reconstruction never uses
    logging.getLogger("avface.models.perceptual").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
