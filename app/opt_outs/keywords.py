"""Opt-out and opt-in keywords in an inbound SMS (README, Webhooks): pure, no I/O.

The whole message must be the keyword: case does not matter, spaces and punctuation around
it are ignored and the spaces inside a phrase may be any run of whitespace, so "Stop.",
"  STOP!! " and "do  NOT text" match, while "STOP this bill" (a parent talking about
something else) matches nothing. Text is NFKC-normalised first, so full-width letters and
non-breaking spaces read as their plain forms.

A provider may have classified the message already: Twilio's Advanced Opt-Out sends
`OptOutType` (STOP, START, HELP) on the inbound webhook when the message is one of the
keywords configured on the messaging service, in any language. That classification wins
whatever the words (`classify`): STOP opts out, START opts in, HELP changes nothing.
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
    "STOP ALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
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


# What a provider's own classification (Twilio `OptOutType`) asks of us; HELP: nothing.
PROVIDER_ACTIONS: dict[str, Action | None] = {
    "STOP": Action.opt_out,
    "START": Action.opt_in,
    "HELP": None,
}
# The opt-out record's keyword column holds at most this many characters.
WORD_LENGTH = 64


def classify(body: str, provider_type: str | None = None) -> Keyword | None:
    """What an inbound message asks for: the provider's classification when it gave one
    (`provider_type`, Twilio's OptOutType), else the keyword the whole message is.

    Under a provider's STOP or START the record keeps our keyword when the words are one of
    the same action, else the contact's words as normalised (a school's custom keyword,
    "ARRET"), or the type itself for an empty message. An unknown type is ignored.
    """
    kind = (provider_type or "").strip().upper()
    if kind not in PROVIDER_ACTIONS:
        return match(body)
    action = PROVIDER_ACTIONS[kind]
    if action is None:
        return None
    ours = match(body)
    if ours is not None and ours.action is action:
        return ours
    return Keyword(action, normalize(body)[:WORD_LENGTH] or kind)
