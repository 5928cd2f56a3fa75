"""The README's first command, end to end: configs/quickstart.yaml pretrains on the built-in
synthetic data, exports its target encoder, and that encoder beats a randomly initialised
one on k-NN (the trainer's own final evaluation, written to eval_knn.json).

This runs the real config, shortened from 4 epochs to 3 so that it takes about 4 minutes
on a 2-core CPU (the full quickstart takes about 5; 3 epochs: k-NN 33.9% vs 13.3% at seed 0)."""

import json
from pathlib import Path

import mlx_hjepa
from mlx_hjepa import config as C
from mlx_hjepa.train.__main__ import main

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
SHORTER = ["--set", "training.epochs=3", "--set", "evaluation.eval_frequency=3"]


def test_quickstart_learns_and_exports_a_loadable_encoder(tmp_path):
    assert main([str(QUICKSTART), "--output-dir", str(tmp_path), *SHORTER]) == 0
    cfg = C.load_config(QUICKSTART)
    run_dir = tmp_path / cfg.experiment.name

    result = json.loads((run_dir / "eval_knn.json").read_text())
    trained, random_init = result["trained"]["knn_top1"], result["random_init"]["top1"]
    assert trained > random_init + 0.10, f"k-NN top-1: trained {trained:.1%} vs random init {random_init:.1%}"
    assert 0.1 < result["raw_pixels"]["top1"] <= 1.0  # the pixel floor is reported beside them, same protocol

    encoder = mlx_hjepa.load_encoder(run_dir / "encoder.safetensors")
    assert (encoder.img_size, encoder.patch_size, encoder.depth) == (cfg.data.image_size, 8, cfg.model.depth)
