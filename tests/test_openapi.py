import re

import httpx

from app.errors import PROBLEM_JSON
from app.main import create_app
from app.openapi_export import COMMAND, OPENAPI_JSON, render


async def test_committed_openapi_is_what_the_app_serves() -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    committed = OPENAPI_JSON.read_text(encoding="utf-8") if OPENAPI_JSON.exists() else ""
    assert committed == render(response.json()), (
        f"{OPENAPI_JSON.relative_to(OPENAPI_JSON.parents[1])} is out of date: "
        f"regenerate it with `{COMMAND}` and commit it"
    )


def test_every_operation_is_named_tagged_summarised_and_declares_its_errors() -> None:
    """What generated clients and /docs rely on (README, "The OpenAPI document"); whether
    the statuses declared are all those answered is the fuzzer's part
    (tests/test_openapi_fuzz.py)."""
    document = create_app().openapi()
    tags = {tag["name"] for tag in document["tags"]}
    assert set(document["components"]["securitySchemes"]) == {"SchoolApiKey", "AdminToken"}
    seen: set[str] = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            operation_id = operation["operationId"]
            assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation_id), where
            assert operation_id not in seen, where
            seen.add(operation_id)
            assert len(operation["tags"]) == 1 and operation["tags"][0] in tags, where
            assert operation["summary"] and operation["description"], where
            if operation.get("security"):
                assert "401" in operation["responses"], where
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert answer["content"] == {
                        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }, f"{where} {status}"
