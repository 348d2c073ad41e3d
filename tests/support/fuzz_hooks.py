"""Schemathesis hooks of tests/test_openapi_fuzz.py (loaded with SCHEMATHESIS_HOOKS): sign the
webhooks as the providers do, for the accounts the test gave the webhook school, so that the
fuzzer reaches what happens after the signature check, not only the 403.

Twilio: a form whose fields are all text is signed (its `AccountSid` set to that account's)
in place of the signature the fuzzer made up; any other body (the fuzzer's invalid ones)
goes as the fuzzer made it and is refused as such. Telnyx: a JSON body is signed over the
bytes the transport will send (Ed25519 over `timestamp|body`, with the private key of the
account's public key), stamped now; the body stays the fuzzer's, so every check still
judges it. Either way, a request without the signature header (the fuzzer
checking that one is required) is left so.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.providers import callbacks
from app.providers.telnyx import signature as telnyx
from app.providers.twilio.signature import HEADER, compute_signature

TWILIO_PATHS = {callbacks.TWILIO_STATUS, callbacks.TWILIO_INBOUND}


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.path == callbacks.TELNYX:
        sign_telnyx(case)
    elif case.operation.path in TWILIO_PATHS:
        sign_twilio(case)


def sign_telnyx(case: Any) -> None:
    headers = case.headers or {}
    if telnyx.SIGNATURE_HEADER not in headers or telnyx.TIMESTAMP_HEADER not in headers:
        return
    try:
        # The bytes the transport sends: requests serialises `json=` so (`requests.models`).
        raw = json.dumps(case.body, allow_nan=False).encode()
    except (TypeError, ValueError):  # not a JSON value: sent as made, refused as such
        return
    key = Ed25519PrivateKey.from_private_bytes(
        base64.b64decode(os.environ["CAMPANILE_FUZZ_TELNYX_PRIVATE_KEY"])
    )
    stamp = str(int(time.time()))
    case.headers = {
        **headers,
        telnyx.TIMESTAMP_HEADER: stamp,
        telnyx.SIGNATURE_HEADER: base64.b64encode(key.sign(stamp.encode() + b"|" + raw)).decode(),
    }


def sign_twilio(case: Any) -> None:
    if HEADER not in (case.headers or {}):
        return
    form = case.body
    if not isinstance(form, dict) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in form.items()
    ):
        return
    form["AccountSid"] = os.environ["CAMPANILE_FUZZ_TWILIO_SID"]
    url = os.environ["CAMPANILE_FUZZ_BASE_URL"] + case.operation.path
    token = os.environ["CAMPANILE_FUZZ_TWILIO_TOKEN"]
    case.headers = {
        **(case.headers or {}),
        HEADER: compute_signature(url, list(form.items()), token),
    }
