#!/usr/bin/env bash
# Make an ImageNet-100 (CMC class list) tree out of a full ImageNet tree, then verify it.
#
# ImageNet cannot be downloaded by a script: it needs an account. The steps, once:
#   1. Sign up at https://image-net.org, accept the terms of access (non-commercial research;
#      approval can take a few days), and download from the ILSVRC2012 page:
#        ILSVRC2012_img_train.tar     (138 GiB, 1,281,167 images)
#        ILSVRC2012_img_val.tar       (6.3 GiB, 50,000 images)
#        ILSVRC2012_devkit_t12.tar.gz (2.5 MiB, validation labels)
#   2. Extract train: one tar per class inside the big tar.
#        mkdir -p data/imagenet/train && tar -xf ILSVRC2012_img_train.tar -C data/imagenet/train
#        cd data/imagenet/train && for f in n*.tar; do mkdir -p "${f%.tar}" && tar -xf "$f" -C "${f%.tar}" && rm "$f"; done; cd -
#   3. Extract val (flat) and sort it into class folders with the devkit labels:
#        mkdir -p data/imagenet/val && tar -xf ILSVRC2012_img_val.tar -C data/imagenet/val
#        python -m mlx_hjepa.data prepare-imagenet-val --root data/imagenet --devkit ILSVRC2012_devkit_t12.tar.gz
#   4. Check it:  python -m mlx_hjepa.data verify imagenet --root data/imagenet
#
# The loaders read ImageNet-100 straight from the full tree (dataset imagenet100 picks the 100
# classes), so this script is only needed for a separate, smaller tree: to copy onto another
# Mac or disk, or to keep a run's data folder to itself.
#
# Usage: scripts/download_imagenet100.sh --imagenet FULL_ROOT --out OUT_ROOT [--copy] [--class-list FILE] [-- VERIFY_ARGS...]
#   --imagenet   full ImageNet folder holding train/<wnid>/ and val/<wnid>/ (steps above)
#   --out        where to make the ImageNet-100 tree (train/ and val/ with the 100 class folders)
#   --copy       copy the class folders instead of symlinking them (about 14 GB instead of ~0)
#   --class-list file of wnids (default: mlx_hjepa/resources/imagenet100_cmc.txt, the CMC list)
#   after --      extra arguments for `python -m mlx_hjepa.data verify` (e.g. --counts train=N val=N)
# Environment: PYTHON (default python3) runs mlx_hjepa.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
imagenet="" out="" copy=0 class_list="" verify_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --imagenet) imagenet=${2:?--imagenet needs a folder}; shift 2 ;;
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --copy) copy=1; shift ;;
    --class-list) class_list=${2:?--class-list needs a file}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; verify_args=("$@"); break ;;
    *) die "unknown argument '$1'; run $0 --help for the usage." ;;
  esac
done
[[ -n "$imagenet" && -n "$out" ]] || { usage; echo; die "pass --imagenet FULL_ROOT and --out OUT_ROOT."; }
for split in train val; do
  [[ -d "$imagenet/$split" ]] || die "$imagenet/$split does not exist; prepare the full ImageNet tree first (steps in $0 --help)."
done

if [[ -z "$class_list" ]]; then
  here=$(cd "$(dirname "$0")" && pwd)
  class_list="$here/../mlx_hjepa/resources/imagenet100_cmc.txt"
  if [[ ! -f "$class_list" ]]; then
    class_list=$("$PYTHON" -c "import importlib.resources as r; print(r.files('mlx_hjepa') / 'resources' / 'imagenet100_cmc.txt')")
  fi
fi
[[ -f "$class_list" ]] || die "class list $class_list not found; pass --class-list with the 100 ImageNet-100 wnids."
mapfile -t wnids < <(grep -v '^#' "$class_list" | awk 'NF {print $1}')

src=$(cd "$imagenet" && pwd)
missing=()
for split in train val; do
  for wnid in "${wnids[@]}"; do
    [[ -d "$src/$split/$wnid" ]] || missing+=("$split/$wnid")
  done
done
[[ ${#missing[@]} -eq 0 ]] || die "${#missing[@]} class folders are missing from $src (first: ${missing[0]}); re-extract the full ImageNet tree."

for split in train val; do
  mkdir -p "$out/$split"
  for wnid in "${wnids[@]}"; do
    dest="$out/$split/$wnid"
    if [[ $copy -eq 1 ]]; then
      [[ -d "$dest" && ! -L "$dest" ]] || { rm -f "$dest"; cp -R "$src/$split/$wnid" "$dest.tmp.$$" && mv "$dest.tmp.$$" "$dest"; }
    elif [[ -L "$dest" || ! -e "$dest" ]]; then
      ln -sfn "$src/$split/$wnid" "$dest"
    else
      die "$dest exists and is not a symlink; remove it or use --copy."
    fi
  done
done
echo "ImageNet-100 tree: $out ($([[ $copy -eq 1 ]] && echo copied || echo symlinked) ${#wnids[@]} classes from $src)"

exec "$PYTHON" -m mlx_hjepa.data verify imagenet100 --root "$out" --class-list "$class_list" "${verify_args[@]}"
