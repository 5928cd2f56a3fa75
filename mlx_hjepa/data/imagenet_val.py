"""Sort the flat ILSVRC2012 validation images into `val/<wnid>/` folders.

The validation tarball unpacks to 50,000 files `ILSVRC2012_val_00000001.JPEG` ... in one
folder. The devkit (`ILSVRC2012_devkit_t12.tar.gz`) holds the labels:
`data/ILSVRC2012_validation_ground_truth.txt` gives one ILSVRC id (1..1000) per image, in
file-number order, and `data/meta.mat` (a MATLAB v5 file) maps ILSVRC id -> WordNet id.
A plain text mapping (one `id wnid` pair, or one wnid in id order, per line) can stand
in for meta.mat. Only stdlib and numpy are used: meta.mat is read by the small MAT v5
reader below, which knows just enough of the format for that one struct array.
"""

import os
import re
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

VAL_IMAGE = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
WNID = re.compile(r"^n\d{8}$")
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META_MAT = "data/meta.mat"


class PrepareError(Exception):
    """The inputs of prepare-imagenet-val are inconsistent; the message says how to fix them."""


# --- a minimal MATLAB v5 reader ------------------------------------------------------------

MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 14, 15, 16, 17, 18
MX_CELL, MX_STRUCT, MX_CHAR = 1, 2, 4
MX_NUMERIC = range(6, 16)  # double, single, int8 .. uint64


def _elements(buf, endian):
    """Yield (type, payload) for the data elements packed in `buf`."""
    pos = 0
    while pos + 8 <= len(buf):
        (tag,) = struct.unpack_from(endian + "I", buf, pos)
        if tag >> 16:  # small data element: type, size and up to 4 bytes of data in 8 bytes
            kind, size = tag & 0xFFFF, tag >> 16
            yield kind, buf[pos + 4 : pos + 4 + size]
            pos += 8
            continue
        kind, size = tag, struct.unpack_from(endian + "I", buf, pos + 4)[0]
        yield kind, buf[pos + 8 : pos + 8 + size]
        pos += 8 + size
        if kind != MI_COMPRESSED:
            pos += -size % 8  # uncompressed elements are padded to 8 bytes


def _numbers(kind, payload, endian):
    if kind not in MI_DTYPES:
        raise ValueError(f"unsupported MAT data type {kind}")
    return np.frombuffer(payload, dtype=np.dtype(MI_DTYPES[kind]).newbyteorder(endian))


def _text(kind, payload, endian):
    if kind == MI_UTF8:
        return bytes(payload).decode("utf-8")
    if kind in (MI_UTF16, MI_UTF32):
        bits = 16 if kind == MI_UTF16 else 32
        return bytes(payload).decode(f"utf-{bits}-{'le' if endian == '<' else 'be'}")
    return "".join(map(chr, _numbers(kind, payload, endian)))  # MATLAB's usual uint16 code units


def _matrix(payload, endian):
    """Decode one miMATRIX payload into (name, value): struct arrays become lists of dicts,
    cell arrays lists, char arrays str, numeric arrays numpy arrays (Python scalars when 1x1)."""
    if len(payload) == 0:
        return "", np.zeros((0, 0))
    parts = _elements(payload, endian)
    flags = _numbers(*next(parts), endian)
    mx_class = int(flags[0]) & 0xFF
    dims = [int(d) for d in _numbers(*next(parts), endian)]
    name = bytes(next(parts)[1]).decode("ascii")
    count = int(np.prod(dims))
    if mx_class == MX_STRUCT:
        width = int(_numbers(*next(parts), endian)[0])
        raw = bytes(next(parts)[1])
        fields = [raw[i : i + width].split(b"\0", 1)[0].decode("ascii") for i in range(0, len(raw), width)]
        return name, [{f: _matrix(next(parts)[1], endian)[1] for f in fields} for _ in range(count)]
    if mx_class == MX_CELL:
        return name, [_matrix(next(parts)[1], endian)[1] for _ in range(count)]
    if mx_class == MX_CHAR:
        text = _text(*next(parts), endian) if count else ""
        rows = dims[0] if dims else 1
        if rows <= 1:
            return name, text
        return name, ["".join(text[r::rows]) for r in range(rows)]  # column-major storage
    if mx_class in MX_NUMERIC:
        values = _numbers(*next(parts), endian).reshape(dims, order="F") if count else np.zeros(dims)
        return name, values.reshape(-1)[0].item() if count == 1 else values
    raise ValueError(f"unsupported MATLAB array class {mx_class} in variable {name!r}")


def read_mat_variable(data, variable):
    """Return `variable` from the bytes of a MATLAB v5/v7 (not v7.3/HDF5) .mat file."""
    if len(data) < 128 or data[:6] != b"MATLAB":
        raise ValueError("not a MATLAB 5.0 MAT-file")
    endian = {b"IM": "<", b"MI": ">"}.get(bytes(data[126:128]))
    if endian is None:
        raise ValueError("unreadable MAT-file header")
    for kind, payload in _elements(memoryview(data)[128:], endian):
        if kind == MI_COMPRESSED:
            kind, payload = next(_elements(memoryview(zlib.decompress(payload)), endian))
        if kind == MI_MATRIX:
            name, value = _matrix(payload, endian)
            if name == variable:
                return value
    raise KeyError(f"variable {variable!r} not in MAT-file")


# --- devkit and mapping ---------------------------------------------------------------------


def ids_to_wnids_from_meta(data):
    """ILSVRC id -> wnid for the 1000 leaf synsets of the devkit's meta.mat (bytes)."""
    synsets = read_mat_variable(data, "synsets")
    return {int(s["ILSVRC2012_ID"]): s["WNID"] for s in synsets if int(s["num_children"]) == 0}


def read_mapping(path):
    """ILSVRC id -> wnid from a text file: `id wnid` per line, or one wnid per line in id order.
    (Sorted-wnid lists such as LOC_synset_mapping.txt are in a different order: they are refused
    because their lines carry class names after the wnid.)"""
    mapping = {}
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    for number, words in enumerate(lines, start=1):
        if len(words) == 1 and WNID.match(words[0]):
            mapping[number] = words[0]
        elif len(words) == 2 and words[0].isdigit() and WNID.match(words[1]):
            mapping[int(words[0])] = words[1]
        else:
            raise PrepareError(
                f"Line {number} of {path} is not 'ILSVRC2012_ID wnid' or a lone wnid; fix the mapping file "
                "(a sorted wnid list such as LOC_synset_mapping.txt is in another order and cannot be used)."
            )
    return mapping


def _devkit_file(devkit, suffix):
    """Bytes of the devkit file ending in `suffix`, from the .tar.gz or its extracted folder."""
    devkit = Path(devkit).expanduser()
    if not devkit.exists():
        raise PrepareError(f"{devkit} does not exist; pass --devkit the path of ILSVRC2012_devkit_t12.tar.gz (from the ImageNet download page) or its extracted folder.")
    if devkit.is_dir():
        hits = sorted(devkit.glob(f"**/{suffix}"))
        if hits:
            return hits[0].read_bytes()
    elif tarfile.is_tarfile(devkit):
        with tarfile.open(devkit) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.endswith(suffix):
                    return tar.extractfile(member).read()
    else:
        raise PrepareError(f"{devkit} is neither ILSVRC2012_devkit_t12.tar.gz nor its extracted folder; pass --devkit one of those.")
    return None


def load_devkit(devkit, mapping=None):
    """(ground-truth ILSVRC ids in image order, id -> wnid) from the devkit and optional mapping file."""
    truth = _devkit_file(devkit, GROUND_TRUTH)
    if truth is None:
        raise PrepareError(f"{devkit} has no {GROUND_TRUTH}; pass the ILSVRC2012_devkit_t12 archive or folder as --devkit.")
    labels = [int(word) for word in truth.decode().split()]
    if mapping is not None:
        id_to_wnid = read_mapping(mapping)
    else:
        meta = _devkit_file(devkit, META_MAT)
        if meta is None:
            raise PrepareError(f"{devkit} has no {META_MAT}; pass --mapping with one 'id wnid' line per class.")
        try:
            id_to_wnid = ids_to_wnids_from_meta(meta)
        except (ValueError, KeyError, StopIteration, struct.error, zlib.error) as e:
            raise PrepareError(f"Could not read {META_MAT} ({e}); pass --mapping with one 'id wnid' line per class instead.") from None
    unknown = sorted(set(labels) - set(id_to_wnid))
    if unknown:
        raise PrepareError(f"The ground truth uses ILSVRC ids {unknown[:5]} that the mapping lacks; use the mapping of the same devkit.")
    return labels, id_to_wnid


# --- moving the images ----------------------------------------------------------------------


def prepare_imagenet_val(root, devkit, mapping=None, log=print):
    """Move `<root>/val/ILSVRC2012_val_*.JPEG` into `<root>/val/<wnid>/`. Safe to run again:
    images already in their class folder are left alone. Returns the number of files moved."""
    val = Path(root).expanduser() / "val"
    if not val.is_dir():
        raise PrepareError(f"{val} does not exist; extract ILSVRC2012_img_val.tar into it first (mkdir -p {val} && tar -xf ILSVRC2012_img_val.tar -C {val}).")
    labels, id_to_wnid = load_devkit(devkit, mapping)
    flat = {int(m.group(1)): e.name for e in os.scandir(val) if e.is_file() and (m := VAL_IMAGE.match(e.name))}
    placed = {int(m.group(1)) for d in os.scandir(val) if d.is_dir() for e in os.scandir(d.path) if (m := VAL_IMAGE.match(e.name))}
    numbers = set(flat) | placed
    if len(numbers) != len(labels) or (numbers and max(numbers) > len(labels)):
        raise PrepareError(
            f"{val} holds {len(numbers)} validation images but the ground truth lists {len(labels)}; "
            "re-extract ILSVRC2012_img_val.tar into it (and use the devkit of the same release)."
        )
    if not flat:
        log(f"{val} is already sorted into class folders ({len(placed)} images); nothing to do.")
        return 0
    for number, name in sorted(flat.items()):
        folder = val / id_to_wnid[labels[number - 1]]
        folder.mkdir(exist_ok=True)
        os.replace(val / name, folder / name)
    log(f"Moved {len(flat)} images into {len(set(id_to_wnid[i] for i in labels))} class folders under {val}.")
    return len(flat)
