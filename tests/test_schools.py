"""Schools as their users meet them: creation and its defaults, API keys (shown once, stored
as hashes), settings, the provider account (secrets sealed, never answered) and tenancy."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.kit.crypto import SecretBox
from app.models import ApiKey, ProviderAccount, School
from tests.support.api import ADMIN, ADMIN_TOKEN, make_school

Json = dict[str, Any]
Headers = dict[str, str]

SCHOOL_FIELDS = {
    "id",
    "name",
    "timezone",
    "default_region",
    "allowed_country_codes",
    "sending_window",
    "retry_policy",
    "created_at",
}
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token-5f2b9c"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
TELNYX_KEY = "KEY0188-telnyx-api-key-77aa"
SECRETS = (TWILIO_TOKEN, TELNYX_KEY)


def telnyx_public_key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def twilio(**changes: Any) -> Json:
    account: Json = {
        "provider": "twilio",
        "account_sid": TWILIO_SID,
        "auth_token": TWILIO_TOKEN,
        "from_number": "+12015550100",
    }
    account.update(changes)
    return {k: v for k, v in account.items() if v is not None}


def telnyx(**changes: Any) -> Json:
    account: Json = {
        "provider": "telnyx",
        "api_key": TELNYX_KEY,
        "public_key": telnyx_public_key(),
        "messaging_profile_id": "40017d2e-profile",
    }
    account.update(changes)
    return {k: v for k, v in account.items() if v is not None}


def assert_problem(response: httpx.Response, status: int) -> Json:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: Json = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if status == 422:
        assert body["errors"], body
    return body


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


async def count(session: AsyncSession, model: type[Any]) -> int:
    total = (await session.execute(select(func.count()).select_from(model))).scalar_one()
    await session.commit()  # release the savepoint: the next request's writes sit beside it
    return int(total)


async def rows_as_text(session: AsyncSession, table: str, school_id: str) -> list[str]:
    """The school's rows of `table`, every column rendered by PostgreSQL as one string."""
    query = text(f"SELECT t::text FROM {table} AS t WHERE t.{_school_column(table)} = :id")
    rows = (await session.execute(query, {"id": uuid.UUID(school_id)})).scalars().all()
    await session.commit()
    return sorted(rows)


def _school_column(table: str) -> str:
    return "id" if table == "schools" else "school_id"


async def stored_account(session: AsyncSession, school_id: str) -> ProviderAccount | None:
    query = (
        select(ProviderAccount)
        .where(ProviderAccount.school_id == uuid.UUID(school_id))
        .execution_options(populate_existing=True)
    )
    account = (await session.execute(query)).scalar_one_or_none()
    await session.commit()
    return account


# --- creation -------------------------------------------------------------------------------


async def test_create_school_with_defaults_and_a_key_shown_once(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/admin/schools", json={"name": "Lincoln High"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    assert SCHOOL_FIELDS | {"api_key"} <= body.keys()
    assert body["name"] == "Lincoln High"
    assert body["timezone"] == "America/New_York"
    assert body["default_region"] == "US"
    assert body["allowed_country_codes"] == [1]
    assert body["sending_window"] == {"start": "08:00", "end": "21:00"}
    assert body["retry_policy"] == {
        "base_delay_seconds": 60,
        "max_delay_seconds": 3600,
        "max_retry_age_seconds": None,
    }
    assert isinstance(body["id"], str)
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None

    me = await client.get("/v1/school", headers=bearer(body["api_key"]))
    assert me.status_code == 200
    shown = me.json()
    assert "api_key" not in shown
    assert body["api_key"] not in me.text
    assert shown == {k: v for k, v in body.items() if k != "api_key"}


async def test_create_school_honours_explicit_settings(client: httpx.AsyncClient) -> None:
    settings = {
        "timezone": "America/Chicago",
        "default_region": "ca",
        "allowed_country_codes": [44, 1, 1],
        "sending_window": {"start": "21:30", "end": "06:15"},
        "retry_policy": {
            "base_delay_seconds": 30,
            "max_delay_seconds": 900,
            "max_retry_age_seconds": 86_400,
        },
    }
    body, headers = await make_school(client, name="  Roosevelt Middle  ", **settings)
    expected = {
        "name": "Roosevelt Middle",
        "timezone": "America/Chicago",
        "default_region": "CA",
        "allowed_country_codes": [1, 44],
        "sending_window": {"start": "21:30", "end": "06:15"},
        "retry_policy": settings["retry_policy"],
    }
    assert {k: body[k] for k in expected} == expected
    stored = (await client.get("/v1/school", headers=headers)).json()
    assert {k: stored[k] for k in expected} == expected


async def test_create_school_without_sending_window_sends_any_time(
    client: httpx.AsyncClient,
) -> None:
    body, _ = await make_school(client, sending_window=None)
    assert body["sending_window"] is None


BAD_SCHOOLS: dict[str, Json] = {
    "unknown time zone": {"timezone": "Mars/Olympus_Mons"},
    "time zone path": {"timezone": "../../etc/passwd"},
    "null time zone": {"timezone": None},
    "unknown region": {"default_region": "ZZ"},
    "region not a code": {"default_region": "United States"},
    "unknown country code": {"allowed_country_codes": [1, 999]},
    "no country codes": {"allowed_country_codes": []},
    "country code as boolean": {"allowed_country_codes": [True]},
    "country code as text": {"allowed_country_codes": ["1"]},
    "empty window": {"sending_window": {"start": "09:00", "end": "09:00"}},
    "window hour 25": {"sending_window": {"start": "25:00", "end": "08:00"}},
    "window with offset": {"sending_window": {"start": "08:00Z", "end": "17:00"}},
    "window with seconds and offset": {
        "sending_window": {"start": "08:00:30.5+05:00", "end": "17:00"}
    },
    "window as seconds": {"sending_window": {"start": 28_800, "end": "17:00"}},
    "window without end": {"sending_window": {"start": "08:00"}},
    "window unknown field": {"sending_window": {"start": "08:00", "end": "17:00", "days": ["mon"]}},
    "max below base": {"retry_policy": {"base_delay_seconds": 600, "max_delay_seconds": 60}},
    "zero base delay": {"retry_policy": {"base_delay_seconds": 0, "max_delay_seconds": 60}},
    "retry age too short": {
        "retry_policy": {
            "base_delay_seconds": 60,
            "max_delay_seconds": 60,
            "max_retry_age_seconds": 59,
        }
    },
    "retry age beyond a year": {
        "retry_policy": {
            "base_delay_seconds": 60,
            "max_delay_seconds": 60,
            "max_retry_age_seconds": 2**40,
        }
    },
    "retry policy unknown field": {
        "retry_policy": {"base_delay_seconds": 60, "max_delay_seconds": 60, "jitter": False}
    },
    "null retry policy": {"retry_policy": None},
    "retry policy not an object": {"retry_policy": 60},
    "null base delay": {"retry_policy": {"base_delay_seconds": None}},
    "null max delay": {"retry_policy": {"max_delay_seconds": None}},
    "base delay as text": {"retry_policy": {"base_delay_seconds": "60"}},
    "max delay beyond a week alone": {"retry_policy": {"max_delay_seconds": 7 * 86_400 + 1}},
    "retry age too short alone": {"retry_policy": {"max_retry_age_seconds": 59}},
    "base beyond the default max": {"retry_policy": {"base_delay_seconds": 7200}},
    "max below the default base": {"retry_policy": {"max_delay_seconds": 30}},
    "unknown field": {"colour": "red"},
}
BAD_NAMES: dict[str, Any] = {
    "empty name": "",
    "blank name": "   ",
    "name too long": "x" * 201,
    "name with NUL": "Lincoln\x00High",
    "name not text": 42,
    "null name": None,
}


@pytest.mark.parametrize(
    "body",
    [pytest.param({"name": "Lincoln High", **bad}, id=case) for case, bad in BAD_SCHOOLS.items()]
    + [pytest.param({"name": name}, id=case) for case, name in BAD_NAMES.items()]
    + [pytest.param({}, id="no name")],
)
async def test_invalid_school_is_422_and_nothing_is_created(
    client: httpx.AsyncClient, session: AsyncSession, body: Json
) -> None:
    schools, keys = await count(session, School), await count(session, ApiKey)
    response = await client.post("/v1/admin/schools", json=body, headers=ADMIN)
    assert_problem(response, 422)
    assert "api_key" not in response.text
    assert await count(session, School) == schools
    assert await count(session, ApiKey) == keys


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no token"),
        pytest.param(bearer("not-the-admin-token"), id="wrong token"),
        pytest.param({"Authorization": "Basic dGVzdC1hZG1pbi10b2tlbg=="}, id="basic scheme"),
        pytest.param(bearer(ADMIN_TOKEN.upper()), id="token in other case"),
    ],
)
async def test_admin_endpoints_need_the_admin_token(
    client: httpx.AsyncClient, session: AsyncSession, headers: Headers
) -> None:
    schools, keys = await count(session, School), await count(session, ApiKey)
    created = await client.post("/v1/admin/schools", json={"name": "Sneaky"}, headers=headers)
    assert_problem(created, 401)
    assert created.headers["www-authenticate"] == "Bearer"
    other, _ = await make_school(client)
    schools, keys = schools + 1, keys + 1
    key = await client.post(
        f"/v1/admin/schools/{other['id']}/api-keys", headers=headers, json={"name": "Second"}
    )
    assert_problem(key, 401)
    assert await count(session, School) == schools
    assert await count(session, ApiKey) == keys


async def test_a_school_key_is_not_an_admin_token(
    client: httpx.AsyncClient, school: tuple[Json, Headers]
) -> None:
    body, headers = school
    assert_problem(await client.post("/v1/admin/schools", json={"name": "x"}, headers=headers), 401)
    assert_problem(
        await client.post(
            f"/v1/admin/schools/{body['id']}/api-keys", headers=headers, json={"name": "Second"}
        ),
        401,
    )
    # ...and the admin token is not a school key.
    assert_problem(await client.get("/v1/school", headers=ADMIN), 401)


# --- API keys -------------------------------------------------------------------------------


async def test_api_key_is_stored_only_as_its_hash(
    client: httpx.AsyncClient, session: AsyncSession, school: tuple[Json, Headers]
) -> None:
    body, _ = school
    key = body["api_key"]
    rows = (
        await session.execute(
            select(ApiKey.token_hash, ApiKey.prefix).where(
                ApiKey.school_id == uuid.UUID(body["id"])
            )
        )
    ).all()
    await session.commit()
    assert [tuple(row) for row in rows] == [(hashlib.sha256(key.encode()).hexdigest(), key[:12])]
    stored = await rows_as_text(session, "api_keys", body["id"])
    assert stored and not any(key in row for row in stored)
    assert not any(key in row for row in await rows_as_text(session, "schools", body["id"]))


async def test_second_api_key_works_and_the_first_keeps_working(
    client: httpx.AsyncClient, session: AsyncSession, school: tuple[Json, Headers]
) -> None:
    body, first = school
    response = await client.post(
        f"/v1/admin/schools/{body['id']}/api-keys", headers=ADMIN, json={"name": "Second"}
    )
    assert response.status_code == 201, response.text
    issued = response.json()
    assert {"id", "api_key", "prefix", "created_at"} <= issued.keys()
    second = issued["api_key"]
    assert second != body["api_key"]
    assert issued["prefix"] == second[:12]

    for headers in (first, bearer(second)):
        me = await client.get("/v1/school", headers=headers)
        assert me.status_code == 200
        assert me.json()["id"] == body["id"]

    stored = await rows_as_text(session, "api_keys", body["id"])
    assert len(stored) == 2
    assert not any(secret in row for row in stored for secret in (body["api_key"], second))
    hashes = (
        await session.execute(
            select(ApiKey.token_hash).where(ApiKey.school_id == uuid.UUID(body["id"]))
        )
    ).scalars()
    assert hashlib.sha256(second.encode()).hexdigest() in set(hashes)
    await session.commit()


@pytest.mark.parametrize(
    "school_id",
    [
        pytest.param(str(uuid.uuid4()), id="unknown uuid"),
        pytest.param("not-a-uuid", id="malformed"),
        pytest.param("12345", id="number"),
    ],
)
async def test_api_key_for_an_unknown_school_is_404(
    client: httpx.AsyncClient, session: AsyncSession, school_id: str
) -> None:
    keys = await count(session, ApiKey)
    assert_problem(
        await client.post(
            f"/v1/admin/schools/{school_id}/api-keys", headers=ADMIN, json={"name": "Second"}
        ),
        404,
    )
    assert await count(session, ApiKey) == keys


# --- settings -------------------------------------------------------------------------------


async def test_get_school_shows_the_callers_school(
    client: httpx.AsyncClient, school: tuple[Json, Headers]
) -> None:
    body, headers = school
    response = await client.get("/v1/school", headers=headers)
    assert response.status_code == 200
    assert response.json().keys() >= SCHOOL_FIELDS
    assert response.json()["id"] == body["id"]


SETTING_CHANGES: dict[str, Json] = {
    "name": {"name": "Lincoln High School"},
    "timezone": {"timezone": "Pacific/Honolulu"},
    "default_region": {"default_region": "GB"},
    "allowed_country_codes": {"allowed_country_codes": [1, 44, 52]},
    "sending_window": {"sending_window": {"start": "07:45", "end": "19:30"}},
    "retry_policy": {
        "retry_policy": {
            "base_delay_seconds": 120,
            "max_delay_seconds": 7200,
            "max_retry_age_seconds": 172_800,
        }
    },
    "retry_policy without age": {"retry_policy": {"base_delay_seconds": 5, "max_delay_seconds": 5}},
}


@pytest.mark.parametrize("change", list(SETTING_CHANGES.values()), ids=list(SETTING_CHANGES))
async def test_patch_changes_one_setting_and_keeps_the_others(
    client: httpx.AsyncClient, school: tuple[Json, Headers], change: Json
) -> None:
    _, headers = school
    before = (await client.get("/v1/school", headers=headers)).json()
    response = await client.patch("/v1/school", json=change, headers=headers)
    assert response.status_code == 200, response.text
    expected = {**before, **change}
    # The retry settings a change does not name keep their values.
    expected["retry_policy"] = {**before["retry_policy"], **change.get("retry_policy", {})}
    assert response.json() == expected
    assert (await client.get("/v1/school", headers=headers)).json() == expected


async def test_successive_partial_patches_accumulate(
    client: httpx.AsyncClient, school: tuple[Json, Headers]
) -> None:
    _, headers = school
    for change in SETTING_CHANGES.values():
        assert (await client.patch("/v1/school", json=change, headers=headers)).status_code == 200
    final = (await client.get("/v1/school", headers=headers)).json()
    assert final["name"] == "Lincoln High School"
    assert final["timezone"] == "Pacific/Honolulu"
    assert final["default_region"] == "GB"
    assert final["allowed_country_codes"] == [1, 44, 52]
    assert final["sending_window"] == {"start": "07:45", "end": "19:30"}
    # The last change named only the delays: the retry age set before it stays.
    assert final["retry_policy"] == {
        "base_delay_seconds": 5,
        "max_delay_seconds": 5,
        "max_retry_age_seconds": 172_800,
    }


async def test_patch_retry_policy_changes_only_the_retry_settings_it_names(
    client: httpx.AsyncClient, school: tuple[Json, Headers]
) -> None:
    _, headers = school
    steps: list[tuple[Json, Json]] = [
        # (the retry_policy sent, the retry_policy the school then has)
        ({"max_retry_age_seconds": 600}, {"base": 60, "max": 3600, "age": 600}),
        ({"base_delay_seconds": 10, "max_delay_seconds": 20}, {"base": 10, "max": 20, "age": 600}),
        ({"max_delay_seconds": 40}, {"base": 10, "max": 40, "age": 600}),
        ({"base_delay_seconds": 40}, {"base": 40, "max": 40, "age": 600}),
        ({}, {"base": 40, "max": 40, "age": 600}),
        # An explicit null is a value: retry indefinitely.
        ({"max_retry_age_seconds": None}, {"base": 40, "max": 40, "age": None}),
        ({"base_delay_seconds": 30}, {"base": 30, "max": 40, "age": None}),
    ]
    for sent, policy in steps:
        expected = {
            "base_delay_seconds": policy["base"],
            "max_delay_seconds": policy["max"],
            "max_retry_age_seconds": policy["age"],
        }
        response = await client.patch("/v1/school", json={"retry_policy": sent}, headers=headers)
        assert response.status_code == 200, (sent, response.text)
        assert response.json()["retry_policy"] == expected, sent
        shown = (await client.get("/v1/school", headers=headers)).json()
        assert shown["retry_policy"] == expected, sent


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"base_delay_seconds": 901}, "max_delay_seconds", id="base beyond max"),
        pytest.param({"max_delay_seconds": 29}, "max_delay_seconds", id="max below base"),
        pytest.param(
            {"base_delay_seconds": 1000, "max_delay_seconds": 999}, "max_delay_seconds", id="both"
        ),
    ],
)
async def test_patch_retry_policy_that_leaves_an_invalid_policy_is_422_and_changes_nothing(
    client: httpx.AsyncClient, session: AsyncSession, change: Json, field: str
) -> None:
    policy = {"base_delay_seconds": 30, "max_delay_seconds": 900, "max_retry_age_seconds": 3600}
    body, headers = await make_school(client, retry_policy=policy)
    before = (await client.get("/v1/school", headers=headers)).json()
    stored = await rows_as_text(session, "schools", body["id"])
    response = await client.patch(
        "/v1/school", json={"name": "Renamed", "retry_policy": change}, headers=headers
    )
    problem = assert_problem(response, 422)
    assert [e["loc"] for e in problem["errors"]] == [["body", "retry_policy", field]]
    assert "base_delay_seconds" in problem["errors"][0]["msg"]
    assert (await client.get("/v1/school", headers=headers)).json() == before
    assert await rows_as_text(session, "schools", body["id"]) == stored


async def test_create_school_with_some_retry_settings_keeps_the_defaults_of_the_others(
    client: httpx.AsyncClient,
) -> None:
    body, _ = await make_school(client, retry_policy={"max_retry_age_seconds": 86_400})
    assert body["retry_policy"] == {
        "base_delay_seconds": 60,
        "max_delay_seconds": 3600,
        "max_retry_age_seconds": 86_400,
    }


async def test_empty_patch_changes_nothing(
    client: httpx.AsyncClient, school: tuple[Json, Headers]
) -> None:
    _, headers = school
    before = (await client.get("/v1/school", headers=headers)).json()
    response = await client.patch("/v1/school", json={}, headers=headers)
    assert response.status_code == 200
    assert response.json() == before


async def test_null_sending_window_means_any_time(
    client: httpx.AsyncClient, session: AsyncSession, school: tuple[Json, Headers]
) -> None:
    body, headers = school
    response = await client.patch("/v1/school", json={"sending_window": None}, headers=headers)
    assert response.status_code == 200
    assert response.json()["sending_window"] is None
    assert (await client.get("/v1/school", headers=headers)).json()["sending_window"] is None
    window = (
        await session.execute(
            select(School.sending_window_start, School.sending_window_end).where(
                School.id == uuid.UUID(body["id"])
            )
        )
    ).one()
    await session.commit()
    assert tuple(window) == (None, None)
    # A window can be set again afterwards; other settings were untouched.
    again = await client.patch(
        "/v1/school", json={"sending_window": {"start": "08:00", "end": "21:00"}}, headers=headers
    )
    assert again.json() == {k: v for k, v in body.items() if k != "api_key"}


BAD_PATCHES: dict[str, Json] = {
    **BAD_SCHOOLS,
    **{case: {"name": name} for case, name in BAD_NAMES.items()},
    "valid and invalid together": {"name": "Renamed", "timezone": "Nowhere/Land"},
    "id is not a setting": {"id": str(uuid.uuid4())},
    "api key is not a setting": {"api_key": "cmp_x"},
}


@pytest.mark.parametrize("change", list(BAD_PATCHES.values()), ids=list(BAD_PATCHES))
async def test_invalid_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    school: tuple[Json, Headers],
    change: Json,
) -> None:
    body, headers = school
    before = (await client.get("/v1/school", headers=headers)).json()
    stored = await rows_as_text(session, "schools", body["id"])
    assert_problem(await client.patch("/v1/school", json=change, headers=headers), 422)
    assert (await client.get("/v1/school", headers=headers)).json() == before
    assert await rows_as_text(session, "schools", body["id"]) == stored


# --- provider account -----------------------------------------------------------------------


async def test_no_provider_account_is_404_until_one_is_set(
    client: httpx.AsyncClient, auth: Headers
) -> None:
    assert_problem(await client.get("/v1/school/provider", headers=auth), 404)


def assert_no_secrets(response: httpx.Response) -> None:
    for secret in SECRETS:
        assert secret not in response.text
    assert "auth_token" not in response.json()
    assert "api_key" not in response.json()
    assert "credentials" not in response.json()


async def assert_sealed(
    session: AsyncSession, settings: Settings, school_id: str, expected: Json
) -> None:
    """The secret is in the row only as ciphertext that SECRET_KEY opens back to it."""
    account = await stored_account(session, school_id)
    assert account is not None and account.credentials is not None
    assert settings.secret_key is not None
    assert SecretBox(settings.secret_key).open(account.credentials) == expected
    for row in await rows_as_text(session, "provider_accounts", school_id):
        for secret in expected.values():
            assert secret not in row


@pytest.mark.parametrize(
    "sender",
    [
        pytest.param({"from_number": "+12015550100"}, id="from_number"),
        pytest.param({"from_number": None, "messaging_service_sid": SERVICE_SID}, id="service"),
    ],
)
async def test_twilio_account_is_sealed_and_never_answered(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    school: tuple[Json, Headers],
    sender: Json,
) -> None:
    body, headers = school
    account = twilio(api_base="http://127.0.0.1:9999", max_messages_per_second=5, **sender)
    response = await client.put("/v1/school/provider", json=account, headers=headers)
    assert response.status_code == 200, response.text
    assert_no_secrets(response)
    shown = response.json()
    assert shown["provider"] == "twilio"
    assert shown["account_sid"] == TWILIO_SID
    assert shown["from_number"] == account.get("from_number")
    assert shown["messaging_service_sid"] == account.get("messaging_service_sid")
    assert shown["api_base"] == "http://127.0.0.1:9999"
    assert shown["max_messages_per_second"] == 5
    assert shown["updated_at"]

    again = await client.get("/v1/school/provider", headers=headers)
    assert again.status_code == 200
    assert_no_secrets(again)
    assert again.json() == shown
    await assert_sealed(session, settings, body["id"], {"auth_token": TWILIO_TOKEN})


async def test_telnyx_account_is_sealed_and_never_answered(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    school: tuple[Json, Headers],
) -> None:
    body, headers = school
    account = telnyx()
    response = await client.put("/v1/school/provider", json=account, headers=headers)
    assert response.status_code == 200, response.text
    assert_no_secrets(response)
    shown = response.json()
    assert shown["provider"] == "telnyx"
    assert shown["public_key"] == account["public_key"]  # not a secret: it checks webhooks
    assert shown["messaging_profile_id"] == "40017d2e-profile"
    assert shown["account_sid"] is None
    again = await client.get("/v1/school/provider", headers=headers)
    assert_no_secrets(again)
    assert again.json() == shown
    await assert_sealed(session, settings, body["id"], {"api_key": TELNYX_KEY})


async def test_simulator_account_replaces_a_real_one_and_drops_its_secret(
    client: httpx.AsyncClient,
    session: AsyncSession,
    school: tuple[Json, Headers],
) -> None:
    body, headers = school
    assert (await client.put("/v1/school/provider", json=twilio(), headers=headers)).is_success
    response = await client.put(
        "/v1/school/provider", json={"provider": "simulator"}, headers=headers
    )
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["provider"] == "simulator"
    assert shown["account_sid"] is None and shown["from_number"] is None
    assert (await client.get("/v1/school/provider", headers=headers)).json() == shown
    account = await stored_account(session, body["id"])
    assert account is not None
    assert account.credentials is None and account.account_sid is None


BAD_ACCOUNTS: dict[str, Json] = {
    "both senders": twilio(messaging_service_sid=SERVICE_SID),
    "no sender": twilio(from_number=None),
    "short sid": twilio(account_sid="AC123"),
    "sid not hex": twilio(account_sid="AC" + "z" * 32),
    "sid of another kind": twilio(account_sid="MG" + "0" * 32),
    "bad messaging service sid": twilio(from_number=None, messaging_service_sid="MG1"),
    "no auth token": {k: v for k, v in twilio().items() if k != "auth_token"},
    "short auth token": twilio(auth_token="abc"),
    "api_base not http": twilio(api_base="ftp://example.com"),
    "rate zero": twilio(max_messages_per_second=0),
    "rate under one every 100 s": twilio(max_messages_per_second=0.001),
    "rate as boolean": twilio(max_messages_per_second=True),
    "NUL in sender": twilio(from_number="+1201\x005550100"),
    "unknown field": twilio(region="us1"),
    "unknown provider": {**twilio(), "provider": "nexmo"},
    "no provider": {k: v for k, v in twilio().items() if k != "provider"},
    "telnyx both senders": telnyx(from_number="+12015550100"),
    "telnyx no sender": telnyx(messaging_profile_id=None),
    "telnyx key not base64": telnyx(public_key="not base64 at all, not at all, no no no!!"),
    "telnyx key wrong size": telnyx(public_key=base64.b64encode(b"k" * 40).decode()),
    "telnyx NUL in profile": telnyx(messaging_profile_id="profile\x00"),
    "telnyx given a twilio token": telnyx(auth_token=TWILIO_TOKEN),
    "simulator with credentials": {"provider": "simulator", "auth_token": TWILIO_TOKEN},
}


@pytest.mark.parametrize("account", list(BAD_ACCOUNTS.values()), ids=list(BAD_ACCOUNTS))
async def test_invalid_provider_account_is_422_and_the_stored_one_is_kept(
    client: httpx.AsyncClient,
    session: AsyncSession,
    school: tuple[Json, Headers],
    account: Json,
) -> None:
    body, headers = school
    good = await client.put("/v1/school/provider", json=telnyx(), headers=headers)
    assert good.status_code == 200
    stored = await rows_as_text(session, "provider_accounts", body["id"])

    response = await client.put("/v1/school/provider", json=account, headers=headers)
    assert_problem(response, 422)
    for secret in SECRETS:
        assert secret not in response.text  # validation errors never echo a secret
    assert (await client.get("/v1/school/provider", headers=headers)).json() == good.json()
    assert await rows_as_text(session, "provider_accounts", body["id"]) == stored


async def test_invalid_first_provider_account_creates_none(
    client: httpx.AsyncClient, session: AsyncSession, school: tuple[Json, Headers]
) -> None:
    body, headers = school
    response = await client.put(
        "/v1/school/provider", json=BAD_ACCOUNTS["both senders"], headers=headers
    )
    assert_problem(response, 422)
    assert_problem(await client.get("/v1/school/provider", headers=headers), 404)
    assert await stored_account(session, body["id"]) is None


# --- tenancy --------------------------------------------------------------------------------


async def test_one_schools_key_never_sees_or_changes_another_school(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    school_a, key_a = await make_school(client, name="School A")
    school_b, key_b = await make_school(client, name="School B")
    assert (await client.put("/v1/school/provider", json=twilio(), headers=key_a)).is_success
    patched = await client.patch(
        "/v1/school",
        json={"timezone": "Europe/Paris", "allowed_country_codes": [33]},
        headers=key_a,
    )
    assert patched.status_code == 200
    a_before = patched.json()
    a_rows = await rows_as_text(session, "provider_accounts", school_a["id"])

    seen = (await client.get("/v1/school", headers=key_b)).json()
    assert seen["id"] == school_b["id"] and seen["name"] == "School B"
    assert seen["timezone"] == "America/New_York"
    assert_problem(await client.get("/v1/school/provider", headers=key_b), 404)

    # B's changes land on B only.
    await client.patch("/v1/school", json={"name": "B renamed"}, headers=key_b)
    await client.put("/v1/school/provider", json={"provider": "simulator"}, headers=key_b)
    assert (await client.get("/v1/school", headers=key_a)).json() == a_before
    provider_a = (await client.get("/v1/school/provider", headers=key_a)).json()
    assert provider_a["provider"] == "twilio"
    assert await rows_as_text(session, "provider_accounts", school_a["id"]) == a_rows

    # A key issued for A later still authenticates as A, never as B.
    issued = await client.post(
        f"/v1/admin/schools/{school_a['id']}/api-keys", headers=ADMIN, json={"name": "A2"}
    )
    me = await client.get("/v1/school", headers=bearer(issued.json()["api_key"]))
    assert me.json()["id"] == school_a["id"]


@pytest.mark.parametrize(
    ("path", "method", "sent", "fields"),
    [
        pytest.param("/v1/school", "PATCH", {"timezone": "Foo/Bar"}, [["timezone"]], id="tz"),
        pytest.param(
            "/v1/school",
            "PATCH",
            {"allowed_country_codes": [999]},
            [["allowed_country_codes"]],
            id="codes",
        ),
        pytest.param(
            "/v1/school/provider",
            "PUT",
            {"provider": "twilio", "account_sid": "nope", "from_number": "+12015550100"},
            [["account_sid"], ["auth_token"]],
            id="provider",
        ),
    ],
)
async def test_a_422_names_each_invalid_field_once_at_its_place_in_the_body(
    client: httpx.AsyncClient, path: str, method: str, sent: Json, fields: list[list[str]]
) -> None:
    """A field that may be null, or one of several shapes, is still one entry, its `loc`
    the field's path in the body (not pydantic's labels of the shapes it tried)."""
    _, headers = await make_school(client)
    response = await client.request(method, path, json=sent, headers=headers)
    problem = assert_problem(response, 422)
    assert [e["loc"] for e in problem["errors"]] == [["body", *f] for f in fields]
