"""scripts/step_parts.py: the three step kinds it times, its report, its arguments."""
import numpy as np
import pytest

from conftest import load_script, tiny_images

sp = load_script("step_parts")


def test_median_of_the_timed_calls():
    calls = []
    assert sp.median_ms(lambda: calls.append(1), 5) >= 0
    assert len(calls) == 6                       # one untimed call first


def test_steps_whole_part_and_in_workers():
    from scratchadv.model import init_params
    x = tiny_images(64, seed=2)
    y = np.arange(64, dtype=np.int64) % 10
    r = sp.time_steps(x, y, init_params(0), workers=2, batch=32, repeats=2)
    assert set(r) == {"whole", "part", "in_workers"}
    assert all(v > 0 for v in r.values()), r


def test_report_names_every_number():
    r = {"workers": 2, "batch": 128, "repeats": 60, "part_images": 64, "steps": 469,
         "steps_ms": {"whole": 12.0, "part": 6.0, "in_workers": 8.0},
         "epoch_s": {"one_process": 6.0, "workers": 4.5}}
    text = sp.format_report(r)
    for s in ("12.00 ms", "6.00 ms", "8.00 ms", "1.50x the whole step", "at most 2.00x",
              "one process 6.00 s", "2 workers 4.50 s", "3.75 s", "2.81 s"):
        assert s in text, (s, text)
    del r["epoch_s"]
    assert "epoch" not in sp.format_report(r)


@pytest.mark.parametrize("argv,flag", [(["--workers", "1"], "--workers"),
                                       (["--batch", "1"], "--batch"),
                                       (["--repeats", "0"], "--repeats")])
def test_bad_arguments_name_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        sp.parse_args(argv)
    assert e.value.code == 2 and flag in capsys.readouterr().err
