#!/usr/bin/env bash
# Installs vaezoo and everything it needs on a fresh Debian machine: Debian's Fashion-MNIST,
# then PyTorch (pinned first, so pip takes the build that lies on disk instead of resolving a new one),
# then vaezoo itself in editable mode with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test]"
