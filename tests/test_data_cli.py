"""The data CLI: downloads from a local HTTP server (no internet), ImageNet val sorting, verify, stats, --help."""

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mlx_hjepa  # noqa: F401  (binds BLAS before anything imports mlx.core)
from mlx_hjepa.data import ImageNet100Dataset
from mlx_hjepa.data.__main__ import main
from mlx_hjepa.data.download import DownloadError, download_dataset, download_file, safe_extract
from mlx_hjepa.data.imagenet_val import PrepareError, prepare_imagenet_val, read_mat_variable

REPO = Path(__file__).resolve().parents[1]

# --- helpers --------------------------------------------------------------------------------------


def tar_gz(members):
    """A .tar.gz in memory; `members` maps name -> bytes, or -> TarInfo for special members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def md5(data):
    return hashlib.md5(data).hexdigest()


def cifar_batch(n, num_classes, seed):
    rng = np.random.default_rng(seed)
    return pickle.dumps({b"batch_label": b"fake", b"labels": rng.integers(0, num_classes, n).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n},
                        protocol=3)  # bytes as bytes, like the Python 2 originals (protocol 2 would route them through _codecs)


def fake_cifar10_archive(rows=2):
    members = {f"cifar-10-batches-py/data_batch_{i}": cifar_batch(rows, 10, i) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = cifar_batch(rows, 10, 9)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=3)
    return tar_gz(members)


def jpeg(seed=0, size=8):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


class FileServer:
    """Serves `files` (path -> bytes) on 127.0.0.1 with Range support (unless `ignore_range`);
    paths in `cut_once` send half their body and drop the connection the first time they are asked for."""

    def __init__(self):
        self.files, self.cut_once, self.requests, self.ignore_range = {}, set(), [], False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Range")))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if self.headers.get("Range") and not owner.ignore_range:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                rest = body[start:]
                if self.path in owner.cut_once:
                    owner.cut_once.discard(self.path)
                    rest = rest[: len(rest) // 2]  # then the connection closes short of Content-Length
                self.wfile.write(rest)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # keep rich from wrapping the report lines the tests look for


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


# --- download -------------------------------------------------------------------------------------


def test_download_good_archive_extracts_verifies_and_is_idempotent(server, tmp_path, capsys):
    archive = fake_cifar10_archive()
    server.files["/cifar-10-python.tar.gz"] = archive
    url = server.url + "/cifar-10-python.tar.gz"
    folder = download_dataset("cifar10", tmp_path, url=url, md5=md5(archive), backoff=0)
    assert folder == tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir())[:2] == ["batches.meta", "data_batch_1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]  # no archive, .part or temp dir left
    assert main(["verify", "cifar10", "--root", str(tmp_path), "--counts", "train=10", "test=2"]) == 0
    download_dataset("cifar10", tmp_path, url=url, md5=md5(archive))
    assert len(server.requests) == 1  # already present: nothing fetched again
    assert main(["verify", "cifar10", "--root", str(tmp_path)]) == 1  # 10 images, not the official 50,000
    assert "expected 50,000" in capsys.readouterr().out


def test_bad_checksum_is_a_clear_error_and_leaves_no_file(server, tmp_path, capsys):
    server.files["/cifar-10-python.tar.gz"] = fake_cifar10_archive()
    code = main(["download", "cifar10", "--root", str(tmp_path), "--url", server.url + "/cifar-10-python.tar.gz",
                 "--md5", "0" * 32])
    err = capsys.readouterr().err
    assert code == 1
    assert "does not match its checksum" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    body = np.random.default_rng(0).bytes(300_000)
    server.files["/blob.bin"] = body
    server.cut_once.add("/blob.bin")
    dest = download_file(server.url + "/blob.bin", tmp_path / "blob.bin", md5=md5(body), backoff=0)
    assert dest.read_bytes() == body
    assert [r for _, r in server.requests] == [None, f"bytes={len(body) // 2}-"]
    assert not (tmp_path / "blob.bin.part").exists()


@pytest.mark.parametrize("have", [12_345, 50_000], ids=["partial", "complete"])
def test_existing_part_file_is_resumed(server, tmp_path, have):
    body = np.random.default_rng(1).bytes(50_000)
    server.files["/blob.bin"] = body
    (tmp_path / "blob.bin.part").write_bytes(body[:have])
    dest = download_file(server.url + "/blob.bin", tmp_path / "blob.bin", md5=md5(body), backoff=0)
    assert dest.read_bytes() == body
    assert server.requests == [("/blob.bin", f"bytes={have}-")]


def test_server_that_ignores_range_restarts_the_file(server, tmp_path):
    body = np.random.default_rng(2).bytes(20_000)
    server.files["/blob.bin"], server.ignore_range = body, True
    (tmp_path / "blob.bin.part").write_bytes(body[:5_000])
    assert download_file(server.url + "/blob.bin", tmp_path / "blob.bin", md5=md5(body)).read_bytes() == body


def test_missing_file_is_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404.*check the URL"):
        download_file(server.url + "/missing.tar.gz", tmp_path / "missing.tar.gz", md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_gives_up_with_a_clear_error(tmp_path):
    dead = FileServer()
    dead.close()  # nothing listens on that port any more
    with pytest.raises(DownloadError, match="keeps failing.*run the same command again"):
        download_file(dead.url + "/blob.bin", tmp_path / "blob.bin", md5="0" * 32, backoff=0)
    assert list(tmp_path.iterdir()) == []


def _link(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize("members", [
    {"cifar-10-batches-py/../../evil.txt": b"x"},
    {"/tmp/evil_absolute.txt": b"x"},
    {"cifar-10-batches-py/data_batch_1": _link("cifar-10-batches-py/data_batch_1", "/etc/passwd")},
], ids=["parent", "absolute", "symlink"])
def test_malicious_tar_is_refused(tmp_path, members):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_gz(members))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DownloadError, match="not safe to extract"):
        safe_extract(archive, root, "cifar-10-batches-py")
    assert list(root.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_malicious_tar_from_server_is_refused(server, tmp_path):
    archive = tar_gz({"cifar-10-batches-py/../evil.txt": b"x"})
    server.files["/cifar-10-python.tar.gz"] = archive
    with pytest.raises(DownloadError, match="leaves its folder"):
        download_dataset("cifar10", tmp_path, url=server.url + "/cifar-10-python.tar.gz", md5=md5(archive))
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cifar-10-batches-py").exists()


# --- prepare-imagenet-val -------------------------------------------------------------------------

WNIDS = ["n01440764", "n01443537", "n01484850"]
TRUTH = [2, 1, 3, 2, 2, 1]  # ILSVRC id of val image 1..6


def fake_flat_val(root):
    val = root / "val"
    val.mkdir(parents=True)
    for number in range(1, len(TRUTH) + 1):
        (val / f"ILSVRC2012_val_{number:08d}.JPEG").write_bytes(jpeg(number))
    return val


def test_prepare_imagenet_val_with_mapping_is_idempotent_and_checks_counts(tmp_path, capsys):
    val = fake_flat_val(tmp_path / "imagenet")
    devkit = tmp_path / "ILSVRC2012_devkit_t12"
    (devkit / "data").mkdir(parents=True)
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{t}\n" for t in TRUTH))
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("".join(f"{i} {w}\n" for i, w in enumerate(WNIDS, 1)))
    args = ["prepare-imagenet-val", "--root", str(tmp_path / "imagenet"), "--devkit", str(devkit), "--mapping", str(mapping)]
    assert main(args) == 0
    for number, label in enumerate(TRUTH, 1):
        assert (val / WNIDS[label - 1] / f"ILSVRC2012_val_{number:08d}.JPEG").is_file()
    assert sorted(p.name for p in val.iterdir()) == WNIDS
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
    (val / "ILSVRC2012_val_00000007.JPEG").write_bytes(jpeg(7))  # one image more than the ground truth
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "holds 7 validation images but the ground truth lists 6" in err and "Traceback" not in err
    assert (val / "ILSVRC2012_val_00000007.JPEG").is_file()  # refused before moving anything


@pytest.mark.parametrize("compressed", [True, False])
def test_prepare_imagenet_val_reads_meta_mat_from_devkit_tarball(tmp_path, compressed):
    sio = pytest.importorskip("scipy.io")  # only to write a real MATLAB file; the package never imports scipy
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    rows = [(float(i), w, f"class {i}", "a gloss", 0.0, np.zeros((1, 0)), 0.0, 1300.0) for i, w in enumerate(WNIDS, 1)]
    rows.append((1001.0, "n00001740", "entity", "the root", 3.0, np.array([[1.0, 2.0, 3.0]]), 19.0, 0.0))  # not a leaf
    synsets = np.array(rows, dtype=[(f, "O") for f in fields]).reshape(-1, 1)
    meta = io.BytesIO()
    sio.savemat(meta, {"synsets": synsets}, do_compression=compressed)
    parsed = read_mat_variable(meta.getvalue(), "synsets")
    assert [s["WNID"] for s in parsed] == WNIDS + ["n00001740"] and parsed[3]["children"].tolist() == [[1, 2, 3]]

    devkit = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    devkit.write_bytes(tar_gz({
        "ILSVRC2012_devkit_t12/data/meta.mat": meta.getvalue(),
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": "".join(f"{t}\n" for t in TRUTH).encode(),
    }))
    val = fake_flat_val(tmp_path)
    assert prepare_imagenet_val(tmp_path, devkit, log=lambda *_: None) == len(TRUTH)
    assert sorted((p.parent.name, p.name) for p in val.glob("*/*.JPEG"))[0] == (WNIDS[0], "ILSVRC2012_val_00000002.JPEG")


def test_prepare_imagenet_val_refuses_a_sorted_synset_list_as_mapping(tmp_path):
    fake_flat_val(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{t}\n" for t in TRUTH))
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{w} some class, other name\n" for w in WNIDS))
    with pytest.raises(PrepareError, match="LOC_synset_mapping.txt is in another order"):
        prepare_imagenet_val(tmp_path, tmp_path, mapping=mapping)
    assert len(list((tmp_path / "val").glob("*.JPEG"))) == len(TRUTH)


def test_prepare_imagenet_val_without_val_folder_says_what_to_extract(tmp_path):
    with pytest.raises(PrepareError, match="extract ILSVRC2012_img_val.tar"):
        prepare_imagenet_val(tmp_path, tmp_path)
    (tmp_path / "val").mkdir()
    with pytest.raises(PrepareError, match="pass --devkit the path of ILSVRC2012_devkit_t12.tar.gz"):
        prepare_imagenet_val(tmp_path, tmp_path / "ILSVRC2012_devkit_t12.tar.gz")


# --- verify ---------------------------------------------------------------------------------------


def fake_imagenet(root, classes, train_per_class=2, val_per_class=1):
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, wnid in enumerate(classes):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(jpeg(c * 10 + i))
    return root


def test_verify_good_and_broken_imagenet100_trees(tmp_path, capsys):
    class_list = tmp_path / "classes.txt"
    class_list.write_text("\n".join(WNIDS) + "\n")
    root = fake_imagenet(tmp_path / "imagenet", WNIDS + ["n09999999"])  # one class outside the list
    (root / "train" / WNIDS[0] / "notes.txt").write_text("not an image")
    args = ["verify", "imagenet100", "--root", str(root), "--class-list", str(class_list)]
    assert main(args + ["--counts", "train=6", "val=3"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "1 other folders ignored" in out and "1 non-image files ignored" in out

    assert main(args) == 0  # a custom 3-class list has no official counts, and is not called ImageNet-100 (CMC)
    out = capsys.readouterr().out
    assert "3 classes from" in out and "CMC" not in out and "126,689" not in out
    cmc = tmp_path / "cmc.txt"
    cmc.write_text("\n".join(ImageNet100Dataset.CLASSES))  # the CMC list from a file keeps the official counts
    assert main(["verify", "imagenet100", "--root", str(root), "--class-list", str(cmc)]) == 1
    assert "expected 126,689" in capsys.readouterr().out

    (root / "train" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG").write_bytes(jpeg()[:40])  # truncated JPEG
    for image in (root / "val" / WNIDS[2]).iterdir():
        image.rename(root / "val" / "ILSVRC2012_val_00000001.JPEG")  # unsorted val image
    (root / "val" / WNIDS[2]).rmdir()
    (root / "train" / "n08888888.tar").write_bytes(b"")  # a class tarball left unextracted
    assert main(args + ["--counts", "train=6", "val=3"]) == 1
    out = capsys.readouterr().out
    for expected in ("prepare-imagenet-val", "1 class tarballs (n08888888.tar, ...) are not extracted", "2/3 listed class folders", "do not decode", "problem(s) found"):
        assert expected in out


def test_verify_refuses_code_in_cifar_pickles(tmp_path, capsys):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(fake_cifar10_archive())
    safe_extract(archive, tmp_path, "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": print}))
    assert main(["verify", "cifar10", "--root", str(tmp_path), "--counts", "train=10", "test=2"]) == 1
    assert "refusing to load builtins.print" in capsys.readouterr().out


def test_imagenet100_script_links_the_listed_classes_and_verifies(tmp_path):
    class_list = tmp_path / "classes.txt"
    class_list.write_text("\n".join(WNIDS) + "\n")
    full = fake_imagenet(tmp_path / "full", WNIDS + ["n09999999"])
    out = tmp_path / "imagenet100"
    command = ["bash", str(REPO / "scripts" / "download_imagenet100.sh"), "--imagenet", str(full), "--out", str(out),
               "--class-list", str(class_list), "--", "--counts", "train=6", "val=3"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (out / "train").iterdir()) == WNIDS and (out / "val" / WNIDS[0]).is_symlink()
    (full / "val" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG").unlink()  # now val holds 2 images, not 3
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 1 and "expected 3" in result.stdout


# --- stats and --help -----------------------------------------------------------------------------


def test_stats_reports_the_mix(tmp_path, capsys):
    data = pytest.importorskip("mlx_hjepa.data")
    if not hasattr(data, "build_multi_dataset"):
        pytest.skip("mlx_hjepa.data.build_multi_dataset is not available yet")
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(fake_cifar10_archive(rows=4))
    safe_extract(archive, tmp_path, "cifar-10-batches-py")
    stl = tmp_path / "stl10_binary"
    stl.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        (stl / f"{split}_X.bin").write_bytes(rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tobytes())
        (stl / f"{split}_y.bin").write_bytes(rng.integers(1, 11, n, dtype=np.uint8).tobytes())
    (stl / "unlabeled_X.bin").write_bytes(b"")
    (stl / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    config = tmp_path / "mix.yaml"
    config.write_text(f"""data:
  data_path: {tmp_path}
  use_multi_dataset: true
  sampling_strategy: weighted
  datasets:
    - {{name: cifar10, weight: 0.75, path: {tmp_path}}}
    - {{name: stl10, weight: 0.25, path: {tmp_path}}}
""")
    assert main(["stats", str(config)]) == 0
    out = capsys.readouterr().out
    assert "cifar10" in out and "stl10" in out and "0.750" in out and "20" in out
    assert "train+unlabeled" in out  # what pretraining reads of STL-10


def test_stats_rejects_a_bad_config_before_building_data(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  dataset: cifar10\n  data_pth: ./data\n")
    assert main(["stats", str(config)]) == 1
    err = capsys.readouterr().err
    assert "data.data_pth" in err and "data_path" in err and "Traceback" not in err
    assert main(["stats", str(tmp_path / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["download", "prepare-imagenet-val", "verify", "stats"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"mlx_hjepa.data {command}" in capsys.readouterr().out


def test_module_entry_point_and_usage_errors():
    run = [sys.executable, "-m", "mlx_hjepa.data"]
    ok = subprocess.run(run + ["--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "prepare-imagenet-val" in ok.stdout
    bad = subprocess.run(run + ["download", "svhn", "--root", "x"], capture_output=True, text=True)
    assert bad.returncode != 0 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr


def test_the_shipped_imagenet100_list_has_the_100_cmc_classes():
    from mlx_hjepa.data.folder import IMAGENET100_CLASSES
    from mlx_hjepa.data.verify import WNID

    assert len(set(IMAGENET100_CLASSES)) == 100 and all(WNID.match(c) for c in IMAGENET100_CLASSES)
