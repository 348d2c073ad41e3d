"""Merge fields, encoding and segments of a campaign message (docs/providers.md §3.1)."""

from __future__ import annotations

from typing import Any

import pytest

from app.campaigns.schemas import Preview
from app.sending.message import GSM7_BASIC, GSM7_EXTENSION, Measure, measure, render

ANN: dict[str, Any] = {
    "first_name": "Ann",
    "last_name": "Lee",
    "phone": "+15555550100",
    "fields": {"grade": "5", "Parent Name": "Jo", "room": 12, "late": True, "note": None},
}

CYRILLIC = "д"  # one UCS-2 code unit
EMOJI = "😀"  # outside the BMP: a surrogate pair, two code units


# -- render -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("Hi {first_name} {last_name}, reply to {phone}", "Hi Ann Lee, reply to +15555550100"),
        ("Grade {grade}, room {room}", "Grade 5, room 12"),
        ("{Parent Name} / { first_name }", "Jo / Ann"),
        ("Late: {late}", "Late: true"),
        ("no fields at all", "no fields at all"),
        ("", ""),
        ("{first_name}{first_name}", "AnnAnn"),
    ],
)
def test_merge_fields(body: str, expected: str) -> None:
    assert render(body, ANN) == expected


@pytest.mark.parametrize(
    "body", ["{nickname}", "{note}", "{}", "{0}", "{first_name.__class__}", "{fields}"]
)
def test_unknown_or_empty_fields_render_as_nothing(body: str) -> None:
    assert render(f"<{body}>", ANN) == "<>"


def test_missing_contact_attributes_render_as_nothing() -> None:
    assert render("Hi {first_name} {last_name}{phone}!", {}) == "Hi  !"
    assert render("{first_name}|{grade}", {"first_name": None, "fields": None}) == "|"


def test_contact_columns_win_over_fields_of_the_same_name() -> None:
    contact = {"first_name": "Ann", "fields": {"first_name": "Other", "phone": "x"}}
    assert render("{first_name} {phone}", contact) == "Ann "


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("{{first_name}}", "{first_name}"),
        ("{{{first_name}}}", "{Ann}"),
        ("a {{ b }} c", "a { b } c"),
        ("{{}}", "{}"),
        ("}} {{", "} {"),
        ("lone { brace", "lone { brace"),
        ("lone } brace", "lone } brace"),
        ("{ {first_name}", "{ Ann"),
        ("{first_name", "{first_name"),
    ],
)
def test_literal_braces(body: str, expected: str) -> None:
    assert render(body, ANN) == expected


def test_values_are_not_parsed_again() -> None:
    contact = {"first_name": "{last_name}", "last_name": "{{x}}", "fields": {"a": "{b}", "b": "no"}}
    assert render("{first_name} {last_name} {a}", contact) == "{last_name} {{x}} {b}"


def test_no_format_string_injection() -> None:
    body = "{first_name.__init__.__globals__} {0} {!r} {first_name!r} {first_name:>10}"
    assert render(body, ANN) == "    "


def test_non_string_values() -> None:
    contact = {"fields": {"n": 3, "x": 1.5, "no": False, "list": ["a", 1], "map": {"k": "é"}}}
    assert render("{n} {x} {no} {list} {map}", contact) == '3 1.5 false ["a", 1] {"k": "é"}'


# -- measure: alphabet --------------------------------------------------------------------


def test_alphabet_sizes() -> None:
    # 128 positions of the default alphabet less the escape; 10 extension characters.
    assert len(GSM7_BASIC) == 127
    assert frozenset("\f^{}\\[~]|€") == GSM7_EXTENSION
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert "\x1b" not in GSM7_BASIC


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world! 0123456789 @£$¥ èéùìò Ç Øø Åå Δ_ΦΓΛΩΠΨΣΘΞ Ææß É",
        "!\"#¤%&'()*+,-./:;<=>? ¡ ÄÖÑÜ§ ¿ äöñüà",
        "line\nfeed and\rreturn",
    ],
)
def test_basic_gsm_characters_count_one(text: str) -> None:
    assert measure(text) == Measure(text, "GSM-7", len(text), 1)


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_extension_characters_count_two(char: str) -> None:
    assert measure(f"a{char}b") == Measure(f"a{char}b", "GSM-7", 4, 1)


@pytest.mark.parametrize(
    "char",
    ["`", "\t", "ç", "á", "í", "ó", "ú", "\u2019", "\u201c", "\u2026", "\x1b", "д", "中", "\u00a0"],
)
def test_one_character_outside_gsm_makes_the_text_ucs2(char: str) -> None:
    text = f"Hello {char}"
    assert measure(text) == Measure(text, "UCS-2", 7, 1)


def test_empty_text_has_no_segment() -> None:
    assert measure("") == Measure("", "GSM-7", 0, 0)


# -- measure: GSM-7 boundaries ------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (159, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (1600, 11)],
)
def test_gsm_segments(length: int, segments: int) -> None:
    assert measure("a" * length) == Measure("a" * length, "GSM-7", length, segments)


@pytest.mark.parametrize(
    ("text", "characters", "segments"),
    [
        ("a" * 158 + "€", 160, 1),  # the escape sequence fits the single segment exactly
        ("a" * 159 + "€", 161, 2),  # one septet too many
        ("€" * 80, 160, 1),
        ("€" * 80 + "a", 161, 2),
        # 152 + [2] + 152 = 306 septets = 2 x 153, but the euro would straddle the
        # boundary: it moves whole to part two, which then overflows into a third.
        ("a" * 152 + "€" + "a" * 152, 306, 3),
        ("a" * 151 + "€" + "a" * 153, 306, 2),  # ends exactly at the boundary
        ("a" * 153 + "€" + "a" * 151, 306, 2),  # starts the second part
        ("€" * 153, 306, 3),  # a part holds 76 of them (152 septets): 76 + 76 + 1
    ],
)
def test_gsm_extension_characters_at_the_boundary(
    text: str, characters: int, segments: int
) -> None:
    assert measure(text) == Measure(text, "GSM-7", characters, segments)


# -- measure: UCS-2 boundaries ------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (69, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_segments(length: int, segments: int) -> None:
    text = CYRILLIC * length
    assert measure(text) == Measure(text, "UCS-2", length, segments)


@pytest.mark.parametrize(
    ("text", "characters", "segments"),
    [
        (EMOJI, 2, 1),
        (EMOJI * 35, 70, 1),
        (EMOJI * 35 + "a", 71, 2),
        ("a" * 68 + EMOJI, 70, 1),
        ("a" * 69 + EMOJI, 71, 2),
        # 66 + [2] + 66 = 134 units = 2 x 67, but the surrogate pair would straddle the
        # boundary: it moves whole to part two, which then overflows into a third.
        (CYRILLIC * 66 + EMOJI + CYRILLIC * 66, 134, 3),
        (CYRILLIC * 65 + EMOJI + CYRILLIC * 67, 134, 2),
        (EMOJI * 67, 134, 3),  # a part holds 33 pairs (66 units): 33 + 33 + 1
        ("👨‍👩‍👧", 8, 1),  # a family: three pairs and two joiners
        ("🇺🇸", 4, 1),  # a flag: two regional indicators
    ],
)
def test_ucs2_counts_utf16_code_units(text: str, characters: int, segments: int) -> None:
    assert measure(text) == Measure(text, "UCS-2", characters, segments)


def test_mixed_text_counts_every_character_in_ucs2() -> None:
    # In UCS-2 an extension character is one unit like any other: no escape.
    text = "Résumé {due} € 10 ~ ok 😀 ç"
    assert measure(text) == Measure(text, "UCS-2", len(text) + 1, 1)
    long = "Fee: 10€ [paid] " * 5 + "ç"  # 81 units
    assert measure(long) == Measure(long, "UCS-2", 81, 2)


def test_rendered_message_is_measured_after_merging() -> None:
    text = render("Hi {first_name}, {{bring}} 5€ {grade}", {"first_name": "Zoë", "fields": {}})
    assert text == "Hi Zoë, {bring} 5€ "
    assert measure(text) == Measure(text, "UCS-2", 19, 1)  # ë is not GSM-7
    text = render("Hi {first_name}, {{bring}} 5€", {"first_name": "Zoe"})
    assert measure(text) == Measure(text, "GSM-7", 21, 1)  # 15 + { } € at 2 septets each


def test_preview_schema_reads_a_measure() -> None:
    preview = Preview.model_validate(measure("a" * 161), from_attributes=True)
    assert preview.model_dump() == {
        "text": "a" * 161,
        "encoding": "GSM-7",
        "characters": 161,
        "segments": 2,
    }


def test_merge_field_names_match_ignoring_case() -> None:
    contact = {"first_name": "Ana", "fields": {"grade": "5", "Room": "12"}}
    assert render("{First_Name}: grade {Grade}, room {Room}/{room}", contact) == (
        "Ana: grade 5, room 12/12"
    )
