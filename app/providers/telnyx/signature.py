"""Telnyx webhook signatures: Ed25519 over `timestamp|raw body` (docs/providers.md §2.3).

Headers `telnyx-signature-ed25519` (base64 of the 64-byte signature) and `telnyx-timestamp`
(Unix seconds); the key is the account's public key (base64 of 32 bytes) from the Telnyx
portal. The raw request bytes are verified, never re-serialised JSON, and a timestamp more
than 300 s away from now is refused so a captured webhook cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

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


def _signed(
    raw_body: bytes, signature: str | None, timestamp: str | None
) -> tuple[bytes, bytes, int]:
    """(signature bytes, signed message, timestamp) from the headers; InvalidSignature when
    a header is missing or malformed."""
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
    return signature_bytes, stamp.encode("ascii") + b"|" + raw_body, int(stamp)


def _check_fresh(stamp: int, now: float | None, tolerance: int) -> None:
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        raise InvalidSignature(f"{TIMESTAMP_HEADER} is more than {tolerance} s from now")


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
    signature_bytes, message, stamp = _signed(raw_body, signature, timestamp)
    verifier = public_key(key) if isinstance(key, str) else key
    try:
        verifier.verify(signature_bytes, message)
    except CryptoInvalidSignature:
        raise InvalidSignature("signature does not match the body") from None
    _check_fresh(stamp, now, tolerance)


@lru_cache(maxsize=1024)
def _cached_public_key(value: str) -> Ed25519PublicKey:
    return public_key(value)  # an invalid key raises, and is not cached


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A webhook whose headers are well formed and fresh, not yet verified."""

    signature: bytes
    message: bytes  # timestamp|raw body

    def signer(self, keys: Iterable[str]) -> str | None:
        """The first of `keys` (base64 public keys) that signed it, or None. A stored key
        that is not an Ed25519 key is skipped."""
        for key in keys:
            try:
                verifier = _cached_public_key(key)
            except InvalidSignature:
                continue
            try:
                verifier.verify(self.signature, self.message)
            except CryptoInvalidSignature:
                continue
            return key
        return None


def signed_message(
    raw_body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> SignedMessage:
    """The webhook to verify, once its headers are well formed and its timestamp within the
    window; InvalidSignature (why) if not. Checked before any key is tried: a malformed or
    replayed webhook costs no verification."""
    signature_bytes, message, stamp = _signed(raw_body, signature, timestamp)
    _check_fresh(stamp, now, tolerance)
    return SignedMessage(signature_bytes, message)
