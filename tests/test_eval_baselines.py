"""The floors every evaluation is quoted beside: random-init encoder and raw pixels, same protocol."""

import json

import mlx_hjepa  # noqa: F401  (preloads BLAS before mlx.core)
import mlx.core as mx
import numpy as np
import pytest

from mlx_hjepa.data import JEPAEvalTransform, build_dataset
from mlx_hjepa.eval.__main__ import main
from mlx_hjepa.eval.baselines import baseline_features, pixel_features, pixel_knn
from mlx_hjepa.eval.features import extract_features
from mlx_hjepa.weights import save_encoder
from mlx_hjepa.models import VisionTransformer
from mlx_hjepa.rules import IMAGENET_MEAN, IMAGENET_STD

from test_eval_cli import SMALL_SYNTHETIC


def two_class_images(n=40, seed=0):
    """Class 0 dark left half, class 1 dark right half, plus noise: raw pixels separate them."""
    rng = np.random.default_rng(seed)
    images = rng.integers(100, 156, (n, 16, 16, 3)).astype(np.uint8)
    labels = np.arange(n) % 2
    images[labels == 0, :, :8] //= 4
    images[labels == 1, :, 8:] //= 4
    return images, labels.astype(np.int32)


def test_pixel_features_are_the_normalised_flattened_eval_images():
    images, labels = two_class_images(6)
    features, got_labels = pixel_features((images, labels), 16)
    expected = ((images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).reshape(6, -1)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_labels, labels)


def test_pixel_features_of_a_dataset_go_through_the_eval_transform():
    dataset = build_dataset("synthetic", split="val", image_size=32, num_samples=8, resolution=48)
    features, _ = pixel_features(dataset, 32, batch_size=4)
    assert features.shape == (8, 32 * 32 * 3)
    first = JEPAEvalTransform(32)(dataset[0]["image"])  # resize to 36, centre crop 32
    expected = (first / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(features[0], expected.reshape(-1), atol=1e-5)


def test_pixel_knn_separates_what_pixels_separate():
    train, test = two_class_images(40, seed=0), two_class_images(20, seed=1)
    assert pixel_knn(train, test, 16, k=5)["top1"] == 1.0
    shuffled = (test[0], 1 - test[1])
    assert pixel_knn(train, shuffled, 16, k=5)["top1"] == 0.0


def test_random_init_baseline_is_a_fresh_encoder_of_the_same_shape():
    mx.random.seed(5)
    encoder = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
    data = two_class_images(8)
    trained, _ = extract_features(encoder, data)
    fresh_a, _ = baseline_features("random_init", encoder, data, seed=1)
    fresh_b, _ = baseline_features("random_init", encoder, data, seed=1)
    other, _ = baseline_features("random_init", encoder, data, seed=2)
    assert fresh_a.shape == trained.shape
    np.testing.assert_array_equal(fresh_a, fresh_b)
    assert not np.allclose(fresh_a, other) and not np.allclose(fresh_a, trained)
    with pytest.raises(ValueError, match="random_init, raw_pixels"):
        baseline_features("imagenet_supervised", encoder, data)


def test_cli_baselines_writes_all_three_side_by_side(tmp_path, capsys):
    mx.random.seed(0)
    path = tmp_path / "encoder.safetensors"
    save_encoder(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2), path)
    assert main([str(path), *SMALL_SYNTHETIC, "--baselines", "--seed", "0"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["baselines"]) == {"random_init", "raw_pixels"}
    for name in ("random_init", "raw_pixels"):
        assert set(result["baselines"][name]) == {"knn", "linear"}
        assert 0 <= result["baselines"][name]["knn"]["top1"] <= 1
    # the random-init row is what --random-init alone measures with the same seed
    assert main([str(path), *SMALL_SYNTHETIC, "--random-init", "--seed", "0", "--protocol", "knn"]) == 0
    alone = json.loads((tmp_path / "eval_random_init.json").read_text())
    assert alone["knn"] == result["baselines"]["random_init"]["knn"]
    out = capsys.readouterr().out
    assert "random init" in out and "raw pixels" in out


# ---------------------------------------------------------------- the eval crop (evaluation.crop_fraction)

def eval_pixels(dataset, n, transform):
    images = np.stack([transform(dataset[i]["image"]) for i in range(n)])
    return ((images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).reshape(n, -1)


def test_crop_fraction_1_reads_the_whole_image_and_every_reader_takes_the_datasets_own():
    from mlx_hjepa.config import load_config
    from mlx_hjepa.data import build_eval_datasets

    def eval_sets(crop):
        cfg = load_config({"data": {"dataset": "synthetic", "image_size": 32}, "model": {"patch_size": 8, "num_hierarchies": 1},
                           "loss": {"hierarchy_weights": [1.0]},
                           "evaluation": {"crop_fraction": crop}})
        return build_eval_datasets(cfg)

    whole, zoomed = eval_sets(1.0), eval_sets(0.875)
    assert {d.transform.crop_fraction for d in whole} == {1.0}
    assert {d.transform.crop_fraction for d in zoomed} == {0.875}
    # pixel features (and so encoder features: same reader) go through the dataset's own eval transform
    got_whole, _ = pixel_features(whole[1], 32, batch_size=4)
    got_zoomed, _ = pixel_features(zoomed[1], 32, batch_size=4)
    np.testing.assert_allclose(got_whole[:4], eval_pixels(whole[1], 4, JEPAEvalTransform(32, 1.0)), atol=1e-5)
    np.testing.assert_allclose(got_zoomed[:4], eval_pixels(zoomed[1], 4, JEPAEvalTransform(32, 0.875)), atol=1e-5)
    assert not np.allclose(got_zoomed[:4], got_whole[:4], atol=1e-2)
    # a training split's augmentation is never used for features: it falls back to the default eval transform
    train = build_dataset("synthetic", split="train", image_size=32)
    first, _ = pixel_features(train, 32, batch_size=4)
    np.testing.assert_allclose(first[:4], eval_pixels(train, 4, JEPAEvalTransform(32)), atol=1e-5)


def test_cli_crop_fraction_defaults_to_the_runs_and_is_recorded(tmp_path, capsys):
    from helpers import hjepa
    from mlx_hjepa.weights import save_model_checkpoint

    model = hjepa(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_hierarchies=1)
    run = tmp_path / "run"
    save_model_checkpoint(model, run / "checkpoints" / "step_000001" / "model.safetensors")
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step_000001"}))
    (run / "config.yaml").write_text("experiment:\n  seed: 0\nevaluation:\n  crop_fraction: 1.0\n")
    args = [str(run), *SMALL_SYNTHETIC, "--protocol", "knn", "--baselines"]
    assert main(args) == 0
    whole = json.loads((run / "eval.json").read_text())
    assert whole["crop_fraction"] == 1.0 and whole["image_size"] == 32
    assert main([*args, "--crop-fraction", "0.875"]) == 0
    zoomed = json.loads((run / "eval.json").read_text())
    assert zoomed["crop_fraction"] == 0.875
    # the pixel floor is read through the same crop as the encoder
    assert whole["baselines"]["raw_pixels"]["knn"] != zoomed["baselines"]["raw_pixels"]["knn"]
    capsys.readouterr()
    assert main([*args, "--crop-fraction", "1.5"]) != 0
    err = capsys.readouterr().err
    assert "--crop-fraction is 1.5" in err and len(err.strip().splitlines()) == 1
