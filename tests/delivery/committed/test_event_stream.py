"""A campaign's live stream (README, Events): Server-Sent Events from a live server on
loopback. Events arrive moments after their
commit; a client that reconnects with `Last-Event-ID` gets exactly what it missed; another
school's key gets 404; a browser's stream token opens its campaign's stream only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text, update

from app.config import Settings
from app.events import endpoints, outbox
from app.kit.db import unit_of_work
from app.main import bind, create_app, unbind
from app.models import Recipient
from tests.support.api import make_school
from tests.support.delivery import Sessions, TwilioSchool, launch, phone

PATIENCE_SECONDS = 20.0
LIVE_SECONDS = 1.0  # SPEC §9.2: a change is on the stream within 1 s of its commit


@pytest.fixture
async def live(settings: Settings, sessionmaker: Sessions) -> AsyncIterator[str]:
    """The app served on loopback (real commits)."""
    app = create_app(settings)
    bind(app, settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await unbind(app)  # the streams end: the server can stop
        server.should_exit = True
        await serving


def place(sse_id: str) -> outbox.Position:
    """The outbox position an SSE id gives."""
    position = outbox.Position.parse(sse_id)
    assert position is not None, sse_id
    return position


class Stream:
    """An SSE client: (id, event) pairs as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> tuple[str, dict[str, Any]]:
        async with asyncio.timeout(PATIENCE_SECONDS):
            fields: dict[str, str] = {}
            async for line in self._lines:
                if not line:
                    if "data" in fields:
                        return fields.get("id", ""), json.loads(fields["data"])
                    fields = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    async def comment(self) -> str:
        """The next comment line (the keep-alive), skipping anything else."""
        async with asyncio.timeout(PATIENCE_SECONDS):
            async for line in self._lines:
                if line.startswith(":"):
                    return line
        raise AssertionError("the stream ended")


@contextlib.asynccontextmanager
async def opened(
    base: str, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    async with (
        httpx.AsyncClient(base_url=base, timeout=PATIENCE_SECONDS, trust_env=False) as http,
        http.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


async def fail(sessionmaker: Sessions, recipient_id: str, reason: str) -> float:
    """Staff-visible change to one recipient, committed; when it committed."""
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            update(Recipient)
            .where(Recipient.id == int(recipient_id))
            .values(status="failed", failed_reason=reason, next_attempt_at=None)
        )
    return time.monotonic()


async def recipient_ids(client: httpx.AsyncClient, school: TwilioSchool, cid: str) -> list[str]:
    response = await client.get(f"/v1/campaigns/{cid}/contacts", headers=school.auth)
    return sorted((r["id"] for r in response.json()["items"]), key=int)


async def test_events_arrive_live_and_a_reconnect_replays_what_was_missed(
    live: str, client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    cid = await launch(client, twilio_school, *(phone(n) for n in range(5)))
    ids = await recipient_ids(client, twilio_school, cid)
    path = f"/v1/campaigns/{cid}/events"
    async with opened(live, path, twilio_school.auth) as stream:
        position, first = await stream.next()  # what happened before: the launch
        assert (first["type"], first["data"]["status"]) == ("campaign.updated", "active")
        committed = await fail(sessionmaker, ids[0], "unknown")
        position, event = await stream.next()
        lag = time.monotonic() - committed
        assert (event["type"], event["data"]["id"], event["data"]["status"]) == (
            "recipient.updated",
            ids[0],
            "failed",
        )
        assert lag < LIVE_SECONDS, f"commit to client: {lag * 1000:.0f} ms"
    for n in (1, 2, 3):  # while the client is away
        await fail(sessionmaker, ids[n], "unknown")
    async with opened(live, path, {**twilio_school.auth, "Last-Event-ID": position}) as stream:
        missed = [await stream.next() for _ in range(3)]
        assert [e["data"]["id"] for _, e in missed] == ids[1:4]
        positions = [place(p) for p, _ in missed]
        assert positions == sorted(positions)
        assert positions[0] > place(position)
        await fail(sessionmaker, ids[4], "unknown")
        _, live_event = await stream.next()
        assert live_event["data"]["id"] == ids[4]  # then live, nothing twice


async def test_only_the_campaign_s_school_may_open_its_stream(
    live: str, client: httpx.AsyncClient, twilio_school: TwilioSchool
) -> None:
    cid = await launch(client, twilio_school, phone(0))
    path = f"/v1/campaigns/{cid}/events"
    _, other = await make_school(client, name="Other High")
    async with httpx.AsyncClient(base_url=live, trust_env=False) as http:
        assert (await http.get(path, headers=other)).status_code == 404
        assert (await http.get(path)).status_code == 401
        assert (await http.get(path, params={"token": "forged"})).status_code == 401
        minted = await http.post(f"{path}/token", headers=twilio_school.auth)
        assert minted.status_code == 200, minted.text
        token = minted.json()["token"]
        other_cid = await launch(client, twilio_school, phone(1))
        wrong = f"/v1/campaigns/{other_cid}/events"
        assert (await http.get(wrong, params={"token": token})).status_code == 401
        missing = f"/v1/campaigns/{uuid.uuid4()}/events"
        assert (await http.get(missing, headers=twilio_school.auth)).status_code == 404
    async with opened(live, f"{path}?token={token}") as stream:
        _, event = await stream.next()
        assert event["data"]["id"] == cid


async def test_a_stream_token_says_where_the_stream_is_now_to_start_from_there(
    live: str, client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    """A page that has just read a campaign's contacts wants what changes from now on, not
    the campaign's history: the token's `last_event_id`, sent as `Last-Event-ID`."""
    cid = await launch(client, twilio_school, *(phone(n) for n in range(3)))
    ids = await recipient_ids(client, twilio_school, cid)
    path = f"/v1/campaigns/{cid}/events"
    await fail(sessionmaker, ids[0], "unknown")
    async with opened(live, path, twilio_school.auth) as stream:
        await stream.next()  # the launch
        latest, _ = await stream.next()  # ids[0] failed
    async with httpx.AsyncClient(base_url=live, trust_env=False) as http:
        minted = (await http.post(f"{path}/token", headers=twilio_school.auth)).json()
    assert minted["last_event_id"] == latest
    await fail(sessionmaker, ids[1], "unknown")
    headers = {"Last-Event-ID": minted["last_event_id"]}
    async with opened(live, f"{path}?token={minted['token']}", headers) as stream:
        _, event = await stream.next()
        assert event["data"]["id"] == ids[1]  # not the launch, not ids[0]


async def test_a_campaign_without_events_has_no_last_event_id(
    live: str, client: httpx.AsyncClient, twilio_school: TwilioSchool
) -> None:
    made = await client.post("/v1/contact-lists", json={"name": "L"}, headers=twilio_school.auth)
    draft = await client.post(
        "/v1/campaigns",
        json={"name": "Draft", "body": "Hi", "contact_list_id": made.json()["id"]},
        headers=twilio_school.auth,
    )
    path = f"/v1/campaigns/{draft.json()['id']}/events/token"
    minted = await client.post(path, headers=twilio_school.auth)
    assert minted.status_code == 200, minted.text
    assert minted.json()["last_event_id"] is None


async def ended(stream: Stream, within: float) -> None:
    """The stream ends within `within` seconds, sending no event meanwhile."""
    async with asyncio.timeout(within):
        async for line in stream._lines:
            assert not line.startswith("data"), line


async def test_revoking_a_key_ends_its_streams_and_its_tokens_open_nothing(
    live: str, client: httpx.AsyncClient, twilio_school: TwilioSchool, sessionmaker: Sessions
) -> None:
    """The key is revoked through another app than the one serving its streams (another
    API process, on the same database): its streams, by the key and by a token it asked
    for, end within 2 s, another key's goes on, and neither the key nor its token opens a
    stream again."""
    cid = await launch(client, twilio_school, phone(0), phone(1))
    ids = await recipient_ids(client, twilio_school, cid)
    path = f"/v1/campaigns/{cid}/events"
    created = await client.post(
        "/v1/api-keys", json={"name": "Dashboard"}, headers=twilio_school.auth
    )
    dashboard = {"Authorization": f"Bearer {created.json()['api_key']}"}
    async with httpx.AsyncClient(base_url=live, trust_env=False) as http:
        token = (await http.post(f"{path}/token", headers=dashboard)).json()["token"]
    async with (
        opened(live, path, dashboard) as by_key,
        opened(live, f"{path}?token={token}") as by_token,
        opened(live, path, twilio_school.auth) as another,
    ):
        for stream in (by_key, by_token, another):
            await stream.next()  # the launch
        revoked = await client.delete(
            f"/v1/api-keys/{created.json()['id']}", headers=twilio_school.auth
        )
        assert revoked.status_code == 204
        await fail(sessionmaker, ids[0], "unknown")
        await asyncio.gather(ended(by_key, 2.0), ended(by_token, 2.0))
        _, event = await another.next()
        assert event["data"]["id"] == ids[0]
    async with httpx.AsyncClient(base_url=live, trust_env=False) as http:
        assert (await http.get(path, headers=dashboard)).status_code == 401
        refused = await http.get(path, params={"token": token})
        assert refused.status_code == 401
        assert "revoked" in refused.json()["detail"]
        assert (await http.post(f"{path}/token", headers=dashboard)).status_code == 401


async def test_streams_share_one_listener_and_each_gets_the_keep_alive_comment(
    live: str,
    client: httpx.AsyncClient,
    twilio_school: TwilioSchool,
    sessionmaker: Sessions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three clients on a campaign: one LISTEN connection in the process, not one each; and
    each stream carries a comment line while nothing happens (every 15 s as served, every
    0.3 s here so that the test does not wait 15 s)."""
    monkeypatch.setattr(endpoints, "HEARTBEAT_SECONDS", 0.3)
    cid = await launch(client, twilio_school, phone(0))
    path = f"/v1/campaigns/{cid}/events"
    async with contextlib.AsyncExitStack() as opened_streams:
        streams = [
            await opened_streams.enter_async_context(opened(live, path, twilio_school.auth))
            for _ in range(3)
        ]
        for stream in streams:
            _, first = await stream.next()  # the launch, replayed
            assert first["type"] == "campaign.updated"
            assert await stream.comment()
        async with unit_of_work(sessionmaker) as session:
            listening = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        assert listening == 1
