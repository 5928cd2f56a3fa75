#!/usr/bin/env bash
# MLX's Linux CPU wheel bundles the slow reference BLAS; mlx_hjepa preloads an optimized
# OpenBLAS when one is installed. This installs Debian/Ubuntu's (runtime CPU dispatch, safe on any x86-64).
# Does nothing on macOS or when OpenBLAS is already present.
set -eu
[ "$(uname -s)" = "Linux" ] || exit 0
if ldconfig -p 2>/dev/null | grep -q 'libopenblas.*\.so\.0'; then exit 0; fi
if ! command -v apt-get >/dev/null; then
  echo "install_linux_blas: no apt-get; install OpenBLAS with your package manager (e.g. dnf install openblas)" >&2
  exit 0
fi
SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas0-pthread >/dev/null
