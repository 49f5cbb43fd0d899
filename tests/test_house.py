"""The house's rules, checked on the code itself (CONTRIBUTING.md, "The map").

Floors: a module imports only from the floors below its own, never upward, so the
package has no import circle between floors. The floors are declared once, as an
import-linter contract in setup.cfg; this test runs it.
"""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def lint_imports(root=ROOT, env=None):
    """Run import-linter on the package under `root` with setup.cfg's contract."""
    binary = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(binary), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_every_module_imports_only_from_the_floors_below_it():
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_an_upward_import_breaks_the_floors(tmp_path):
    """The contract bites: a copy of the package where the codec (a low floor) imports
    the endpoint (a high one) is refused, naming both."""
    import shutil

    copy = tmp_path / "house"
    shutil.copytree(ROOT / "wsserver", copy / "wsserver")
    shutil.copy(ROOT / "setup.cfg", copy / "setup.cfg")
    codec = copy / "wsserver" / "protocol" / "codec.py"
    codec.write_text(codec.read_text() + "\nfrom ..endpoint import WebSocketEndpoint  # noqa\n")
    result = lint_imports(copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0, result.stdout
    assert "wsserver.protocol.codec -> wsserver.endpoint" in result.stdout, result.stdout
