"""The run report and the images written during training, on a tiny 3-epoch run."""

import io
import json
import re
import sys

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image
from test_train import tiny_args

from mlx_hjepa.report import __main__ as report_cli
from mlx_hjepa.report import build, curves
from mlx_hjepa.viz import analysis, overlays
from mlx_hjepa.train import __main__ as train_cli
from mlx_hjepa.train import metrics as metrics_module

# 48 px images in 8 px patches (6x6 grid), 2 heads, 2 levels, 4 targets; 4 steps per epoch.
IMAGE, PATCH, HEADS, TARGETS = 48, 8, 2, 4
PAD, TEXT_H = overlays.PAD, overlays.TEXT_H


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """3 epochs with log_images and log_attention every 2 epochs, TensorBoard on but not installed."""
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
        with pytest.warns(UserWarning, match="tensorboard package is not installed"):
            code = train_cli.main([str(a) for a in tiny_args(
                out, "training.epochs=3", "logging.log_images=true", "logging.log_attention=true",
                "logging.image_frequency=2", "evaluation.eval_frequency=3", "logging.use_tensorboard=true")])
    assert code == 0
    run_dir = out / "quickstart"
    report_dir = out / "report"
    assert report_cli.main([str(run_dir), "--out", str(report_dir)]) == 0
    return run_dir, report_dir


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_not_blank(array):
    assert array.astype(np.float64).std() > 10, "picture is (nearly) one colour"


def test_training_writes_images_at_the_named_epochs_without_tensorboard(run):
    run_dir, _ = run
    written = sorted(p.name for p in (run_dir / "images").iterdir())
    assert written == [f"{kind}_epoch{e:04d}.png" for kind in ("attention", "features", "masks") for e in (2, 3)]
    for name in written:
        assert_not_blank(pixels(run_dir / "images" / name))
    assert not (run_dir / "tensorboard").exists() or not any((run_dir / "tensorboard").iterdir())


def test_training_sends_images_to_tensorboard_when_it_is_on(tmp_path, monkeypatch):
    sent = []

    class FakeWriter:
        def __init__(self, log_dir):
            pass

        def scalars(self, step, record):
            pass

        def image(self, step, tag, png, height, width):
            sent.append((step, tag, png, height, width))

        def close(self):
            pass

    monkeypatch.setattr(metrics_module, "TensorBoardWriter", FakeWriter)
    # log_images alone, default frequency: every checkpoint.save_frequency (1) epochs
    code = train_cli.main([str(a) for a in tiny_args(tmp_path, "training.epochs=1", "logging.log_images=true",
                                                     "logging.use_tensorboard=true")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "quickstart" / "images").iterdir()) == ["masks_epoch0001.png"]
    assert [(step, tag) for step, tag, *_ in sent] == [(4, "images/masks")]
    _, _, png, height, width = sent[0]
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (width, height)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                          pixels(tmp_path / "quickstart" / "images" / "masks_epoch0001.png"))


def test_masks_section_has_the_grid_size_and_every_legend_colour(run):
    _, report = run
    tile = IMAGE * overlays.tile_scale(IMAGE)
    picture = pixels(report / "masks.png")
    body_h = 2 * tile + 3 * PAD  # 8 images in 2 rows of 4, legend below
    assert picture.shape[1] == 4 * tile + 5 * PAD and picture.shape[0] > body_h
    body = picture[:body_h]
    assert_not_blank(body)
    colours = {tuple(c) for c in body.reshape(-1, 3)}
    for name, colour in overlays.legend_items(TARGETS, 2):
        assert tuple(colour) in colours, f"{name} colour {colour} is not drawn"


def test_attention_features_and_neighbour_sections_have_their_layout(run):
    _, report = run
    tile = IMAGE * overlays.tile_scale(IMAGE, at_least=96)
    queries = len(overlays.query_patches((6, 6)))
    images = build.NUM_ATTENTION_IMAGES
    attention = pixels(report / "attention.png")
    rows = images * (1 + HEADS)  # per image a header row, then one row per head
    assert attention.shape == (images * (TEXT_H + HEADS * (tile + TEXT_H)) + (rows + 1) * PAD,
                               (queries + 2) * tile + (queries + 3) * PAD, 3)
    features = pixels(report / "features.png")
    columns = build.NUM_FEATURE_IMAGES
    assert features.shape == (3 * (tile + TEXT_H) + 4 * PAD, columns * tile + (columns + 1) * PAD, 3)
    neighbours = pixels(report / "neighbours.png")
    cell = IMAGE * overlays.tile_scale(IMAGE, at_least=64) + 6
    items = 1 + 2 * (1 + build.NUM_NEIGHBOURS)  # query, then a gap and k neighbours for trained and random init
    assert neighbours.shape == (TEXT_H + build.NUM_QUERIES * (cell + TEXT_H) + (build.NUM_QUERIES + 2) * PAD,
                                cell + 2 * (10 + build.NUM_NEIGHBOURS * cell) + (items + 1) * PAD, 3)
    for picture in (attention, features, neighbours):
        assert_not_blank(picture)
    # the attention maps themselves vary (not one flat colour per tile): take head 1's mean-of-queries tile
    top, left = PAD + TEXT_H + PAD, PAD + (queries + 1) * (tile + PAD)
    assert_not_blank(attention[top:top + tile, left:left + tile])


def test_curves_have_one_point_per_metrics_line(run):
    run_dir, report = run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    knn = [r for r in records if "knn_top1" in r and "event" not in r]
    assert len(train) == 12 and len(knn) == 1  # 3 epochs x 4 steps, one in-run k-NN
    counts = curves.plot(records, report / "curves_again.png", vicreg_level_weights=[1.0, 0.5])
    assert counts["loss"] == {"total": 12, "level 0": 12, "level 1": 12}
    for panel in ("learning rate", "weight decay", "EMA momentum", "gradient norm", "target feature std",
                  "effective rank (RankMe)", "images / s", "peak memory (GB)"):
        assert list(counts[panel].values()) == [12], panel
    assert counts["VICReg terms (unweighted)"] == {"variance": 12, "covariance": 12}  # logged by the step
    assert counts["k-NN accuracy"] == {"top-1": 1, "top-5": 1}
    picture = pixels(report / "curves.png")
    assert picture.shape[:2] == pixels(report / "curves_again.png").shape[:2]
    assert_not_blank(picture)


def test_dataset_mix_panel_compares_shares_with_weights():
    records = [{"step": s, "loss": 1.0, "dataset_mix": {"a": 6, "b": 2}} for s in (1, 2, 3)]
    mix = curves.panels(records, {"a": 3.0, "b": 1.0})["dataset mix per window"]
    assert mix["a share"] == ([1, 2, 3], [0.75] * 3) and mix["b weight"][1] == [0.25, 0.25]
    scheduled = [{"step": s, "loss": 1.0, "dataset_mix": {"a": 6, "b": 2},
                  "dataset_weights": {"a": 0.75 if s < 3 else 0.5, "b": 0.25 if s < 3 else 0.5}} for s in (1, 2, 3)]
    mix = curves.panels(scheduled, {"a": 3.0, "b": 1.0})["dataset mix per window"]
    assert mix["a weight"] == ([1, 2, 3], [0.75, 0.75, 0.5])  # the logged weights, schedule and all
    old = [{"step": s, "loss": 1.5, "loss_level0": 1.0, "loss_level1": 0.5} for s in (1, 2)]
    assert curves.panels(old, vicreg_level_weights=[1.0, 0.5])["VICReg terms (total - weighted levels)"] == \
        {"variance + covariance": ([1, 2], [0.25, 0.25])}
    single = [{"step": 1, "loss": 1.0, "dataset_mix": {"a": 8}}]
    assert "dataset mix per window" not in curves.panels(single)  # one dataset: nothing to compare


def test_html_references_only_files_that_exist_and_nothing_remote(run):
    _, report = run
    page = (report / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(sources) == sorted(build.FILES.values())
    assert all((report / s).is_file() for s in sources)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "k-NN" in page and "random init" in page  # the eval numbers with their baseline


def test_without_matplotlib_the_report_says_how_to_get_curves(run, tmp_path, monkeypatch):
    run_dir, _ = run
    monkeypatch.setattr(curves, "have_matplotlib", lambda: False)
    section, counts = build.curves_section(build.R.open_run(run_dir), tmp_path)
    assert counts is None and curves.INSTALL_HINT.split(":")[0] in section
    assert not (tmp_path / "curves.png").exists()


def test_attention_weights_are_the_fused_attention_of_the_last_block(run):
    run_dir, _ = run
    encoder = build.R.open_run(run_dir).encoder
    x = build.R.normalize(np.random.default_rng(0).integers(0, 256, (2, IMAGE, IMAGE, 3), dtype=np.uint8))
    weights = analysis.last_block_attention(encoder, x)
    assert weights.shape == (2, HEADS, 36, 36)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    # weights @ v, projected, must be what the model's own (fused) attention returns
    tokens = encoder.embed(x)
    for block in encoder.blocks[:-1]:
        tokens = block(tokens)
    last = encoder.blocks[-1]
    normed = last.norm1(tokens)
    v = last.attn.qkv(normed).reshape(2, 36, 3, HEADS, -1)[:, :, 2].transpose(0, 2, 1, 3)
    mixed = (mx.array(weights) @ v).transpose(0, 2, 1, 3).reshape(2, 36, -1)
    np.testing.assert_allclose(np.array(last.attn.proj(mixed)), np.array(last.attn(normed)), atol=1e-4)


def test_a_missing_run_is_one_sentence(tmp_path, capsys):
    assert report_cli.main([str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "config.yaml" in err and "\n" not in err


def test_sections_that_need_missing_data_say_so_and_the_rest_is_written(run, tmp_path):
    run_dir, _ = run
    moved = tmp_path / "run"
    moved.mkdir()
    for name in ("config.yaml", "encoder.safetensors", "metrics.jsonl"):
        (moved / name).write_bytes((run_dir / name).read_bytes())
    text = (moved / "config.yaml").read_text().replace("dataset: synthetic", "dataset: cifar10")
    (moved / "config.yaml").write_text(text.replace("data_path: ./data", f"data_path: {tmp_path / 'nothing'}"))
    index = build.write_report(moved, log=lambda message: None)
    page = index.read_text()
    assert page.count("Skipped: the run&#x27;s data cannot be read here") == 4  # masks, attention, features, neighbours
    assert (index.parent / "curves.png").is_file() and not (index.parent / "masks.png").exists()
    with pytest.raises(FileNotFoundError):  # data named on the command line must exist
        build.write_report(moved, tmp_path / "other", dataset="cifar10", data_path=tmp_path / "nothing",
                           log=lambda message: None)


def test_tensorboard_writer_stores_images_tensorboard_can_read(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mlx_hjepa.train.tensorboard import TensorBoardWriter

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(buffer, format="PNG")
    writer = TensorBoardWriter(tmp_path)
    writer.image(7, "images/masks", buffer.getvalue(), 20, 30)
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("images/masks")
    assert (image.step, image.width, image.height, image.encoded_image_string) == (7, 30, 20, buffer.getvalue())
