import httpx

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
