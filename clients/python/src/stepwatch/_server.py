"""The server's commands under the SDK's ``stepwatch`` command: ``stepwatch serve`` (and
``agent``, ``demo``, ``migrate``, ``hash-password``, ``new-token``) run the relay binary
``stepwatch-server`` that the ``stepwatch-server`` package installs
(``pip install "stepwatch[server]"``), with the same arguments. The SDK itself stays
pure Python: without that package these commands say what to install and exit 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

#: The relay's own commands (everything else is the SDK's).
SERVER_COMMANDS = frozenset(
    {"serve", "agent", "demo", "migrate", "hash-password", "new-token", "precompress"}
)
#: The binary the server package installs.
BINARY = "stepwatch-server"

NOT_INSTALLED = (
    "stepwatch {cmd}: the Stepwatch server is not installed here.\n"
    '  pip install "stepwatch[server]"   (the relay with its dashboard, one wheel)\n'
    "In a source checkout, `cargo xtask run` builds and starts it (target/release/stepwatch);\n"
    "STEPWATCH_SERVER_BIN names a relay binary to use."
)


def find_binary() -> str | None:
    """``stepwatch-server`` beside this interpreter's scripts (the venv it was installed
    into), else on PATH; ``STEPWATCH_SERVER_BIN`` overrides both."""
    explicit = os.environ.get("STEPWATCH_SERVER_BIN")
    if explicit:
        return explicit
    scripts = sysconfig.get_path("scripts")
    for folder in (scripts, str(Path(sys.executable).parent)):
        candidate = Path(folder) / BINARY
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(BINARY)


def run(argv: list[str]) -> int:
    """Runs the server command ``argv`` (``["serve", "--bind", ...]``); its exit status."""
    binary = find_binary()
    if binary is None:
        print(NOT_INSTALLED.format(cmd=argv[0]), file=sys.stderr)
        return 2
    if os.name == "posix":
        # The server takes this process's place: signals (Ctrl-C, SIGTERM from a
        # supervisor) reach it directly, and its exit status is the command's.
        os.execv(binary, [binary, *argv])
    return subprocess.call([binary, *argv])
