"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A crash, Ctrl-C or full disk in the middle of a write leaves either the old file or
no file, never a half-written one. ``check_writable`` fails early (before hours of
work) when the destination cannot be written.
"""
import contextlib
import json
import os
import tempfile

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "check_writable",
           "marked_block", "replace_marked_block", "write_marked_block"]


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Context manager yielding a file object; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:   # make the rename itself durable
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_json(path, obj):
    """Write ``obj`` as indented JSON (UTF-8, trailing newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable(path, name="path"):
    """Raise ``ValueError`` now if ``path`` cannot be created/replaced later.

    Creates the parent folder if needed and writes (then removes) a probe file beside
    the destination, so a read-only folder or a full disk is reported before training.
    """
    if path is None:
        return
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name}: expected a file path, got the folder {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe-", suffix=".tmp")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"{name}: cannot write to {path!r} ({e.strerror or e})") from None


def _marker_span(text, begin, end, where):
    if begin not in text or end not in text or text.index(begin) > text.index(end):
        raise ValueError(f"{where}: expected the markers {begin} and {end}, in that order")
    return text.index(begin) + len(begin), text.index(end)


def marked_block(text, begin, end, where="text"):
    """The text between the markers ``begin`` and ``end`` (without the newline after begin)."""
    a, b = _marker_span(text, begin, end, where)
    return text[a:b].lstrip("\n")


def replace_marked_block(text, begin, end, block, where="text"):
    """``text`` with the part between the markers replaced by ``block`` (its own lines)."""
    a, b = _marker_span(text, begin, end, where)
    return text[:a] + "\n" + block + text[b:]


def write_marked_block(path, begin, end, block):
    """Replace the block between the markers in the file at ``path``, atomically."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    atomic_write_bytes(path, replace_marked_block(text, begin, end, block, where=path).encode())
