"""Telnyx Ed25519 webhook signatures with a key pair generated here."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.providers.base import InvalidSignature
from app.providers.telnyx.signature import public_key, verify_signature

BODY = b'{"data":{"event_type":"message.finalized","id":"evt-1"}}'


def b64_public(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign(key: Ed25519PrivateKey, timestamp: str, body: bytes) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + b"|" + body)).decode()


@pytest.fixture(scope="module")
def private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_valid_signature(private_key: Ed25519PrivateKey) -> None:
    now = str(int(time.time()))
    signature = sign(private_key, now, BODY)
    verify_signature(BODY, signature, now, b64_public(private_key))
    verify_signature(BODY, signature, now, public_key(b64_public(private_key)))
    # Within the window on either side.
    verify_signature(BODY, signature, now, b64_public(private_key), now=int(now) + 299)
    verify_signature(BODY, signature, now, b64_public(private_key), now=int(now) - 299)


def test_tampered_body(private_key: Ed25519PrivateKey) -> None:
    now = str(int(time.time()))
    signature = sign(private_key, now, BODY)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(
            BODY.replace(b"finalized", b"sent"), signature, now, b64_public(private_key)
        )


def test_signature_binds_the_timestamp(private_key: Ed25519PrivateKey) -> None:
    now = int(time.time())
    signature = sign(private_key, str(now), BODY)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(BODY, signature, str(now + 1), b64_public(private_key))


def test_wrong_key(private_key: Ed25519PrivateKey) -> None:
    now = str(int(time.time()))
    other = Ed25519PrivateKey.generate()
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_signature(BODY, sign(other, now, BODY), now, b64_public(private_key))


@pytest.mark.parametrize("age", [301, -301, 3600])
def test_stale_timestamp(private_key: Ed25519PrivateKey, age: int) -> None:
    # The clock pinned: read again, it may have reached the next second (-301 s: 300.x).
    now = int(time.time())
    then = str(now - age)
    with pytest.raises(InvalidSignature, match="300 s"):
        verify_signature(
            BODY, sign(private_key, then, BODY), then, b64_public(private_key), now=now
        )


@pytest.mark.parametrize(
    ("signature", "timestamp", "message"),
    [
        (None, "1700000000", "missing telnyx-signature-ed25519"),
        ("", "1700000000", "missing telnyx-signature-ed25519"),
        ("c2ln", None, "missing telnyx-timestamp"),
        ("c2ln", "yesterday", "not Unix seconds"),
        ("c2ln", "-5", "not Unix seconds"),
        ("not base64!!", "1700000000", "not base64"),
        (base64.b64encode(b"short").decode(), "1700000000", "not 64 bytes"),
    ],
)
def test_malformed_headers(
    private_key: Ed25519PrivateKey, signature: str | None, timestamp: str | None, message: str
) -> None:
    with pytest.raises(InvalidSignature, match=message):
        verify_signature(BODY, signature, timestamp, b64_public(private_key))


@pytest.mark.parametrize("key", ["%%%", base64.b64encode(b"x" * 31).decode()])
def test_bad_public_key(private_key: Ed25519PrivateKey, key: str) -> None:
    now = str(int(time.time()))
    with pytest.raises(InvalidSignature, match="public key"):
        verify_signature(BODY, sign(private_key, now, BODY), now, key)
