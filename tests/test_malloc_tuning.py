"""The daemon's glibc malloc settings hand freed large blocks back to the system."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from qasr.daemon.malloc_tuning import tune_malloc
    if sys.argv[1] == "tuned":
        assert tune_malloc()
    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    big = np.ones(16 << 17)  # 16 MB: freeing it makes default glibc raise its mmap threshold
    del big
    before = rss_mb()
    blocks = [np.ones(1 << 17) for _ in range(60)]  # 60 x 1 MB
    keep = blocks[-1]  # the newest block stays: heap memory below it cannot be trimmed
    del blocks
    print(rss_mb() - before)
""")


def _growth(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_large_blocks_leave_the_process():
    tuned = _growth("tuned")
    assert tuned < 10.0, f"{tuned:.0f} MB of 60 freed 1 MB blocks stayed resident (untuned: {_growth('plain'):.0f} MB)"
