"""Write the committed OpenAPI document, openapi/openapi.json: `python -m app.openapi_export`.

tests/test_openapi.py fails until the file equals what the app serves at /openapi.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OPENAPI_JSON = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
COMMAND = "python -m app.openapi_export"


def render(schema: dict[str, Any]) -> str:
    """The file's text: sorted keys, two-space indent, a trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    from app.main import create_app

    OPENAPI_JSON.parent.mkdir(exist_ok=True)
    OPENAPI_JSON.write_text(render(create_app().openapi()), encoding="utf-8")
    print(f"wrote {OPENAPI_JSON}")


if __name__ == "__main__":
    main()
