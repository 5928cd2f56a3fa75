import mlx.core as mx
import numpy as np
import pytest
from helpers import TINY, tiny_hjepa
from mlx.utils import tree_flatten

from mlx_hjepa.models import VisionTransformer, sincos_pos_embed_2d
from mlx_hjepa.rules import PRESETS, encoder_config, parse_model_name


def test_timm_names_and_shapes():
    enc = VisionTransformer(img_size=32, patch_size=16, embed_dim=192, depth=2, num_heads=3)
    shapes = {k: v.shape for k, v in tree_flatten(enc.parameters())}
    expected = {"patch_embed.proj.weight": (192, 16, 16, 3), "patch_embed.proj.bias": (192,),
                "norm.weight": (192,), "norm.bias": (192,)}
    for i in range(2):
        p = f"blocks.{i}."
        expected.update({p + "norm1.weight": (192,), p + "norm1.bias": (192,),
                         p + "attn.qkv.weight": (576, 192), p + "attn.qkv.bias": (576,),
                         p + "attn.proj.weight": (192, 192), p + "attn.proj.bias": (192,),
                         p + "norm2.weight": (192,), p + "norm2.bias": (192,),
                         p + "mlp.fc1.weight": (768, 192), p + "mlp.fc1.bias": (768,),
                         p + "mlp.fc2.weight": (192, 768), p + "mlp.fc2.bias": (192,)})
    assert shapes == expected  # no pos_embed, no cls_token among the parameters
    assert enc.pos_embed.shape == (1, 4, 192)
    assert enc.norm.eps == 1e-6 and enc.blocks[0].norm1.eps == 1e-6


def test_sincos_embedding_layout():
    emb = sincos_pos_embed_2d(8, 2, 3)  # quarter = 2 frequencies: [sin(col), cos(col), sin(row), cos(row)]
    assert emb.shape == (6, 8)
    row, col = 1, 2
    omega = 1.0 / 10000 ** (np.arange(2) / 2)
    expected = np.concatenate([np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)])
    np.testing.assert_allclose(emb[row * 3 + col], expected, rtol=1e-6)
    assert len({tuple(r) for r in np.round(emb, 6)}) == 6  # every position distinct


def test_presets_and_names():
    assert parse_model_name("vit_small_patch16_224") == ("vit_small", 16, 224)
    assert parse_model_name("vit_base_patch14") == ("vit_base", 14, None)
    enc = VisionTransformer(**encoder_config("vit_tiny_patch8_64", img_size=32, depth=1))
    assert (enc.embed_dim, enc.num_heads, enc.patch_size, enc.depth) == (192, 3, 8, 1)
    assert PRESETS["vit_large"] == dict(embed_dim=1024, depth=24, num_heads=16)
    with pytest.raises(ValueError, match="vit_small_patch16_224"):
        parse_model_name("resnet50")
    with pytest.raises(ValueError, match="divisible"):
        VisionTransformer(img_size=50, patch_size=16, embed_dim=64, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="Patch size 12"):
        VisionTransformer(img_size=48, patch_size=12, embed_dim=64, depth=1, num_heads=2)


def test_output_shapes_and_token_selection():
    mx.random.seed(0)
    enc = VisionTransformer(**TINY)
    x = mx.random.normal((2, 48, 48, 3))
    assert enc(x).shape == (2, 36, 64)
    idx = mx.array([[0, 5, 7], [1, 2, 35]])
    assert enc(x, idx).shape == (2, 3, 64)
    tokens, hidden = enc(x, return_layers=2)
    assert tokens.shape == (2, 36, 64) and len(hidden) == 2 and hidden[-1].shape == (2, 36, 64)


def test_patch_outside_token_indices_cannot_change_output():
    mx.random.seed(1)
    enc = VisionTransformer(**TINY)
    x = np.array(mx.random.normal((1, 48, 48, 3)))
    kept = mx.array([[0, 1, 6, 7, 20]])  # patch 35 (bottom-right) is not among them
    base = enc(mx.array(x), kept)
    outside, inside = x.copy(), x.copy()
    outside[:, 40:48, 40:48] += 5.0  # patch 35
    inside[:, 0:8, 0:8] += 5.0  # patch 0
    np.testing.assert_array_equal(np.array(enc(mx.array(outside), kept)), np.array(base))
    assert not np.allclose(np.array(enc(mx.array(inside), kept)), np.array(base))


def test_target_is_exact_frozen_copy_of_context():
    model = tiny_hjepa()
    ctx = dict(tree_flatten(model.encoder.parameters()))
    tgt = dict(tree_flatten(model.target_encoder.parameters()))
    assert ctx.keys() == tgt.keys()
    for k in ctx:
        np.testing.assert_array_equal(np.array(ctx[k]), np.array(tgt[k]))
    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    assert not any(k.startswith("target_encoder") for k in trainable)
    assert any(k.startswith("encoder.") for k in trainable) and any(k.startswith("predictor.") for k in trainable)
    assert sum(k.startswith("heads.") and k.endswith("weight") for k in trainable) == model.num_hierarchies


def test_predictor_blocks_are_independent_in_the_batched_call():
    model = tiny_hjepa()
    mx.random.seed(2)
    ctx_idx = mx.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    tokens = mx.random.normal((1, 10, 64))
    targets = mx.array([[[20, 21, 26, 27], [30, 31, 32, 33], [14, 15, 16, 17]]])
    together = model.predictor(tokens, ctx_idx, targets)
    assert together.shape == (1, 3, 4, 64)
    for m in range(3):
        alone = model.predictor(tokens, ctx_idx, targets[:, m : m + 1])
        np.testing.assert_allclose(np.array(alone[:, 0]), np.array(together[:, m]), atol=1e-5)


def test_hierarchy_levels_validated():
    with pytest.raises(ValueError, match="use 1 to 4"):
        tiny_hjepa(num_hierarchies=5)
    with pytest.raises(ValueError, match="use at most 3"):
        tiny_hjepa(num_hierarchies=4, img_size=32)  # 4x4 grid cannot hold 8x8 windows


def test_fast_gelu_encoder_stays_within_the_export_tolerance_of_exact_gelu():
    """Weights trained with fast_gelu are exported to timm's exact-GELU ViT: features must agree to 1e-4."""
    mx.random.seed(3)
    exact = VisionTransformer(img_size=64, patch_size=16, embed_dim=192, depth=12, num_heads=3)
    fast = VisionTransformer(img_size=64, patch_size=16, embed_dim=192, depth=12, num_heads=3, act="fast_gelu")
    fast.update(exact.parameters())
    x = mx.random.normal((4, 64, 64, 3))
    a, b = np.array(exact(x)), np.array(fast(x))
    assert np.abs(a - b).max() / np.abs(a).max() < 1e-4
    assert not np.array_equal(a, b)  # it is a different function, not an alias


def test_activation_is_a_config_key():
    from mlx_hjepa.config import ConfigError, load_config

    assert load_config({"data": {"dataset": "synthetic"}, "model": {"activation": "fast_gelu"}}).model.activation == "fast_gelu"
    with pytest.raises(ConfigError, match="fast_gelu"):
        load_config({"data": {"dataset": "synthetic"}, "model": {"activation": "fast-gelu"}})
