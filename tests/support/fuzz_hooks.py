"""Schemathesis hooks of tests/test_openapi_fuzz.py (loaded with SCHEMATHESIS_HOOKS): sign the
Twilio webhooks as Twilio does, for the account the test gave the webhook school, so that
the fuzzer reaches what happens after the signature check, not only the 403.

A form whose fields are all text is signed (its `AccountSid` set to that account's) in
place of the signature the fuzzer made up; any other body (the fuzzer's invalid ones), or a
request without the header, goes as the fuzzer made it and is refused as such.
The Telnyx webhook is not signed: the fuzzer sees its 403 only.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

from app.providers import callbacks
from app.providers.twilio.signature import HEADER, compute_signature

TWILIO_PATHS = {callbacks.TWILIO_STATUS, callbacks.TWILIO_INBOUND}


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
    # A case without the header is the fuzzer checking that one is required: left so.
    if case.operation.path not in TWILIO_PATHS or HEADER not in (case.headers or {}):
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
