"""Small copies of a run report's pictures for the README (docs/report/*.png).

    python -m mlx_hjepa.train configs/quickstart.yaml --output-dir /tmp/qs
    python -m mlx_hjepa.report /tmp/qs/quickstart
    python scripts/readme_report_pictures.py /tmp/qs/quickstart/report docs/report

Each picture is cropped to its first rows where it is tall, scaled to a README width and stored
with a 128-colour palette, so all of them stay well under 300 KB.
"""

import sys
from pathlib import Path

from PIL import Image

# file -> (fraction of the height kept from the top, width in the README)
PICTURES = {"masks.png": (1.0, 480), "attention.png": (0.337, 420), "features.png": (1.0, 560),
            "neighbours.png": (0.513, 640), "curves.png": (1.0, 720)}


def main(argv):
    if len(argv) != 2:
        print("usage: python scripts/readme_report_pictures.py REPORT_DIR OUT_DIR", file=sys.stderr)
        return 2
    source, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, (keep, width) in PICTURES.items():
        if not (source / name).is_file():
            print(f"skipped {name}: not in {source}", file=sys.stderr)
            continue
        with Image.open(source / name) as image:
            image = image.convert("RGB").crop((0, 0, image.width, round(image.height * keep)))
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
            image.quantize(colors=128).save(out / name, optimize=True)
        total += (out / name).stat().st_size
        print(f"{out / name}: {(out / name).stat().st_size / 1024:.0f} KB")
    print(f"total {total / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
