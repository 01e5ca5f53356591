"""The package installs with pip, ships its type marker and its command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_pip_install_gives_a_typed_package_and_a_working_cli(tmp_path: Path):
    source = tmp_path / "source"  # pip may build in the tree: keep the repo clean
    shutil.copytree(
        REPO / "clients" / "python",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q"] + [str(source)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr
    check = "import pathlib, stepwatch; print(pathlib.Path(stepwatch.__file__).parent)"
    where = subprocess.run([str(py), "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    installed = Path(where.stdout.strip())
    assert installed.is_relative_to(venv), "imported the source tree, not the installed copy"
    assert (installed / "py.typed").exists()
    cli = subprocess.run(
        [str(py), "-m", "stepwatch", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert cli.returncode == 0 and "sync" in cli.stdout and "STEPWATCH_URL" in cli.stdout
