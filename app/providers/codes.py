"""Provider error code → failed reason, soft or hard: the code tables and their loader.

The tables are data files shipped in the package (`twilio/codes.json`, `telnyx/codes.json`),
one row per code: `{"reason", "soft", "definition", "note"}`, where `definition` indexes the
reason's definitions in `app.sending.reasons`. An operator can replace or add rows with a
JSON file of the same shape (settings `twilio_code_table`, `telnyx_code_table`).

Every table is validated when it is loaded, so a typo in a reason or an index fails at
start-up, not when the first message fails. A code no table knows falls back to
`failed_to_create` at create time and to `unknown` in a receipt, both hard (README, Delivery).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from app.config import Settings, get_settings
from app.sending import reasons
from app.sending.outcomes import Classification, CodePhase

PROVIDERS: tuple[str, ...] = ("twilio", "telnyx")
# Whose table a provider name reads: the simulator speaks Twilio's codes.
TABLE_OF: dict[str, str] = {"twilio": "twilio", "telnyx": "telnyx", "simulator": "twilio"}

FALLBACK: dict[str, Classification] = {
    "create": Classification("failed_to_create", soft=False),
    "receipt": Classification("unknown", soft=False),
}

_ROW_KEYS = frozenset({"reason", "soft", "definition", "note"})


class CodeTableError(ValueError):
    """A code table (shipped or operator override) that does not validate."""


@dataclass(frozen=True, slots=True)
class CodeRow:
    code: str
    reason: str
    soft: bool
    definition: int = 0
    note: str = ""

    @property
    def classification(self) -> Classification:
        return Classification(self.reason, self.soft, self.definition)


@dataclass(frozen=True, slots=True)
class CodeTable:
    provider: str
    rows: Mapping[str, CodeRow]

    def classify(self, code: str | int | None, phase: CodePhase) -> Classification:
        """What `code` means; the phase's fallback when there is no code or no row."""
        row = self.rows.get(normalize(code)) if code is not None else None
        return row.classification if row is not None else FALLBACK[phase]


def normalize(code: str | int) -> str:
    return str(code).strip()


def _row(code: object, raw: object, source: str) -> CodeRow:
    where = f"{source}: code {code!r}"
    if not isinstance(code, str) or not code.strip() or code != code.strip():
        raise CodeTableError(f"{where}: a code is a non-empty string without spaces")
    if not isinstance(raw, dict):
        raise CodeTableError(f"{where}: a row is an object")
    unknown = set(raw) - _ROW_KEYS
    if unknown:
        raise CodeTableError(f"{where}: unknown keys {sorted(unknown)}")
    reason = raw.get("reason")
    if not isinstance(reason, str) or reason not in reasons.BY_CODE:
        raise CodeTableError(f"{where}: reason {reason!r} is not in the catalog {reasons.CODES}")
    if reasons.get(reason).resendable is None:
        raise CodeTableError(f"{where}: {reason!r} is not a final reason")
    soft = raw.get("soft")
    if not isinstance(soft, bool):
        raise CodeTableError(f"{where}: soft must be true or false")
    definition = raw.get("definition", 0)
    count = len(reasons.get(reason).definitions)
    if not isinstance(definition, int) or isinstance(definition, bool):
        raise CodeTableError(f"{where}: definition must be an integer index")
    if not 0 <= definition < count:
        raise CodeTableError(f"{where}: definition {definition} out of range for {reason!r}")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise CodeTableError(f"{where}: note must be a string")
    return CodeRow(code, reason, soft, definition, note)


def parse_rows(data: Any, source: str) -> dict[str, CodeRow]:
    """Validate a decoded table: `{code: row}`; raises CodeTableError naming the row."""
    if not isinstance(data, dict):
        raise CodeTableError(f"{source}: a code table is a JSON object of code → row")
    return {code: _row(code, raw, source) for code, raw in data.items()}


def _decode(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CodeTableError(f"{source}: not valid JSON: {exc}") from exc


def shipped_rows(provider: str) -> dict[str, CodeRow]:
    if provider not in PROVIDERS:
        raise ValueError(f"no code table for provider {provider!r}")
    source = resources.files("app.providers").joinpath(provider, "codes.json")
    return parse_rows(_decode(source.read_text("utf-8"), f"{provider}/codes.json"), provider)


def load_table(provider: str, override: Path | None = None) -> CodeTable:
    """The shipped table of `provider`, with the rows of `override` replacing or adding."""
    rows = shipped_rows(provider)
    if override is not None:
        try:
            text = override.read_text("utf-8")
        except OSError as exc:
            raise CodeTableError(f"{override}: cannot read the code table: {exc}") from exc
        rows.update(parse_rows(_decode(text, str(override)), str(override)))
    return CodeTable(provider, rows)


def load_tables(settings: Settings) -> dict[str, CodeTable]:
    return {
        "twilio": load_table("twilio", settings.twilio_code_table),
        "telnyx": load_table("telnyx", settings.telnyx_code_table),
    }


_tables: dict[str, CodeTable] | None = None


def configure(settings: Settings) -> None:
    """Load (and validate) the tables with this settings' overrides; call at start-up."""
    global _tables
    _tables = load_tables(settings)


def reset() -> None:
    """Forget loaded tables (tests); the next lookup loads them from `get_settings()`."""
    global _tables
    _tables = None


def table(provider: str) -> CodeTable:
    global _tables
    if _tables is None:
        _tables = load_tables(get_settings())
    try:
        return _tables[TABLE_OF[provider]]
    except KeyError:
        raise ValueError(f"no code table for provider {provider!r}") from None


def classify(provider: str, code: str | int | None, phase: CodePhase) -> Classification:
    """What a provider error code means to us (unknown: failed_to_create / unknown, hard)."""
    return table(provider).classify(code, phase)
