"""`python -m mlx_hjepa.eval` end to end on a tiny encoder and the built-in synthetic data."""

import json
import subprocess
import sys

import mlx_hjepa  # noqa: F401  (preloads BLAS before mlx.core)
import mlx.core as mx
import pytest

from mlx_hjepa.eval.__main__ import main
from mlx_hjepa.weights import save_encoder, save_model_checkpoint
from mlx_hjepa.models import VisionTransformer
from helpers import hjepa

SMALL_SYNTHETIC = ["--dataset", "synthetic", "--dataset-option", "num_samples=120",
                   "--dataset-option", "resolution=32", "--epochs", "3", "--batch-size", "64", "--num-workers", "1"]


@pytest.fixture()
def exported(tmp_path):
    mx.random.seed(0)
    path = tmp_path / "encoder.safetensors"
    save_encoder(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2), path)
    return path


def check_shape(result, protocols):
    assert set(result) == {"dataset", "weights", "image_size", "crop_fraction", *protocols}
    assert result["dataset"] == "synthetic" and isinstance(result["weights"], str)
    if "knn" in protocols:
        assert set(result["knn"]) == {"top1", "top5", "k", "temperature"}
        assert result["knn"]["k"] == 20 and result["knn"]["temperature"] == 0.07
    if "linear" in protocols:
        assert set(result["linear"]) == {"top1", "top5", "lr", "weight_decay"}
        assert result["linear"]["lr"] > 0 and result["linear"]["weight_decay"] >= 0
    for protocol in protocols:
        scores = result[protocol]
        assert isinstance(scores["top1"], float) and 0 <= scores["top1"] <= scores["top5"] <= 1


def test_writes_eval_json_beside_the_weights(exported, capsys):
    assert main([str(exported), *SMALL_SYNTHETIC]) == 0
    result = json.loads((exported.parent / "eval.json").read_text())
    check_shape(result, ("knn", "linear"))
    assert result["weights"] == str(exported)
    out = capsys.readouterr().out
    assert "k-NN" in out and "linear" in out and "eval.json" in out
    assert len(list((exported.parent / "feature_cache").glob("*.safetensors"))) == 2  # train and val


def test_random_init_baseline_writes_its_own_file(exported):
    assert main([str(exported), *SMALL_SYNTHETIC, "--protocol", "knn", "--random-init", "--seed", "3"]) == 0
    check_shape(json.loads((exported.parent / "eval_random_init.json").read_text()), ("knn",))
    assert not (exported.parent / "eval.json").exists()


def test_run_directory_uses_its_latest_checkpoint_and_writes_there(tmp_path):
    model = hjepa(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_hierarchies=1)
    run = tmp_path / "run"
    save_model_checkpoint(model, run / "checkpoints" / "step_000007" / "model.safetensors")
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step_000007"}))
    (run / "config.yaml").write_text("experiment:\n  seed: 3\n")
    assert main([str(run), *SMALL_SYNTHETIC, "--protocol", "linear", "--which", "context"]) == 0
    result = json.loads((run / "eval.json").read_text())
    check_shape(result, ("linear",))
    assert result["weights"].endswith("step_000007/model.safetensors")


def test_user_errors_are_one_sentence_and_nonzero(exported, tmp_path, capsys):
    assert main([str(tmp_path / "missing"), *SMALL_SYNTHETIC]) == 1
    assert main([str(exported), *SMALL_SYNTHETIC, "--protocol", "knn,svm"]) == 1
    assert main([str(exported), *SMALL_SYNTHETIC, "--dataset-option", "num_samples"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("hjepa-eval: ") for line in errors)
    assert "does not exist" in errors[0] and "knn, linear" in errors[1] and "KEY=VALUE" in errors[2]


def test_mismatched_weights_list_the_keys_and_shapes(exported, capsys):
    arrays, metadata = mx.load(str(exported), return_metadata=True)
    del arrays["blocks.1.mlp.fc2.bias"]
    arrays["norm.weight"] = mx.ones((31,))
    mx.save_safetensors(str(exported), arrays, metadata)
    assert main([str(exported), *SMALL_SYNTHETIC]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hjepa-eval: Error(s) in loading")
    assert "blocks.1.mlp.fc2.bias" in err and "norm.weight" in err and "(31,)" in err


def test_module_entry_point_runs(exported):
    done = subprocess.run([sys.executable, "-m", "mlx_hjepa.eval", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--random-init" in done.stdout and "--protocol" in done.stdout


def test_class_list_picks_the_classes_of_both_splits(exported, tmp_path, monkeypatch):
    from fake_data import fake_imagenet

    from mlx_hjepa.data import ImageNet100Dataset
    from mlx_hjepa.eval import __main__ as eval_cli

    wnids = sorted(ImageNet100Dataset.CLASSES)[:3]
    root = fake_imagenet(tmp_path / "imagenet", wnids)
    listed = tmp_path / "two.txt"
    listed.write_text("\n".join(wnids[:2]))
    built = []
    real = eval_cli.build_dataset
    monkeypatch.setattr(eval_cli, "build_dataset", lambda *a, **kw: built.append(real(*a, **kw)) or built[-1])
    assert main([str(exported), "--dataset", "imagenet100", "--data-path", str(root), "--class-list", str(listed),
                 "--protocol", "knn", "--k", "1", "--num-workers", "1", "--no-cache"]) == 0
    assert [d.classes for d in built] == [wnids[:2], wnids[:2]] and [len(d) for d in built] == [4, 4]
