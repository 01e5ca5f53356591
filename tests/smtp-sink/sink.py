"""An SMTP sink for the end-to-end tests: aiosmtpd on a loopback port with STARTTLS and
AUTH (PLAIN / LOGIN, only over TLS), writing each message it accepts as one JSON line.

    python sink.py --port P --cert server.crt --key server.key --out messages.jsonl \
        --user stepwatch --password secret --ready ready.txt

Each line: ``{"mail_from", "rcpt_tos", "data", "login", "tls"}``; a refused login adds
``{"auth_failed": login}``. The ready file is written once the port listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import threading
import warnings
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_write_lock = threading.Lock()
# aiosmtpd warns about its own use of Session.login_data.
warnings.filterwarnings("ignore", category=DeprecationWarning)


def _append(out: Path, record: dict[str, Any]) -> None:
    with _write_lock, out.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class Authenticator:
    """Accepts one login and password; records refusals."""

    def __init__(self, user: str, password: str, out: Path) -> None:
        self.user = user.encode()
        self.password = password.encode()
        self.out = out

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = auth_data.login == self.user and auth_data.password == self.password
        if not ok:
            _append(self.out, {"auth_failed": auth_data.login.decode(errors="replace")})
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


class Recorder:
    """Writes every message to the output file."""

    def __init__(self, out: Path) -> None:
        self.out = out

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        content = envelope.content or b""
        data = content.decode("utf-8", errors="replace") if isinstance(content, bytes) else content
        _append(
            self.out,
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "data": data,
                "login": login,
                "tls": session.ssl is not None,
            },
        )
        return "250 OK"


async def serve(args: argparse.Namespace) -> None:
    out = Path(args.out)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    auth = Authenticator(args.user, args.password, out)
    handler = Recorder(out)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="localhost",
            tls_context=ctx,
            require_starttls=True,
            authenticator=auth,
            auth_required=True,
            auth_require_tls=True,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host="127.0.0.1", port=args.port)
    Path(args.ready).write_text("ready\n", encoding="utf-8")
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    for name in ("--cert", "--key", "--out", "--user", "--password", "--ready"):
        p.add_argument(name, required=True)
    p.add_argument("--port", type=int, required=True)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
