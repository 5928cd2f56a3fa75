"""Weighted k-NN classification on frozen features (the DINO protocol), chunked on the device.

Features are L2-normalised; each query's k most similar training features vote for their
labels with weight exp(similarity / temperature) (or 1 each with weighting="majority").
Queries are processed `chunk_size` at a time, so memory is chunk_size x N, never N x N.

Ties are broken deterministically:
- neighbours: higher similarity first, equal similarities go to the lower training index;
- classes: more votes first, equal votes go to the lower class id. A query counts as
  correct at top-n when fewer than n classes rank ahead of its true class and that class got
  at least one vote (a class no neighbour voted for is never a hit, even with fewer than n
  classes voting).
"""

import warnings

import mlx.core as mx
import numpy as np

WEIGHTINGS = ("exp", "majority")
SIMS_BUDGET = 2**26  # elements of one (chunk, N) similarity block: 256 MiB in float32


def check_splits(train_labels, test_labels, num_classes=None):
    """Validate a train/test pair of label vectors; returns (num_classes, unseen_test_samples).

    Test samples whose class never occurs in train cannot be classified correctly; they stay
    in the accuracy (as errors) and are counted and warned about.
    """
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train_labels) == 0:
        raise ValueError("The training split is empty; point --data-path at a dataset with training images.")
    if len(test_labels) == 0:
        raise ValueError("The test split is empty; point --data-path at a dataset with test/val images.")
    if train_labels.min() < 0 or test_labels.min() < 0:
        raise ValueError("Labels must be non-negative class ids.")
    needed = int(max(train_labels.max(), test_labels.max())) + 1
    if num_classes is None:
        num_classes = needed
    elif num_classes < needed:
        raise ValueError(f"num_classes={num_classes} but labels go up to {needed - 1}; pass num_classes>={needed}.")
    unseen = np.setdiff1d(np.unique(test_labels), np.unique(train_labels))
    unseen_samples = int(np.isin(test_labels, unseen).sum())
    if unseen_samples:
        warnings.warn(f"{unseen_samples} test samples belong to {len(unseen)} classes absent from train "
                      f"(e.g. class {int(unseen[0])}); they are counted as errors.", stacklevel=3)
    return num_classes, unseen_samples


def l2_normalize(x, eps=1e-12):
    return x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), eps)


def topk_correct(scores, labels, ks=(1, 5), min_score=None):
    """Per-k count of rows whose label ranks within the top k of `scores` (ties -> lower class id)
    and, with min_score, scores above it."""
    label_score = mx.take_along_axis(scores, labels[:, None], axis=1)
    class_ids = mx.arange(scores.shape[1])
    ahead = (scores > label_score) | ((scores == label_score) & (class_ids[None] < labels[:, None]))
    rank = ahead.astype(mx.int32).sum(axis=1)
    if min_score is not None:
        rank = mx.where(label_score[:, 0] > min_score, rank, 2**30)
    return [(rank < k).astype(mx.int32).sum() for k in ks]


def nearest_neighbors(bank, queries, k):
    """Indices (Q, k) and similarities of each query's k nearest rows of `bank` (both normalised).

    A partial sort finds k nearest; if more entries tie with the k-th similarity than it
    kept (duplicate images do this), that row is redone exactly: everything above the k-th
    similarity is in, and the lowest indices among the entries equal to it fill the
    remaining places. The order within a row is unspecified.
    """
    sims = queries @ bank.T
    n = sims.shape[1]
    idx = mx.argpartition(sims, kth=n - k, axis=1)[:, n - k:]  # partition sims itself: no negated copy
    top = mx.take_along_axis(sims, idx, axis=1)
    kth = top.min(axis=1, keepdims=True)
    ambiguous = (sims == kth).sum(axis=1) > (top == kth).sum(axis=1)
    mx.eval(idx, top, ambiguous)
    rows = np.flatnonzero(np.array(ambiguous))
    if len(rows):
        rows = mx.array(rows)
        row_sims, row_kth = sims[rows], kth[rows]
        above, at_kth = row_sims > row_kth, row_sims == row_kth
        places_left = k - above.astype(mx.int32).sum(axis=1, keepdims=True)
        chosen = above | (at_kth & (mx.cumsum(at_kth, axis=1) <= places_left))
        row_idx = mx.argpartition(chosen.astype(mx.float32), kth=n - k, axis=1)[:, n - k:]
        idx[rows] = row_idx
        top[rows] = mx.take_along_axis(row_sims, row_idx, axis=1)
    return idx, top


def knn_classify(train_feats, train_labels, test_feats, test_labels, k=20, temperature=0.07,
                 num_classes=None, chunk_size=None, weighting="exp", return_details=False):
    """Top-1/top-5 accuracy (fractions) of weighted k-NN. Returns a dict with top1, top5, k,
    temperature, weighting, num_train, num_test, unseen_test_samples; with return_details also
    numpy `neighbors` (Q, k, sorted by similarity then index), `votes` (Q, C) and `predictions`."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Unknown weighting '{weighting}'; choose one of {WEIGHTINGS}.")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    num_classes, unseen = check_splits(train_labels, test_labels, num_classes)
    n_train, n_test = len(train_labels), len(test_labels)
    if k > n_train:
        warnings.warn(f"k={k} is larger than the {n_train} training samples; using k={n_train}.", stacklevel=2)
        k = n_train
    chunk_size = chunk_size or int(np.clip(SIMS_BUDGET // n_train, 1, 1024))

    bank = l2_normalize(mx.array(np.asarray(train_feats, dtype=np.float32)))
    bank_labels = mx.array(np.asarray(train_labels, dtype=np.int32))
    queries_all = np.asarray(test_feats, dtype=np.float32)
    labels_all = np.asarray(test_labels, dtype=np.int32)
    correct1 = correct5 = 0
    details = {"neighbors": [], "votes": [], "predictions": []}
    for start in range(0, n_test, chunk_size):
        queries = l2_normalize(mx.array(queries_all[start:start + chunk_size]))
        labels = mx.array(labels_all[start:start + chunk_size])
        idx, sims = nearest_neighbors(bank, queries, k)
        weights = mx.exp(sims / temperature) if weighting == "exp" else mx.ones_like(sims)
        one_hot = bank_labels[idx][..., None] == mx.arange(num_classes)
        votes = (weights[..., None] * one_hot).sum(axis=1)  # (chunk, C)
        c1, c5 = topk_correct(votes, labels, min_score=0)
        mx.eval(c1, c5, idx, sims, votes)
        correct1, correct5 = correct1 + c1.item(), correct5 + c5.item()
        if return_details:
            idx_np, sims_np = np.array(idx), np.array(sims)
            order = np.lexsort((idx_np, -sims_np), axis=1)  # similarity desc, then index asc
            details["neighbors"].append(np.take_along_axis(idx_np, order, axis=1))
            details["votes"].append(np.array(votes))
            details["predictions"].append(np.array(mx.argmax(votes, axis=1)))  # argmax: first maximum
    result = dict(top1=correct1 / n_test, top5=correct5 / n_test, k=int(k), temperature=float(temperature),
                  weighting=weighting, num_train=n_train, num_test=n_test, unseen_test_samples=unseen)
    if return_details:
        result.update({name: np.concatenate(parts) for name, parts in details.items()})
    return result
