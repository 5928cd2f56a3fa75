"""Speed of the evaluation protocols on frozen features, beside plain numpy doing the same work.

    python benchmarks/eval.py            # k-NN: 10k queries vs a 50k x 384 bank; linear probe: 100 epochs on 50k x 384
    python benchmarks/eval.py --quick    # 10x smaller, 10 epochs

The numpy probe baseline runs --numpy-epochs (default 10) epochs; compare steps/s.

Features are Gaussian clusters (100 classes), so both implementations must also agree on accuracy.
"""

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table  # noqa: E402

import numpy as np  # noqa: E402

from mlx_hjepa.eval import knn_classify, linear_probe  # noqa: E402


def make_features(rng, n_train, n_test, dim, num_classes):
    means = rng.normal(size=(num_classes, dim)).astype(np.float32) * 0.25
    train_labels, test_labels = rng.integers(0, num_classes, n_train), rng.integers(0, num_classes, n_test)
    train = means[train_labels] + rng.normal(size=(n_train, dim)).astype(np.float32)
    test = means[test_labels] + rng.normal(size=(n_test, dim)).astype(np.float32)
    return train, train_labels, test, test_labels


def numpy_knn(train, train_labels, test, test_labels, k, temperature, num_classes, chunk_size=1024):
    """Same protocol in numpy: chunked cosine similarity, argpartition, exp-weighted votes, top-1."""
    bank = train / np.linalg.norm(train, axis=1, keepdims=True)
    correct = 0
    for start in range(0, len(test), chunk_size):
        queries = test[start:start + chunk_size]
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        sims = queries @ bank.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(sims, idx, axis=1) / temperature)
        votes = np.zeros((len(queries), num_classes), np.float32)
        np.add.at(votes, (np.arange(len(queries))[:, None], train_labels[idx]), weights)
        correct += int((votes.argmax(axis=1) == test_labels[start:start + chunk_size]).sum())
    return correct / len(test)


def numpy_linear(train, train_labels, test, test_labels, num_classes, epochs, lr, batch_size=256, momentum=0.9, seed=0):
    """One softmax-regression head, SGD-momentum, cosine schedule, standardised features: what one MLX head does."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    rng = np.random.default_rng(seed)
    weight = np.zeros((train.shape[1], num_classes), np.float32)
    bias = np.zeros(num_classes, np.float32)
    v_weight, v_bias = np.zeros_like(weight), np.zeros_like(bias)
    steps_per_epoch = len(train) // batch_size
    total, step = epochs * steps_per_epoch, 0
    for _ in range(epochs):
        order = rng.permutation(len(train))
        for i in range(steps_per_epoch):
            batch = order[i * batch_size:(i + 1) * batch_size]
            x, y = train[batch], train_labels[batch]
            logits = x @ weight + bias
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            probs[np.arange(len(y)), y] -= 1
            grad = probs / len(y)
            step_lr = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            v_weight = momentum * v_weight + x.T @ grad
            v_bias = momentum * v_bias + grad.sum(0)
            weight -= step_lr * v_weight
            bias -= step_lr * v_bias
            step += 1
    return float(((test @ weight + bias).argmax(1) == test_labels).mean())


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller data, 10 probe epochs")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--numpy-epochs", type=int, default=10, help="epochs of the (slow) numpy probe baseline")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    n_bank, n_queries, dim, epochs = 50_000 // scale, 10_000 // scale, 384, 10 if args.quick else 100
    rng = np.random.default_rng(0)
    train, train_labels, test, test_labels = make_features(rng, n_bank, n_queries, dim, args.classes)
    rows = []

    knn, seconds = timed(knn_classify, train, train_labels, test, test_labels, k=20, temperature=0.07,
                         num_classes=args.classes)
    np_top1, np_seconds = timed(numpy_knn, train, train_labels, test, test_labels, 20, 0.07, args.classes)
    what = f"k-NN k=20, {n_queries} queries vs {n_bank}x{dim}"
    rows.append([what, "mlx", f"{seconds:.2f}", f"{n_queries / seconds:.0f} queries/s", f"{100 * knn['top1']:.2f}"])
    rows.append([what, "numpy", f"{np_seconds:.2f}", f"{n_queries / np_seconds:.0f} queries/s", f"{100 * np_top1:.2f}"])

    steps = epochs * (n_bank // 256)
    one, seconds = timed(linear_probe, train, train_labels, test, test_labels, epochs=epochs, lrs=(0.01,),
                         weight_decays=(0.0,), num_classes=args.classes)
    np_epochs = min(epochs, args.numpy_epochs)  # numpy is slow enough that 100 epochs would dominate the run
    np_top1, np_seconds = timed(numpy_linear, train, train_labels, test, test_labels, args.classes, np_epochs, 0.01)
    np_steps = np_epochs * (n_bank // 256)
    rows.append([f"linear, 1 head, {epochs} ep, {n_bank}x{dim}, bs 256", "mlx", f"{seconds:.2f}",
                 f"{steps / seconds:.0f} steps/s", f"{100 * one['top1']:.2f}"])
    rows.append([f"linear, 1 head, {np_epochs} ep, {n_bank}x{dim}, bs 256", "numpy", f"{np_seconds:.2f}",
                 f"{np_steps / np_seconds:.0f} steps/s", f"{100 * np_top1:.2f}"])

    grid, seconds = timed(linear_probe, train, train_labels, test, test_labels, epochs=epochs,
                          num_classes=args.classes)
    rows.append([f"linear, 3x3 grid on 90% + refit, {epochs} ep", "mlx", f"{seconds:.2f}",
                 f"lr={grid['lr']:g} wd={grid['weight_decay']:g}", f"{100 * grid['top1']:.2f}"])
    print_table("Evaluation protocols (wall seconds; top-1 % on Gaussian clusters, 100 classes)",
                ["what", "impl", "seconds", "rate", "top-1 %"], rows)


if __name__ == "__main__":
    main()
