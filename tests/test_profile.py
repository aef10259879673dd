"""scripts/profile.py: the profile hook's self times, call counts and bytes."""
import sys
import time

import numpy as np
import pytest

from conftest import load_script

prof = load_script("profile")


def _toy_module(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(
        "import time\n"
        "def inner(x):\n"
        "    time.sleep(0.02)\n"
        "    return x * 2\n"
        "def outer(x):\n"
        "    time.sleep(0.01)\n"
        "    return inner(x) + inner(x)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import toy
    finally:
        sys.path.remove(str(tmp_path))
    return toy, str(path)


def test_self_time_calls_and_bytes(tmp_path):
    toy, path = _toy_module(tmp_path)
    x = np.zeros(1000, dtype=np.float32)                     # 4000 bytes
    wall, profiled, stats = prof.profile(lambda: toy.outer(x), [path])
    assert stats["outer"]["calls"] == 1 and stats["inner"]["calls"] == 2
    assert stats["inner"]["bytes_in"] == 2 * 4000 and stats["inner"]["bytes_out"] == 2 * 4000
    assert stats["outer"]["bytes_in"] == 4000
    # outer's self time excludes the two inner calls (0.01 s of its own, 0.04 s inside inner)
    assert 0.009 <= stats["outer"]["self_s"] < 0.03
    assert stats["inner"]["self_s"] >= 0.039
    p = prof.summarize("toy", "toy", wall, profiled, stats)
    assert p["functions"][0]["function"] == "inner"         # sorted by self time
    assert p["by_pass"]["everything else"] == pytest.approx(max(wall - p["tracked_self_s"], 0.0))
    assert "inner" in prof.format_profile(p)


def test_untracked_files_are_not_counted(tmp_path):
    toy, _ = _toy_module(tmp_path)
    _, _, stats = prof.profile(lambda: toy.outer(np.zeros(3)), [str(tmp_path / "other.py")])
    assert stats == {}


def test_bad_arguments_name_the_flag(capsys):
    for argv, flag in ((["--threads", "0"], "--threads"), (["--only", "epoch,magic"], "--only")):
        with pytest.raises(SystemExit) as e:
            prof.parse_args(argv)
        assert e.value.code == 2 and flag in capsys.readouterr().err
