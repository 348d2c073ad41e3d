import re
from typing import Any

import httpx
import jsonschema_rs

from app.errors import PROBLEM_JSON
from app.kit import examples
from app.main import create_app
from app.openapi_export import COMMAND, OPENAPI_JSON, render
from app.recipients.service import EXPORT_COLUMNS


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


# What the README walk-through sends and gets: each must show an example in /docs.
WALK_THROUGH = (
    "SchoolCreate",
    "SchoolWithKey",
    "ContactListCreate",
    "ContactList",
    "ImportResult",
    "PreviewRequest",
    "Preview",
    "CampaignCreate",
    "Campaign",
    "Page_Recipient_",
    "RecipientDetail",
    "Page_OptOut_",
    "Problem",
)


def test_every_example_is_valid_and_the_walk_through_has_its_examples() -> None:
    """An example an integrator copies from /docs is one the service would send or take:
    each, whether on a schema, a property or an answer, is valid against its schema."""
    document = create_app().openapi()
    schemas = document["components"]["schemas"]
    assert [name for name in WALK_THROUGH if not schemas[name].get("examples")] == []

    def check(where: str, schema: dict[str, Any], example: Any) -> None:
        # The document's `#/components/...` references resolve against this root.
        root = {**schema, "components": document["components"]}
        errors = [error.message for error in jsonschema_rs.validator_for(root).iter_errors(example)]
        assert errors == [], f"{where}: {errors}"

    checked = 0
    for name, schema in schemas.items():
        for example in schema.get("examples", []):
            check(name, schema, example)
            # A response's schema allows more properties; an example shows only real ones.
            assert set(example) <= set(schema.get("properties", example)), name
            checked += 1
        for field, property_schema in schema.get("properties", {}).items():
            for example in property_schema.get("examples", []):
                check(f"{name}.{field}", property_schema, example)
                checked += 1
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                for media_type, content in answer.get("content", {}).items():
                    if "example" in content:
                        check(
                            f"{method} {path} {status} {media_type}",
                            content.get("schema", {}),
                            content["example"],
                        )
                        checked += 1
    assert checked > len(WALK_THROUGH)


def test_the_csv_example_has_the_exports_columns() -> None:
    header = examples.CONTACTS_CSV.splitlines()[0]
    assert header.split(",") == list(EXPORT_COLUMNS)
