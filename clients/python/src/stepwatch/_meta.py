"""What a run records about itself at start: host, Python and framework versions,
command line, git commit."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from typing import Any

#: Frameworks whose version is recorded when the trainer has imported them.
FRAMEWORKS = ("torch", "transformers", "lightning", "pytorch_lightning", "accelerate", "numpy")


def _git(*args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_meta() -> dict[str, Any]:
    """The metadata ``emit_training_start`` sends as ``meta``."""
    meta: dict[str, Any] = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
    }
    for name in FRAMEWORKS:
        mod = sys.modules.get(name)
        version = getattr(mod, "__version__", None) if mod else None
        if version:
            meta[name] = str(version)
    commit = _git("rev-parse", "HEAD")
    if commit:
        meta["git_commit"] = commit
        meta["git_dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return meta
