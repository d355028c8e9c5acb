"""Write the open starter face model's file (``avface/assets/starter_model/``), which ``load_face_model(None)`` reads.

    python scripts/build_starter_model.py            # seed 0, the shipped file
    python scripts/build_starter_model.py --seed 1 --out /tmp/starter-seed1.npz

Run it only when the recipe (``avface/face_model/starter.py``) changes: the build's last bits depend on the CPU,
so a rebuilt file gets a new face-model fingerprint and every checkpoint made with the old one stops loading.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avface.face_model import FaceModel
from avface.face_model.loading import STARTER_MODEL_FILE
from avface.face_model.starter import build_starter_model
from avface.trained.contract import face_model_fingerprint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=STARTER_MODEL_FILE)
    args = ap.parse_args()
    data = build_starter_model(args.seed)
    data.save_npz(args.out)
    print(f"wrote {args.out} ({data.name}, fingerprint {face_model_fingerprint(FaceModel(data))})")


if __name__ == "__main__":
    main()
