"""Download CIFAR-10/100, STL-10 (archives) and (Fashion-)MNIST (four files): resumable, checksummed, atomic.

A download goes to `<root>/<archive>.part`, resumes from that file's size with an HTTP
Range request (after a dropped connection, or on the next run), is renamed to its
final name only once its MD5 matches, and is unpacked through a temporary folder so
a half-extracted dataset folder never appears under its real name.
"""

import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..rules import FOLDER_DATASETS
from .idx import FOLDERS as IDX_FOLDERS


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    folder: str  # what the archive unpacks to, the folder the dataset loaders read
    files: tuple  # files that must be in `folder` for the dataset to count as present


# URLs and MD5s as published by the dataset authors (and used by torchvision.datasets).
ARCHIVES = {
    "cifar10": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        files=("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3",
               "data_batch_4", "data_batch_5", "test_batch"),
    ),
    "cifar100": Archive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        files=("meta", "train", "test"),
    ),
    "stl10": Archive(
        url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        md5="91f7769df0f17e558f3565bffb0c7dfb",
        folder="stl10_binary",
        files=("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin",
               "unlabeled_X.bin", "class_names.txt"),
    ),
}



@dataclass(frozen=True)
class FileSet:
    """Datasets published as loose files (the IDX sets): each is downloaded and checked on its own."""
    base_url: str
    folder: str  # the folder under --root the files go to: the one the IDX loader reads
    md5s: dict  # file name -> MD5


# URLs and MD5s as published by Zalando Research (Fashion-MNIST) and used by torchvision.datasets
# (its MNIST mirror: yann.lecun.com no longer serves the files reliably).
FILE_SETS = {
    "fashion_mnist": FileSet(
        base_url="https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        folder=IDX_FOLDERS["fashion_mnist"],
        md5s={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
              "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
              "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
              "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    ),
    "mnist": FileSet(
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        folder=IDX_FOLDERS["mnist"],
        md5s={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    ),
}
DOWNLOADABLE = (*ARCHIVES, *FILE_SETS)

CHUNK = 1 << 20
# Errors after which a transfer is worth resuming rather than abandoning.
TRANSIENT_ERRORS = (http.client.IncompleteRead, http.client.RemoteDisconnected,
                    ConnectionError, socket.timeout, TimeoutError, urllib.error.URLError)


class DownloadError(Exception):
    """A download or extraction failed; the message says what to do."""


def md5sum(path, chunk=CHUNK):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(path):
    return path.stat().st_size if path.exists() else 0


def _fetch_into(url, part, timeout, progress):
    """Append the rest of `url` to `part`, starting at its current size."""
    have = _size(part)
    request = urllib.request.Request(url, headers={"User-Agent": "mlx-hjepa"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range starts at the end: the part file already holds everything
            return
        if e.code >= 500:
            raise ConnectionError(f"HTTP {e.code} from the server") from None  # worth another try
        raise DownloadError(f"The server answered HTTP {e.code} for {url}; check the URL or try again later.") from None
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range header and sends the whole file again
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as out:
            done = have
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)


def download_file(url, dest, md5=None, retries=3, timeout=30.0, backoff=1.0, progress=None):
    """Download `url` to `dest` (a file path) through `dest.part`, resuming after dropped
    connections; `dest` appears only once the data matches `md5`. Gives up after `retries`
    attempts in a row that add no data. Returns `dest`."""
    dest = Path(dest)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    while True:
        before = _size(part)
        try:
            _fetch_into(url, part, timeout, progress)
            break
        except TRANSIENT_ERRORS as e:
            failures = 0 if _size(part) > before else failures + 1
            if failures > retries:
                raise DownloadError(
                    f"The download of {url} keeps failing ({e}); check the network and run the same command "
                    f"again to resume from the {_size(part):,} bytes already saved."
                ) from None
            time.sleep(min(backoff * 2 ** max(failures - 1, 0), 30.0))
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink()
            raise DownloadError(
                f"{dest.name} does not match its checksum (MD5 {got}, expected {md5}), so it was deleted; "
                "run the command again, and if it fails again the server is sending a different file."
            )
    os.replace(part, dest)
    return dest


def check_tar_members(tar):
    """Refuse archives whose members could write outside the target folder."""
    for member in tar.getmembers():
        name = member.name
        parts = Path(name).parts
        if name.startswith(("/", "\\")) or os.path.isabs(name) or (parts and ":" in parts[0]):
            raise DownloadError(f"The archive holds an absolute path ({name!r}); it is not safe to extract, delete it.")
        if ".." in parts:
            raise DownloadError(f"The archive holds a path that leaves its folder ({name!r}); it is not safe to extract, delete it.")
        if not (member.isfile() or member.isdir()):
            raise DownloadError(f"The archive holds a link or special file ({name!r}); it is not safe to extract, delete it.")


def safe_extract(archive, root, folder):
    """Extract `archive` and move its `folder` into `root` in one rename. Returns the folder's path."""
    root = Path(root)
    target = root / folder
    with tarfile.open(archive) as tar:
        check_tar_members(tar)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extracting", dir=root))
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)
            if not (tmp / folder).is_dir():
                raise DownloadError(f"{Path(archive).name} does not contain the folder {folder}/; delete it and download again.")
            os.replace(tmp / folder, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def not_downloadable(name, root="./data"):
    """Why `name` (imagenet, imagenet100, imagefolder) cannot be downloaded, and how to get it: one sentence."""
    if name == "imagefolder":
        return f"imagefolder is your own image folder; put it under {root}/train/<class>/<image> (nothing to download)."
    return (f"{name} cannot be downloaded by a script (ImageNet needs an account and accepted terms at "
            f"https://image-net.org): download ILSVRC2012 there, then follow scripts/download_imagenet100.sh "
            f"and check the tree with `python -m mlx_hjepa.data verify {name} --root {root}`.")


def dataset_is_present(name, root):
    """True when the loaders can read `name` (cifar10, cifar100, stl10) from `root` as it is."""
    root, archive = Path(root).expanduser(), ARCHIVES[name]
    if not missing_files(name, root) or (root.name == archive.folder and not missing_files(name, root.parent)):
        return True
    tarball = root / Path(urllib.parse.urlparse(archive.url).path).name
    return name.startswith("cifar") and tarball.is_file()  # CIFAR is also read straight from its archive


def missing_files(name, root):
    archive = ARCHIVES[name]
    folder = Path(root) / archive.folder
    return [f for f in archive.files if not (folder / f).is_file()]


def download_files(name, root, base_url=None, progress=None, **kwargs):
    """Download the files of FILE_SETS[name] into `root`/<folder>, each checked against its MD5."""
    files = FILE_SETS[name]
    base_url = base_url or files.base_url
    target = Path(root).expanduser() / files.folder
    for filename, md5 in files.md5s.items():
        download_file(urllib.parse.urljoin(base_url.rstrip("/") + "/", filename), target / filename, md5=md5,
                      progress=progress, **kwargs)
    return target


def download_dataset(name, root, url=None, md5=None, keep_archive=False, progress=None, **kwargs):
    """Download and unpack dataset `name` (cifar10, cifar100, stl10, fashion_mnist, mnist) under `root`.
    `url` and `md5` override the official ones (for fashion_mnist and mnist, `url` is the folder
    holding the four files and each keeps its official MD5). Returns the dataset folder."""
    if name in FOLDER_DATASETS:
        raise DownloadError(not_downloadable(name, root))
    if name in FILE_SETS:
        if md5 is not None:
            raise DownloadError(f"{name} is four files, each checked against its official MD5; drop --md5.")
        return download_files(name, root, url, progress, **kwargs)
    if name not in ARCHIVES:
        raise DownloadError(f"Unknown dataset {name!r}; choose one of {', '.join(DOWNLOADABLE)}.")
    archive = ARCHIVES[name]
    url, md5 = url or archive.url, md5 or archive.md5
    root = Path(root).expanduser()
    target = root / archive.folder
    if target.exists():
        missing = missing_files(name, root)
        if not missing:
            return target
        raise DownloadError(
            f"{target} exists but lacks {', '.join(missing)}; delete that folder and run the command again."
        )
    root.mkdir(parents=True, exist_ok=True)
    filename = Path(urllib.parse.urlparse(url).path).name or f"{name}.tar.gz"
    tarball = download_file(url, root / filename, md5=md5, progress=progress, **kwargs)
    try:
        safe_extract(tarball, root, archive.folder)
    except tarfile.TarError as e:
        raise DownloadError(f"{tarball} is not a readable tar archive ({e}); delete it and download again.") from None
    missing = missing_files(name, root)
    if missing:
        raise DownloadError(f"{target} lacks {', '.join(missing)} after extraction; delete it and {tarball.name}, then download again.")
    if not keep_archive:
        tarball.unlink()
    return target
