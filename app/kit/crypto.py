"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) keyed by SECRET_KEY."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self._fernet = Fernet(self._key)

    def subkey(self, purpose: str) -> bytes:
        """A key of its own for `purpose` (a MAC, say), derived from SECRET_KEY: what it
        signs never doubles as anything sealed here."""
        return hashlib.sha256(purpose.encode() + b"\x00" + self._key).digest()

    def seal(self, data: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(data).encode()).decode()

    def open(self, token: str) -> dict[str, Any]:
        try:
            value: dict[str, Any] = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:  # wrong SECRET_KEY: loud, never silently empty
            raise RuntimeError("provider credentials cannot be decrypted with SECRET_KEY") from exc
        return value


def new_secret_key() -> str:
    return Fernet.generate_key().decode()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def token_hash(token: str) -> str:
    """API keys are high-entropy random strings, so one SHA-256 is the right hash."""
    return hashlib.sha256(token.encode()).hexdigest()
