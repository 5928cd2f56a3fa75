#!/usr/bin/env bash
# Real images for the tests, offline: Debian's dataset-fashion-mnist package puts the four
# Fashion-MNIST IDX files in /usr/share/datasets/fashion-mnist (about 30 MB), which
# tests/test_fashion_mnist.py trains and evaluates on. Does nothing when they are already
# there, on macOS, or without apt-get (then get them with
# `python -m mlx_hjepa.data download fashion_mnist --root DIR` and set HJEPA_FASHION_MNIST=DIR).
set -eu
[ "$(uname -s)" = "Linux" ] || exit 0
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && exit 0
command -v apt-get >/dev/null || { echo "install_test_data: no apt-get; see the comment at the top of $0" >&2; exit 0; }

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install_test_data: not root and no sudo; ask an admin to run apt-get install dataset-fashion-mnist" >&2
    exit 0
  fi
fi
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
  || $SUDO apt-get install -y dataset-fashion-mnist
echo "install_test_data: Fashion-MNIST in /usr/share/datasets/fashion-mnist"
