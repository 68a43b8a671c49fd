"""The Python example under examples/ runs and prints what it promises."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python" / "chat.py"


def test_the_example_runs():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "cosine" in out.lower(), out
    # The published similarity of the two sentences, to the printed precision.
    assert "0.666" in out, out
