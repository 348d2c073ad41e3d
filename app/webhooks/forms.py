"""What a provider's form must hold for the webhook to read it, said in its OpenAPI entry:
the fields required, and how long a field may be. A field is read stripped, and an empty one
is taken as absent (`app.providers.twilio.events.form_value`), so a required field is one
that is not blank, and a length is counted without the spaces around (the patterns below
say both, with no NUL character, as no webhook text may hold one)."""

from __future__ import annotations

import copy
from typing import Any

from app.kit.schemas import SPACE

_EDGE = f"[^{SPACE}\\x00]"  # a character `str.strip()` keeps

# The longest status callback fields the receipts inbox keeps (app/models/receipt.py;
# `app.providers.base.readable_receipt` refuses longer ones).
RECEIPT_FIELDS = {"MessageSid": 64, "MessageStatus": 32, "ErrorCode": 16}


def _stripped(at_most: int | None, given: bool) -> str:
    """A pattern: text whose stripped length is 1 (if `given`, else 0) to `at_most`."""
    inner = "[^\\x00]*" if at_most is None else f"[^\\x00]{{0,{at_most - 2}}}"
    text = f"{_EDGE}(?:{inner}{_EDGE})?"
    return f"^[{SPACE}]*{text if given else f'(?:{text})?'}[{SPACE}]*$"


def requiring(
    entry: dict[str, Any], *names: str, at_most: dict[str, int] | None = None
) -> dict[str, Any]:
    """A copy of an `openapi_extra` holding a form body (`requestBody`), whose schema
    requires `names` (not blank), and whose `at_most` fields are no longer than that."""
    entry = copy.deepcopy(entry)
    limits = at_most or {}
    for content in entry["requestBody"]["content"].values():
        schema = content["schema"]
        properties = schema.setdefault("properties", {})
        for name in {*names, *limits}:
            pattern = _stripped(limits.get(name), given=name in names)
            properties[name] = {**properties.get(name, {}), "type": "string", "pattern": pattern}
        schema["required"] = [*schema.get("required", []), *names]
    return entry
