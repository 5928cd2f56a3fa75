"""FAIR's I-JEPA, trained briefly on Fashion-MNIST with the small recipe of configs/fashion_mnist.yaml.

The question (docs/small_images.md): without any VICReg terms, does a short I-JEPA run collapse, or
stay near position-only features (effective rank ~3, k-NN a few points over the random init), as
mlx-hjepa's e1_base row does? This runs the reference code, not ours.

Built from FAIR's own code (github.com/facebookresearch/ijepa, the checkout given by --ijepa):
helper.init_model (the encoder size is registered in src.models.vision_transformer beside its
vit_tiny/vit_small helpers: VisionTransformer with embed 96, depth 4, heads 3, the same keyword set),
helper.init_opt (AdamW, its four param groups, WarmupCosineSchedule, CosineWDSchedule),
masks.multiblock.MaskCollator, masks.utils.apply_masks, utils.tensors.repeat_interleave_batch,
utils.distributed.AllReduce (identity in one process), and train.py's train_step closure and
momentum schedule, restated here with use_bfloat16 off and without DistributedDataParallel (one
process: train.py wraps the models in DDP unconditionally).

Recipe (configs/fashion_mnist.yaml with the study's e1_base overrides, VICReg off): 28 px grayscale
replicated to 3 channels, ImageNet mean/std, no augmentation; ViT 96 x 4 blocks x 3 heads, patch 4
(7x7 grid); predictor 96 x 2 blocks x 3 heads; batch 64; a fresh random 10,000 of the 60,000 train
images every 156 steps; lr 1e-4 -> 1e-3 over the first 10% of steps, cosine to 1e-5; wd 0.04 -> 0.4
cosine; EMA 0.996 -> 1.0 linear over the run (ipe_scale 1.0, so both schedules end with the run);
masks: 4 target blocks scale (0.15, 0.2) aspect (0.75, 1.5), 1 context block scale (0.85, 1.0),
min_keep 5 (not 10: see --min-keep), allow_overlap False. Seed 0. One thread.

At this grid the official collator also (its own behaviour, kept): never places a block on the last
row or column (top/left come from randint(0, H - h), high exclusive, so the 6x6 context block always
sits at the top left); cuts every image's context and targets to the batch's shortest, keeping the
first in raster order; and, after 20 failed draws, lets the context overlap a target.

Logged every 20 steps (and at step 0 and the last step), on that step's batch before its update:
loss, effective rank (RankMe: exp of the entropy of the normalised singular values of the
uncentred (64, 96) average-pooled final-normed target-encoder outputs) and target std (std over
the batch of those pooled features, population std, mean over channels), as mlx-hjepa logs them.
A last row, step = --steps, is the trained target encoder on the last batch.
Then the quick k-NN protocol of docs/small_images.md: bank = first 5,000 train images, queries =
first 1,000 test images, 28 px, average-pooled final-normed target-encoder tokens, L2-normalised,
cosine similarity, k=20, weights exp(sim/0.07), top-1; for the trained target encoder, the same
encoder at its initialisation (seed 0) and the raw pixels (normalised, flattened).

    /tmp/peervenv/bin/python benchmarks/ijepa_small_images.py --ijepa /tmp/ijepa --steps 312 --out /tmp/ijepa_fm.json
"""

import argparse
import copy
import gzip
import json
import os
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def to_tensor(images):
    """uint8 (N, 28, 28) -> float32 (N, 3, 28, 28), grayscale replicated, ImageNet-normalised."""
    x = images.astype(np.float32)[:, None] / 255.0
    x = (np.repeat(x, 3, axis=1) - MEAN[None, :, None, None]) / STD[None, :, None, None]
    return torch.from_numpy(np.ascontiguousarray(x))


@torch.no_grad()
def pooled(encoder, imgs, batch=500):
    return torch.cat([encoder(imgs[i:i + batch]).mean(dim=1) for i in range(0, len(imgs), batch)])


def effective_rank(features):
    s = torch.linalg.svdvals(features.double())
    p = s / s.sum().clamp_min(1e-12) + 1e-12
    return float(torch.exp(-(p * p.log()).sum()))


def feature_std(features):
    return float(features.std(dim=0, unbiased=False).mean())


@torch.no_grad()
def position_floor(encoder, imgs, positions=None):
    """smooth_l1 of predicting, at each position, the mean over images of the layer-normed target
    there (benchmarks/small_images.py floor, level 0); positions: restrict to these patch indices."""
    h = torch.cat([encoder(imgs[i:i + 500]) for i in range(0, len(imgs), 500)])
    h = F.layer_norm(h, (h.size(-1),))
    if positions is not None:
        h = h[:, positions]
    return float(F.smooth_l1_loss(h - h.mean(dim=0, keepdim=True), torch.zeros_like(h)))


def knn_top1(bank, bank_y, queries, query_y, k=20, temperature=0.07, num_classes=10):
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    sims, idx = (queries @ bank.T).topk(k, dim=1)
    votes = torch.zeros(len(queries), num_classes).scatter_add_(1, bank_y[idx], torch.exp(sims / temperature))
    return float((votes.argmax(dim=1) == query_y).float().mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ijepa", required=True, help="checkout of facebookresearch/ijepa")
    ap.add_argument("--data-path", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--steps", type=int, default=312)
    ap.add_argument("--samples-per-epoch", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-keep", type=int, default=5,
                    help="MaskCollator min_keep (default 5: the official collator asks every block, targets too, "
                         "for more than min_keep patches, and retries forever below that; target blocks on the "
                         "7x7 grid hold 6-9 patches, so 10 never terminates)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--out", default=None, help="JSON file for the log and the k-NN numbers")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True")  # train.py's float(loss)
    t_start = time.perf_counter()

    sys.path.insert(0, str(Path(args.ijepa).resolve()))
    import torch.nn as nn

    import src.models.vision_transformer as vit
    from src.helper import init_model, init_opt
    from src.masks.multiblock import MaskCollator
    from src.masks.utils import apply_masks
    from src.utils.distributed import AllReduce
    from src.utils.tensors import repeat_interleave_batch
    import logging
    root = logging.getLogger()
    root.setLevel(logging.ERROR)  # init_model logs the whole module tree at INFO

    class CountRelaxations(logging.Handler):  # the collator's "decreasing acceptable-regions" warnings
        count = 0

        def emit(self, record):
            CountRelaxations.count += "Valid mask not found" in record.getMessage()
    root.handlers = [CountRelaxations()]

    # -- the encoder size, registered where init_model looks names up (same keywords as vit_tiny)
    vit.vit_fm96 = partial(vit.VisionTransformer, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4, qkv_bias=True,
                           norm_layer=partial(nn.LayerNorm, eps=1e-6))

    # -- data
    d = Path(args.data_path)
    train_x, test_x = read_idx(d / "train-images-idx3-ubyte.gz"), read_idx(d / "t10k-images-idx3-ubyte.gz")
    train_y = torch.from_numpy(read_idx(d / "train-labels-idx1-ubyte.gz").astype(np.int64))
    test_y = torch.from_numpy(read_idx(d / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    rng = np.random.default_rng(args.seed)
    ipe = args.samples_per_epoch // args.batch  # 156: drop_last, as train.py's loader

    def batches():
        while True:
            order = rng.permutation(len(train_x))[:args.samples_per_epoch]
            for i in range(ipe):
                yield order[i * args.batch:(i + 1) * args.batch]

    # -- model, exactly as train.py: init_model, then the target encoder is a deep copy
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    encoder, predictor = init_model(device=device, patch_size=4, crop_size=28, pred_depth=2, pred_emb_dim=96,
                                    model_name="vit_fm96")
    target_encoder = copy.deepcopy(encoder)
    init_encoder = copy.deepcopy(encoder)  # kept for the random-init baseline
    root.setLevel(logging.WARNING)
    for p in list(target_encoder.parameters()) + list(init_encoder.parameters()):
        p.requires_grad = False

    collator = MaskCollator(input_size=28, patch_size=4, pred_mask_scale=(0.15, 0.2), enc_mask_scale=(0.85, 1.0),
                            aspect_ratio=(0.75, 1.5), nenc=1, npred=4, allow_overlap=False, min_keep=args.min_keep)

    # -- schedules: one "epoch" of one iteration per step, so warmup is a whole number of steps
    warmup_steps = int(round(0.1 * args.steps))  # warmup_epochs 0.2 of 2 epochs
    ema, ipe_scale, num_epochs = (0.996, 1.0), 1.0, args.steps
    optimizer, scaler, scheduler, wd_scheduler = init_opt(
        encoder=encoder, predictor=predictor, wd=0.04, final_wd=0.4, start_lr=0.1 * args.lr, ref_lr=args.lr,
        final_lr=0.01 * args.lr, iterations_per_epoch=1, warmup=warmup_steps, num_epochs=num_epochs,
        ipe_scale=ipe_scale, use_bfloat16=False)
    momentum_scheduler = (ema[0] + i * (ema[1] - ema[0]) / (1 * num_epochs * ipe_scale)
                          for i in range(int(1 * num_epochs * ipe_scale) + 1))

    def train_step(imgs, masks_enc, masks_pred):  # train.py's closure, use_bfloat16 False
        _new_lr = scheduler.step()
        _new_wd = wd_scheduler.step()

        def forward_target():
            with torch.no_grad():
                h = target_encoder(imgs)
                h = F.layer_norm(h, (h.size(-1),))
                B = len(h)
                h = apply_masks(h, masks_pred)
                h = repeat_interleave_batch(h, B, repeat=len(masks_enc))
                return h

        def forward_context():
            z = encoder(imgs, masks_enc)
            z = predictor(z, masks_enc, masks_pred)
            return z

        def loss_fn(z, h):
            return AllReduce.apply(F.smooth_l1_loss(z, h))

        h = forward_target()
        z = forward_context()
        loss = loss_fn(z, h)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            m = next(momentum_scheduler)
            for param_q, param_k in zip(encoder.parameters(), target_encoder.parameters()):
                param_k.data.mul_(m).add_((1. - m) * param_q.detach().data)
        return float(loss), _new_lr, _new_wd, m

    def stats(imgs):
        f = pooled(target_encoder, imgs)
        return effective_rank(f), feature_std(f)

    log, mask_tokens, losses = [], [], []
    print(f"{'step':>5} {'loss':>8} {'rank':>6} {'std':>7} {'lr':>9} {'wd':>6} {'ema':>7} {'ctx/tgt':>7} {'s':>6}",
          flush=True)
    it = batches()
    train_t0 = time.perf_counter()
    for step in range(args.steps):
        idx = next(it)
        imgs_np = to_tensor(train_x[idx])
        (imgs, _), masks_enc, masks_pred = collator([(imgs_np[i], 0) for i in range(len(idx))])
        mask_tokens.append((masks_enc[0].shape[1], masks_pred[0].shape[1]))
        logging_step = step % args.log_every == 0 or step == args.steps - 1
        if logging_step:
            rank, std = stats(imgs)
        loss, lr, wd, m = train_step(imgs, masks_enc, masks_pred)
        losses.append(loss)
        if not np.isfinite(loss):
            raise SystemExit(f"loss is {loss} at step {step}")
        if logging_step:
            row = dict(step=step, loss=loss, effective_rank=rank, target_std=std, lr=lr, wd=wd, ema=m,
                       context_tokens=int(masks_enc[0].shape[1]), target_tokens=int(masks_pred[0].shape[1]),
                       elapsed_s=time.perf_counter() - train_t0)
            log.append(row)
            print(f"{step:5d} {loss:8.4f} {rank:6.2f} {std:7.4f} {lr:9.2e} {wd:6.3f} {m:7.5f} "
                  f"{row['context_tokens']:3d}/{row['target_tokens']:<3d} {row['elapsed_s']:6.1f}", flush=True)
    train_s = time.perf_counter() - train_t0
    rank, std = stats(imgs)
    log.append(dict(step=args.steps, loss=None, effective_rank=rank, target_std=std, note="trained, last batch"))
    print(f"{args.steps:5d} {'-':>8} {rank:6.2f} {std:7.4f}   (trained target encoder, last batch)", flush=True)

    # -- quick k-NN protocol
    bank, queries = to_tensor(train_x[:5000]), to_tensor(test_x[:1000])
    bank_y, query_y = train_y[:5000], test_y[:1000]
    encoder.eval()
    knn = {}
    for name, e in (("trained", target_encoder), ("random_init", init_encoder)):
        knn[name] = knn_top1(pooled(e, bank), bank_y, pooled(e, queries), query_y)
    knn["raw_pixels"] = knn_top1(bank.flatten(1), bank_y, queries.flatten(1), query_y)
    # the same rank/std on 1,000 test images (a fixed set, not the training batch)
    probe = {n: dict(zip(("effective_rank", "target_std"), (effective_rank(f), feature_std(f))))
             for n, f in (("trained", pooled(target_encoder, queries)), ("random_init", pooled(init_encoder, queries)))}
    # position-only floor on the first 2,000 test images: all 49 positions, and the 36 the official
    # collator can put in a target block (never the last row or column)
    floor_imgs = to_tensor(test_x[:2000])
    reach = [r * 7 + c for r in range(6) for c in range(6)]
    tail5 = float(np.mean([r["loss"] for r in log if r["loss"] is not None][-5:]))
    floors = {n: dict(all49=position_floor(e, floor_imgs), reachable36=position_floor(e, floor_imgs, reach))
              for n, e in (("trained", target_encoder), ("random_init", init_encoder))}
    floors.update(loss_last5_logged=tail5, loss_last50_steps=float(np.mean(losses[-50:])),
                  loss_over_floor_all49=tail5 / floors["trained"]["all49"],
                  loss_over_floor_reachable36=tail5 / floors["trained"]["reachable36"])
    ctx = [c for c, _ in mask_tokens]
    tgt = [t for _, t in mask_tokens]
    result = dict(
        reference="facebookresearch/ijepa", ijepa_path=str(args.ijepa), torch=torch.__version__,
        steps=args.steps, batch=args.batch, samples_per_epoch=args.samples_per_epoch, seed=args.seed,
        lr=dict(start=0.1 * args.lr, peak=args.lr, final=0.01 * args.lr, warmup_steps=warmup_steps),
        wd=[0.04, 0.4], ema=list(ema), min_keep=args.min_keep,
        mask_tokens=dict(context_min=min(ctx), context_mean=float(np.mean(ctx)), context_max=max(ctx),
                         target_min=min(tgt), target_mean=float(np.mean(tgt)), target_max=max(tgt)),
        collator_relaxations=CountRelaxations.count, log=log, losses=losses, position_floor=floors, knn_top1=knn, test1000_rank_std=probe, train_wall_s=train_s,
        total_wall_s=time.perf_counter() - t_start)
    print(f"\nmask tokens per image: context {min(ctx)}-{max(ctx)} (mean {np.mean(ctx):.1f}), "
          f"target block {min(tgt)}-{max(tgt)} (mean {np.mean(tgt):.1f}); the collator relaxed a context "
          f"{CountRelaxations.count} times (20 failed draws each: one target block dropped from the region to avoid)")
    print("quick k-NN top-1 (5k bank, 1k test, k=20, T=0.07):")
    for name, v in knn.items():
        print(f"  {name:12s} {100 * v:5.1f}%")
    for name, v in probe.items():
        print(f"  rank/std on 1k test images, {name}: {v['effective_rank']:.2f} / {v['target_std']:.4f}")
    print(f"position-only floor (2k test images), trained: {floors['trained']['all49']:.4f} all 49 positions, "
          f"{floors['trained']['reachable36']:.4f} the 36 a target can cover; loss (mean of last 5 logged) "
          f"{tail5:.4f}: loss/floor {floors['loss_over_floor_all49']:.2f} / {floors['loss_over_floor_reachable36']:.2f}")
    print(f"train {train_s:.0f} s, total {result['total_wall_s']:.0f} s wall")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
