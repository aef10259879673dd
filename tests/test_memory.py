"""scratchadv.memory: freed arrays are reused from the heap, not faulted in afresh."""
import json
import os
import platform
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)

# A fresh process (the allocator's state depends on its whole history): one forward pass
# of the lecture CNN as warm-up, then the minor page faults of ten more.
PROBE = """
import json, resource
import numpy as np
import scratchadv.memory as memory
from scratchadv.model import init_params, predict
x = np.random.default_rng(0).random((128, 1, 28, 28), dtype=np.float32)
p = init_params(0)
predict(p, x)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    predict(p, x)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(json.dumps({"settings": memory.allocator_settings(), "faults": faults}))
"""


def _probe(**env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    e.pop("SCRATCHADV_MALLOC", None)
    e.update(env, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")


@glibc
def test_a_forward_pass_faults_in_no_fresh_memory_after_the_first():
    r = _probe()
    assert r["settings"] == {"allocator": "glibc, kept", "mmap_threshold": 32 << 20,
                             "trim_threshold": 128 << 20}
    # a batch of 128 allocates about 6 MB of arrays per pass (1,500 pages): with the heap
    # keeping them, almost none is a fresh page
    assert r["faults"] < 64, r


@glibc
def test_system_leaves_the_allocator_as_it_is():
    r = _probe(SCRATCHADV_MALLOC="system")
    assert r["settings"] == {"allocator": "system", "reason": "SCRATCHADV_MALLOC=system"}


@glibc
def test_the_users_own_malloc_variables_are_respected():
    r = _probe(MALLOC_TRIM_THRESHOLD_="1000000")
    assert r["settings"]["allocator"] == "system"
    assert "MALLOC_" in r["settings"]["reason"]


def test_an_unknown_choice_is_a_clear_error():
    e = dict(os.environ, SCRATCHADV_MALLOC="fast", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", "import scratchadv"], env=e,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "SCRATCHADV_MALLOC: expected 'system'" in out.stderr and "'fast'" in out.stderr
