"""X-Twilio-Signature on form-encoded webhooks (docs/providers.md §1.4).

signature = base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 ...)), with
parameter names sorted (case-sensitive) and, for a repeated name, its distinct values sorted
and each appended after the name — exactly as Twilio's own `RequestValidator` does. As that
library does, a request is valid when the URL matches with or without its default port,
because Twilio is not consistent about including it. Messaging callbacks are form-encoded,
so the JSON `bodySHA256` variant does not apply here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import SplitResult, urlsplit

from app.providers.base import InvalidSignature
from app.providers.twilio.form import Form, pairs

HEADER = "X-Twilio-Signature"


def signed_string(url: str, params: Form) -> str:
    """The text Twilio signs: the URL, then each name+value in sorted order."""
    grouped: dict[str, set[str]] = {}
    for name, value in pairs(params):
        grouped.setdefault(name, set()).add(value)
    parts = [url]
    for name in sorted(grouped):
        parts.extend(name + value for value in sorted(grouped[name]))
    return "".join(parts)


def compute_signature(url: str, params: Form, auth_token: str) -> str:
    digest = hmac.new(
        auth_token.encode("utf-8"), signed_string(url, params).encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def _with_netloc(parts: SplitResult, netloc: str) -> str:
    return parts._replace(netloc=netloc).geturl()


def url_variants(url: str) -> tuple[str, str]:
    """The URL without and with its port (the scheme's default port when it has none)."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    prefix = userinfo + at
    if hostport.startswith("[") and "]" in hostport:  # IPv6 literal: keep the brackets
        host = hostport[: hostport.index("]") + 1]
    else:
        host = hostport.split(":", 1)[0]
    try:
        port = parts.port
    except ValueError:  # not a port number: nothing to add or strip
        return url, url
    if port is None:
        port = 443 if parts.scheme == "https" else 80
        return url, _with_netloc(parts, f"{prefix}{host}:{port}")
    return _with_netloc(parts, f"{prefix}{host}"), url


def validate_signature(url: str, params: Form, signature: str | None, auth_token: str) -> bool:
    """Whether `signature` (the header) signs this URL and these form parameters."""
    if not signature:
        return False
    form = pairs(params)
    given = signature.strip().encode("utf-8")
    valid = False
    for candidate in url_variants(url):
        expected = compute_signature(candidate, form, auth_token).encode("ascii")
        # Both compared, always: no early exit that would time the first variant.
        valid |= hmac.compare_digest(expected, given)
    return valid


def verify_signature(url: str, params: Form, signature: str | None, auth_token: str) -> None:
    """Raise InvalidSignature unless `validate_signature` holds."""
    if not signature:
        raise InvalidSignature(f"missing {HEADER}")
    if not validate_signature(url, params, signature, auth_token):
        raise InvalidSignature(f"{HEADER} does not match")
