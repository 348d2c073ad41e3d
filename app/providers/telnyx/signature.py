"""Telnyx webhook signatures: Ed25519 over `timestamp|raw body` (providers.md §2.3).

Headers `telnyx-signature-ed25519` (base64 of the 64-byte signature) and `telnyx-timestamp`
(Unix seconds); the key is the account's public key (base64 of 32 bytes) from the Telnyx
portal. The raw request bytes are verified, never re-serialised JSON, and a timestamp more
than 300 s away from now is refused so a captured webhook cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import time

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.providers.base import InvalidSignature

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_SECONDS = 300


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignature(f"{what} is not base64") from exc


def public_key(value: str) -> Ed25519PublicKey:
    """The account's base64 public key; InvalidSignature when it is not an Ed25519 key."""
    raw = _b64(value, "public key")
    if len(raw) != 32:
        raise InvalidSignature("public key is not 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(
    raw_body: bytes,
    signature: str | None,
    timestamp: str | None,
    key: str | Ed25519PublicKey,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Return when the webhook is authentic and fresh; raise InvalidSignature (why) if not."""
    if not signature:
        raise InvalidSignature(f"missing {SIGNATURE_HEADER}")
    if not timestamp:
        raise InvalidSignature(f"missing {TIMESTAMP_HEADER}")
    stamp = timestamp.strip()
    if not stamp.isdigit():
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is not Unix seconds")
    signature_bytes = _b64(signature, SIGNATURE_HEADER)
    if len(signature_bytes) != 64:
        raise InvalidSignature(f"{SIGNATURE_HEADER} is not 64 bytes")
    verifier = public_key(key) if isinstance(key, str) else key
    try:
        verifier.verify(signature_bytes, stamp.encode("ascii") + b"|" + raw_body)
    except CryptoInvalidSignature:
        raise InvalidSignature("signature does not match the body") from None
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is more than {tolerance} s from now")
