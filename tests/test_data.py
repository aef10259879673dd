"""MNIST loader: IDX parsing, both file names, gz and raw, checksums, download path."""
import gzip
import hashlib
import os
import shutil
import struct

import numpy as np
import pytest

from scratchadv import data
from scratchadv.data import DataError, download_mnist, find_mnist, load_mnist, read_idx


def idx_bytes(arr):
    """Encode a uint8 array as IDX (magic 0x0000 08 <ndim>, big-endian dims, data)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def write(path, payload, gz):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


@pytest.fixture
def fake_set(tmp_path, monkeypatch):
    """A tiny data set in MNIST's format, with MNIST_FILES patched to its digests."""
    r = np.random.default_rng(0)
    arrays = {
        "train_images": r.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        "train_labels": r.integers(0, 10, size=6, dtype=np.uint8),
        "test_images": r.integers(0, 256, size=(4, 28, 28), dtype=np.uint8),
        "test_labels": r.integers(0, 10, size=4, dtype=np.uint8),
    }
    files = {}
    for role, (name, _, _) in data.MNIST_FILES.items():
        payload = idx_bytes(arrays[role])
        files[role] = (name, hashlib.sha256(payload).hexdigest(), len(payload))
    monkeypatch.setattr(data, "MNIST_FILES", files)
    monkeypatch.delenv("SCRATCHADV_DATA", raising=False)
    monkeypatch.setenv("SCRATCHADV_CACHE", str(tmp_path / "cache"))

    def make(folder, gz=True, dotted=False):
        os.makedirs(folder, exist_ok=True)
        for role, (name, _, _) in files.items():
            fname = name.replace("-idx", ".idx") if dotted else name
            write(os.path.join(folder, fname + (".gz" if gz else "")), idx_bytes(arrays[role]), gz)
        return folder
    return arrays, make


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dotted", [False, True])
def test_loads_gz_and_raw_under_both_names(fake_set, tmp_path, gz, dotted):
    arrays, make = fake_set
    folder = make(str(tmp_path / "d"), gz=gz, dotted=dotted)
    xtr, ytr, xte, yte = load_mnist(folder)
    assert xtr.dtype == np.float32 and xtr.shape == (6, 1, 28, 28)
    assert ytr.dtype == np.int64 and yte.shape == (4,)
    np.testing.assert_array_equal(xtr[:, 0] * 255, arrays["train_images"].astype(np.float32))
    np.testing.assert_array_equal(yte, arrays["test_labels"])
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0


def test_env_variable_is_used_and_path_argument_wins(fake_set, tmp_path, monkeypatch):
    _, make = fake_set
    env_folder = make(str(tmp_path / "env"))
    monkeypatch.setenv("SCRATCHADV_DATA", env_folder)
    assert find_mnist()[0] == env_folder
    arg_folder = make(str(tmp_path / "arg"))
    assert find_mnist(arg_folder)[0] == arg_folder


def test_corrupted_file_is_named(fake_set, tmp_path):
    _, make = fake_set
    folder = make(str(tmp_path / "d"), gz=False)
    path = os.path.join(folder, "t10k-images-idx3-ubyte")
    with open(path, "r+b") as f:
        f.seek(500)
        f.write(b"\x07")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*SHA-256"):
        load_mnist(folder)


def test_truncated_gzip_is_named(fake_set, tmp_path):
    _, make = fake_set
    folder = make(str(tmp_path / "d"), gz=True)
    path = os.path.join(folder, "train-labels-idx1-ubyte.gz")
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_mnist(folder)


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="magic"):
        read_idx(str(path))


def test_header_size_mismatch(tmp_path):
    path = tmp_path / "short-idx1-ubyte"
    path.write_bytes(struct.pack(">HBBI", 0, 8, 1, 10) + b"\x01" * 5)
    with pytest.raises(DataError, match="truncated"):
        read_idx(str(path))


def test_missing_files_in_explicit_folder_are_listed(fake_set, tmp_path):
    _, make = fake_set
    folder = make(str(tmp_path / "d"))
    os.unlink(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist(folder)


def test_offline_error_says_where_it_looked(fake_set, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", ("file:///nonexistent/mirror/",))
    monkeypatch.setattr(data.download_mnist, "__defaults__",
                        (None, ("file:///nonexistent/mirror/",), 1, 1, False, None))
    with pytest.raises(DataError, match="SCRATCHADV_DATA"):
        load_mnist()
    # nothing half-downloaded is left in the cache
    cache = data.cache_dir()
    assert not [f for f in os.listdir(cache) if not f.startswith(".")] if os.path.isdir(cache) else True
    assert not any(f.endswith(".part") for f in os.listdir(cache)) if os.path.isdir(cache) else True


def test_download_skips_bad_mirror_and_caches_only_good_files(fake_set, tmp_path):
    arrays, make = fake_set
    good = make(str(tmp_path / "good"), gz=True)
    bad = str(tmp_path / "bad")
    os.makedirs(bad)
    for name, _, _ in data.MNIST_FILES.values():      # same names, wrong content
        write(os.path.join(bad, name + ".gz"), idx_bytes(np.zeros((3,), np.uint8)), True)
    dest = str(tmp_path / "cache")
    download_mnist(dest, mirrors=("file://" + bad + "/", "file://" + good + "/"),
                   retries=1, verbose=False)
    assert sorted(os.listdir(dest)) == sorted(n + ".gz" for n, _, _ in data.MNIST_FILES.values())
    xtr, ytr, _, _ = load_mnist(dest)
    np.testing.assert_array_equal(ytr, arrays["train_labels"])


def test_download_from_only_bad_mirrors_caches_nothing(fake_set, tmp_path):
    bad = str(tmp_path / "bad")
    os.makedirs(bad)
    for name, _, _ in data.MNIST_FILES.values():
        write(os.path.join(bad, name + ".gz"), b"not an idx file", True)
    dest = str(tmp_path / "cache")
    with pytest.raises(DataError, match="could not download"):
        download_mnist(dest, mirrors=("file://" + bad + "/",), retries=2, verbose=False)
    assert os.listdir(dest) == []


@pytest.mark.mnist
def test_real_mnist_shapes_and_checksums(mnist):
    x_train, y_train, x_test, y_test = mnist
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.mnist
def test_real_files_download_through_file_mirror(tmp_path):
    """The real download code path, with the local copy standing in for a mirror."""
    src = os.environ["SCRATCHADV_DATA"]
    found = find_mnist(src)[1]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for role, path in found.items():
        name = data.MNIST_FILES[role][0]
        if path.endswith(".gz"):
            shutil.copy(path, mirror / (name + ".gz"))
        else:
            with gzip.open(mirror / (name + ".gz"), "wb", compresslevel=1) as f:
                f.write(data._read_bytes(path))
    dest = tmp_path / "cache"
    download_mnist(str(dest), mirrors=("file://" + str(mirror) + "/",), verbose=False)
    assert len(load_mnist(str(dest))[0]) == 60000


@pytest.mark.parametrize("seed", range(8))
def test_random_truncation_or_corruption_is_always_caught(fake_set, tmp_path, seed):
    """Fault injection: cut or flip bytes at random offsets of a random file, gz or raw."""
    _, make = fake_set
    r = np.random.default_rng(seed)
    gz = bool(seed % 2)
    folder = make(str(tmp_path / "d"), gz=gz)
    victim = sorted(os.listdir(folder))[int(r.integers(0, 4))]
    path = os.path.join(folder, victim)
    blob = bytearray(open(path, "rb").read())
    if seed % 4 < 2:
        blob = blob[: int(r.integers(0, len(blob)))]
    else:
        for i in r.integers(0, len(blob), size=3):
            blob[i] ^= 0x5A
    open(path, "wb").write(bytes(blob))
    arrays, _ = fake_set
    try:
        xtr, ytr, xte, yte = load_mnist(folder)
    except DataError as e:
        assert victim in str(e)
    else:
        # only bytes outside the content were hit (e.g. the gzip header's timestamp):
        # then what was loaded must be exactly the original data
        assert gz
        np.testing.assert_array_equal(ytr, arrays["train_labels"])
        np.testing.assert_array_equal(yte, arrays["test_labels"])
        np.testing.assert_array_equal(xtr[:, 0] * 255, arrays["train_images"])
        np.testing.assert_array_equal(xte[:, 0] * 255, arrays["test_images"])


def test_find_mnist_and_locate_return_what_their_docstrings_say(fake_set, tmp_path):
    _, make = fake_set
    folder = make(str(tmp_path / "d"))
    found, missing = data._locate(folder)
    assert missing == [] and sorted(found) == sorted(data.MNIST_FILES)
    assert find_mnist(folder) == (folder, found)
    os.remove(found["test_labels"])
    found, missing = data._locate(folder)
    assert "test_labels" not in found and len(missing) == 1
    with pytest.raises(DataError, match="missing"):
        find_mnist(folder)
    # an empty cache: the folder to download into, and no files
    assert find_mnist() == (data.cache_dir(), None)
