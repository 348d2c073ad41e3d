"""The provider that sends for a school: its account's adapter, or the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx

from app.kit.crypto import SecretBox
from app.models import ProviderAccount
from app.providers import callbacks
from app.providers.base import Provider, Receipt
from app.providers.simulator.provider import SimulatorProvider
from app.providers.telnyx.client import TelnyxProvider
from app.providers.twilio.client import TwilioProvider


class Registry:
    """Adapters built once per account version, sharing one httpx client."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        box: SecretBox,
        public_base_url: str,
        on_simulated_receipt: Callable[[Receipt], Awaitable[None]],
        simulator_delay_seconds: float = 1.0,
    ) -> None:
        self._http = http
        self._box = box
        self._base = public_base_url.rstrip("/")
        self.names = callbacks.AttemptNames(box)
        self.simulator = SimulatorProvider(
            on_simulated_receipt, delay_seconds=simulator_delay_seconds
        )
        self._cache: dict[uuid.UUID, tuple[datetime, Provider]] = {}

    def for_account(self, account: ProviderAccount | None) -> Provider:
        if account is None or account.provider == "simulator":
            return self.simulator
        cached = self._cache.get(account.school_id)
        if cached is not None and cached[0] == account.updated_at:
            return cached[1]
        provider = self._build(account)
        self._cache[account.school_id] = (account.updated_at, provider)
        return provider

    def _build(self, account: ProviderAccount) -> Provider:
        secrets = self._box.open(account.credentials or "")
        if account.provider == "twilio":
            assert account.account_sid is not None
            return TwilioProvider(
                self._http,
                account_sid=account.account_sid,
                auth_token=secrets["auth_token"],
                from_number=account.from_number,
                messaging_service_sid=account.messaging_service_sid,
                api_base=account.api_base,
            )
        if account.provider == "telnyx":
            return TelnyxProvider(
                self._http,
                api_key=secrets["api_key"],
                from_number=account.from_number,
                messaging_profile_id=account.messaging_profile_id,
                api_base=account.api_base,
            )
        raise ValueError(f"unknown provider {account.provider!r}")

    def callback_url(self, provider: str) -> str | None:
        """The provider's status callback, without the attempt's name (`names.url`)."""
        path = callbacks.STATUS_CALLBACKS.get(provider)
        return self._base + path if path else None

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Play the simulator's pending receipts (briefly), then stop it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.simulator.drain(), drain_seconds)
        await self.simulator.aclose()
