"""The scripts README and CONTRIBUTING point users to start at all (imports, arguments)."""

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize("script", ["edit.py", "bench", "bench-flood"])
def test_script_starts(script):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()
