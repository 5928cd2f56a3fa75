"""Torch-free evaluation of frozen encoders: weighted k-NN and a linear probe, both in MLX.

    from mlx_hjepa.eval import extract_features, knn_classify, linear_probe
    train_x, train_y = extract_features(encoder, train_dataset)
    test_x, test_y = extract_features(encoder, test_dataset)
    knn_classify(train_x, train_y, test_x, test_y)   # {"top1", "top5", "k", "temperature", ...}
    linear_probe(train_x, train_y, test_x, test_y)   # {"top1", "top5", "lr", "weight_decay", ...}

The command line is ``python -m mlx_hjepa.eval`` (see ``__main__``).
"""

from .features import extract_features, load_eval_encoder, pooled_features, random_encoder_like
from .knn import knn_classify
from .linear_probe import linear_probe


def evaluate_knn(encoder, train_dataset, val_dataset, k=20, temperature=0.07, batch_size=128, num_layers=1,
                 num_workers=2):
    """k-NN accuracy of `encoder` (frozen, as it is now) from train_dataset to val_dataset; no caching,
    so the trainer can call it as the weights change. Returns knn_classify's dict."""
    train_x, train_y = extract_features(encoder, train_dataset, batch_size, num_layers, num_workers=num_workers)
    val_x, val_y = extract_features(encoder, val_dataset, batch_size, num_layers, num_workers=num_workers)
    return knn_classify(train_x, train_y, val_x, val_y, k=k, temperature=temperature,
                        num_classes=getattr(train_dataset, "num_classes", None) or None)


__all__ = ["evaluate_knn", "extract_features", "knn_classify", "linear_probe", "load_eval_encoder",
           "pooled_features", "random_encoder_like"]
