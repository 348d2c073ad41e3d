"""What the providers' webhook routers share: refusals rendered as problem+json, the URL a
provider signed, the accounts whose secrets check signatures (briefly cached), and the
schools an inbound message was sent to."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from app import metrics
from app.errors import PROBLEM_JSON, BadRequest, Forbidden
from app.providers import callbacks
from app.providers.base import InboundMessage, InvalidSignature, MalformedWebhook

log = logging.getLogger(__name__)


class WebhookForbidden(Forbidden):
    slug = "invalid-webhook-signature"
    title = "Invalid webhook signature"


class WebhookMalformed(BadRequest):
    slug = "malformed-webhook"
    title = "Malformed webhook"


@contextmanager
def refusals(provider: str) -> Iterator[None]:
    """InvalidSignature → 403, MalformedWebhook → 400 (problem+json), logged and counted.

    The 403 does not say whether the account is unknown or the signature wrong (no oracle
    for account ids); the log does. Raised before anything is written, and the request's
    transaction is rolled back anyway: nothing changes.
    """
    try:
        yield
    except InvalidSignature as exc:
        log.warning("%s webhook refused (403): %s", provider, exc)
        metrics.webhooks_refused.labels(provider, "signature").inc()
        raise WebhookForbidden(
            "The webhook is not signed by a provider account of this service."
        ) from None
    except MalformedWebhook as exc:
        log.warning("%s webhook refused (400): %s", provider, exc)
        metrics.webhooks_refused.labels(provider, "malformed").inc()
        raise WebhookMalformed(f"The webhook cannot be read: {exc}.") from None


def named_attempt(request: Request) -> int | None:
    """The attempt a status callback's URL names (`app.providers.callbacks`), if it names
    one of ours; read once its signature is checked."""
    name = request.query_params.get(callbacks.ATTEMPT)
    if name is None:
        return None
    return callbacks.AttemptNames(request.app.state.secret_box).read(name)


def public_url(request: Request, public_base_url: str) -> str:
    """The URL the provider called, as the provider knows it: PUBLIC_BASE_URL, the path,
    and the query string exactly as sent (the same base the StatusCallback is built from)."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    return public_base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


@dataclass(frozen=True, slots=True)
class WebhookAccount:
    """What a webhook needs of a school's provider account."""

    school_id: uuid.UUID
    # What checks the signatures: the auth token (Twilio), the public key (Telnyx).
    secret: str
    from_number: str | None
    # The sender pool the account sends through: messaging service or messaging profile.
    sender_pool: str | None


Accounts = list[WebhookAccount]


class AccountCache:
    """The accounts read for recent webhooks, kept `ttl` seconds, so that most webhooks
    need no query to find the secret that checks them.

    A webhook that none of the cached accounts verifies reads the database again before it
    is refused, so a new account or a rotated secret works at once; a removed one keeps
    verifying for at most `ttl` seconds. Webhooks that need the same accounts read at once
    share one read (`load`): when an entry expires under load, one query goes out, not one
    per webhook in flight.
    """

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str], tuple[float, Accounts]] = {}
        # Reads in flight: when each began, and the read.
        self._reading: dict[tuple[str, str], tuple[float, asyncio.Future[Accounts]]] = {}

    def get(self, key: tuple[str, str]) -> Accounts | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: tuple[str, str], accounts: Accounts) -> None:
        if len(self._entries) > 10_000:  # bounded, whatever the callers name
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, accounts)

    async def load(
        self,
        key: tuple[str, str],
        read: Callable[[], Awaitable[Accounts]],
        since: float | None = None,
    ) -> tuple[Accounts, float]:
        """The accounts as the database has them, kept, and when the read that found them
        began. A read already in flight is shared, if it began at `since` or later (a
        read that began earlier may miss what was committed since)."""
        reading = self._reading.get(key)
        if reading is None or (since is not None and reading[0] < since):
            future = asyncio.ensure_future(read())
            reading = self._reading[key] = (time.monotonic(), future)
            future.add_done_callback(lambda done: self._forget(key, done))
        began, shared = reading
        accounts = await asyncio.shield(shared)
        self.put(key, accounts)
        return accounts, began

    def _forget(self, key: tuple[str, str], done: asyncio.Future[Accounts]) -> None:
        if self._reading.get(key, (0.0, None))[1] is done:
            del self._reading[key]
        if not done.cancelled():
            done.exception()  # retrieved: its callers got it, or none was left to


def account_cache(request: Request) -> AccountCache:
    """The app's cache (one per process)."""
    cache: AccountCache | None = getattr(request.app.state, "webhook_accounts", None)
    if cache is None:
        cache = request.app.state.webhook_accounts = AccountCache()
    return cache


async def signing_accounts(
    cache: AccountCache,
    key: tuple[str, str],
    load: Callable[[], Awaitable[Accounts]],
    signers: Callable[[Accounts], Accounts],
) -> Accounts:
    """The accounts that signed a webhook (`signers` picks them among candidates): among the
    cached candidates first, else among those read again with `load`. Empty: none did."""
    asked = time.monotonic()
    cached = cache.get(key)
    if cached is not None:
        found = signers(cached)
        if found:
            return found
    loaded, began = await cache.load(key, load)
    found = signers(loaded)
    if found or began >= asked:
        return found
    # That read began before this webhook asked: what it holds may be older than a new
    # account or a rotated secret the webhook was signed with. Once more, from now.
    loaded, _ = await cache.load(key, load, since=asked)
    return signers(loaded)


def _digits(number: str | None) -> str:
    return "".join(ch for ch in number or "" if ch.isdigit())


def receiving_schools(
    accounts: Sequence[WebhookAccount], to_number: str, sender_pool: str | None
) -> list[uuid.UUID]:
    """The schools an inbound message was sent to, among the accounts that delivered it:
    those whose number is `to_number`, or whose sender pool it came through. When none
    is, every one of them: they share the provider account, and an opt-out must never be
    lost."""
    number = _digits(to_number)
    matched = [
        a.school_id
        for a in accounts
        if (number and _digits(a.from_number) == number)
        or (sender_pool is not None and a.sender_pool == sender_pool)
    ]
    return list(dict.fromkeys(matched or [a.school_id for a in accounts]))


@dataclass(frozen=True, slots=True)
class Inbound:
    """An inbound message and the schools it was sent to (whose accounts received it)."""

    message: InboundMessage
    school_ids: list[uuid.UUID]


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {}}}


REFUSALS: dict[int | str, dict[str, Any]] = {
    400: _problem("Signed, but not a webhook we can read. Nothing changed."),
    403: _problem(
        "Missing, stale or wrong signature, or an account this service does not know. "
        "Nothing changed."
    ),
}


def naming_the_attempt(extra: dict[str, Any]) -> dict[str, Any]:
    """A status webhook's `openapi_extra` with the query parameter that names the attempt
    (`app.providers.callbacks`): in every callback URL this service gives a provider."""
    attempt = {
        "name": callbacks.ATTEMPT,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "The attempt the message belongs to, as this service named it in the "
        "callback URL it gave with the message; a name it did not make names nothing",
    }
    return {**extra, "parameters": [*extra.get("parameters", []), attempt]}


def signature_headers(described: dict[str, str]) -> dict[str, Any]:
    """The OpenAPI parameters (`openapi_extra`) of a webhook's signature headers: required,
    as the provider always sends them. The code that checks a signature reads its headers
    from the request itself, so that a missing one is refused as any bad signature is
    (403), never as a validation error (422): the entry lists no 422."""
    return {
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": description,
            }
            for name, description in described.items()
        ]
    }
