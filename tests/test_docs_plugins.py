"""docs/plugins.md and the README stay true: their plugin files and conformance tests pass as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("doc", ["docs/plugins.md", "README.md"])
def test_walkthrough_plugin_passes_its_kit_test(tmp_path: Path, doc: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), flags=re.DOTALL)
    plugin = next(b for b in blocks if "@register_norm(" in b)
    test = next(b for b in blocks if 'plugin="mynorm.py"' in b)
    (tmp_path / "mynorm.py").write_text(plugin)
    (tmp_path / "test_mynorm.py").write_text(test)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mynorm.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
