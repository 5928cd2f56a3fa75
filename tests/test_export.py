"""Export to safetensors (timm and MLX layouts), the trainer's checkpoint format, strict loading back."""

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
import yaml
from mlx.utils import tree_flatten, tree_map

from mlx_hjepa import export, load_encoder, weights
from mlx_hjepa.models import HJEPA, VisionTransformer, sincos_pos_embed_2d

VIT_TINY = dict(embed_dim=192, depth=12, num_heads=3)
VIT_SMALL = dict(embed_dim=384, depth=12, num_heads=6)
SMALL_HJEPA = dict(img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2)


def timm_block_shapes(dim, hidden):
    return {
        "norm1.weight": (dim,), "norm1.bias": (dim,),
        "attn.qkv.weight": (3 * dim, dim), "attn.qkv.bias": (3 * dim,),
        "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
        "norm2.weight": (dim,), "norm2.bias": (dim,),
        "mlp.fc1.weight": (hidden, dim), "mlp.fc1.bias": (hidden,),
        "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": (dim,),
    }


# state_dict() of timm.create_model("vit_{tiny,small}_patch16_224", class_token=False, global_pool="avg",
# fc_norm=False, num_classes=0): no cls_token/reg_token, head/fc_norm are Identity, pos_embed has no prefix slot.
TIMM_VIT_TINY_224 = {
    "pos_embed": (1, 196, 192),
    "patch_embed.proj.weight": (192, 3, 16, 16), "patch_embed.proj.bias": (192,),
    **{f"blocks.{i}.{k}": s for i in range(12) for k, s in timm_block_shapes(192, 768).items()},
    "norm.weight": (192,), "norm.bias": (192,),
}
TIMM_VIT_SMALL_224 = {
    "pos_embed": (1, 196, 384),
    "patch_embed.proj.weight": (384, 3, 16, 16), "patch_embed.proj.bias": (384,),
    **{f"blocks.{i}.{k}": s for i in range(12) for k, s in timm_block_shapes(384, 1536).items()},
    "norm.weight": (384,), "norm.bias": (384,),
}


def random_encoder(seed=0, **kwargs):
    """An encoder whose every parameter is random (norms and biases too), so a swapped tensor shows."""
    mx.random.seed(seed)
    encoder = VisionTransformer(**kwargs)  # weights are random already; biases and norms are 0 and 1
    encoder.update(tree_map(lambda p: p + 0.1 * mx.random.normal(p.shape) if p.ndim == 1 else p,
                            encoder.parameters()))
    mx.eval(encoder.parameters())
    return encoder


def small_hjepa(seed=0):
    mx.random.seed(seed)
    model = HJEPA(VisionTransformer(**SMALL_HJEPA), predictor_dim=32, predictor_depth=1, predictor_heads=2,
                  num_hierarchies=2)
    # Make context, target, predictor and heads all differ, so a mixed-up prefix cannot pass.
    model.update(tree_map(lambda p: p + 0.1 * mx.random.normal(p.shape), model.parameters()))
    mx.eval(model.parameters())
    return model


def images(size, seed=0):
    return mx.array(np.random.default_rng(seed).normal(size=(2, size, size, 3)).astype(np.float32))


def assert_same_encoder(a, b):
    pa, pb = dict(tree_flatten(a.parameters())), dict(tree_flatten(b.parameters()))
    assert pa.keys() == pb.keys()
    for k in pa:
        assert pa[k].dtype == pb[k].dtype and mx.array_equal(pa[k], pb[k]), k
    assert mx.array_equal(a.pos_embed, b.pos_embed)


def fake_run(tmp_path, model):
    """RUN/config.yaml and RUN/checkpoints/{latest.json, step_000007/model.safetensors}, as the trainer writes."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "vit_tiny"}, "optim": {"lr": 0.001}}))
    weights.save_model_checkpoint(model, run / "checkpoints" / "step_000007" / "model.safetensors",
                                 {"step": "7"})
    (run / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "step_000007"}))
    return run


@pytest.mark.parametrize("dims,size", [(VIT_TINY, 32), (VIT_SMALL, 64)], ids=["tiny32", "small64"])
@pytest.mark.parametrize("layout", ["timm", "mlx"])
def test_export_then_load_is_bit_identical(tmp_path, dims, size, layout):
    encoder = random_encoder(img_size=size, patch_size=16, **dims)
    path = weights.save_encoder(encoder, tmp_path / "encoder.safetensors", layout=layout)
    loaded = load_encoder(path)
    assert loaded.config() == encoder.config()
    assert_same_encoder(loaded, encoder)
    x = images(size)
    assert mx.array_equal(loaded(x), encoder(x))


@pytest.mark.parametrize("dims,expected", [(VIT_TINY, TIMM_VIT_TINY_224), (VIT_SMALL, TIMM_VIT_SMALL_224)],
                         ids=["vit_tiny", "vit_small"])
def test_timm_layout_has_timms_names_and_shapes(dims, expected):
    encoder = VisionTransformer(img_size=224, patch_size=16, **dims)
    assert weights.shapes_of(weights.to_timm(encoder)) == expected


def test_timm_file_holds_oihw_kernel_sincos_pos_embed_and_metadata(tmp_path):
    encoder = random_encoder(img_size=224, patch_size=16, **VIT_TINY)
    path = weights.save_encoder(encoder, tmp_path / "encoder.safetensors", training_config={"lr": 1e-3})
    arrays, meta = mx.load(str(path), return_metadata=True)
    assert weights.shapes_of(arrays) == TIMM_VIT_TINY_224
    kernel = np.array(encoder.patch_embed.proj.weight)  # (O, kH, kW, I)
    np.testing.assert_array_equal(np.array(arrays["patch_embed.proj.weight"]), kernel.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(np.array(arrays["pos_embed"]), sincos_pos_embed_2d(192, 14, 14)[None])
    assert meta["format"] == "pt" and meta["layout"] == "timm"
    assert meta["model_name"] == "vit_tiny_patch16_224" and meta["timm_architecture"] == "vit_tiny_patch16_224"
    assert (meta["img_size"], meta["patch_size"], meta["embed_dim"], meta["depth"], meta["num_heads"]) == (
        "224", "16", "192", "12", "3")
    assert json.loads(meta["training_config"]) == {"lr": 1e-3}
    assert json.loads(meta["timm_model_args"])["class_token"] is False
    assert meta["mlx_hjepa_version"]


def test_model_name_spells_out_non_preset_dims():
    config = VisionTransformer(**SMALL_HJEPA).config()
    assert weights.model_name(config) == "vit_d64_depth2_heads2_mlp4_patch16_32"
    assert weights.timm_architecture(config) == "vit_base_patch16_224"  # every dim comes from model_args


def test_full_checkpoint_round_trip_and_encoder_from_it(tmp_path):
    model = small_hjepa()
    path = weights.save_model_checkpoint(model, tmp_path / "ckpt" / "model.safetensors", {"step": "3"})
    assert not list((tmp_path / "ckpt").glob(".*tmp*"))  # the temporary name was renamed away
    loaded = weights.load_model_checkpoint(path)
    original, restored = dict(tree_flatten(model.parameters())), dict(tree_flatten(loaded.parameters()))
    assert original.keys() == restored.keys()
    assert all(mx.array_equal(original[k], restored[k]) for k in original)
    assert any(k.startswith("heads.1.") for k in restored) and "predictor.mask_token" in restored
    assert tree_flatten(loaded.target_encoder.trainable_parameters()) == []  # still frozen
    assert mx.load(str(path), return_metadata=True)[1]["step"] == "3"
    assert_same_encoder(load_encoder(path), model.target_encoder)
    assert_same_encoder(load_encoder(path, which="context"), model.encoder)


def test_cli_exports_a_run(tmp_path, capsys):
    model = small_hjepa()
    run = fake_run(tmp_path, model)
    out = tmp_path / "encoder.safetensors"
    assert export.main([str(run), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert_same_encoder(load_encoder(out), model.target_encoder)
    meta = mx.load(str(out), return_metadata=True)[1]
    assert meta["which"] == "target" and meta["checkpoint"] == "step_000007"
    assert json.loads(meta["training_config"])["optim"]["lr"] == 0.001

    context = tmp_path / "context.safetensors"
    ckpt_dir = run / "checkpoints" / "step_000007"
    assert export.main([str(ckpt_dir), "--out", str(context), "--which", "context", "--layout", "mlx"]) == 0
    assert mx.load(str(context), return_metadata=True)[1]["layout"] == "mlx"
    assert_same_encoder(load_encoder(context), model.encoder)

    full = tmp_path / "full.safetensors"
    assert export.main([str(run), "--out", str(full), "--full"]) == 0
    loaded, meta = weights.load_model_checkpoint(full, return_metadata=True)
    restored = dict(tree_flatten(loaded.parameters()))
    assert all(mx.array_equal(v, restored[k]) for k, v in tree_flatten(model.parameters()))
    assert meta["step"] == "7" and meta["checkpoint"] == "step_000007" and "training_config" in meta


def test_cli_writes_a_hugging_face_folder(tmp_path):
    model = small_hjepa()
    hub = tmp_path / "hub"
    assert export.main([str(fake_run(tmp_path, model)), "--hf-dir", str(hub)]) == 0
    assert sorted(p.name for p in hub.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((hub / "config.json").read_text())
    assert config["num_classes"] == 0 and config["global_pool"] == "avg"
    args = config["model_args"]
    assert (args["class_token"], args["fc_norm"], args["img_size"], args["embed_dim"]) == (False, False, 32, 64)
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert_same_encoder(load_encoder(hub / "model.safetensors"), model.target_encoder)


@pytest.mark.parametrize("args,message", [
    (["{tmp}/nowhere", "--out", "{tmp}/e.safetensors"], "does not exist"),
    (["{run}", "--out", "{tmp}/e.pt"], "must end in .safetensors"),
    (["{run}", "--out", "{tmp}/e.safetensors", "--which", "all", "--layout", "timm"], "MLX layout"),
    (["{run}"], "Nothing to write"),
    (["{tmp}", "--out", "{tmp}/e.safetensors"], "checkpoints/latest.json"),
])
def test_cli_user_errors_are_one_clear_line(tmp_path, capsys, args, message):
    run = fake_run(tmp_path, small_hjepa())
    argv = [a.format(tmp=tmp_path, run=run) for a in args]
    assert export.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_module_exits_nonzero_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mlx_hjepa.export", str(tmp_path / "missing"),
                             "--out", str(tmp_path / "e.safetensors")], capture_output=True, text=True)
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_truncated_file_is_a_clear_error(tmp_path):
    path = weights.save_encoder(random_encoder(**SMALL_HJEPA), tmp_path / "encoder.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_encoder(path)
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_encoder(path)


def test_foreign_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "foreign.safetensors"
    mx.save_safetensors(str(path), {"encoder.layer0.w": mx.zeros((3, 3)), "fc.bias": mx.ones((3,))})
    with pytest.raises(ValueError, match="no mlx-hjepa metadata"):
        load_encoder(path)
    with pytest.raises(ValueError, match="not a full mlx-hjepa checkpoint"):
        weights.load_model_checkpoint(path)


def test_strict_loading_lists_missing_unexpected_and_shape_differences(tmp_path):
    encoder = random_encoder(**SMALL_HJEPA)
    state = weights.to_timm(encoder)
    state.pop("norm.bias")
    state["head.weight"] = mx.zeros((10, 64))
    state["blocks.1.mlp.fc1.weight"] = mx.zeros((128, 64))
    path = tmp_path / "edited.safetensors"
    mx.save_safetensors(str(path), state, weights.encoder_metadata(encoder, "timm", "target"))
    with pytest.raises(ValueError) as info:
        load_encoder(path)
    text = str(info.value)
    assert "Missing key(s) (1): norm.bias" in text
    assert "Unexpected key(s) (1): head.weight" in text
    assert "size mismatch for blocks.1.mlp.fc1.weight: the file has (128, 64), the model needs (256, 64)" in text


def test_file_for_another_model_size_is_a_clear_error(tmp_path):
    path = weights.save_encoder(random_encoder(**SMALL_HJEPA), tmp_path / "encoder.safetensors")
    with pytest.raises(ValueError, match=r"embed_dim=64.*not the expected embed_dim=384"):
        load_encoder(path, embed_dim=384, img_size=32)
    assert load_encoder(path, embed_dim=64, img_size=32).embed_dim == 64
    # Metadata that claims one size over tensors of another is caught by the strict shape check.
    bigger = VisionTransformer(**{**SMALL_HJEPA, "embed_dim": 128})
    mx.save_safetensors(str(path), weights.to_timm(bigger), weights.encoder_metadata(random_encoder(**SMALL_HJEPA),
                                                                                    "timm", "target"))
    with pytest.raises(ValueError, match="size mismatch for pos_embed"):
        load_encoder(path)


def test_timm_loads_the_file_strictly_and_matches_our_features(tmp_path):
    """Optional (torch + timm): timm builds the encoder from our file and agrees on features."""
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    encoder = random_encoder(img_size=32, patch_size=16, **VIT_TINY)
    path = weights.save_encoder(encoder, tmp_path / "encoder.safetensors")
    x = images(32)
    ours = np.array(encoder(x).mean(axis=1))
    torch_x = torch.from_numpy(np.array(x).transpose(0, 3, 1, 2).copy())

    meta = mx.load(str(path), return_metadata=True)[1]
    # num_classes=0 in the overlay as well, or timm drops the head keys and silently loads non-strictly.
    model = timm.create_model(meta["timm_architecture"], pretrained=True, **json.loads(meta["timm_model_args"]),
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=0)).eval()
    from safetensors.torch import load_file
    model.load_state_dict(load_file(str(path)), strict=True)  # the exact key set, no filter in between
    with torch.no_grad():
        theirs = model(torch_x).numpy()
    assert np.linalg.norm(theirs - ours) / np.linalg.norm(ours) < 1e-4

    hub = tmp_path / "hub"
    export.save_hf_dir(encoder, hub)
    model = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()
    with torch.no_grad():
        theirs = model(torch_x).numpy()
    assert np.linalg.norm(theirs - ours) / np.linalg.norm(ours) < 1e-4
