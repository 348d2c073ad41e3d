"""The code tables: shipped rows are valid, decided mappings hold, overrides and fallbacks work."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.providers import codes
from app.sending import reasons
from app.sending.outcomes import Classification


def raw_table(provider: str) -> dict[str, dict[str, Any]]:
    text = resources.files("app.providers").joinpath(provider, "codes.json").read_text("utf-8")
    data: dict[str, dict[str, Any]] = json.loads(text)
    return data


@pytest.mark.parametrize("provider", codes.PROVIDERS)
def test_every_row_names_a_final_reason_and_a_valid_definition(provider: str) -> None:
    table = raw_table(provider)
    assert table
    for code, row in table.items():
        assert code.isdigit(), code
        assert set(row) == {"reason", "soft", "definition", "note"}, code
        reason = reasons.get(row["reason"])
        assert reason.resendable is not None, code  # not "reattempting"
        assert 0 <= row["definition"] < len(reason.definitions), code
        assert isinstance(row["soft"], bool), code
        assert row["note"], code
        assert codes.classify(provider, code, "create") == Classification(
            row["reason"], row["soft"], row["definition"]
        )
        assert codes.classify(provider, code, "receipt") == codes.classify(provider, code, "create")


SPEC_DECISIONS: list[tuple[str, str, str, bool, int]] = [
    # product decisions (docs/providers.md §1.5)
    ("twilio", "30003", "unreachable_number", False, 0),
    ("twilio", "30006", "unreachable_number", False, 1),
    ("twilio", "21610", "opted_out", False, 0),
    # docs/providers.md §1.5 / §2.4 as the code tables settle them
    ("twilio", "21211", "invalid_number", False, 0),
    ("twilio", "21614", "invalid_number", False, 0),
    ("twilio", "30005", "invalid_number", False, 1),
    ("twilio", "30004", "blocked", False, 1),
    ("twilio", "30007", "blocked", False, 0),
    ("twilio", "21408", "international_number", False, 0),
    # docs/providers.md §1.5: the sender or its setup, not the contact (resendable once fixed)
    ("twilio", "21401", "sending_error", False, 0),
    ("twilio", "30018", "sending_error", False, 0),
    ("twilio", "21608", "sending_error", False, 0),
    ("twilio", "21659", "sending_error", False, 0),
    ("twilio", "21660", "sending_error", False, 0),
    ("twilio", "30042", "sending_error", False, 0),
    # docs/providers.md §1.5: no SMS route to that number (landline, unsupported carrier)
    ("twilio", "21612", "unreachable_number", False, 1),
    # docs/providers.md §1.5: Twilio's own failures, "try again"
    ("twilio", "30500", "sending_error", True, 0),
    ("twilio", "30021", "sending_error", True, 0),
    ("twilio", "63038", "sending_error", True, 0),
    ("twilio", "30019", "failed_to_create", False, 0),
    ("twilio", "21635", "unreachable_number", False, 1),
    ("twilio", "30008", "unknown", False, 0),
    ("twilio", "30009", "partial_failure", False, 0),
    ("twilio", "30002", "sending_error", False, 0),
    ("twilio", "21606", "sending_error", False, 0),
    ("twilio", "20003", "sending_error", False, 0),
    ("telnyx", "40001", "unreachable_number", False, 1),
    ("telnyx", "40002", "blocked", True, 0),
    ("telnyx", "40003", "blocked", False, 0),
    ("telnyx", "40300", "opted_out", False, 0),
    ("telnyx", "40309", "international_number", False, 0),
    ("telnyx", "40331", "international_number", False, 0),
    ("telnyx", "40310", "invalid_number", False, 0),
    ("telnyx", "40012", "invalid_number", False, 0),
    ("telnyx", "40004", "unknown", False, 0),
    ("telnyx", "40010", "sending_error", False, 0),
    ("telnyx", "40333", "sending_error", False, 0),
    ("telnyx", "10002", "invalid_number", False, 0),
    ("telnyx", "10016", "invalid_number", False, 0),
    ("telnyx", "10007", "sending_error", True, 0),
    ("telnyx", "10008", "sending_error", True, 0),
]


@pytest.mark.parametrize(("provider", "code", "reason", "soft", "definition"), SPEC_DECISIONS)
def test_decided_mappings(
    provider: str, code: str, reason: str, soft: bool, definition: int
) -> None:
    assert codes.classify(provider, code, "receipt") == Classification(reason, soft, definition)


@pytest.mark.parametrize(
    ("provider", "code"),
    [
        *[
            ("twilio", c)
            for c in (
                *("30001", "30017", "30022", "30023", "30036", "30410", "30450", "20429"),
                *("30500", "30021", "63038"),
            )
        ],
        ("twilio", "21611"),
        *[
            ("telnyx", c)
            for c in (
                *("40006", "40008", "40011", "40014", "40016", "40018", "40318", "40005"),
                *("10007", "10008"),
            )
        ],
    ],
)
def test_soft_codes(provider: str, code: str) -> None:
    classification = codes.classify(provider, code, "create")
    assert classification.soft
    assert classification.reason != "reattempting"  # the reason it fails with if retries end


@pytest.mark.parametrize("code", ["21401", "30018", "21612"])
def test_sender_and_route_codes_never_blame_the_number_format_or_country(code: str) -> None:
    """docs/providers.md §1.5: 21401, 30018 are the school's setup (resendable once fixed);
    21612 is a number Twilio cannot route SMS to (never resent): none is invalid or
    international."""
    classification = codes.classify("twilio", code, "create")
    assert classification.reason not in ("invalid_number", "international_number")
    assert reasons.get(classification.reason).resendable is (code != "21612")


def test_unknown_code_falls_back_by_phase() -> None:
    assert codes.classify("twilio", "99999", "create") == Classification("failed_to_create", False)
    assert codes.classify("twilio", "99999", "receipt") == Classification("unknown", False)
    assert codes.classify("telnyx", None, "create") == Classification("failed_to_create", False)
    assert codes.classify("telnyx", None, "receipt") == Classification("unknown", False)


def test_codes_may_be_ints_and_the_simulator_reads_twilio() -> None:
    assert codes.classify("twilio", 21211, "create").reason == "invalid_number"
    assert codes.classify("twilio", " 21211 ", "create").reason == "invalid_number"
    assert codes.classify("simulator", "30003", "receipt").reason == "unreachable_number"
    with pytest.raises(ValueError):
        codes.classify("vonage", "1", "create")


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_operator_override_replaces_and_adds_rows(tmp_path: Path) -> None:
    override = write(
        tmp_path / "twilio.json",
        {
            "30003": {"reason": "unknown", "soft": True, "note": "we retry unreachable"},
            "12345": {"reason": "blocked", "soft": False, "definition": 1},
        },
    )
    codes.configure(Settings(twilio_code_table=override, telnyx_code_table=None))
    assert codes.classify("twilio", "30003", "receipt") == Classification("unknown", True, 0)
    assert codes.classify("twilio", "12345", "create") == Classification("blocked", False, 1)
    # The other rows stay as shipped.
    assert codes.classify("twilio", "30006", "receipt").reason == "unreachable_number"
    assert codes.classify("telnyx", "40300", "create").reason == "opted_out"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"30003": {"reason": "unreachable", "soft": False}}, "not in the catalog"),
        ({"30003": {"reason": "reattempting", "soft": True}}, "not a final reason"),
        ({"30003": {"reason": "blocked", "soft": False, "definition": 2}}, "out of range"),
        ({"30003": {"reason": "blocked", "soft": False, "definiton": 1}}, "unknown keys"),
        ({"30003": {"reason": "blocked", "soft": "no"}}, "soft must be"),
        ({"30003": {"reason": "blocked"}}, "soft must be"),
        ({"30003": {"reason": "blocked", "soft": False, "definition": True}}, "integer"),
        ({" 30003": {"reason": "blocked", "soft": False}}, "without spaces"),
        ({"30003": ["blocked", False]}, "a row is an object"),
        (["30003"], "JSON object"),
    ],
)
def test_a_typo_in_an_override_fails_loudly(tmp_path: Path, content: object, message: str) -> None:
    override = write(tmp_path / "bad.json", content)
    with pytest.raises(codes.CodeTableError, match=message):
        codes.load_table("twilio", override)


def test_unreadable_override_fails_loudly(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(codes.CodeTableError, match="not valid JSON"):
        codes.load_table("telnyx", broken)
    with pytest.raises(codes.CodeTableError, match="cannot read"):
        codes.load_table("telnyx", tmp_path / "missing.json")
