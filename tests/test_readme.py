"""Every Python block of the README runs, as a user would run it: the documentation cannot rot.

Blocks run in a folder holding `data/input.parquet`. A block whose first line is
`# needs: porch up` runs with a porch system up for `$PORCH_DATA_DIR`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from actors.api.system import System
from stages.sample import write_sample

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    (root / "data").mkdir()
    write_sample(root / "data" / "input.parquet", 3000, seed=9)
    return root


@pytest.fixture(scope="module")
def running(folder):
    system = System(data_dir=folder / "shared-porch", workers=1, log=subprocess.DEVNULL)
    system.start()
    yield system.data_dir
    system.stop()


def test_the_readme_has_the_six_example_themes():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for title in ("Basic execution", "Monitoring integration", "Scheduled executions",
                  "Error handling and recovery", "Performance tuning", "A complete workflow"):  # fmt: skip
        assert f"### {title}\n" in text


@pytest.mark.parametrize(("line", "code"), blocks(), ids=[f"README.md:{n}" for n, _ in blocks()])
def test_a_readme_block_runs(line, code, folder, request):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if code.startswith("# needs: porch up"):
        env["PORCH_DATA_DIR"] = str(request.getfixturevalue("running"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=240, check=False)  # fmt: skip
    assert proc.returncode == 0, f"README.md:{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_the_layout_section_names_every_module():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout") :]
    folds = layout[layout.index("projections/") : layout.index("statecodec.py")]
    missing = []
    for package in ("bus", "store", "actors", "stages"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__init__.py" or "commands" in path.parts:
                continue  # commands/: "one module per group of porch subcommands"
            if path.parent.name == "projections":
                if path.stem not in folds:
                    missing.append(path.stem)
            elif path.name not in layout:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []
