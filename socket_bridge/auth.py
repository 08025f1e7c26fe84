"""Opt-in shared-token authentication for the socket protocol.

Off by default, so existing clients keep working. When the server has a token, a client's first
frame must be the handshake `PSR-AUTH1 <token>` (raw bytes, not a pickle); the server compares it
in constant time, answers the frame `PSR-AUTH-OK`, and only then reads pickled requests. Anything
else as a first frame (a pickle from a client without the token, a wrong token) is logged and the
connection closed before a single byte of it is unpickled.

The token comes from a file (`--auth_token_file`, first line, surrounding whitespace removed) or
the environment variable POLICY_SERVER_AUTH_TOKEN, never from the command line, where other
users of the machine could read it in the process list. The token travels in clear text: it keeps
strangers on a trusted network out; across untrusted networks use a tunnel (ssh, WireGuard).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

ENV_VAR = "POLICY_SERVER_AUTH_TOKEN"
HANDSHAKE = b"PSR-AUTH1 "
ACCEPTED = b"PSR-AUTH-OK"
MAX_HANDSHAKE_BYTES = 1024  # the first frame of an authenticating server is never larger
MIN_TOKEN_LENGTH = 16


class AuthError(ValueError):
    """Bad token configuration, or a rejected handshake."""


def _check(token: bytes, source: str) -> bytes:
    if len(token) < MIN_TOKEN_LENGTH:
        raise AuthError(f"auth token from {source} is {len(token)} bytes; use at least "
                        f"{MIN_TOKEN_LENGTH} (e.g. `python -c 'import secrets; "
                        f"print(secrets.token_urlsafe(32))'`)")
    if len(HANDSHAKE) + len(token) > MAX_HANDSHAKE_BYTES:
        raise AuthError(f"auth token from {source} is longer than "
                        f"{MAX_HANDSHAKE_BYTES - len(HANDSHAKE)} bytes")
    return token


def load_token(token_file: str | Path | None = None, *, use_env: bool = True) -> bytes | None:
    """The token from `token_file` if given, else from POLICY_SERVER_AUTH_TOKEN, else None."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            text = path.read_text().strip().splitlines()
        except OSError as exc:
            raise AuthError(f"cannot read auth token file {path}: {exc.strerror}") from exc
        return _check(text[0].strip().encode() if text else b"", str(path))
    value = os.environ.get(ENV_VAR, "") if use_env else ""
    return _check(value.strip().encode(), ENV_VAR) if value.strip() else None


def handshake_frame(token: bytes) -> bytes:
    return HANDSHAKE + token


def verify_handshake(frame: bytes | bytearray | memoryview, token: bytes) -> bool:
    """Constant-time check of a client's first frame."""
    return hmac.compare_digest(bytes(frame), HANDSHAKE + token)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
