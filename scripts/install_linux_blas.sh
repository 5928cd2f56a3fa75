#!/usr/bin/env bash
# MLX's Linux CPU wheel bundles the slow reference BLAS; importing mlx_hjepa preloads an
# optimized OpenBLAS when one is installed (6-13x faster steps, same numerics). This installs
# the distribution's threaded OpenBLAS, which picks its kernels for the running CPU at run
# time, so it is safe on any x86-64 or arm64 machine. Does nothing on macOS (MLX uses
# Accelerate) or when a system OpenBLAS is already present. Check with: python -m mlx_hjepa.info
set -eu
[ "$(uname -s)" = "Linux" ] || exit 0
if ldconfig -p 2>/dev/null | grep -qE 'libopenblasp?\.so\.0'; then exit 0; fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install_linux_blas: not root and no sudo; ask an admin to install libopenblas0-pthread (Debian/Ubuntu) or openblas-threads (Fedora)" >&2
    exit 0
  fi
fi

if command -v apt-get >/dev/null; then
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 \
    || $SUDO apt-get install -y libopenblas0-pthread
elif command -v dnf >/dev/null; then
  $SUDO dnf install -y -q openblas-threads
elif command -v pacman >/dev/null; then
  $SUDO pacman -S --noconfirm --needed openblas
else
  echo "install_linux_blas: unknown package manager; install OpenBLAS (libopenblas.so.0) with yours" >&2
  exit 0
fi
echo "install_linux_blas: installed $(ldconfig -p 2>/dev/null | grep -oE '=> .*libopenblasp?\.so\.0' | head -1 | cut -c4-)"
