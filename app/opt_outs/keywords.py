"""Opt-out and opt-in keywords in an inbound SMS (README, Webhooks): pure, no I/O.

The whole message must be the keyword: case does not matter, spaces and punctuation around
it are ignored and the spaces inside a phrase may be any run of whitespace, so "Stop.",
"  STOP!! " and "do  NOT text" match, while "STOP this bill" (a parent talking about
something else) matches nothing. Text is NFKC-normalised first, so full-width letters and
non-breaking spaces read as their plain forms.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass


class Action(enum.StrEnum):
    opt_out = "opt_out"
    opt_in = "opt_in"


@dataclass(frozen=True, slots=True)
class Keyword:
    action: Action
    # The keyword as the README spells it (Webhooks): what the opt-out record keeps.
    word: str


OPT_OUT_WORDS = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "do not message",
    "do not text",
    "take me off your list",
)
OPT_IN_WORDS = ("START", "UNSTOP", "YES")

KEYWORDS: dict[str, Keyword] = {
    **{word.casefold(): Keyword(Action.opt_out, word) for word in OPT_OUT_WORDS},
    **{word.casefold(): Keyword(Action.opt_in, word) for word in OPT_IN_WORDS},
}

# Unicode categories trimmed from both ends: punctuation (P*), symbols such as emoji (S*),
# separators (Z*) and control/format characters (Cc, Cf: newlines, zero-width spaces).
_TRIMMED = ("P", "S", "Z", "Cc", "Cf")


def _trimmed(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith(_TRIMMED)


def normalize(body: str) -> str:
    """The message as keywords are compared: casefolded, trimmed, inner whitespace as one
    space."""
    text = unicodedata.normalize("NFKC", body)
    start, end = 0, len(text)
    while start < end and _trimmed(text[start]):
        start += 1
    while end > start and _trimmed(text[end - 1]):
        end -= 1
    return " ".join(text[start:end].split()).casefold()


def match(body: str) -> Keyword | None:
    """The keyword the whole message is, or None (an ordinary reply)."""
    return KEYWORDS.get(normalize(body))
