#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine of this kind (Debian, Python 3.11, x86_64):
# system packages (FFmpeg for torchaudio/torchcodec, espeak-ng for synthetic speech), then a virtual
# environment with the pinned Python set from requirements.lock.txt and this package in editable mode.
set -euo pipefail
VENV="${1:-.venv}"
APT_PKGS=(ffmpeg espeak-ng libespeak-ng1 openclipart-svg librsvg2-bin)
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
