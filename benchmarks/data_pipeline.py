"""Training-pipeline throughput: JPEG decode + random resized crop + flip + colour jitter.

mlx_hjepa.data (mlx-data native decode/resize, crop/flip/jitter drawn in Python) against
a PIL baseline doing the same work the torchvision way (decode, crop+resize in one
PIL call, flip, ImageEnhance brightness/contrast/saturation, HSV hue shift), both over
the same JPEG folder, with 1 and 2 threads, in the same run.

    python benchmarks/data_pipeline.py                     # 256 generated 500x375 JPEGs
    python benchmarks/data_pipeline.py --folder DIR        # a class-per-folder tree, e.g. imagenet/train
"""

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

import numpy as np  # noqa: E402
import PIL  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

from mlx_hjepa.data import ImageFolderDataset, JEPATransform, build_dataloader  # noqa: E402
from mlx_hjepa.data.transforms import random_resized_crop_params  # noqa: E402


def make_jpegs(folder, count, seed=0):
    """500x375 JPEGs (quality 90, ~100 KB) with smooth shapes and fine texture, like photos."""
    rng = np.random.default_rng(seed)
    (folder / "c0").mkdir(parents=True)
    ys, xs = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(count):
        base = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((500, 375),
                                                                                                  Image.BICUBIC))
        waves = 40 * np.sin(xs / rng.uniform(3, 30) + ys / rng.uniform(3, 30))[..., None]
        noise = rng.normal(0, 18, (375, 500, 3))
        Image.fromarray(np.clip(base + waves + noise, 0, 255).astype(np.uint8)).save(folder / "c0" / f"{i}.jpg",
                                                                                     quality=90)


def pil_sample(path, rng, size, strength):
    """The same work as JEPATransform(size, (0.3, 1), color_jitter=strength, horizontal_flip=True), in PIL."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    top, left, h, w = random_resized_crop_params(rng, image.height, image.width, (0.3, 1.0))
    image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if strength == 0:  # torchvision's ColorJitter(0) does nothing
        return np.asarray(image)
    factors = rng.uniform(1 - strength, 1 + strength, 3)
    hue = rng.uniform(-strength / 4, strength / 4)
    for op in rng.permutation(4):
        if op == 0:
            image = ImageEnhance.Brightness(image).enhance(factors[0])
        elif op == 1:
            image = ImageEnhance.Contrast(image).enhance(factors[1])
        elif op == 2:
            image = ImageEnhance.Color(image).enhance(factors[2])
        else:
            h_, s_, v_ = image.convert("HSV").split()
            h_ = Image.fromarray((np.asarray(h_).astype(np.int16) + int(hue * 255)).astype(np.uint8), "L")
            image = Image.merge("HSV", (h_, s_, v_)).convert("RGB")
    return np.asarray(image)


def time_pil(files, threads, size, strength, epochs):
    def work(item):
        i, path = item
        return pil_sample(path, np.random.default_rng([0, i]), size, strength)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, enumerate(files[:32])))  # warm-up
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(epochs):
            for _ in pool.map(work, enumerate(files)):
                pass
    count = len(files) * epochs
    return count / (time.perf_counter() - start), (time.process_time() - cpu_start) * 1000 / count


def time_mlx(dataset, threads, batch_size, epochs):
    loader = build_dataloader(dataset, batch_size, num_workers=threads, shuffle=True, drop_last=True)
    next(iter(loader.epoch_iter(0)))  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    for epoch in range(1, epochs + 1):
        for batch in loader.epoch_iter(epoch):
            count += len(batch["image"])
    return count / (time.perf_counter() - start), (time.process_time() - cpu_start) * 1000 / count


def best(current, measured):
    """Highest img/s and lowest CPU ms/img seen so far."""
    return max(current[0], measured[0]), min(current[1], measured[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="class-per-folder JPEG tree (default: generate 500x375 JPEGs)")
    parser.add_argument("--num-images", type=int, default=256, help="images to generate (default 256)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--color-jitter", type=float, default=0.4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="timed passes over the folder")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timings per pipeline; the best is reported")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp)
            make_jpegs(folder, args.num_images)
        transform = JEPATransform(args.image_size, crop_scale=(0.3, 1.0), color_jitter=args.color_jitter,
                                  horizontal_flip=True)
        dataset = ImageFolderDataset(folder, split=None, transform=transform, name=folder.name or "jpegs")
        mean_kb = np.mean([os.path.getsize(f) for f in dataset.files[:256]]) / 1024
        rows = []
        for threads in args.threads:
            pil, ours = (0.0, 1e9), (0.0, 1e9)
            for _ in range(args.repeats):  # alternate, keep the best: robust to a busy machine
                pil = best(pil, time_pil(dataset.files, threads, args.image_size, args.color_jitter, args.epochs))
                ours = best(ours, time_mlx(dataset, threads, args.batch_size, args.epochs))
            rows.append(["PIL (torchvision-style)", threads, f"{pil[0]:.0f}", f"{pil[0] / threads:.0f}",
                         f"{pil[1]:.2f}", "1.00x", "1.00x"])
            rows.append(["mlx_hjepa.data", threads, f"{ours[0]:.0f}", f"{ours[0] / threads:.0f}", f"{ours[1]:.2f}",
                         f"{ours[0] / pil[0]:.2f}x", f"{pil[1] / ours[1]:.2f}x"])
    print_table(f"decode + RandomResizedCrop {args.image_size} + flip + jitter {args.color_jitter}: "
                f"{len(dataset)} JPEGs, mean {mean_kb:.0f} KB, batch {args.batch_size}, best of {args.repeats} x "
                f"{args.epochs} epochs "
                f"(pillow {PIL.__version__})",
                ["pipeline", "threads", "img/s", "img/s per thread", "CPU ms/img", "img/s vs PIL",
                 "per core vs PIL"], rows)
    print("\nper core vs PIL = PIL's CPU time per image / ours (process CPU time, all threads): the fair "
          "comparison on a shared or busy machine; img/s is wall clock.")


if __name__ == "__main__":
    main()
