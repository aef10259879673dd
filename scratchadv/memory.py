"""How the process's C allocator treats the primitives' short-lived arrays.

One training step of the lecture CNN allocates and frees a few dozen arrays of 0.1 to
3 MB (activations, masks, gradients, the convolutions' work space). glibc's ``malloc``
by default hands arrays above a moving threshold straight to the kernel (``mmap``) and
gives freed memory at the top of its heap back (``trim``) once more than twice that
threshold is free; with this mix of sizes it does both on every step, and each page
touched again is a page fault, the kernel zeroing 4 KB. Measured here (batch of 128,
float32, one thread): 1,391 page faults per forward pass (5.7 MB) and 1,661 per training
gradient, which made the forward pass 1.4-1.8x and the training gradient 1.2-1.5x slower
than with the settings below, under which both take 0-3 faults.

So, when the package is imported, :func:`keep_freed_memory` asks glibc (``mallopt``)

- to take arrays below 32 MB (``M_MMAP_THRESHOLD``; glibc's largest allowed value) from its
  heap, and
- to keep up to 128 MB of freed heap memory for reuse (``M_TRIM_THRESHOLD``).

These are what the environment variables ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` set; results do not change, only where memory comes from, and
the process may hold up to 128 MB it no longer uses. It is a setting of the whole
process, like NumPy's own choice of huge pages at import (``NUMPY_MADVISE_HUGEPAGE``).
Set ``SCRATCHADV_MALLOC=system`` before the import to leave the allocator as it is; the
environment variables above, when set, are respected too. Elsewhere than glibc (macOS,
Windows, musl) nothing is changed.
"""
import ctypes
import os

__all__ = ["keep_freed_memory", "allocator_settings", "ENV_VAR", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

#: the environment variable that opts out (value ``system``)
ENV_VAR = "SCRATCHADV_MALLOC"
#: arrays below this many bytes come from the heap
MMAP_THRESHOLD = 32 << 20
#: up to this many bytes of freed heap memory are kept
TRIM_THRESHOLD = 128 << 20

# glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_state = {"settings": None}


def _glibc_mallopt():
    """glibc's ``mallopt``, or None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version          # only glibc has it (musl has a mallopt that does nothing)
        fn = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return fn


def keep_freed_memory():
    """Apply the settings above once (no-op when opted out or not on glibc); returns
    :func:`allocator_settings`."""
    if _state["settings"] is not None:
        return _state["settings"]
    choice = os.environ.get(ENV_VAR, "").strip().lower()
    if choice not in ("", "system", "keep"):
        raise ValueError(f"{ENV_VAR}: expected 'system' (leave malloc as it is) or 'keep' "
                         f"(the default), got {os.environ[ENV_VAR]!r}")
    mallopt = _glibc_mallopt()
    if choice == "system":
        settings = {"allocator": "system", "reason": f"{ENV_VAR}=system"}
    elif mallopt is None:
        settings = {"allocator": "system", "reason": "not glibc"}
    elif any(v in os.environ for v in _GLIBC_VARS):
        settings = {"allocator": "system", "reason": "MALLOC_*_ environment variables set"}
    else:
        ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = (mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1) and ok
        settings = ({"allocator": "glibc, kept", "mmap_threshold": MMAP_THRESHOLD,
                     "trim_threshold": TRIM_THRESHOLD} if ok else
                    {"allocator": "system", "reason": "mallopt refused the settings"})
    _state["settings"] = settings
    return settings


def allocator_settings():
    """What :func:`keep_freed_memory` did: ``{"allocator": "glibc, kept", ...}`` or
    ``{"allocator": "system", "reason": ...}`` (None before it ran)."""
    return None if _state["settings"] is None else dict(_state["settings"])
