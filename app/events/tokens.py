"""Stream tokens: a browser's EventSource cannot send an `Authorization` header, so a
school asks for a short-lived token naming one campaign's stream and puts it in the
stream's URL instead of its API key (the key never in a URL that is logged). A token is
the campaign, its school, the key that asked for it, when it expires and a MAC under
SECRET_KEY: nothing stored. It opens a stream only while that key is not revoked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

from app.kit.crypto import SecretBox

LIFETIME_SECONDS = 3600


class StreamTokens:
    def __init__(self, box: SecretBox) -> None:
        self._key = box.subkey("stream tokens")

    def _mac(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()[:16]

    def issue(
        self, school_id: uuid.UUID, campaign_id: uuid.UUID, key_id: uuid.UUID
    ) -> tuple[str, int]:
        """A token and when it expires (Unix seconds)."""
        expires = int(time.time()) + LIFETIME_SECONDS
        message = school_id.bytes + campaign_id.bytes + key_id.bytes + expires.to_bytes(8, "big")
        token = base64.urlsafe_b64encode(message + self._mac(message)).decode().rstrip("=")
        return token, expires

    def read(self, token: str, campaign_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID] | None:
        """The school and the key a valid, unexpired token for this campaign's stream was
        issued to."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        if len(raw) != 72:
            return None
        message, mac = raw[:56], raw[56:]
        if not hmac.compare_digest(mac, self._mac(message)):
            return None
        school, campaign = uuid.UUID(bytes=message[:16]), uuid.UUID(bytes=message[16:32])
        key = uuid.UUID(bytes=message[32:48])
        if campaign != campaign_id or int.from_bytes(message[48:], "big") < time.time():
            return None
        return school, key
