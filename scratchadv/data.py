"""MNIST: find it, download it (checksummed, atomic), parse IDX into arrays.

``load_mnist(path=None)`` -> ``(x_train, y_train, x_test, y_test)`` with images float32
``(N, 1, 28, 28)`` in [0, 1] (pixel / 255) and labels int64 ``(N,)``.

Where it looks, in order:

1. the ``path`` argument;
2. the folder in ``$SCRATCHADV_DATA``;
3. the user cache, ``$SCRATCHADV_CACHE/mnist`` or ``~/.cache/scratchadv/mnist``
   (``$XDG_CACHE_HOME`` is honoured).

A folder "has MNIST" when it holds the four IDX files, gzipped or raw, under either
usual name (``train-images-idx3-ubyte[.gz]`` or ``train-images.idx3-ubyte[.gz]``).
Each file's SHA-256 is checked over its *decompressed* bytes (the gzip wrapper varies
between mirrors, the content does not). When no folder has the files and no
``path``/``$SCRATCHADV_DATA`` was given, the files are downloaded into the cache from
the public mirrors, each into a temporary file renamed into place only after its
checksum passes. File format: LeCun et al., "The MNIST database",
http://yann.lecun.com/exdb/mnist/ (IDX: big-endian magic, dims, then uint8 data).
"""
import gzip
import hashlib
import os
import struct
import tempfile
import urllib.request

import numpy as onp

from .progress import Progress

__all__ = ["load_mnist", "data_fingerprint", "find_mnist", "download_mnist", "read_idx", "cache_dir",
           "MNIST_FILES", "MIRRORS", "DataError"]


class DataError(RuntimeError):
    """MNIST files are missing, corrupt, or could not be downloaded."""


#: role -> (canonical file name, SHA-256 of the decompressed file, decompressed size)
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte",
                     "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
    "train_labels": ("train-labels-idx1-ubyte",
                     "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
    "test_images": ("t10k-images-idx3-ubyte",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
    "test_labels": ("t10k-labels-idx1-ubyte",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
}

#: public mirrors serving ``<name>.gz``, tried in turn
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_IDX_DTYPES = {0x08: onp.uint8, 0x09: onp.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def data_fingerprint(x, y):
    """A short SHA-256 over labels and a strided sample of images: a run that
    resumes (training, AutoAttack, an evaluation) refuses other data."""
    h = hashlib.sha256()
    h.update(str(x.shape).encode())
    h.update(onp.ascontiguousarray(y).tobytes())
    h.update(onp.ascontiguousarray(x[::97]).tobytes())
    return h.hexdigest()[:16]


def cache_dir():
    """The folder downloads go to: ``$SCRATCHADV_CACHE/mnist`` or ``~/.cache/scratchadv/mnist``."""
    root = os.environ.get("SCRATCHADV_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "scratchadv")
    return os.path.join(root, "mnist")


def _candidates(folder, name):
    """The four spellings a file may have in a folder: dash/dot, raw/gz."""
    dotted = name.replace("-idx", ".idx")
    return [os.path.join(folder, n) for n in (name, name + ".gz", dotted, dotted + ".gz")]


def _read_bytes(path):
    """The decompressed bytes of an IDX file (gzip detected by its magic, not its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read ({e}); the file is truncated or corrupt. "
                        "Delete it so it can be fetched again.") from None


def read_idx(path, expected_sha256=None):
    """Parse one IDX file (gzipped or raw) into a numpy array of its declared type and shape.

    With ``expected_sha256``, the decompressed bytes must match it, else ``DataError``.
    """
    data = _read_bytes(path)
    if expected_sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256:
            raise DataError(f"{path}: SHA-256 of the decompressed content is {digest}, expected "
                            f"{expected_sha256}; the file is truncated or corrupt. Delete it so it "
                            "can be fetched again.")
    return _parse_idx(data, path)


def _parse_idx(data, path="<bytes>"):
    if len(data) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: bad IDX magic number {data[:4].hex()} (expected 0000 08 01 for "
                        "labels or 0000 08 03 for images)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = onp.dtype(_IDX_DTYPES[dtype_code])
    count = int(onp.prod(dims)) if dims else 0
    if len(data) != header + count * dtype.itemsize:
        raise DataError(f"{path}: IDX header declares shape {dims} ({header + count * dtype.itemsize} "
                        f"bytes) but the file has {len(data)} bytes; it is truncated or corrupt")
    return onp.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)


def _locate(folder):
    """(found, missing): ``found`` is {role: path} of the files present in ``folder``,
    ``missing`` the list of the file names not found there (empty when all four are)."""
    found, missing = {}, []
    for role, (name, _, _) in MNIST_FILES.items():
        hit = next((p for p in _candidates(folder, name) if os.path.isfile(p)), None)
        if hit is None:
            missing.append(name)
        else:
            found[role] = hit
    return found, missing


def find_mnist(path=None):
    """(folder, files): the folder that will be used and its {role: path}, or None for files.

    Looks in ``path``, then ``$SCRATCHADV_DATA``, then the cache. A folder given explicitly
    (argument or environment) must hold all four files, else ``DataError`` is raised; it is
    never downloaded into. The cache folder is returned even when it lacks files: then
    ``files`` is None and the caller downloads into that folder.
    """
    explicit = []
    if path is not None:
        explicit.append(("the path argument", os.fspath(path)))
    env = os.environ.get("SCRATCHADV_DATA")
    if env:
        explicit.append(("$SCRATCHADV_DATA", env))
    for label, folder in explicit:
        found, missing = _locate(folder)
        if not missing:
            return folder, found
        raise DataError(f"MNIST not found in {folder!r} (from {label}): missing {missing} "
                        "(raw or .gz; names like train-images-idx3-ubyte or "
                        "train-images.idx3-ubyte are both accepted)")
    folder = cache_dir()
    found, missing = _locate(folder)
    if not missing:
        return folder, found
    return folder, None


def download_mnist(folder=None, mirrors=MIRRORS, retries=2, timeout=30, verbose=True,
                   files=None):
    """Download the four gzipped files into ``folder`` (default: the cache), checksummed.

    Each file goes to a temporary file in ``folder``, is checked by SHA-256 of its
    decompressed content, and only then renamed to its final name. A failed or corrupt
    download is deleted and retried on the next mirror; nothing bad is ever cached.
    ``files`` defaults to :data:`MNIST_FILES` (role -> (name, sha256, size)).
    """
    folder = folder or cache_dir()
    os.makedirs(folder, exist_ok=True)
    errors = []
    for role, (name, sha, size) in (files or MNIST_FILES).items():
        dest = os.path.join(folder, name + ".gz")
        if os.path.isfile(dest):
            try:
                read_idx(dest, sha)
                continue
            except DataError:
                os.unlink(dest)
        ok = False
        for attempt in range(retries):
            for mirror in mirrors:
                url = mirror + name + ".gz"
                fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + name + ".", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out:
                        _fetch(url, out, timeout, desc=name if verbose else None)
                        out.flush()
                        os.fsync(out.fileno())
                    read_idx(tmp, sha)            # raises on a bad download
                    os.replace(tmp, dest)
                    ok = True
                    break
                except (OSError, DataError, ValueError) as e:
                    errors.append(f"{url}: {e}")
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            if ok:
                break
        if not ok:
            tried = "\n  ".join(errors[-len(mirrors) * retries:])
            raise DataError(
                f"could not download {name}.gz from any MNIST mirror:\n  {tried}\n"
                "If this machine is offline, copy the four MNIST files (raw or .gz) into a folder "
                "and pass load_mnist(path=...) or set SCRATCHADV_DATA=/that/folder.")
    return folder


def _fetch(url, out, timeout, desc=None):
    req = urllib.request.Request(url, headers={"User-Agent": "scratchadv"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        total = int(r.headers.get("Content-Length") or 0) or None
        bar = Progress(total=total, desc=f"download {desc}", enable=desc is not None)
        with bar:
            while True:
                chunk = r.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))


def load_mnist(path=None, download=True):
    """(x_train, y_train, x_test, y_test): float32 (N, 1, 28, 28) in [0, 1]; int64 (N,).

    60,000 training and 10,000 test images. See the module docstring for where it looks.
    """
    folder, files = find_mnist(path)
    if files is None:
        if not download:
            raise DataError(_not_found_message(folder))
        try:
            download_mnist(folder)
        except DataError as e:
            raise DataError(f"{e}\n{_not_found_message(folder)}") from None
        files = _locate(folder)[0]
    arrays = {role: read_idx(files[role], MNIST_FILES[role][1]) for role in MNIST_FILES}
    out = []
    for split in ("train", "test"):
        img, lab = arrays[split + "_images"], arrays[split + "_labels"]
        if img.ndim != 3 or img.shape[1:] != (28, 28) or lab.ndim != 1 or len(lab) != len(img):
            raise DataError(f"MNIST {split} files have unexpected shapes {img.shape} / {lab.shape}")
        x = (img.astype(onp.float32) / onp.float32(255.0)).reshape(-1, 1, 28, 28)
        out += [x, lab.astype(onp.int64)]
    return tuple(out)


def _not_found_message(cache):
    return ("MNIST was not found. Looked in: the path argument (not given), $SCRATCHADV_DATA "
            f"(not set), and the cache {cache!r}. Point the library at local files with "
            "load_mnist(path='/folder') or SCRATCHADV_DATA=/folder (the folder must hold "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte, raw or .gz).")
