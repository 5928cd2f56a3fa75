"""Linear probe on frozen features: softmax regression trained with SGD-momentum in MLX.

Features are standardised with train statistics. Every (learning rate, weight decay) pair
of the grid gets its own linear head, and all heads train together on the same mini-batches
in one compiled step (as DINO's linear eval does), on a held-out split of train; the pair
whose head scores best on the held-out part is then refit on all of train and scored on
test. Heads start at zero and batches come from a seeded generator, so a seed fixes the
result.
"""

import math

import mlx.core as mx
import numpy as np

from .knn import check_splits, topk_correct

DEFAULT_LRS = (0.01, 0.1, 1.0)
DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3)


def standardize(train, test, eps=1e-6):
    mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)  # statistics in float64, data stays float32
    std = (train.std(axis=0, dtype=np.float64) + eps).astype(np.float32)
    return (train - mean) / std, (test - mean) / std


def head_logits(params, x):
    """(B, G, C) logits of every head: one (B, D) x (D, G*C) matmul for all heads."""
    dim, heads, classes = params["weight"].shape
    return (x @ params["weight"].reshape(dim, heads * classes)).reshape(-1, heads, classes) + params["bias"]


def cross_entropy(params, x, y):
    """Sum over heads of each head's mean cross-entropy; heads are independent, so each gets its own gradient."""
    logits = head_logits(params, x)
    picked = mx.take_along_axis(logits, mx.broadcast_to(y[:, None, None], (*logits.shape[:2], 1)), axis=2)
    return (mx.logsumexp(logits, axis=2) - picked[..., 0]).mean(axis=0).sum()


def _sgd_step(params, velocity, step, total_steps, lrs, weight_decays, momentum, features, labels, batch_idx):
    """One SGD-momentum step of every head; schedule values are arrays so one trace (and one set of
    JIT kernels) serves every grid, epoch count and momentum."""
    _, grads = mx.value_and_grad(cross_entropy)(params, features[batch_idx], labels[batch_idx])
    lr = lrs * 0.5 * (1 + mx.cos(math.pi * step / total_steps))  # cosine to zero
    grads = {"weight": grads["weight"] + weight_decays * params["weight"], "bias": grads["bias"]}
    velocity = {k: momentum * velocity[k] + grads[k] for k in grads}
    params = {k: params[k] - lr * velocity[k] for k in params}
    return params, velocity


_compiled_sgd_step = mx.compile(_sgd_step)


def train_heads(x, y, lrs, weight_decays, num_classes, epochs, batch_size, momentum, rng):
    """Train one linear head per (lr, wd) pair on (x, y); returns {"weight": (D, G, C), "bias": (G, C)}."""
    n, dim = x.shape
    heads = len(lrs)
    batch_size = min(batch_size, n)
    steps_per_epoch = n // batch_size  # drop the ragged tail so one shape is traced; reshuffled every epoch
    hyper = dict(total_steps=mx.array(epochs * steps_per_epoch, mx.float32),
                 lrs=mx.array(lrs, mx.float32)[:, None],  # (G, 1): broadcasts over (D, G, C) and (G, C)
                 weight_decays=mx.array(weight_decays, mx.float32)[:, None],
                 momentum=mx.array(momentum, mx.float32))
    params = {"weight": mx.zeros((dim, heads, num_classes)), "bias": mx.zeros((heads, num_classes))}
    velocity = {k: mx.zeros_like(v) for k, v in params.items()}
    features, labels = mx.array(x), mx.array(y.astype(np.int32))
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
        order = mx.array(order.astype(np.int32))
        for i in range(steps_per_epoch):
            params, velocity = _compiled_sgd_step(params, velocity, mx.array(step, mx.float32), features=features,
                                                  labels=labels, batch_idx=order[i], **hyper)
            mx.eval(params, velocity)
            step += 1
    return params


def head_accuracies(params, x, y, chunk_size=8192):
    """(top1, top5) count arrays of shape (G,), one entry per head."""
    correct1 = correct5 = 0
    for start in range(0, len(y), chunk_size):
        xb, yb = mx.array(x[start:start + chunk_size]), mx.array(y[start:start + chunk_size].astype(np.int32))
        logits = head_logits(params, xb)  # (B, G, C)
        c = [topk_correct(logits[:, g], yb) for g in range(logits.shape[1])]
        c1, c5 = mx.stack([a for a, _ in c]), mx.stack([b for _, b in c])
        mx.eval(c1, c5)
        correct1, correct5 = correct1 + np.array(c1), correct5 + np.array(c5)
    return correct1, correct5


def linear_probe(train_feats, train_labels, test_feats, test_labels, epochs=100, batch_size=256,
                 lrs=DEFAULT_LRS, weight_decays=DEFAULT_WEIGHT_DECAYS, val_fraction=0.1, momentum=0.9,
                 seed=0, num_classes=None):
    """Top-1/top-5 test accuracy (fractions) of a linear classifier on frozen features.

    Returns a dict with top1, top5, lr, weight_decay (the chosen pair), val_top1 (its held-out
    accuracy; None without a grid), epochs, num_train, num_test, unseen_test_samples.
    """
    num_classes, unseen = check_splits(train_labels, test_labels, num_classes)
    x_train, x_test = standardize(np.asarray(train_feats, np.float32), np.asarray(test_feats, np.float32))
    y_train, y_test = np.asarray(train_labels), np.asarray(test_labels)
    rng = np.random.default_rng(seed)
    grid = [(lr, wd) for lr in lrs for wd in weight_decays]
    if not grid:
        raise ValueError("The linear-probe grid is empty; give at least one learning rate and one weight decay.")
    best, val_top1 = 0, None
    if len(grid) > 1:
        perm = rng.permutation(len(y_train))
        num_val = int(round(val_fraction * len(y_train)))
        if num_val < 1 or num_val == len(y_train):
            raise ValueError(f"Cannot hold out {val_fraction:.0%} of {len(y_train)} training samples to choose the "
                             "learning rate; use more training samples or a single lr and weight decay.")
        val, fit = perm[:num_val], perm[num_val:]
        heads = train_heads(x_train[fit], y_train[fit], [g[0] for g in grid], [g[1] for g in grid],
                            num_classes, epochs, batch_size, momentum, rng)
        val_correct, _ = head_accuracies(heads, x_train[val], y_train[val])
        best = int(np.argmax(val_correct))  # first best: ties go to the earlier grid entry
        val_top1 = float(val_correct[best] / num_val)
    lr, wd = grid[best]
    head = train_heads(x_train, y_train, [lr], [wd], num_classes, epochs, batch_size, momentum, rng)
    (correct1,), (correct5,) = head_accuracies(head, x_test, y_test)
    return dict(top1=float(correct1 / len(y_test)), top5=float(correct5 / len(y_test)), lr=float(lr),
                weight_decay=float(wd), val_top1=val_top1, epochs=int(epochs), num_train=len(y_train),
                num_test=len(y_test), unseen_test_samples=unseen)
