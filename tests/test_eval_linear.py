"""Linear probe: separable clusters, agreement with a numpy logistic regression, determinism, bad input."""

import mlx_hjepa  # noqa: F401  (preloads BLAS before mlx.core)
import numpy as np
import pytest

from mlx_hjepa.eval import linear_probe


def gaussian_clusters(rng, num_classes, dim, spread, train_size, test_size, offset=5.0):
    means = rng.normal(size=(num_classes, dim)) * spread

    def draw(n):
        labels = rng.integers(0, num_classes, n)
        return (means[labels] + rng.normal(size=(n, dim)) + offset).astype(np.float32), labels

    return draw(train_size) + draw(test_size)


def reference_logistic_regression(train, train_labels, test, test_labels, num_classes, lr=0.5, steps=400):
    """Full-batch gradient descent on the mean cross-entropy of softmax(x W + b), standardised features."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    weight, bias = np.zeros((train.shape[1], num_classes)), np.zeros(num_classes)
    one_hot = np.eye(num_classes)[train_labels]
    for _ in range(steps):
        logits = train @ weight + bias
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        grad = (probs - one_hot) / len(train)
        weight -= lr * train.T @ grad
        bias -= lr * grad.sum(0)
    return float(((test @ weight + bias).argmax(1) == test_labels).mean())


def test_separable_clusters_are_learned():
    rng = np.random.default_rng(0)
    train, train_labels, test, test_labels = gaussian_clusters(rng, 4, 16, 4.0, 800, 400)
    result = linear_probe(train, train_labels, test, test_labels, epochs=10, batch_size=64)
    assert result["top1"] >= 0.95 and result["top5"] == 1.0
    assert result["lr"] in (0.01, 0.1, 1.0) and result["weight_decay"] in (0.0, 1e-4, 1e-3)


def test_matches_numpy_logistic_regression_on_overlapping_classes():
    rng = np.random.default_rng(1)
    train, train_labels, test, test_labels = gaussian_clusters(rng, 6, 20, 0.45, 3000, 2000)
    reference = reference_logistic_regression(train, train_labels, test, test_labels, 6)
    result = linear_probe(train, train_labels, test, test_labels, epochs=15, batch_size=128)
    assert 0.4 < reference < 0.95  # a set where the choice of classifier can matter
    assert abs(result["top1"] - reference) <= 0.02, (result, reference)


def test_deterministic_from_seed():
    rng = np.random.default_rng(2)
    train, train_labels, test, test_labels = gaussian_clusters(rng, 5, 8, 0.8, 400, 200)
    first = linear_probe(train, train_labels, test, test_labels, epochs=3, batch_size=32, seed=7)
    second = linear_probe(train, train_labels, test, test_labels, epochs=3, batch_size=32, seed=7)
    assert first == second


def test_class_absent_from_train_is_counted_and_never_predicted_right():
    rng = np.random.default_rng(3)
    train, train_labels, test, test_labels = gaussian_clusters(rng, 3, 8, 5.0, 300, 100)
    test_labels = test_labels.copy()
    test_labels[:10] = 3  # a class train never shows
    with pytest.warns(UserWarning, match="absent from train"):
        result = linear_probe(train, train_labels, test, test_labels, epochs=3, batch_size=32,
                              lrs=(0.1,), weight_decays=(0.0,))
    assert result["unseen_test_samples"] == 10 and result["top1"] <= 0.9 and result["val_top1"] is None


def test_empty_or_tiny_splits_raise_clearly():
    x, y = np.ones((10, 3), np.float32), np.arange(10) % 2
    with pytest.raises(ValueError, match="training split is empty"):
        linear_probe(x[:0], y[:0], x, y)
    with pytest.raises(ValueError, match="test split is empty"):
        linear_probe(x, y, x[:0], y[:0])
    with pytest.raises(ValueError, match="hold out"):
        linear_probe(x[:2], y[:2], x, y, val_fraction=0.1)
