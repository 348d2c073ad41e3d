"""The built-in simulator: a real provider without a network (README, The simulator).

What happens to a message is decided by the last two digits of the destination number:

| ends in | the simulator                               | code  | the recipient becomes            |
|---------|---------------------------------------------|-------|----------------------------------|
| 00      | sent, then delivered                        | —     | Delivered                        |
| 01      | fails once (queue overflow), then delivers  | 30001 | Scheduled, then Delivered        |
| 02      | sent, then undelivered: handset unreachable | 30003 | Failed · Unreachable Number      |
| 03      | sent, then undelivered: landline            | 30006 | Failed · Unreachable Number      |
| 04      | sent, then undelivered: carrier filtered it | 30007 | Failed · Blocked by Carrier/User |
| 05      | sent, then undelivered: unknown handset     | 30005 | Failed · Invalid Number          |
| 06      | sent, then undelivered: unknown error       | 30008 | Failed · Unknown Error           |
| 07      | refused at create: invalid 'To' number      | 21211 | Failed · Invalid Number          |
| 08      | sent, and no final receipt ever comes       | —     | Pending, for good                |
| 09      | refused at create: number replied STOP      | 21610 | Failed · Opted out               |
| 10      | fails on every attempt (queue overflow)     | 30001 | Scheduled, again and again       |
| other   | sent, then delivered                        | —     | Delivered                        |

For example +1 415 555 0100 delivers and +1 415 555 0102 fails as unreachable. Receipts
are shaped like Twilio's status callbacks (`sent`, then `delivered` or `undelivered` with an
`ErrorCode`; a queue overflow is `failed` at once, as at Twilio), parsed by the Twilio
webhook parser, and handed to the `on_receipt` callback after a short delay each — the
same apply path real webhooks use. "Fails once" is counted per number in this process.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from app.kit.clock import utcnow
from app.providers import codes
from app.providers.base import Fetched, Lookup, OutboundMessage, Receipt, SendResult
from app.providers.http_answers import SOFT_SENDING_ERROR
from app.providers.twilio import events as twilio_events
from app.sending.outcomes import Outcome

log = logging.getLogger(__name__)

ReceiptCallback = Callable[[Receipt], Awaitable[None]]

ACCOUNT_SID = "AC" + "0" * 32
FROM_NUMBER = "+15005550006"


class Behaviour(enum.StrEnum):
    deliver = "deliver"
    fail_once = "fail_once"  # `failed` with the code on the first attempt, then deliver
    fail_always = "fail_always"  # `failed` with the code on every attempt
    undelivered = "undelivered"  # `sent`, then `undelivered` with the code
    rejected = "rejected"  # the create call fails with the code
    never_final = "never_final"  # `sent`, then nothing


@dataclass(frozen=True, slots=True)
class Rule:
    suffix: str
    behaviour: Behaviour
    error_code: str | None = None


DELIVER = Rule("", Behaviour.deliver)

# The table above, as data: the number's last digits → what happens.
RULES: dict[str, Rule] = {
    rule.suffix: rule
    for rule in (
        Rule("00", Behaviour.deliver),
        Rule("01", Behaviour.fail_once, "30001"),
        Rule("02", Behaviour.undelivered, "30003"),
        Rule("03", Behaviour.undelivered, "30006"),
        Rule("04", Behaviour.undelivered, "30007"),
        Rule("05", Behaviour.undelivered, "30005"),
        Rule("06", Behaviour.undelivered, "30008"),
        Rule("07", Behaviour.rejected, "21211"),
        Rule("08", Behaviour.never_final),
        Rule("09", Behaviour.rejected, "21610"),
        Rule("10", Behaviour.fail_always, "30001"),
    )
}


def rule_for(number: str) -> Rule:
    """What the simulator does with a message to `number` (its last two digits decide)."""
    digits = "".join(ch for ch in number if ch.isdigit())
    return RULES.get(digits[-2:], DELIVER)


def new_message_sid() -> str:
    return "SM" + uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class _Sent:
    sid: str
    to: str
    body: str
    created_at: datetime


class SimulatorProvider:
    """Decides each message's fate from its number and plays the receipts back."""

    name: str = "simulator"
    # Nothing waits in the simulator: a message is accepted or refused at once.
    holding_seconds: float = 0.0

    def __init__(
        self,
        on_receipt: ReceiptCallback,
        *,
        delay_seconds: float = 1.0,
        history: int = 10_000,
    ) -> None:
        self._on_receipt = on_receipt
        self.delay_seconds = delay_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._attempts: dict[str, int] = {}
        # What was accepted, newest last, for find_sent.
        self._sent: deque[_Sent] = deque(maxlen=history)
        # Each accepted message's status and error code as its receipts have said so far
        # (`queued` until the first), for fetch_status: the newest `history` messages.
        self._statuses: dict[str, tuple[str, str | None]] = {}
        self._history = history
        self._started = utcnow()
        self._closed = False

    async def send(self, message: OutboundMessage) -> SendResult:
        """Accept or refuse one message as its number says; never raises."""
        if self._closed:
            return SendResult(
                Outcome.soft,
                classification=SOFT_SENDING_ERROR,
                error_message="the simulator is shut down",
            )
        rule = rule_for(message.to)
        attempt = self._attempts.get(message.to, 0) + 1
        self._attempts[message.to] = attempt
        if rule.behaviour is Behaviour.rejected:
            classification = codes.classify(self.name, rule.error_code, "create")
            return SendResult(
                Outcome.soft if classification.soft else Outcome.hard,
                error_code=rule.error_code,
                classification=classification,
                error_message=f"simulated error {rule.error_code}",
            )
        sid = new_message_sid()
        self._sent.append(_Sent(sid, message.to, message.body, utcnow()))
        self._statuses[sid] = ("queued", None)
        while len(self._statuses) > self._history:  # the oldest first (insertion order)
            del self._statuses[next(iter(self._statuses))]
        task = asyncio.create_task(
            self._play(sid, message.to, self._script(rule, attempt)),
            name=f"simulator receipts {sid}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return SendResult(Outcome.accepted, provider_message_id=sid, provider_status="queued")

    @staticmethod
    def _script(rule: Rule, attempt: int) -> list[tuple[str, str | None]]:
        """The (status, error code) receipts a message gets, in order."""
        match rule.behaviour:
            case Behaviour.fail_once if attempt == 1:
                return [("failed", rule.error_code)]
            case Behaviour.fail_always:
                return [("failed", rule.error_code)]
            case Behaviour.undelivered:
                return [("sent", None), ("undelivered", rule.error_code)]
            case Behaviour.never_final:
                return [("sent", None)]
            case _:
                return [("sent", None), ("delivered", None)]

    async def _play(self, sid: str, to: str, script: list[tuple[str, str | None]]) -> None:
        for status, error_code in script:
            await asyncio.sleep(self.delay_seconds)
            params = [
                ("AccountSid", ACCOUNT_SID),
                ("ApiVersion", "2010-04-01"),
                ("From", FROM_NUMBER),
                ("To", to),
                ("MessageSid", sid),
                ("SmsSid", sid),
                ("MessageStatus", status),
                ("SmsStatus", status),
            ]
            if error_code is not None:
                params.append(("ErrorCode", error_code))
            if sid in self._statuses:
                self._statuses[sid] = (status, error_code)
            receipt = twilio_events.parse_status_callback(params, provider=self.name)
            try:
                await self._on_receipt(receipt)
            except Exception:
                # One failing apply must not stop the others (a real webhook would retry).
                log.exception("simulator: applying receipt %s %s failed", sid, status)

    async def find_sent(
        self, to: str, since: datetime, body: str, exclude: Collection[str] = ()
    ) -> Lookup:
        """The newest accepted message to `to` with this body created at/after `since`,
        from what this process accepted. Asked about a hand-over older than the oldest
        message it remembers (its history is bounded, and a restart forgets it all), it
        cannot tell."""
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        for sent in reversed(self._sent):
            if sent.sid in exclude:
                continue
            if sent.to == to and sent.body == body and sent.created_at >= since:
                return Lookup.sent(sent.sid)
        if since < self._remembers_since:
            return Lookup.cant_tell("the simulator does not remember that far back")
        return Lookup.not_sent()

    async def fetch_status(self, provider_message_id: str) -> Fetched:
        """The message's status as its receipts have said so far (`queued` before the
        first), the receipt of it the same as the one played; a message this process did
        not accept, or no longer remembers (its history is bounded, a restart forgets all),
        it cannot tell."""
        known = self._statuses.get(provider_message_id)
        if known is None:
            return Fetched.cant_tell("the simulator does not know that message")
        status, error_code = known
        return Fetched(
            twilio_events.status_receipt(
                provider_message_id, status, error_code, provider=self.name
            )
        )

    @property
    def _remembers_since(self) -> datetime:
        """Since when the simulator knows every message it accepted."""
        if self._sent.maxlen is not None and len(self._sent) == self._sent.maxlen:
            return self._sent[0].created_at
        return self._started

    @property
    def pending_receipts(self) -> int:
        """Messages whose receipts are still to be played."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait until every scheduled receipt has been handed to the callback."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop: cancel the receipts not played yet and wait for their tasks to end."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
