"""The reliability soak (tests/soak/soak.py) in its short form: 20 s of mixed load (HTTP/1.1 unary and
streams, native gRPC over HTTP/2, WebSockets, cancels, deadlines, errors, a slow reader, connection churn,
hot reloads) against one gateway. Every operation must end as its kind expects, the gateway must exit 0
without sanitizer reports (run with the ASan build in `make asan`), and RSS must not grow grossly. The
10-minute run with a strict slope is `tests/soak/soak.py` by hand (see bench/README.md)."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import _portico_binary

SOAK = Path(__file__).resolve().parent.parent / "soak" / "soak.py"


def test_short_soak():
    # Under ASan the allocator's quarantine (freed memory held back to catch use-after-free) fills for
    # minutes, so 20 s cannot tell growth from warm-up: only a gross slope fails there; LeakSanitizer at
    # exit is the leak check. Without sanitizers 4 MiB/min over the second half is already far above noise.
    slope = "65536" if os.environ.get("PTC_SANITIZED") else "4096"
    proc = subprocess.run([sys.executable, str(SOAK), "--seconds", "20", "--binary", str(_portico_binary()), "--max-slope", slope],
                          capture_output=True, text=True, timeout=180, env=dict(os.environ))
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "soak: passed" in proc.stdout
