"""Bad input gets a clear 4xx problem (RFC 9457) and changes nothing; never a 5xx.

The sweep reads the operations from the OpenAPI document, so an endpoint added later is
covered by the generic checks at once; the checks that need a valid body to start from
fail until the new operation has an entry in VALID_BODIES."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import app.models  # noqa: F401  (every table on Base.metadata, for snapshots)
from app.config import Settings
from app.kit.crypto import SecretBox
from app.kit.db import Base
from app.main import create_app
from tests.support.api import ADMIN, inbox_on, make_campaign, people

Json = dict[str, Any]
Headers = dict[str, str]
Path = tuple[str | int, ...]

PROBLEM_JSON = "application/problem+json"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
UNKNOWN_FIELD = "zz_unknown_field"
CAP = 512  # max_body_bytes of the capped app


# --- the operations, from the OpenAPI document ---------------------------------------------

DOC: Json = create_app().openapi()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    auth: str | None  # security scheme: "SchoolApiKey" (a school's key), "AdminToken", or None
    body_types: tuple[str, ...]
    body_schema: Json | None  # of application/json
    query: tuple[tuple[str, Json], ...]

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


def _operations() -> list[Operation]:
    found = []
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            schemes = sorted({name for need in op.get("security", []) for name in need})
            content = op.get("requestBody", {}).get("content", {})
            query = tuple(
                (p["name"], p.get("schema", {}))
                for p in op.get("parameters", [])
                if p["in"] == "query"
            )
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    auth=schemes[0] if schemes else None,
                    body_types=tuple(content),
                    body_schema=content.get("application/json", {}).get("schema"),
                    query=query,
                )
            )
    return found


OPERATIONS = _operations()
JSON_OPS = [op for op in OPERATIONS if op.body_schema is not None]
# Signed webhooks have no bearer scheme; a valid body of theirs needs a signature.
NEEDS_EXAMPLE = [op for op in JSON_OPS if op.auth is not None]
SECURED_OPS = [op for op in OPERATIONS if op.auth is not None]
LIST_OPS = [op for op in OPERATIONS if op.method == "GET" and "cursor" in dict(op.query)]
PATH_OPS = [op for op in OPERATIONS if "{" in op.path]


def resolve(schema: Json) -> Json:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = {
            **DOC["components"]["schemas"][name],
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    return schema


def branches(schema: Json) -> list[Json]:
    """The alternatives a value may match (anyOf/oneOf flattened, refs resolved)."""
    schema = resolve(schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [branch for sub in schema[key] for branch in branches(sub)]
    if len(schema.get("allOf", [])) == 1:
        return branches(schema["allOf"][0])
    return [schema]


def json_types(schema: Json) -> set[str] | None:
    """The JSON types a schema accepts; None when it accepts anything."""
    types: set[str] = set()
    for branch in branches(schema):
        kind = branch.get("type")
        if kind is None and "properties" in branch:
            kind = "object"
        if kind is None and "const" in branch:
            kind = "string" if isinstance(branch["const"], str) else None
        if kind is None:
            return None
        types |= {kind} if isinstance(kind, str) else set(kind)
    if "integer" in types:
        types.add("number")
    return types


def object_schema(schema: Json, value: Json) -> Json | None:
    """The object branch that describes this dict (a `const` property picks among several)."""
    for branch in branches(schema):
        properties = branch.get("properties", {})
        if branch.get("type") != "object" and not properties:
            continue
        closed = branch.get("additionalProperties") is False
        if closed and not set(value) <= set(properties):
            continue
        consts = {k: p["const"] for k, p in properties.items() if "const" in resolve(p)}
        if all(value.get(k) == c for k, c in consts.items()):
            return branch
    return None


def nodes(value: Any, schema: Json, path: Path = ()) -> Iterator[tuple[Path, Any, Json]]:
    """Every (path, value, schema) of a body, the body itself first."""
    yield path, value, schema
    if isinstance(value, dict):
        described = object_schema(schema, value)
        if described is None:
            return
        properties = described.get("properties", {})
        extra = described.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else {})
            yield from nodes(item, sub, (*path, key))
    elif isinstance(value, list):
        arrays = [b for b in branches(schema) if b.get("type") == "array"]
        items = arrays[0].get("items", {}) if arrays else {}
        for index, item in enumerate(value):
            yield from nodes(item, items, (*path, index))


def at(body: Any, path: Path) -> Any:
    for key in path:
        body = body[key]
    return body


def replaced(body: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    copy = deepcopy(body)
    at(copy, path[:-1])[path[-1]] = value
    return copy


def wrong_value(schema: Json) -> Any:
    """A value of a JSON type the schema does not accept (None: it accepts anything)."""
    accepted = json_types(schema)
    if accepted is None:
        return None
    if accepted & {"boolean", "integer", "number", "string"} == {"boolean"}:
        return 1  # what a lenient parser would read as true
    for kind, value in (
        ("object", {"zz": True}),
        ("array", ["zz"]),
        ("string", "zz-not-valid"),
        ("number", 12345),
    ):
        if kind not in accepted:
            return value
    return None


def dotted(path: Path) -> str:
    return ".".join(str(part) for part in path) or "(body)"


# --- bodies that are valid, to spoil one part at a time ------------------------------------

Ids = dict[str, str]

VALID_BODIES: dict[str, Callable[[Ids], list[Json]]] = {
    "POST /v1/admin/schools": lambda ids: [
        {
            "name": "Sweep High",
            "timezone": "America/Chicago",
            "default_region": "US",
            "allowed_country_codes": [1],
            "sending_window": {"start": "08:00", "end": "17:00"},
            "retry_policy": {
                "base_delay_seconds": 60,
                "max_delay_seconds": 600,
                "max_retry_age_seconds": 3600,
            },
        }
    ],
    "PATCH /v1/school": lambda ids: [
        {
            "name": "Sweep High",
            "timezone": "America/Denver",
            "default_region": "CA",
            "allowed_country_codes": [1, 44],
            "sending_window": {"start": "07:00", "end": "18:00"},
            "retry_policy": {"base_delay_seconds": 30, "max_delay_seconds": 300},
        }
    ],
    "PUT /v1/school/provider": lambda ids: [
        {
            "provider": "twilio",
            "account_sid": "AC" + "0123456789abcdef" * 2,
            "auth_token": "twilio-auth-token",
            "from_number": "+12015550100",
            "api_base": "http://127.0.0.1:9",
            "max_messages_per_second": 10,
        },
        {
            "provider": "telnyx",
            "api_key": "telnyx-api-key",
            "public_key": base64.b64encode(bytes(range(32))).decode(),
            "messaging_profile_id": "profile-1",
        },
        {"provider": "simulator", "max_messages_per_second": 1.5},
    ],
    "POST /v1/contact-lists": lambda ids: [{"name": "Families"}],
    "POST /v1/contact-lists/{list_id}/contacts": lambda ids: [
        {
            "contacts": [
                {
                    "phone": "+12015550199",
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "fields": {"grade": "9"},
                }
            ]
        }
    ],
    "POST /v1/campaigns": lambda ids: [
        {
            "name": "Snow day",
            "body": "Hi {first_name}, no school tomorrow.",
            "contact_list_id": ids["list_id"],
            "send_at": "2030-01-07T13:00:00Z",
        }
    ],
    "POST /v1/campaigns/preview": lambda ids: [
        {
            "body": "Hi {first_name} {last_name} ({grade})",
            "contact": {
                "phone": "+12015550123",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "fields": {"grade": "9"},
            },
        }
    ],
    "PATCH /v1/campaigns/{campaign_id}": lambda ids: [
        {
            "name": "Snow day, again",
            "body": "Hi {first_name}.",
            "contact_list_id": ids["list_id"],
            "send_at": "2030-01-08T13:00:00Z",
        }
    ],
    "POST /v1/opt-outs": lambda ids: [{"phone": "+12015550177", "keyword": "STOP"}],
    "POST /v1/api-keys": lambda ids: [{"name": "Attendance sync"}],
    "POST /v1/admin/schools/{school_id}/api-keys": lambda ids: [{"name": "Support"}],
    "POST /v1/webhook-endpoints": lambda ids: [
        {
            "url": "https://93.184.215.14/events",
            "events": ["recipient.updated"],
            "description": "SIS",
        }
    ],
    "PATCH /v1/webhook-endpoints/{endpoint_id}": lambda ids: [
        {
            "url": "https://93.184.215.14/other",
            "events": ["campaign.updated"],
            "description": "SIS",
            "enabled": False,
        }
    ],
}
PLACEHOLDER_IDS: Ids = {"list_id": "LIST", "campaign_id": "CAMPAIGN", "school_id": "SCHOOL"}


# (operation, index of one of its valid bodies)
EXAMPLES: list[tuple[Operation, int]] = [
    (op, index)
    for op in JSON_OPS
    if op.key in VALID_BODIES
    for index in range(len(VALID_BODIES[op.key](PLACEHOLDER_IDS)))
]


# Bugs of other modules found by this sweep, as strict xfails (none open now).
KNOWN_NUL_BUGS: dict[str, str] = {}
KNOWN_CURSOR_BUGS: dict[str, str] = {}
KNOWN_QUERY_BUGS: dict[tuple[str, str], str] = {}


def xfail_if(reason: str | None) -> tuple[pytest.MarkDecorator, ...]:
    return (pytest.mark.xfail(strict=True, reason=reason),) if reason else ()


def cursor_of(*values: Any) -> str:
    raw = json.dumps(list(values)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- fixtures and checks --------------------------------------------------------------------


@dataclass
class World:
    """A school with a contact list and a draft campaign; ids to fill path templates."""

    auth: Headers
    ids: Ids

    def url(self, op: Operation, **override: str) -> str:
        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in override:
                return override[name]
            if name not in self.ids:
                pytest.fail(f"{op.key}: teach World a value for the path parameter `{name}`")
            return self.ids[name]

        return re.sub(r"\{(\w+)\}", fill, op.path)

    def headers(self, op: Operation) -> Headers:
        return {"SchoolApiKey": self.auth, "AdminToken": ADMIN}.get(op.auth or "", {})

    def bodies(self, op: Operation) -> list[Json]:
        return VALID_BODIES[op.key](self.ids)


@pytest.fixture
async def world(client: httpx.AsyncClient, school: tuple[Json, Headers]) -> World:
    body, auth = school
    campaign = await make_campaign(client, auth, people("+12015550123"))
    endpoint = await client.post(
        "/v1/webhook-endpoints", json={"url": "https://93.184.215.14/events"}, headers=auth
    )
    assert endpoint.status_code == 201, endpoint.text
    return World(
        auth=auth,
        ids={
            "school_id": body["id"],
            "list_id": campaign["contact_list_id"],
            "campaign_id": campaign["id"],
            "recipient_id": "1",
            "phone": "+12015550123",
            # No key of the school's: a sweep must not revoke the key it sends.
            "key_id": str(uuid.uuid4()),
            "endpoint_id": endpoint.json()["id"],
        },
    )


@pytest.fixture
async def raw(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that shows a 5xx as an answer instead of raising the app's exception."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def capped(
    settings: Settings, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with max_body_bytes=CAP, wired like conftest's `app` fixture."""
    capped_settings = settings.model_copy(update={"max_body_bytes": CAP})
    assert capped_settings.secret_key
    small = create_app(capped_settings)
    small.state.settings = capped_settings
    small.state.engine = engine
    small.state.sessionmaker = sessionmaker
    small.state.inbox = inbox_on(sessionmaker)
    small.state.secret_box = SecretBox(capped_settings.secret_key)
    transport = httpx.ASGITransport(app=small, raise_app_exceptions=False)
    async with (
        httpx.AsyncClient() as http,
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        small.state.http = http
        yield client


async def snapshot(session: AsyncSession) -> dict[str, list[str]]:
    """Every row of every table, as PostgreSQL renders it, but for when a key was last used:
    any request, refused or not, may stamp it when a new minute begins (README, API keys)."""
    tables = {}
    for table in Base.metadata.sorted_tables:
        query = text(f"SELECT (to_jsonb(t) - 'last_used_at')::text FROM \"{table.name}\" AS t")
        tables[table.name] = sorted((await session.execute(query)).scalars().all())
    await session.commit()  # release the savepoint: the next request's writes sit beside it
    return tables


def problem_failure(response: httpx.Response, *statuses: int) -> str | None:
    """Why this is not a problem+json answer (RFC 9457) with one of these statuses."""
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code not in statuses:
        wanted = "a 4xx" if len(statuses) > 5 else " or ".join(map(str, statuses))
        return f"{where}: {response.status_code}, not {wanted}: {response.text[:300]}"
    if response.headers.get("content-type") != PROBLEM_JSON:
        return f"{where}: content type {response.headers.get('content-type')!r}"
    body = response.json()
    if body.get("status") != response.status_code:
        return f"{where}: status {body.get('status')!r} in the body"
    if not str(body.get("type", "")).startswith("urn:campanile:problem:"):
        return f"{where}: type {body.get('type')!r}"
    for field in ("title", "detail"):
        if not isinstance(body.get(field), str) or not body[field]:
            return f"{where}: no {field}"
    if "errors" in body and not (isinstance(body["errors"], list) and body["errors"]):
        return f"{where}: empty errors"
    return None


def assert_problem(response: httpx.Response, *statuses: int) -> Json:
    failure = problem_failure(response, *statuses)
    assert failure is None, failure
    body: Json = response.json()
    return body


def expected(op: Operation, *statuses: int) -> tuple[int, ...]:
    # A signed webhook (no bearer scheme) may refuse the signature before reading the body.
    return statuses if op.auth else (*statuses, 401, 403)


class Failures(list[str]):
    """Everything wrong in a sweep, reported together."""

    def problem(
        self, response: httpx.Response, *statuses: int, context: object = ""
    ) -> Json | None:
        """The problem's body, or None (and a failure noted) when it is not one as expected."""
        failure = problem_failure(response, *statuses)
        if failure is not None:
            self.append(f"[{context}] {failure}" if context else failure)
            return None
        body: Json = response.json()
        return body

    def assert_none(self) -> None:
        assert not self, f"{len(self)} failure(s):\n" + "\n".join(self)


# --- coverage of the sweep itself -----------------------------------------------------------


def test_the_sweep_sees_the_api() -> None:
    keys = {op.key for op in OPERATIONS}
    assert {"POST /v1/admin/schools", "PUT /v1/school/provider", "POST /v1/campaigns"} <= keys
    assert len(JSON_OPS) >= 9 and len(LIST_OPS) >= 5 and len(SECURED_OPS) >= 30


def test_every_json_operation_has_a_valid_body_to_spoil() -> None:
    missing = [op.key for op in NEEDS_EXAMPLE if op.key not in VALID_BODIES]
    assert not missing, f"add these operations to VALID_BODIES in {__file__}: {missing}"
    stale = set(VALID_BODIES) - {op.key for op in JSON_OPS}
    assert not stale, f"VALID_BODIES names operations that no longer take JSON: {stale}"


async def test_valid_bodies_are_accepted(raw: httpx.AsyncClient, world: World) -> None:
    """The starting points of the spoiled bodies below are themselves valid."""
    failures = Failures()
    for op, index in EXAMPLES:
        body = world.bodies(op)[index]
        response = await raw.request(op.method, world.url(op), json=body, headers=world.headers(op))
        if not response.is_success:
            failures.append(f"{op.key} #{index}: {response.status_code} {response.text[:300]}")
    failures.assert_none()


# --- malformed and mis-shaped JSON ----------------------------------------------------------

MALFORMED: dict[str, bytes] = {
    "truncated": b'{"name": "Lincoln',
    "trailing comma": b'{"name": "Lincoln",}',
    "single quotes": b"{'name': 'Lincoln'}",
    "form encoded": b"name=Lincoln",
    "invalid utf-8": b'{"name": "\xff\xfe"}',
    "two documents": b"{} {}",
    "bare word": b"Lincoln",
    "nested too deep": b"[" * 100_000,
}
NOT_OBJECTS: dict[str, Any] = {
    "array": [],
    "array of object": [{"name": "Lincoln"}],
    "string": "Lincoln",
    "number": 42,
    "boolean": True,
    "null": None,
}


async def test_malformed_json_is_400_and_changes_nothing(
    raw: httpx.AsyncClient, session: AsyncSession, world: World
) -> None:
    failures = Failures()
    before = await snapshot(session)
    for op in JSON_OPS:
        headers = {**world.headers(op), "Content-Type": "application/json"}
        for case, content in MALFORMED.items():
            response = await raw.request(op.method, world.url(op), content=content, headers=headers)
            problem = failures.problem(response, *expected(op, 400), context=case)
            # (Signed webhooks have problem types of their own, and may answer 403 first.)
            malformed = problem and problem["type"].endswith(":malformed-json")
            if problem and op.auth and not malformed:
                failures.append(f"{op.key} [{case}]: type {problem['type']}")
    failures.assert_none()
    assert await snapshot(session) == before


async def test_json_that_is_not_an_object_is_422_and_changes_nothing(
    raw: httpx.AsyncClient, session: AsyncSession, world: World
) -> None:
    failures = Failures()
    before = await snapshot(session)
    for op in JSON_OPS:
        headers = {**world.headers(op), "Content-Type": "application/json"}
        for case, value in NOT_OBJECTS.items():
            content = json.dumps(value).encode()
            response = await raw.request(op.method, world.url(op), content=content, headers=headers)
            failures.problem(response, *expected(op, 422), context=case)
    failures.assert_none()
    assert await snapshot(session) == before


async def test_empty_or_mislabelled_body_is_a_4xx_and_changes_nothing(
    raw: httpx.AsyncClient, session: AsyncSession, world: World
) -> None:
    failures = Failures()
    before = await snapshot(session)
    for op in JSON_OPS:
        url, headers = world.url(op), world.headers(op)
        json_headers = {**headers, "Content-Type": "application/json"}
        empty = await raw.request(op.method, url, content=b"", headers=json_headers)
        failures.problem(empty, *expected(op, 400, 422), context="empty")
        if op.key not in VALID_BODIES:
            continue
        valid = json.dumps(world.bodies(op)[0]).encode()
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            labelled = {**headers, **({"Content-Type": content_type} if content_type else {})}
            response = await raw.request(op.method, url, content=valid, headers=labelled)
            failures.problem(response, 400, 415, 422, context=content_type)
    failures.assert_none()
    assert await snapshot(session) == before


# --- spoiled fields: wrong types, unknown fields, NUL ---------------------------------------


def _names_the_field(problem: Json, key: str | int) -> bool:
    for error in problem.get("errors", []):
        if str(key) in [str(part) for part in error["loc"]]:
            return True
        if error["type"].startswith("union_tag"):  # the discriminator itself is wrong
            return True
    return False


async def test_wrong_field_types_are_422_naming_the_field(
    raw: httpx.AsyncClient, session: AsyncSession, world: World
) -> None:
    """Every field of every valid body, nested ones included, given a value of a JSON type
    its schema does not accept."""
    failures = Failures()
    before = await snapshot(session)
    for op, index in EXAMPLES:
        assert op.body_schema is not None
        valid = world.bodies(op)[index]
        for path, _, schema in nodes(valid, op.body_schema):
            wrong = wrong_value(schema)
            if not path or wrong is None:
                continue
            spoiled = replaced(valid, path, wrong)
            response = await raw.request(
                op.method, world.url(op), json=spoiled, headers=world.headers(op)
            )
            where = f"#{index} {dotted(path)}={wrong!r}"
            problem = failures.problem(response, 422, context=f"{op.key} {where}")
            if problem and not _names_the_field(problem, path[-1]):
                failures.append(f"{op.key} {where}: not named in {problem['errors']}")
    failures.assert_none()
    assert await snapshot(session) == before


async def test_unknown_fields_are_422_at_every_level(
    raw: httpx.AsyncClient, session: AsyncSession, world: World
) -> None:
    """Every object with declared fields refuses others, nested objects included."""
    failures = Failures()
    before = await snapshot(session)
    for op, index in EXAMPLES:
        assert op.body_schema is not None
        valid = world.bodies(op)[index]
        for path, value, schema in nodes(valid, op.body_schema):
            described = object_schema(schema, value) if isinstance(value, dict) else None
            if described is None or not described.get("properties"):
                continue  # not an object, or a free-form map (merge fields take any name)
            spoiled = replaced(valid, path, {**value, UNKNOWN_FIELD: 1})
            response = await raw.request(
                op.method, world.url(op), json=spoiled, headers=world.headers(op)
            )
            where = f"#{index} {dotted(path)}"
            problem = failures.problem(response, 422, context=f"{op.key} {where}")
            if problem and not any(
                e["type"] == "extra_forbidden" and e["loc"][-1] == UNKNOWN_FIELD
                for e in problem["errors"]
            ):
                failures.append(f"{op.key} {where}: not reported as an unknown field")
    failures.assert_none()
    assert await snapshot(session) == before


NUL_OPS = sorted({op.key: op for op, _ in EXAMPLES}.values(), key=lambda op: op.key)


@pytest.mark.parametrize(
    "op",
    [pytest.param(op, id=op.key, marks=xfail_if(KNOWN_NUL_BUGS.get(op.key))) for op in NUL_OPS],
)
async def test_nul_in_any_text_field_is_never_a_5xx(
    raw: httpx.AsyncClient, session: AsyncSession, world: World, op: Operation
) -> None:
    """PostgreSQL cannot store U+0000: a text field holding one is refused (a 4xx that
    changes nothing), or accepted where nothing is stored (a preview)."""
    assert op.body_schema is not None
    failures = Failures()
    for index, valid in enumerate(world.bodies(op)):
        for path, value, _ in nodes(valid, op.body_schema):
            if not isinstance(value, str) or not path or path[-1] == "provider":
                continue
            spoiled = replaced(valid, path, value[:1] + "\x00" + value[1:])
            before = await snapshot(session)
            response = await raw.request(
                op.method, world.url(op), json=spoiled, headers=world.headers(op)
            )
            where = f"#{index} {dotted(path)}"
            if response.is_success:
                continue
            refused = failures.problem(response, *range(400, 500), context=where)
            if refused and await snapshot(session) != before:
                failures.append(f"{op.key} {where}: refused, yet something changed")
    failures.assert_none()


# --- bodies over the size cap ---------------------------------------------------------------


def _oversized(content_type: str) -> bytes:
    if content_type == "text/csv":
        return b"phone,first_name\n" + b"+12015550123,Ada\n" * (CAP // 8)
    if content_type == "application/x-www-form-urlencoded":
        return b"Body=" + b"x" * (2 * CAP)
    return json.dumps({"name": "x" * (2 * CAP)}).encode()


async def _chunks(content: bytes, size: int = 100) -> AsyncIterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_cap_is_413_and_changes_nothing(
    capped: httpx.AsyncClient, session: AsyncSession, world: World, streamed: bool
) -> None:
    """Every body an operation takes, in every media type, over max_body_bytes: declared
    up front (Content-Length) or only found out while streaming (chunked)."""
    failures = Failures()
    before = await snapshot(session)
    for op in OPERATIONS:
        for content_type in op.body_types:
            content = _oversized(content_type)
            response = await capped.request(
                op.method,
                world.url(op),
                content=_chunks(content) if streamed else content,
                headers={**world.headers(op), "Content-Type": content_type},
            )
            sent = response.request.headers
            if streamed:
                assert "content-length" not in sent and sent["transfer-encoding"] == "chunked"
            else:
                assert sent["content-length"] == str(len(content)) and len(content) > CAP
            # A signed webhook may refuse a missing signature before it reads the body.
            statuses = (413,) if op.auth or not streamed else (413, 401, 403)
            problem = failures.problem(response, *statuses, context=content_type)
            if problem and problem["status"] == 413 and str(CAP) not in problem["detail"]:
                failures.append(f"{op.key}: the detail does not name the cap: {problem}")
    failures.assert_none()
    assert await snapshot(session) == before


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_exactly_at_the_cap_is_accepted_and_one_byte_more_is_not(
    capped: httpx.AsyncClient, world: World, streamed: bool
) -> None:
    body = json.dumps({"name": "Families"}).encode()
    at_cap = body + b" " * (CAP - len(body))  # whitespace after JSON is still JSON
    for content, status in ((at_cap, 201), (at_cap + b" ", 413)):
        response = await capped.post(
            "/v1/contact-lists",
            content=_chunks(content) if streamed else content,
            headers={**world.auth, "Content-Type": "application/json"},
        )
        assert response.status_code == status, response.text


async def test_declared_length_over_the_cap_is_413_even_where_no_body_is_read(
    capped: httpx.AsyncClient, world: World
) -> None:
    response = await capped.request(
        "GET", "/v1/school", content=b"x" * (CAP + 1), headers=world.auth
    )
    assert_problem(response, 413)


# --- routes and methods ---------------------------------------------------------------------

UNKNOWN_ROUTES = [
    ("GET", "/v1/nope"),
    ("POST", "/v1/nope"),
    ("GET", "/nope"),
    ("GET", "/v2/school"),
    ("GET", "/v1/school/extra"),
    ("DELETE", "/v1/campaigns/a/b/c/d/e"),
    ("GET", "/v1/"),
    ("GET", "/v1"),
]


async def test_unknown_route_is_a_404_problem(raw: httpx.AsyncClient, auth: Headers) -> None:
    failures = Failures()
    for method, url in UNKNOWN_ROUTES:
        for headers in (auth, {}):
            response = await raw.request(method, url, headers=headers)
            problem = failures.problem(response, 404)
            if problem and not problem["type"].endswith(":not-found"):
                failures.append(f"{method} {url}: {problem}")
    failures.assert_none()


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$")


async def test_wrong_method_is_a_405_problem_naming_the_allowed_ones(
    raw: httpx.AsyncClient, session: AsyncSession, world: World
) -> None:
    failures = Failures()
    before = await snapshot(session)
    for template in sorted(DOC["paths"]):
        op = next(o for o in OPERATIONS if o.path == template)
        url = world.url(op)
        # The methods of the resource the URL names, as documented: /v1/campaigns/preview
        # fits /v1/campaigns/{campaign_id} too, but is a resource of its own (POST only).
        own = min(
            (path for path in DOC["paths"] if _template_regex(path).match(url)),
            key=lambda path: path.count("{"),
        )
        allowed = {method.upper() for method in DOC["paths"][own]}
        for method in sorted(set(METHODS) - allowed):
            response = await raw.request(method, url, headers=world.auth, json={})
            problem = failures.problem(response, 405, context=template)
            if problem is None:
                continue
            if not problem["type"].endswith(":method-not-allowed"):
                failures.append(f"{method} {url}: type {problem['type']}")
            listed = {m.strip() for m in response.headers.get("allow", "").split(",")}
            if listed != allowed:
                failures.append(f"{method} {url}: Allow {listed}, expected {allowed}")
    failures.assert_none()
    assert await snapshot(session) == before


# --- query parameters -----------------------------------------------------------------------

GARBAGE_CURSORS: dict[str, str] = {
    "not base64": "!!!not-a-cursor!!!",
    "percent": "%%%",
    "not json": base64.urlsafe_b64encode(b"not json").decode(),
    "not utf-8": base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
    "object": base64.urlsafe_b64encode(b'{"after": 1}').decode(),
    "string": base64.urlsafe_b64encode(b'"abc"').decode(),
    "number": base64.urlsafe_b64encode(b"12").decode(),
    "empty list": cursor_of(),
    "three values": cursor_of(1, 2, 3),
    "very long": "A" * 5000,
}
# The right arity (one or two values: every list's cursor has one of them), wrong types.
FORGED_CURSORS: dict[str, str] = {
    "text": cursor_of("x"),
    "NUL": cursor_of("\x00"),
    "null": cursor_of(None),
    "object": cursor_of({"a": 1}),
    "list": cursor_of(["nested"]),
    "huge int": cursor_of(2**70),
    "negative": cursor_of(-1),
    "two texts": cursor_of("x", "y"),
    "two ints": cursor_of(1, 2),
    "two nulls": cursor_of(None, None),
    "naive time, bad id": cursor_of("2020-01-01T00:00:00", "not-a-uuid"),
}


async def test_invalid_cursor_is_400(raw: httpx.AsyncClient, world: World) -> None:
    failures = Failures()
    for op in LIST_OPS:
        for case, cursor in GARBAGE_CURSORS.items():
            response = await raw.get(
                world.url(op), params={"cursor": cursor}, headers=world.headers(op)
            )
            problem = failures.problem(response, 400, context=case)
            if problem and "cursor" not in problem["detail"]:
                failures.append(f"{op.key} [{case}]: {problem['detail']}")
    failures.assert_none()


# Last-Event-IDs the stream never sent: its ids are `xid-id`, two numbers below 2**63.
NOT_POSITIONS = {
    "empty part": "12-",
    "not digits": "abc-def",
    "three parts": "1-2-3",
    "negative": "-1-2",
    "not ASCII digits": "\u00b2-\u00b3",  # str.isdigit() holds, as Latin-1 on the wire
    "2**63": f"{2**63}-1",
    "20 digits": "1-" + "0" * 20,
    "41 characters": "1-" + "0" * 39,
    "a kilobyte": "1-" + "2" * 1024,
    "8 KiB of text": "x" * 8192,
}


async def test_a_last_event_id_the_stream_did_not_send_is_400(
    raw: httpx.AsyncClient, world: World
) -> None:
    """Whatever it is, and however long: the 400 the stream's documentation promises, not
    a 422 for its length (the stream's operation is left out of the fuzzer)."""
    failures = Failures()
    path = f"/v1/campaigns/{world.ids['campaign_id']}/events"
    for case, value in NOT_POSITIONS.items():
        headers = {
            b"Authorization": world.auth["Authorization"].encode(),
            b"Last-Event-ID": value.encode("latin-1"),
        }
        problem = failures.problem(await raw.get(path, headers=headers), 400, context=case)
        if problem and problem["detail"] != "Last-Event-ID is not a position this stream sent.":
            failures.append(f"[{case}]: {problem['detail']}")
    failures.assert_none()


@pytest.mark.parametrize(
    "op",
    [pytest.param(op, id=op.key, marks=xfail_if(KNOWN_CURSOR_BUGS.get(op.key))) for op in LIST_OPS],
)
async def test_forged_cursor_is_never_a_5xx(
    raw: httpx.AsyncClient, world: World, op: Operation
) -> None:
    """A cursor of the right arity with values of the wrong type: a 400, or at worst a page."""
    failures = Failures()
    for case, cursor in FORGED_CURSORS.items():
        response = await raw.get(
            world.url(op), params={"cursor": cursor}, headers=world.headers(op)
        )
        if response.status_code != 200:
            failures.problem(response, 400, context=case)
    failures.assert_none()


async def test_limit_out_of_range_is_422(raw: httpx.AsyncClient, world: World) -> None:
    failures = Failures()
    for op in LIST_OPS:
        url, headers = world.url(op), world.headers(op)
        for limit in ("0", "501", "-1", "ten", "", "1.5", "99999999999999999999"):
            response = await raw.get(url, params={"limit": limit}, headers=headers)
            problem = failures.problem(response, 422, context=f"limit={limit!r}")
            if problem and ["query", "limit"] not in [e["loc"] for e in problem["errors"]]:
                failures.append(f"{op.key} limit={limit!r}: not named in the errors")
        for limit in ("1", "500"):
            response = await raw.get(url, params={"limit": limit}, headers=headers)
            if response.status_code != 200:
                failures.append(f"{op.key} limit={limit}: {response.status_code}")
    failures.assert_none()


QUERY_CASES = [
    pytest.param(
        op,
        name,
        schema,
        id=f"{op.key} {name}",
        marks=xfail_if(KNOWN_QUERY_BUGS.get((op.key, name))),
    )
    for op in OPERATIONS
    for name, schema in op.query
    if name not in ("limit", "cursor")
]


@pytest.mark.parametrize(("op", "name", "schema"), QUERY_CASES)
async def test_bad_query_values_are_a_4xx(
    raw: httpx.AsyncClient, world: World, op: Operation, name: str, schema: Json
) -> None:
    """A value outside an enum or over a length limit is a 422; a NUL is never a 5xx."""
    url, headers = world.url(op), world.headers(op)
    if any("enum" in branch for branch in branches(schema)):
        assert_problem(await raw.get(url, params={name: "zz-not-a-choice"}, headers=headers), 422)
    for limit in [b["maxLength"] for b in branches(schema) if "maxLength" in b][:1]:
        assert_problem(await raw.get(url, params={name: "x" * (limit + 1)}, headers=headers), 422)
    response = await raw.get(url, params={name: "a\x00b"}, headers=headers)
    assert response.status_code < 500, response.text
    if not response.is_success:
        assert_problem(response, *range(400, 500))


# --- authentication and ids -----------------------------------------------------------------


async def test_missing_or_wrong_credentials_are_401_with_a_bearer_challenge(
    raw: httpx.AsyncClient, session: AsyncSession, world: World
) -> None:
    failures = Failures()
    before = await snapshot(session)
    for op in SECURED_OPS:
        other = ADMIN if op.auth == "SchoolApiKey" else world.auth  # the other kind of token
        body = world.bodies(op)[0] if op.key in VALID_BODIES else None
        for case, headers in {
            "none": {},
            "unknown key": {"Authorization": "Bearer cmp_not-a-real-key"},
            "empty bearer": {"Authorization": "Bearer "},
            "bare scheme": {"Authorization": "Bearer"},
            "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
            "no scheme": {"Authorization": other["Authorization"].removeprefix("Bearer ")},
            "the other token": other,
        }.items():
            response = await raw.request(op.method, world.url(op), json=body, headers=headers)
            problem = failures.problem(response, 401, context=f"{op.key} {case}")
            if problem and response.headers.get("www-authenticate") != "Bearer":
                failures.append(f"{op.key} [{case}]: no `WWW-Authenticate: Bearer`")
    failures.assert_none()
    assert await snapshot(session) == before


async def test_malformed_or_unknown_ids_are_404(
    raw: httpx.AsyncClient, session: AsyncSession, world: World
) -> None:
    failures = Failures()
    before = await snapshot(session)
    for op in PATH_OPS:
        body = world.bodies(op)[0] if op.key in VALID_BODIES else None
        for name in re.findall(r"\{(\w+)\}", op.path):
            # A phone that cannot be a phone number is a 422 ("not a phone number").
            statuses = (404, 422) if name == "phone" else (404,)
            for bad in ("not-an-id", "00000000-0000-0000-0000-000000000000", "-1", "9" * 40):
                url = world.url(op, **{name: bad})
                response = await raw.request(op.method, url, json=body, headers=world.headers(op))
                failures.problem(response, *statuses, context=f"{name}={bad}")
    failures.assert_none()
    assert await snapshot(session) == before
