"""``stepwatch`` (or ``python -m stepwatch``): ``sync`` sends spooled events to a relay;
``launch``, ``jobs`` and ``cancel`` submit, list and cancel jobs
(:mod:`stepwatch._launch_cli`); ``export`` writes a run's history as CSV or its events as
JSON lines (:mod:`stepwatch._export_cli`); ``serve`` and the server's other commands run
the ``stepwatch-server`` binary when the server package is installed
(:mod:`stepwatch._server`).

``sync DIR [--url URL]``:

A trainer that exits while the relay is down leaves its unsent events in the spool
(``STEPWATCH_SPOOL_DIR`` or ~/.cache/stepwatch/spool, one folder per run). The next
process for the same run sends them by itself; this command sends them all now. Events
carry their ``src``/``seq``, so sending twice stores them once. The bytes of spooled
images (``<run>/media/<sha256>``) are uploaded before the events that refer to them; an
image the relay refuses, or whose bytes are gone, is left out with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from . import _export_cli, _server
from . import _launch_cli as _cli
from ._relay import default_spool_dir
from ._spool import read_lines, spool_files
from ._wire import dumps

#: Events per request when sending a spool file.
CHUNK = 1000


def _post(url: str, lines: list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    body = "\n".join(dumps(e) for e in lines).encode()
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-ndjson"}
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        answer: dict[str, Any] = json.loads(r.read() or b"{}")
        return answer


def _media(method: str, url: str, body: bytes | None, token: str | None) -> None:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/octet-stream")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()


def _with_images(
    base: str, run_dir: Path, lines: list[dict[str, Any]], token: str | None, done: set[str]
) -> list[dict[str, Any]]:
    """Uploads the bytes of the images in ``lines`` (``done``: held already); the lines
    without the images refused or lost. Raises on a relay away or failing (5xx)."""
    keep = []
    for e in lines:
        sha = e.get("media") if e.get("event") == "image" else None
        if not isinstance(sha, str) or sha in done:
            keep.append(e)
            continue
        path = run_dir / "media" / sha
        try:
            try:
                blob = path.read_bytes()
            except OSError:
                _media("GET", f"{base}/media/{sha}", None, token)  # held already?
            else:
                _media("PUT", f"{base}/media/{sha}", blob, token)
            done.add(sha)
            keep.append(e)
        except urllib.error.HTTPError as e2:
            if e2.code >= 500 or e2.code in (401, 403, 408, 429):
                raise
            detail = e2.read().decode(errors="replace")[:300]
            print(
                f"{run_dir.name}: image {e.get('name')!r} left out ({e2.code}: {detail})",
                file=sys.stderr,
            )
    return keep


def sync(spool: Path, url: str, token: str | None = None) -> tuple[int, int]:
    """Sends every spool file under ``spool`` in chunks, oldest first; a file is removed
    once the relay took all of it. Returns (files sent, files left)."""
    sent = left = 0
    runs = sorted(p for p in spool.iterdir() if p.is_dir()) if spool.is_dir() else []
    for run_dir in runs:
        base = f"{url.rstrip('/')}/api/runs/{run_dir.name}"
        endpoint = f"{base}/events"
        images: set[str] = set()
        for path in spool_files(spool, run_dir.name):
            stored = duplicates = pos = 0
            try:
                while True:
                    lines, pos = read_lines(path, pos, CHUNK)
                    if not lines:
                        break
                    lines = _with_images(base, run_dir, lines, token, images)
                    if not lines:
                        continue
                    answer = _post(endpoint, lines, token)
                    stored += answer.get("accepted", 0)
                    duplicates += answer.get("duplicates", 0)
                path.unlink()
                sent += 1
                print(f"{run_dir.name}: {path.name}: {stored} stored, {duplicates} already there")
            except urllib.error.HTTPError as e:
                left += 1
                detail = e.read().decode(errors="replace")[:300]
                print(f"{run_dir.name}: {path.name}: refused ({e.code}: {detail})", file=sys.stderr)
            except (urllib.error.URLError, OSError) as e:
                left += 1
                print(f"{run_dir.name}: {path.name}: not sent ({e})", file=sys.stderr)
        media = run_dir / "media"
        if media.is_dir() and not spool_files(spool, run_dir.name):
            try:
                for p in media.iterdir():  # every event that referred to them was sent
                    p.unlink()
                media.rmdir()
            except OSError:
                pass
    return sent, left


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepwatch",
        description=(
            "Stepwatch trainer SDK tools. The server's commands (serve, agent, demo, "
            "migrate, hash-password, new-token) run the stepwatch-server binary: "
            'pip install "stepwatch[server]".'
        ),
        epilog=(
            "environment: STEPWATCH_URL (relay, default http://127.0.0.1:8080), "
            "STEPWATCH_RUN, STEPWATCH_TOKEN, STEPWATCH_SPOOL_DIR (default "
            "~/.cache/stepwatch/spool), STEPWATCH_SPOOL_MAX_BYTES (default 128M), "
            "STEPWATCH_EXIT_FLUSH (seconds, default 3), STEPWATCH_MEDIA_MAX_BYTES (images "
            "held in memory, default 64M), STEPWATCH_SYSTEM_INTERVAL, "
            "STEPWATCH_HEARTBEAT_INTERVAL (seconds, 0 = off)"
        ),
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    url = os.environ.get("STEPWATCH_URL", "http://127.0.0.1:8080")
    s = sub.add_parser("sync", help="send spooled events to a relay")
    s.add_argument("dir", nargs="?", default=str(default_spool_dir()), help="the spool folder")
    s.add_argument("--url", default=url)
    _cli.add_commands(sub, url)
    _export_cli.add_command(sub, url)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in _server.SERVER_COMMANDS:
        return _server.run(argv)
    args = _parser().parse_args(argv)
    if args.cmd == "export":
        return _export_cli.run(args)
    if args.cmd != "sync":
        return _cli.run(args)
    sent, left = sync(Path(args.dir), args.url, os.environ.get("STEPWATCH_TOKEN"))
    print(f"{sent} spool files sent, {left} left")
    return 0 if left == 0 else 1


def cli() -> None:
    """The ``stepwatch`` command (the package's console script)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
