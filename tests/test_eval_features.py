"""Feature extraction: pooled tokens, multi-layer features, the disk cache, and encoder resolution."""

import json
import sys

import mlx_hjepa  # noqa: F401  (preloads BLAS before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

import mlx_hjepa.eval  # noqa: F401
from mlx_hjepa.data import JEPAEvalTransform, build_dataset
from mlx_hjepa.eval import extract_features, load_eval_encoder, random_encoder_like
from mlx_hjepa.weights import save_encoder, save_model_checkpoint
from mlx_hjepa.models import VisionTransformer, normalize_images
from helpers import hjepa

features_module = sys.modules["mlx_hjepa.eval.features"]
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)


@pytest.fixture(scope="module")
def encoder():
    mx.random.seed(0)
    return VisionTransformer(**TINY)


@pytest.fixture(scope="module")
def dataset():
    return build_dataset("synthetic", split="val", image_size=32, num_samples=24, resolution=40)


def manual_inputs(dataset):
    transform = JEPAEvalTransform(32)
    images = np.stack([transform(dataset[i]["image"]) for i in range(len(dataset))])
    return normalize_images(mx.array(images))


def test_features_are_mean_pooled_tokens_in_dataset_order(encoder, dataset):
    features, labels = extract_features(encoder, dataset, batch_size=10)  # 24 = 10 + 10 + 4
    expected = np.array(encoder(manual_inputs(dataset)).mean(axis=1))
    assert features.shape == (24, 32) and features.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(labels, dataset.labels)


def test_multi_layer_features_concatenate_normed_block_outputs(encoder, dataset):
    features, _ = extract_features(encoder, dataset, batch_size=16, num_layers=2)
    single, _ = extract_features(encoder, dataset, batch_size=16, num_layers=1)
    _, hidden = encoder(manual_inputs(dataset), return_layers=2)
    assert features.shape == (24, 64)
    np.testing.assert_allclose(features[:, :32], np.array(encoder.norm(hidden[0]).mean(axis=1)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features[:, 32:], single, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="num_layers"):
        extract_features(encoder, dataset, num_layers=4)


def test_cache_is_hit_then_invalidated_by_new_weights(encoder, dataset, tmp_path, monkeypatch):
    calls = []
    pooled = features_module.pooled_features
    monkeypatch.setattr(features_module, "pooled_features", lambda *a, **k: calls.append(1) or pooled(*a, **k))
    first, _ = extract_features(encoder, dataset, batch_size=12, cache_dir=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("*.safetensors"))) == 1
    again, labels = extract_features(encoder, dataset, batch_size=12, cache_dir=tmp_path)
    assert len(calls) == 2  # read from disk, not recomputed
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(labels, dataset.labels)

    changed = VisionTransformer(**TINY)
    changed.update(encoder.parameters())
    changed.norm.bias = changed.norm.bias + 1.0
    shifted, _ = extract_features(changed, dataset, batch_size=12, cache_dir=tmp_path)
    assert len(calls) == 4 and len(list(tmp_path.glob("*.safetensors"))) == 2
    np.testing.assert_allclose(shifted, first + 1.0, rtol=1e-4, atol=1e-4)
    extract_features(encoder, dataset, batch_size=12, num_layers=2, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3  # layers are part of the key


def test_array_pairs_and_empty_input(encoder):
    images = np.zeros((5, 32, 32, 3), np.uint8)
    features, labels = extract_features(encoder, (images, np.arange(5)), batch_size=2)
    assert features.shape == (5, 32) and labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="empty"):
        extract_features(encoder, (images[:0], np.arange(0)))
    with pytest.raises(ValueError, match="64x64 but the encoder takes 32x32"):
        extract_features(encoder, (np.zeros((2, 64, 64, 3), np.uint8), np.arange(2)))


def test_load_eval_encoder_picks_target_or_context(tmp_path):
    model = hjepa(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_hierarchies=1)
    model.encoder.norm.bias = model.encoder.norm.bias + 1.0  # make context and target differ
    run = tmp_path / "run"
    save_model_checkpoint(model, run / "checkpoints" / "step_000003" / "model.safetensors")
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step_000003"}))
    (run / "config.yaml").write_text("experiment:\n  seed: 5\n")
    target, path, config = load_eval_encoder(run)
    context, _, _ = load_eval_encoder(run, "context")
    assert path.name == "model.safetensors" and path.parent.name == "step_000003" and config["experiment"]["seed"] == 5
    np.testing.assert_array_equal(np.array(target.norm.bias), np.array(model.target_encoder.norm.bias))
    np.testing.assert_array_equal(np.array(context.norm.bias), np.array(model.encoder.norm.bias))

    exported = tmp_path / "encoder.safetensors"
    save_encoder(model.target_encoder, exported)
    assert load_eval_encoder(exported)[0].config() == target.config()
    with pytest.raises(ValueError, match="exported target encoder"):
        load_eval_encoder(exported, "context")


def test_random_init_is_same_shape_and_seeded(encoder):
    a, b, c = random_encoder_like(encoder, 1), random_encoder_like(encoder, 1), random_encoder_like(encoder, 2)
    assert a.config() == encoder.config()
    np.testing.assert_array_equal(np.array(a.blocks[0].attn.qkv.weight), np.array(b.blocks[0].attn.qkv.weight))
    assert not np.array_equal(np.array(a.blocks[0].attn.qkv.weight), np.array(c.blocks[0].attn.qkv.weight))
