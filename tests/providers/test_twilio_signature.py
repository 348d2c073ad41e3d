"""X-Twilio-Signature: the documented vector, and agreement with Twilio's own validator."""

from __future__ import annotations

import random
import string

import pytest
from starlette.datastructures import FormData, UploadFile
from twilio.request_validator import RequestValidator

from app.providers.base import InvalidSignature
from app.providers.twilio.signature import (
    compute_signature,
    url_variants,
    validate_signature,
    verify_signature,
)

EXAMPLE_URL = "https://example.com/myapp.php?foo=1&bar=2"
EXAMPLE_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]
EXAMPLE_TOKEN = "12345"
EXAMPLE_SIGNATURE = "L/OH5YylLD5NRKLltdqwSvS0BnU="


def test_worked_example_from_twilio_docs() -> None:
    assert compute_signature(EXAMPLE_URL, EXAMPLE_PARAMS, EXAMPLE_TOKEN) == EXAMPLE_SIGNATURE
    assert compute_signature(EXAMPLE_URL, dict(EXAMPLE_PARAMS), EXAMPLE_TOKEN) == (
        EXAMPLE_SIGNATURE
    )
    assert validate_signature(EXAMPLE_URL, EXAMPLE_PARAMS, EXAMPLE_SIGNATURE, EXAMPLE_TOKEN)
    # Order of the form does not matter: names are sorted.
    shuffled = list(reversed(EXAMPLE_PARAMS))
    assert validate_signature(EXAMPLE_URL, shuffled, EXAMPLE_SIGNATURE, EXAMPLE_TOKEN)
    verify_signature(EXAMPLE_URL, EXAMPLE_PARAMS, EXAMPLE_SIGNATURE, EXAMPLE_TOKEN)


@pytest.mark.parametrize(
    ("url", "params", "signature", "token"),
    [
        (EXAMPLE_URL, EXAMPLE_PARAMS, EXAMPLE_SIGNATURE, "54321"),
        (EXAMPLE_URL, [*EXAMPLE_PARAMS[:-1], ("To", "+18005551213")], EXAMPLE_SIGNATURE, "12345"),
        (EXAMPLE_URL, [*EXAMPLE_PARAMS, ("Extra", "")], EXAMPLE_SIGNATURE, "12345"),
        ("https://example.com/myapp.php?foo=1", EXAMPLE_PARAMS, EXAMPLE_SIGNATURE, "12345"),
        ("http://example.com/myapp.php?foo=1&bar=2", EXAMPLE_PARAMS, EXAMPLE_SIGNATURE, "12345"),
        (EXAMPLE_URL, EXAMPLE_PARAMS, EXAMPLE_SIGNATURE[:-2], "12345"),
        (EXAMPLE_URL, EXAMPLE_PARAMS, "", "12345"),
        (EXAMPLE_URL, EXAMPLE_PARAMS, None, "12345"),
    ],
)
def test_anything_changed_is_refused(
    url: str, params: list[tuple[str, str]], signature: str | None, token: str
) -> None:
    assert not validate_signature(url, params, signature, token)
    with pytest.raises(InvalidSignature):
        verify_signature(url, params, signature, token)


def test_url_with_and_without_its_default_port() -> None:
    assert url_variants("https://a.example/x?y=1") == (
        "https://a.example/x?y=1",
        "https://a.example:443/x?y=1",
    )
    assert url_variants("http://a.example:8080/x") == (
        "http://a.example/x",
        "http://a.example:8080/x",
    )
    assert url_variants("http://[::1]:8000/x") == ("http://[::1]/x", "http://[::1]:8000/x")
    # Twilio signed with the port, we know the URL without it (and the reverse).
    with_port = compute_signature("https://example.com:443/myapp.php?foo=1&bar=2", [], "t")
    assert validate_signature(EXAMPLE_URL, [], with_port, "t")
    assert validate_signature(
        "https://example.com:443/myapp.php?foo=1&bar=2",
        [],
        (compute_signature(EXAMPLE_URL, [], "t")),
        "t",
    )


class MultiParams(dict[str, str]):
    """Form parameters with repeated names, in the shape Twilio's validator reads (getlist)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


ALPHABET = string.ascii_letters + string.digits + " +-_.:/&=?%é☃"


def random_text(rng: random.Random, low: int = 0, high: int = 12) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(low, high)))


def random_url(rng: random.Random) -> str:
    scheme = rng.choice(["http", "https"])
    host = rng.choice(["example.com", "campanile.test", "127.0.0.1", "hooks.school.org"])
    port = rng.choice(["", "", ":443", ":80", ":8443", ":8000"])
    query = rng.choice(["", "?a=1", "?x=1&y=two", "?bodySHA256=abc"])
    path = "/" + "/".join(random_text(rng, 1, 6).replace(" ", "") or "p" for _ in range(2))
    return f"{scheme}://{host}{port}{path.replace('?', '').replace('#', '')}{query}"


def random_params(rng: random.Random) -> list[tuple[str, str]]:
    names = [random_text(rng, 1, 8) for _ in range(rng.randint(0, 6))]
    pairs = [(name, random_text(rng)) for name in names]
    for _ in range(rng.randint(0, 4)):  # repeated names, sometimes with repeated values
        if pairs:
            name, value = rng.choice(pairs)
            pairs.append((name, rng.choice([value, random_text(rng)])))
    rng.shuffle(pairs)
    return pairs


@pytest.mark.parametrize("seed", range(300))
def test_agrees_with_twilios_request_validator(seed: int) -> None:
    rng = random.Random(seed)
    url, pairs, token = random_url(rng), random_params(rng), random_text(rng, 1, 32)
    validator = RequestValidator(token)
    params = MultiParams(pairs)

    assert compute_signature(url, pairs, token) == validator.compute_signature(url, params)

    # Signed by Twilio over the URL with or without the port: both sides accept it.
    signed_url = rng.choice(url_variants(url))
    theirs = validator.compute_signature(signed_url, params)
    assert validate_signature(url, pairs, theirs, token)
    assert validator.validate(url, params, theirs)

    ours = compute_signature(signed_url, pairs, token)
    assert validator.validate(url, params, ours)

    # And both refuse the same forgery.
    forged = [*pairs, ("Injected", "1")]
    assert not validate_signature(url, forged, theirs, token)
    assert not validator.validate(url, MultiParams(forged), theirs)


def test_starlette_form_data_keeps_repeated_names() -> None:
    pairs = [*EXAMPLE_PARAMS, ("Tag", "b"), ("Tag", "a")]
    expected = compute_signature(EXAMPLE_URL, pairs, EXAMPLE_TOKEN)
    assert validate_signature(
        EXAMPLE_URL, FormData(list[tuple[str, str | UploadFile]](pairs)), expected, EXAMPLE_TOKEN
    )
    assert not validate_signature(EXAMPLE_URL, dict(pairs), expected, EXAMPLE_TOKEN)
    assert validate_signature(
        EXAMPLE_URL, {**dict(EXAMPLE_PARAMS), "Tag": ["a", "b"]}, expected, EXAMPLE_TOKEN
    )
