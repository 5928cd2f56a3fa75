"""model.activation: auto (the default) picks fast_gelu on the CPU backend and exact GELU on a GPU,
and the run records the one that ran."""

import json
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_hjepa import config as C
from mlx_hjepa.models import vit
from mlx_hjepa.models import HJEPA
from mlx_hjepa.rundir import RUN_FILE
from mlx_hjepa.train import __main__ as train_cli

sys.path.insert(0, str(Path(__file__).parent))
from test_train import TINY_RUN  # noqa: E402


def test_auto_is_the_default_and_resolves_by_backend(monkeypatch):
    cfg = C.load_config({"data": {"dataset": "synthetic"}})
    assert cfg.model.activation == "auto"
    with mx.stream(mx.cpu):
        monkeypatch.setattr(vit.mx, "default_device", lambda: mx.Device(mx.DeviceType.cpu))
        assert vit.resolve_activation("auto") == "fast_gelu"
        monkeypatch.setattr(vit.mx, "default_device", lambda: mx.Device(mx.DeviceType.gpu))
        assert vit.resolve_activation("auto") == "gelu"
        assert vit.resolve_activation("fast_gelu") == "fast_gelu"  # an explicit choice is kept anywhere


def test_auto_encoder_names_what_ran_and_matches_that_activation(monkeypatch):
    monkeypatch.setattr(vit.mx, "default_device", lambda: mx.Device(mx.DeviceType.cpu))
    mx.random.seed(0)
    auto = vit.VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2, act="auto")
    fast = vit.VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2, act="fast_gelu")
    exact = vit.VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2, act="gelu")
    fast.update(auto.parameters())
    exact.update(auto.parameters())
    assert auto.act == auto.config()["act"] == "fast_gelu"  # export metadata and checkpoints carry this name
    x = mx.random.normal((2, 32, 32, 3))
    assert np.array_equal(np.array(auto(x)), np.array(fast(x)))
    assert not np.array_equal(np.array(auto(x)), np.array(exact(x)))


def test_run_json_records_the_activation_that_ran(tmp_path):
    cfg = C.load_config(Path(__file__).parent.parent / "configs" / "quickstart.yaml",
                        TINY_RUN + [f"experiment.output_dir={tmp_path}"])
    assert cfg.model.activation == "auto"
    assert train_cli.main([str(Path(__file__).parent.parent / "configs" / "quickstart.yaml"), "--output-dir",
                           str(tmp_path), *(a for item in TINY_RUN for a in ("--set", item)), "--stop-at-step", "1"]) == 0
    record = json.loads((C.run_dir_of(cfg) / RUN_FILE).read_text())
    expected = "fast_gelu" if mx.default_device().type == mx.DeviceType.cpu else "gelu"
    assert record["activation"] == HJEPA.from_config(C.model_config(cfg)).encoder.act == expected


def test_unknown_activation_names_the_choices():
    with pytest.raises(C.ConfigError, match="auto"):
        C.load_config({"data": {"dataset": "synthetic"}, "model": {"activation": "fastgelu"}})


def test_timm_features_of_an_auto_encoder_stay_within_the_export_tolerance(tmp_path, monkeypatch):
    """Optional (torch + timm): an encoder trained with auto on the CPU (fast_gelu) is exported and
    rebuilt by timm with exact GELU; the features differ, by far less than the export tolerance (1e-4)."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from test_export import VIT_TINY, images, random_encoder

    from mlx_hjepa import weights as export

    monkeypatch.setattr(vit.mx, "default_device", lambda: mx.Device(mx.DeviceType.cpu))
    encoder = random_encoder(img_size=32, patch_size=16, act="auto", **VIT_TINY)
    assert encoder.act == "fast_gelu"
    path = export.save_encoder(encoder, tmp_path / "encoder.safetensors")
    x = images(32)
    ours = np.array(encoder(x).mean(axis=1))
    meta = mx.load(str(path), return_metadata=True)[1]
    assert meta["act"] == "fast_gelu"
    model = timm.create_model(meta["timm_architecture"], pretrained=True, **json.loads(meta["timm_model_args"]),
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=0)).eval()
    with torch.no_grad():
        theirs = model(torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy())).numpy()
    relative = np.linalg.norm(theirs - ours) / np.linalg.norm(ours)
    print(f"timm (exact GELU) vs fast_gelu features, relative L2 difference: {relative:.2e}")
    assert 0 < relative < 1e-4
