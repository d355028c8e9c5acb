#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine of this kind (Debian, Python 3.11, x86_64):
# system packages (FFmpeg for torchaudio/torchcodec, espeak-ng for synthetic speech, headless Chromium for the
# tests that open the report pages), then a virtual
# environment with the pinned Python set from requirements.lock.txt and this package in editable mode.
set -euo pipefail
VENV="${1:-.venv}"
APT_PKGS=(ffmpeg espeak-ng libespeak-ng1 openclipart-svg librsvg2-bin chromium)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# easypytorch3d's sdist does not build: only its wheel is acceptable.
"$VENV/bin/pip" install -q --only-binary=easypytorch3d -r requirements.lock.txt
# compat mode: a .pth puts the repo on sys.path, so packages added later need no reinstall.
"$VENV/bin/pip" install -q --no-deps -e . --config-settings editable_mode=compat
# MediaPipe side environment (landmarks for clips without ground truth; avface/landmarks/mediapipe_process.py runs
# its worker with this python). mediapipe 0.10.21 is the last release with mp.solutions and ships its face models
# in the wheel, but pins numpy<2, so it cannot share the main venv. Installed --no-deps from exact pins: its
# declared deps pull jax/jaxlib/opencv-contrib/sentencepiece/sounddevice (~300 MB more), which FaceMesh never
# imports; matplotlib and cv2 are imported by mp.solutions. Skip with AVFACE_NO_MEDIAPIPE=1.
if [ "${AVFACE_NO_MEDIAPIPE:-0}" != "1" ]; then
  MP_VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv-mediapipe"
  if ! "$MP_VENV/bin/python" -I -c "from mediapipe.python.solutions import face_mesh" >/dev/null 2>&1; then
    rm -rf "$MP_VENV"
    "$PYTHON" -m venv "$MP_VENV"
    "$MP_VENV/bin/pip" install -q --no-deps mediapipe==0.10.21 numpy==1.26.4 protobuf==4.25.9 absl-py==2.5.1 \
      attrs==26.1.0 flatbuffers==25.12.19 opencv-python-headless==4.10.0.84 matplotlib==3.11.2 contourpy==1.3.3 \
      cycler==0.12.1 fonttools==4.68.0 kiwisolver==1.5.1 packaging==26.4 pillow==13.0.0 pyparsing==3.3.3 \
      python-dateutil==4.0.0 tzdata==2026.6
    "$MP_VENV/bin/python" -I -c "from mediapipe.python.solutions import face_mesh"
  fi
fi
