"""Contact lists: lists, imports (JSON and CSV) judged row by row, and what goes wrong."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings
from app.contact_lists import service
from app.kit.crypto import SecretBox
from app.kit.db import create_sessionmaker
from app.main import create_app
from app.models import Campaign, ContactList
from tests.support.api import ADMIN, make_school

CSV = {"Content-Type": "text/csv"}
School = tuple[dict[str, Any], dict[str, str]]


async def new_list(client: httpx.AsyncClient, auth: dict[str, str], name: str = "Grade 9") -> str:
    response = await client.post("/v1/contact-lists", json={"name": name}, headers=auth)
    assert response.status_code == 201, response.text
    list_id: str = response.json()["id"]
    return list_id


async def import_json(
    client: httpx.AsyncClient, auth: dict[str, str], list_id: str, contacts: list[Any]
) -> httpx.Response:
    return await client.post(
        f"/v1/contact-lists/{list_id}/contacts", json={"contacts": contacts}, headers=auth
    )


async def import_csv(
    client: httpx.AsyncClient, auth: dict[str, str], list_id: str, body: str | bytes
) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return await client.post(
        f"/v1/contact-lists/{list_id}/contacts", content=content, headers={**auth, **CSV}
    )


async def all_contacts(
    client: httpx.AsyncClient, auth: dict[str, str], list_id: str, limit: int = 500
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(
            f"/v1/contact-lists/{list_id}/contacts", params=params, headers=auth
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def contact_count(client: httpx.AsyncClient, auth: dict[str, str], list_id: str) -> int:
    response = await client.get(f"/v1/contact-lists/{list_id}", headers=auth)
    assert response.status_code == 200, response.text
    count: int = response.json()["contact_count"]
    return count


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


# Lists


async def test_create_and_get_list(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post("/v1/contact-lists", json={"name": "  Grade 9  "}, headers=auth)
    assert response.status_code == 201
    created = response.json()
    assert created["name"] == "Grade 9"
    assert created["contact_count"] == 0
    assert set(created) >= {"id", "name", "contact_count", "created_at"}
    assert datetime.fromisoformat(created["created_at"]).tzinfo is not None

    fetched = await client.get(f"/v1/contact-lists/{created['id']}", headers=auth)
    assert fetched.status_code == 200
    assert fetched.json() == created


@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "   "}, {"name": 5}, {"name": "x", "colour": "red"}]
)
async def test_create_list_rejects_bad_input(
    client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.post("/v1/contact-lists", json=body, headers=auth)
    assert assert_problem(response, 422)["errors"]


async def test_lists_need_an_api_key(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/contact-lists"), 401)
    assert_problem(await client.post("/v1/contact-lists", json={"name": "x"}), 401)


async def test_lists_page_newest_first_without_gaps(
    client: httpx.AsyncClient, auth: dict[str, str], school: School, session: AsyncSession
) -> None:
    school_id = uuid.UUID(school[0]["id"])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    # Distinct times, plus two lists sharing one, to exercise the id tie-breaker.
    times = [start + timedelta(minutes=i) for i in range(6)] + [start + timedelta(minutes=3)]
    lists = [
        ContactList(id=uuid.uuid4(), school_id=school_id, name=f"list {i}", created_at=at)
        for i, at in enumerate(times)
    ]
    session.add_all(lists)
    await session.commit()
    expected = [
        str(item.id) for item in sorted(lists, key=lambda x: (x.created_at, x.id), reverse=True)
    ]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/v1/contact-lists", params=params, headers=auth)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 3
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3


async def test_list_paging_parameters_are_checked(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for limit in (0, 501, "x"):
        response = await client.get("/v1/contact-lists", params={"limit": limit}, headers=auth)
        assert_problem(response, 422)
    for cursor in ("garbage!", "WyJ4IiwieSJd", "WzFd"):  # junk, ["x","y"], [1]
        response = await client.get("/v1/contact-lists", params={"cursor": cursor}, headers=auth)
        assert_problem(response, 400)


async def test_delete_list_removes_it_and_its_contacts(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    assert (await import_csv(client, auth, list_id, "phone\n2015550123\n")).json()["imported"] == 1
    response = await client.delete(f"/v1/contact-lists/{list_id}", headers=auth)
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await client.get(f"/v1/contact-lists/{list_id}", headers=auth), 404)
    assert_problem(await client.get(f"/v1/contact-lists/{list_id}/contacts", headers=auth), 404)
    assert_problem(await client.delete(f"/v1/contact-lists/{list_id}", headers=auth), 404)


async def test_delete_list_used_by_a_campaign_is_409_naming_it(
    client: httpx.AsyncClient, auth: dict[str, str], school: School, session: AsyncSession
) -> None:
    list_id = await new_list(client, auth)
    await import_csv(client, auth, list_id, "phone\n2015550123\n")
    for name in ("Snow day", "Field trip"):
        session.add(
            Campaign(
                school_id=uuid.UUID(school[0]["id"]),
                name=name,
                body="Hi {first_name}",
                contact_list_id=uuid.UUID(list_id),
            )
        )
    await session.commit()

    response = await client.delete(f"/v1/contact-lists/{list_id}", headers=auth)
    problem = assert_problem(response, 409)
    assert "2 campaigns use this list" in problem["detail"]
    assert "Snow day" in problem["detail"] and "Field trip" in problem["detail"]
    assert problem["campaign_count"] == 2
    assert {(c["name"], c["status"]) for c in problem["campaigns"]} == {
        ("Snow day", "draft"),
        ("Field trip", "draft"),
    }
    assert await contact_count(client, auth, list_id) == 1


async def test_another_schools_list_is_not_found(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    await import_csv(client, auth, list_id, "phone\n2015550123\n")
    _, other = await make_school(client, name="Roosevelt Middle")

    base = f"/v1/contact-lists/{list_id}"
    assert_problem(await client.get(base, headers=other), 404)
    assert_problem(await client.get(f"{base}/contacts", headers=other), 404)
    assert_problem(await client.delete(base, headers=other), 404)
    response = await import_csv(client, other, list_id, "phone\n2015550124\n")
    assert_problem(response, 404)
    listed = await client.get("/v1/contact-lists", headers=other)
    assert listed.json() == {"items": [], "next_cursor": None}

    assert await contact_count(client, auth, list_id) == 1  # untouched


@pytest.mark.parametrize("bad_id", ["nope", "123", str(uuid.uuid4())])
async def test_malformed_or_unknown_ids_are_404(
    client: httpx.AsyncClient, auth: dict[str, str], bad_id: str
) -> None:
    base = f"/v1/contact-lists/{bad_id}"
    assert_problem(await client.get(base, headers=auth), 404)
    assert_problem(await client.delete(base, headers=auth), 404)
    assert_problem(await client.get(f"{base}/contacts", headers=auth), 404)
    assert_problem(await import_csv(client, auth, bad_id, "phone\n2015550123\n"), 404)


# Imports


async def test_json_import_judges_each_row(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    list_id = await new_list(client, auth)
    response = await import_json(
        client,
        auth,
        list_id,
        [
            {"phone": "(201) 555-0123", "first_name": " Ada ", "last_name": "Lovelace"},
            {"phone": ""},
            {"phone": "call me maybe"},
            {"phone": "+1 555 201 3344"},  # no such area code
            {"phone": "+1 201-555-0123"},  # row 1 again, written differently
            {"phone": "+44 20 7946 0958", "fields": {"grade": "10", "homeroom": "B12"}},
            {"phone": "201.555.0124", "first_name": "", "fields": {}},
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "imported": 3,
        "rejected": [
            {"row": 2, "phone": "", "reason": "missing phone number"},
            {"row": 3, "phone": "call me maybe", "reason": "not a phone number"},
            {"row": 4, "phone": "+1 555 201 3344", "reason": "not a valid phone number"},
            {
                "row": 5,
                "phone": "+1 201-555-0123",
                "reason": "same number as row 1 of this upload",
            },
        ],
    }

    contacts = await all_contacts(client, auth, list_id)
    assert [c["phone"] for c in contacts] == ["+12015550123", "+442079460958", "+12015550124"]
    first, british, last = contacts
    assert (first["first_name"], first["last_name"], first["fields"]) == ("Ada", "Lovelace", {})
    # Outside the school's allowed_country_codes ([1]): imported, it fails at launch.
    assert british["fields"] == {"grade": "10", "homeroom": "B12"}
    assert last["first_name"] is None
    assert set(first) >= {"id", "phone", "first_name", "last_name", "fields", "created_at"}
    assert await contact_count(client, auth, list_id) == 3


async def test_csv_import_maps_columns_and_fields(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    body = (
        "\ufeff Phone ,FIRST_NAME,Last_Name, Grade ,Homeroom,\r\n"
        "(201) 555-0123,Ada,Lovelace,9,B12,\r\n"
        '"+1 201 555 0124","Alan, Jr.","Turing\nthe Second",10\r\n'  # short row: blanks
        "not-a-number,Grace,Hopper,11,C3,\r\n"
    )
    response = await import_csv(client, auth, list_id, body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "imported": 2,
        "rejected": [{"row": 3, "phone": "not-a-number", "reason": "not a phone number"}],
    }
    ada, alan = await all_contacts(client, auth, list_id)
    assert ada["phone"] == "+12015550123"
    assert (ada["first_name"], ada["last_name"]) == ("Ada", "Lovelace")
    assert ada["fields"] == {"grade": "9", "homeroom": "B12"}
    assert (alan["first_name"], alan["last_name"]) == ("Alan, Jr.", "Turing\nthe Second")
    assert alan["fields"] == {"grade": "10", "homeroom": ""}


async def test_csv_with_only_a_phone_column_and_blank_lines(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    body = "phone\n2015550123\n\n   \n2015550124\n,\n\n"
    response = await import_csv(client, auth, list_id, body)
    # Blank lines are skipped but keep their numbers, so row numbers match the file.
    assert response.json() == {"imported": 2, "rejected": []}
    response = await import_csv(client, auth, list_id, "phone\n\n\nnope\n")
    assert response.json()["rejected"] == [
        {"row": 3, "phone": "nope", "reason": "not a phone number"}
    ]


async def test_csv_header_only_imports_nothing(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    response = await import_csv(client, auth, list_id, "phone,first_name\n")
    assert response.json() == {"imported": 0, "rejected": []}


async def test_numbers_already_in_the_list_are_rejected(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    first = await import_csv(client, auth, list_id, "phone,first_name\n2015550123,Ada\n")
    assert first.json()["imported"] == 1
    again = await import_csv(
        client,
        auth,
        list_id,
        "phone,first_name\n2015550124,Alan\n+1 (201) 555-0123,Other Ada\n(201) 555-0124,Al\n",
    )
    assert again.json() == {
        "imported": 1,
        "rejected": [
            {"row": 2, "phone": "+1 (201) 555-0123", "reason": "already in this list"},
            {"row": 3, "phone": "(201) 555-0124", "reason": "same number as row 1 of this upload"},
        ],
    }
    contacts = await all_contacts(client, auth, list_id)
    assert [(c["phone"], c["first_name"]) for c in contacts] == [
        ("+12015550123", "Ada"),
        ("+12015550124", "Alan"),
    ]


async def test_import_written_in_batches_judges_across_them(
    client: httpx.AsyncClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "IMPORT_BATCH", 2)
    list_id = await new_list(client, auth)
    await import_csv(client, auth, list_id, "phone\n2015550105\n")
    body = "phone\n" + "\n".join(
        ["2015550101", "2015550102", "bad", "2015550105", "2015550101", "2015550103", ""]
    )
    response = await import_csv(client, auth, list_id, body + "\n2015550104\n")
    assert response.json() == {
        "imported": 4,
        "rejected": [
            {"row": 3, "phone": "bad", "reason": "not a phone number"},
            {"row": 4, "phone": "2015550105", "reason": "already in this list"},
            {"row": 5, "phone": "2015550101", "reason": "same number as row 1 of this upload"},
        ],
    }
    phones = [c["phone"][-3:] for c in await all_contacts(client, auth, list_id)]
    assert phones == ["105", "101", "102", "103", "104"]


async def test_same_number_may_be_in_two_lists(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for name in ("A", "B"):
        list_id = await new_list(client, auth, name)
        assert (await import_csv(client, auth, list_id, "phone\n2015550123\n")).json() == {
            "imported": 1,
            "rejected": [],
        }


async def test_national_numbers_read_in_the_schools_region(client: httpx.AsyncClient) -> None:
    _, auth = await make_school(client, default_region="GB")
    list_id = await new_list(client, auth)
    response = await import_csv(client, auth, list_id, "phone\n020 7946 0958\n+1 201 555 0123\n")
    assert response.json() == {"imported": 2, "rejected": []}
    phones = [c["phone"] for c in await all_contacts(client, auth, list_id)]
    assert phones == ["+442079460958", "+12015550123"]


async def test_csv_row_with_overlong_name_is_rejected(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    body = f"phone,first_name\n2015550123,{'A' * 201}\n2015550124,{'B' * 200}\n"
    response = await import_csv(client, auth, list_id, body)
    assert response.json() == {
        "imported": 1,
        "rejected": [
            {"row": 1, "phone": "2015550123", "reason": "first name is longer than 200 characters"}
        ],
    }


async def test_content_type_parameters_are_accepted(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    url = f"/v1/contact-lists/{list_id}/contacts"
    response = await client.post(
        url,
        content=b'{"contacts": [{"phone": "2015550123"}]}',
        headers={**auth, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.json() == {"imported": 1, "rejected": []}
    response = await client.post(
        url,
        content=b"phone\n2015550124\n",
        headers={**auth, "Content-Type": "Text/CSV; charset=UTF-8"},
    )
    assert response.json() == {"imported": 1, "rejected": []}


async def test_contacts_page_in_import_order_without_gaps(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    phones = [f"+1201555{n:04d}" for n in range(100, 107)]
    await import_csv(client, auth, list_id, "phone\n" + "\n".join(phones) + "\n")
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await client.get(
            f"/v1/contact-lists/{list_id}/contacts", params=params, headers=auth
        )
        page = response.json()
        pages.append([item["phone"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [phones[0:3], phones[3:6], phones[6:7]]
    response = await client.get(
        f"/v1/contact-lists/{list_id}/contacts", params={"cursor": "WyJ4Il0"}, headers=auth
    )
    assert_problem(response, 400)


# Bad input: a clear 4xx problem, and the list exactly as it was.

BAD_INPUTS: list[tuple[str, str | None, bytes, int, str]] = [
    ("malformed json", "application/json", b'{"contacts": [', 400, "not valid JSON"),
    ("lone surrogate", "application/json", b'{"contacts": [{"phone": "\\ud800"}]}', 400, "JSON"),
    ("not an object", "application/json", b'["2015550123"]', 422, ""),
    ("phone a number", "application/json", b'{"contacts": [{"phone": 2015550124}]}', 422, ""),
    ("phone null", "application/json", b'{"contacts": [{"phone": null}]}', 422, ""),
    ("no phone", "application/json", b'{"contacts": [{"first_name": "A"}]}', 422, ""),
    (
        "unknown field",
        "application/json",
        b'{"contacts": [{"phone": "2015550124", "email": "a@b.c"}]}',
        422,
        "",
    ),
    ("unknown top field", "application/json", b'{"contacts": [], "list": "x"}', 422, ""),
    (
        "field not text",
        "application/json",
        b'{"contacts": [{"phone": "1", "fields": {"a": 1}}]}',
        422,
        "",
    ),
    (
        "nul in name",
        "application/json",
        b'{"contacts": [{"phone": "1", "first_name": "a\\u0000"}]}',
        422,
        "",
    ),
    ("empty json", "application/json", b"", 400, "empty"),
    ("empty csv", "text/csv", b"", 400, "empty"),
    ("bom only csv", "text/csv", b"\xef\xbb\xbf\r\n", 400, "empty"),
    (
        "latin-1 csv",
        "text/csv",
        "phone,first_name\n2015550124,José\n".encode("latin-1"),
        400,
        "not UTF-8",
    ),
    ("utf-16 csv", "text/csv", "phone\n2015550124\n".encode("utf-16"), 400, "not UTF-8"),
    ("utf-16 no bom", "text/csv", "phone\n2015550124\n".encode("utf-16-le"), 400, "not UTF-8"),
    ("no phone column", "text/csv", b"mobile,name\n2015550124,Ada\n", 422, "phone"),
    ("semicolons", "text/csv", b"phone;name\n2015550124;Ada\n", 422, "phone"),
    ("blank header", "text/csv", b"\nphone\n2015550124\n", 422, "header"),
    ("repeated column", "text/csv", b"phone,Grade,grade\n2015550124,1,2\n", 422, "twice"),
    ("huge cell", "text/csv", b"phone\n" + b"1" * 200_000 + b"\n", 400, "cannot be read"),
    ("plain text", "text/plain", b"phone\n2015550124\n", 415, "text/csv"),
    ("form", "application/x-www-form-urlencoded", b"phone=2015550124", 415, "text/csv"),
    ("multipart", "multipart/form-data; boundary=x", b"--x--", 415, "multipart"),
    ("no content type", None, b"phone\n2015550124\n", 415, "Content-Type"),
]


@pytest.mark.parametrize(
    ("content_type", "body", "status", "says"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
async def test_bad_import_is_a_problem_and_changes_nothing(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    content_type: str | None,
    body: bytes,
    status: int,
    says: str,
) -> None:
    list_id = await new_list(client, auth)
    await import_csv(client, auth, list_id, "phone,first_name\n2015550123,Ada\n")
    before = await all_contacts(client, auth, list_id)

    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    response = await client.post(
        f"/v1/contact-lists/{list_id}/contacts", content=body, headers=headers
    )
    problem = assert_problem(response, status)
    assert says in problem["detail"]
    if status == 422:
        assert problem["errors"]
    assert await all_contacts(client, auth, list_id) == before


async def test_too_many_rows_is_413_and_imports_nothing(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    list_id = await new_list(client, auth)
    rows = [f"+1201{200 + n // 10_000:03d}{n % 10_000:04d}" for n in range(100_001)]
    response = await import_csv(client, auth, list_id, "phone\n" + "\n".join(rows) + "\n")
    problem = assert_problem(response, 413)
    assert "100,000" in problem["detail"]
    assert problem["max_rows"] == 100_000

    response = await import_json(client, auth, list_id, [{"phone": p} for p in rows])
    assert "100,000" in assert_problem(response, 413)["detail"]
    assert await contact_count(client, auth, list_id) == 0


async def test_row_limit_boundary(
    app: FastAPI, client: httpx.AsyncClient, auth: dict[str, str], settings: Settings
) -> None:
    app.state.settings = settings.model_copy(update={"max_import_rows": 3})
    list_id = await new_list(client, auth)
    four = "phone\n2015550120\n2015550121\n\n2015550122\n2015550123\n"
    assert "3 rows" in assert_problem(await import_csv(client, auth, list_id, four), 413)["detail"]
    three = "phone\n2015550120\n\n2015550121\n2015550122\n\n"  # blank lines do not count
    assert (await import_csv(client, auth, list_id, three)).json()["imported"] == 3


async def test_openapi_documents_both_import_body_types(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/contact-lists/{list_id}/contacts"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "text/csv"}
    contact = content["application/json"]["schema"]["properties"]["contacts"]["items"]
    assert contact["required"] == ["phone"]
    assert content["text/csv"]["schema"]["type"] == "string"
    assert "$ref" not in str(content)


# Concurrency, with real commits (outside the per-test rolled-back transaction).


async def test_concurrent_imports_judge_duplicates_consistently(
    engine: AsyncEngine, settings: Settings
) -> None:
    assert settings.secret_key
    app = create_app(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.secret_box = SecretBox(settings.secret_key)
    transport = httpx.ASGITransport(app=app)
    school_id: str | None = None
    try:
        async with (
            httpx.AsyncClient() as http,
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            app.state.http = http
            response = await client.post(
                "/v1/admin/schools", json={"name": "Concurrent High"}, headers=ADMIN
            )
            school_id = response.json()["id"]
            auth = {"Authorization": f"Bearer {response.json()['api_key']}"}
            list_id = await new_list(client, auth)
            a = [f"+1201555{n:04d}" for n in range(0, 300)]
            b = [f"+1201555{n:04d}" for n in range(200, 500)]
            results = await asyncio.gather(
                import_csv(client, auth, list_id, "phone\n" + "\n".join(a)),
                import_csv(client, auth, list_id, "phone\n" + "\n".join(b)),
            )
            answers = [r.json() for r in results]
            assert sum(answer["imported"] for answer in answers) == 500
            duplicates = [
                rejected["phone"] for answer in answers for rejected in answer["rejected"]
            ]
            assert sorted(duplicates) == [f"+1201555{n:04d}" for n in range(200, 300)]
            assert all(
                rejected["reason"] == "already in this list"
                for answer in answers
                for rejected in answer["rejected"]
            )
            assert await contact_count(client, auth, list_id) == 500
    finally:
        if school_id is not None:
            async with engine.begin() as connection:
                await connection.execute(
                    text("DELETE FROM schools WHERE id = :id"), {"id": uuid.UUID(school_id)}
                )
