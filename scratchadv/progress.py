"""A dependency-free progress bar for long loops (a small subset of tqdm's interface).

    for batch in progress(range(469), desc="epoch 1/10"):
        ...

Writes to stderr, redraws at most ~10 times a second, and is silent when ``enable``
is False or when stderr is not a terminal and ``SCRATCHADV_PROGRESS=0``. Postfix text
(``bar.set_postfix(loss=0.12)``) is shown after the counter.
"""
import os
import sys
import time

__all__ = ["progress", "Progress"]


def _enabled_by_default():
    flag = os.environ.get("SCRATCHADV_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "no", "")
    return True


def _fmt_time(s):
    s = round(s)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Iterate over ``iterable`` and draw ``desc |#####     | i/total [elapsed<eta] postfix``."""

    def __init__(self, iterable=None, total=None, desc="", enable=None, stream=None,
                 width=24, min_interval=0.1):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total = total
        self.desc = desc
        self.enable = _enabled_by_default() if enable is None else bool(enable)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.n = 0
        self.postfix = ""
        self.start = time.perf_counter()
        self._last = 0.0
        self._isatty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def set_postfix(self, **kv):
        parts = []
        for k, v in kv.items():
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        self.postfix = " ".join(parts)

    def update(self, k=1):
        self.n += k
        now = time.perf_counter()
        if now - self._last >= self.min_interval or (self.total and self.n >= self.total):
            self._last = now
            self._draw(now)

    def _line(self, now):
        elapsed = now - self.start
        if self.total:
            frac = min(1.0, self.n / self.total)
            filled = int(frac * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            core = f"|{bar}| {self.n}/{self.total} [{_fmt_time(elapsed)}<{_fmt_time(eta)}]"
        else:
            core = f"{self.n} [{_fmt_time(elapsed)}]"
        desc = f"{self.desc} " if self.desc else ""
        post = f" {self.postfix}" if self.postfix else ""
        return desc + core + post

    def _draw(self, now):
        if not self.enable:
            return
        if self._isatty:
            self.stream.write("\r" + self._line(now) + "\x1b[K")
            self.stream.flush()

    def close(self):
        if not self.enable:
            return
        line = self._line(time.perf_counter())
        if self._isatty:
            self.stream.write("\r" + line + "\x1b[K\n")
        else:
            # Not a terminal (a log file, CI): one line at the end instead of redraws.
            self.stream.write(line + "\n")
        self.stream.flush()
        self.enable = False


def progress(iterable=None, total=None, desc="", enable=None, **kw):
    """Wrap an iterable in a :class:`Progress` bar."""
    return Progress(iterable, total=total, desc=desc, enable=enable, **kw)
