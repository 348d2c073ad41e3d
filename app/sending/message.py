"""A campaign message: merge fields into the body, then measure it as the carrier will.

Pure functions, no I/O: the preview endpoints, the launch snapshot and the worker all
render and measure through here, so what staff preview is what recipients get.

Encoding and segments follow 3GPP TS 23.038 and docs/providers.md §3.1: a text made only of
GSM-7 characters goes as GSM-7 (an extension character costs two septets, the escape and
the character); any other character sends the whole text as UCS-2, counted in UTF-16 code
units (a character outside the BMP, such as most emoji, is a surrogate pair: two units).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

Encoding = Literal["GSM-7", "UCS-2"]

# 3GPP TS 23.038 §6.2.1, the default alphabet, in table order (0x00..0x7F) without the
# escape at 0x1B. 0x09 is the capital C-cedilla the standard shows (lower-case ç is not
# in the table: a text with it goes as UCS-2, which over- rather than under-counts).
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# §6.2.1.1, the extension table: each is sent as ESC + character, two septets.
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE: Final = 160  # septets in a message of one segment
GSM7_PER_SEGMENT: Final = 153  # septets per part of a concatenated message (6-octet UDH)
UCS2_SINGLE: Final = 70  # UTF-16 code units in a message of one segment
UCS2_PER_SEGMENT: Final = 67

# `{{` and `}}` are literal braces; `{name}` is a merge field (a name has no braces).
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_OWN_FIELDS: Final = ("first_name", "last_name", "phone")


@dataclass(frozen=True, slots=True)
class Measure:
    """A rendered text as the carrier sees it (the shape of `campaigns.schemas.Preview`)."""

    text: str
    encoding: Encoding
    characters: int  # GSM-7 septets, or UTF-16 code units for UCS-2
    segments: int


def render(body: str, contact: Mapping[str, Any]) -> str:
    """The body with the contact's merge fields filled in.

    `contact` has `first_name`, `last_name`, `phone` and `fields` (any of them may be
    missing or None). `{first_name}`, `{last_name}` and `{phone}` come from the contact
    itself, any other `{name}` from its `fields` (names match ignoring case); a field
    the contact does not have renders as nothing. Spaces inside the braces are ignored
    (`{ first_name }`).
    `{{` and `}}` are literal braces, and a lone brace is kept as is.
    Values are inserted once, never parsed again, so a value cannot inject a field.
    """
    return template(body)(contact)


def template(body: str) -> Callable[[Mapping[str, Any]], str]:
    """`render` with `body` parsed once: the delivery engine renders a campaign's body for
    each of hundreds of recipients a claim."""
    parts: list[str] = []  # the text between fields; a field's place is an empty part
    fields: list[tuple[int, str, str, bool]] = []  # (place, name, lower-cased, own field)
    end = 0
    for match in _TOKEN.finditer(body):
        parts.append(body[end : match.start()])
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        else:
            name = match.group(1).strip()
            fields.append((len(parts), name, name.lower(), name.lower() in _OWN_FIELDS))
            parts.append("")
        end = match.end()
    parts.append(body[end:])

    def fill(contact: Mapping[str, Any]) -> str:
        extra = contact.get("fields") or {}
        folded: dict[str, Any] | None = None
        filled = parts.copy()
        for place, name, lower, own in fields:
            if own:
                value = contact.get(lower)
            elif name in extra:
                value = extra[name]
            else:
                if folded is None:
                    # CSV headers are stored lower-cased, so `{Grade}` finds `grade`.
                    folded = {str(key).lower(): value for key, value in extra.items()}
                value = folded.get(lower)
            filled[place] = _text(value)
        return "".join(filled)

    return fill


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"  # as it was written in the JSON import
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def measure(text: str) -> Measure:
    """Encoding, length and segment count of `text` (docs/providers.md §3.1).

    One segment holds 160 septets (GSM-7) or 70 code units (UCS-2); longer texts are
    split into parts of 153 / 67. A character is never split across two parts: an
    escape sequence (GSM-7 extension character) or a surrogate pair (UCS-2) that would
    straddle a boundary moves whole to the next part, as handsets and providers do, so
    a long text can take one part more than ceil(n / 153) or ceil(n / 67).
    """
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        widths = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return _measured(text, "GSM-7", widths, GSM7_SINGLE, GSM7_PER_SEGMENT)
    widths = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return _measured(text, "UCS-2", widths, UCS2_SINGLE, UCS2_PER_SEGMENT)


def _measured(
    text: str, encoding: Encoding, widths: list[int], single: int, per_segment: int
) -> Measure:
    characters = sum(widths)
    return Measure(text, encoding, characters, _segments(widths, characters, single, per_segment))


def _segments(widths: list[int], characters: int, single: int, per_segment: int) -> int:
    if characters == 0:
        return 0
    if characters <= single:
        return 1
    segments, used = 1, 0
    for width in widths:
        if used + width > per_segment:
            segments, used = segments + 1, 0
        used += width
    return segments
