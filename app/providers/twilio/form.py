"""Twilio's form-encoded webhook parameters, in whichever shape the endpoint has them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class MultiDict(Protocol):
    """Starlette's FormData and its kin: every (name, value), repeated names included."""

    def multi_items(self) -> list[tuple[str, Any]]: ...


# A list of (name, value) pairs, a multi-dict, or a plain mapping of name → value(s).
Form = Iterable[tuple[str, str]] | MultiDict | Mapping[str, str | Sequence[str]]


def pairs(form: Form) -> list[tuple[str, str]]:
    """Every (name, value), repeated names included, in the order given."""
    multi_items = getattr(form, "multi_items", None)
    if callable(multi_items):
        return [(str(name), str(value)) for name, value in multi_items()]
    if isinstance(form, Mapping):
        result: list[tuple[str, str]] = []
        for name, value in form.items():
            values = [value] if isinstance(value, str) else list(value)
            result.extend((name, str(v)) for v in values)
        return result
    return [(name, value) for name, value in form]  # type: ignore[union-attr]
