"""Typed domain errors and the one place that renders them as problem+json (RFC 9457)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class AppError(Exception):
    status_code = 500
    slug = "internal-error"
    title = "Internal server error"
    # What the answer means, in the OpenAPI document, when the route does not say more.
    described = "Something went wrong."

    def __init__(
        self,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = dict(headers or {})


class BadRequest(AppError):
    status_code = 400
    slug = "bad-request"
    title = "Bad request"
    described = "The request cannot be read (malformed JSON, a cursor this service did not issue)."


class Unauthorized(AppError):
    status_code = 401
    slug = "unauthorized"
    title = "Unauthorized"
    described = "Missing or invalid credentials (`Authorization: Bearer ...`)."


class Forbidden(AppError):
    status_code = 403
    slug = "forbidden"
    title = "Forbidden"
    described = "The credentials do not allow this."


class NotFound(AppError):
    status_code = 404
    slug = "not-found"
    title = "Not found"
    described = "No such resource (another school's ids included)."


class Conflict(AppError):
    status_code = 409
    slug = "conflict"
    title = "Conflict"
    described = "The resource's state does not allow this."


class PayloadTooLarge(AppError):
    status_code = 413
    slug = "payload-too-large"
    title = "Payload too large"
    described = "The body is larger than `MAX_BODY_BYTES`."


class UnsupportedMediaType(AppError):
    status_code = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"
    described = "The body's `Content-Type` is not one this operation reads."


class Unprocessable(AppError):
    status_code = 422
    slug = "validation-error"
    title = "Validation error"
    described = "The request is well formed but not valid; `errors` names each field."


class TooManyRequests(AppError):
    """Over a key's rate limit, or its school's requests in flight; `Retry-After` says when
    to try again (seconds)."""

    status_code = 429
    slug = "too-many-requests"
    title = "Too many requests"
    described = (
        "Over the API key's rate limit (`RATE_LIMIT_PER_MINUTE`), or its school's requests "
        "in progress at once (`RATE_LIMIT_IN_FLIGHT`); `Retry-After` says when to try again."
    )

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": f"urn:campanile:problem:{slug}", "title": title, "status": status}
    body["detail"] = detail
    body.update(extra)
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=all_headers)


class ValidationIssue(BaseModel):
    """One invalid part of a request."""

    loc: list[str | int] = Field(
        description="Where: `body`, `query`, `path` or `header`, then the field's path.",
        examples=[["body", "name"]],
    )
    msg: str = Field(examples=["String should have at least 1 character"])
    type: str = Field(examples=["string_too_short"])


class CampaignUsingList(BaseModel):
    """A campaign named by a 409 on deleting its contact list."""

    id: str
    name: str
    status: str


class Problem(BaseModel):
    """Every error the service answers: `application/problem+json` (RFC 9457), rendered by
    `problem()` from the error classes of app/errors.py."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:campanile:problem:conflict",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "Cannot launch a campaign that is active; it must be draft.",
                    "campaign_status": "active",
                }
            ]
        },
    )

    type: str = Field(
        pattern=r"^urn:campanile:problem:[a-z0-9-]+$",
        description="The kind of problem, stable for clients to branch on.",
        examples=["urn:campanile:problem:not-found"],
    )
    title: str = Field(examples=["Not found"])
    status: int = Field(ge=400, le=599, examples=[404])
    detail: str = Field(examples=["No campaign with id '8f0c...'."])
    # Extension members, present only on the problems that name them.
    errors: list[ValidationIssue] | SkipJsonSchema[None] = Field(
        default=None, description="Validation errors (422): each invalid field."
    )
    campaign_status: str | SkipJsonSchema[None] = Field(
        default=None, description="409 on a campaign: its status now."
    )
    failed_reason: str | None = Field(
        default=None, description="409 on a resend: the contact's failed reason code, if any."
    )
    max_rows: int | SkipJsonSchema[None] = Field(
        default=None, description="413 on an import: the most rows one import may carry."
    )
    campaign_count: int | SkipJsonSchema[None] = Field(
        default=None, description="409 on deleting a contact list: the campaigns using it."
    )
    campaigns: list[CampaignUsingList] | SkipJsonSchema[None] = Field(
        default=None, description="409 on deleting a contact list: those campaigns (100 at most)."
    )


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
ErrorDoc = type[AppError] | tuple[type[AppError], str]


def responses(*raised: ErrorDoc) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of the errors a route raises, each given as its class (the
    class's `described`) or as (class, what it means here). Errors of one status are
    described together. Every one is `application/problem+json` with the Problem schema."""
    described: dict[int, list[str]] = {}
    for entry in raised:
        error, text = entry if isinstance(entry, tuple) else (entry, entry.described)
        texts = described.setdefault(error.status_code, [])
        if text not in texts:
            texts.append(text)
    return {
        status: _problem_response(status, " ".join(texts)) for status, texts in described.items()
    }


def _problem_response(status: int, description: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if status == TooManyRequests.status_code:
        answer["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return answer


# What every operation may answer whatever its route says, from the layers around it:
# authentication, body parsing and the body limit (app.kit.limits), validation.
_SECURED = responses(Unauthorized)
_RATE_LIMITED = responses(TooManyRequests)
_WITH_BODY = responses((BadRequest, "The body is not valid JSON (or not UTF-8)."))
# Any request, a body or not expected: the limit is read before the route is (app/kit/limits.py).
_ANY = responses(PayloadTooLarge)
_VALIDATED = responses(Unprocessable)
_FASTAPI_422 = {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's document (in place) with the errors every operation can answer:
    413 on every one (a body over the limit, expected or not), 401 where credentials are
    required, 400 where a body is read, 422 (FastAPI
    declares its own shape; the service answers a Problem) where input is validated. Every
    problem answer has the Problem schema, which joins the components."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    for path in openapi.get("paths", {}).values():
        for operation in path.values():
            answers: dict[str, Any] = operation.setdefault("responses", {})
            added: dict[int | str, dict[str, Any]] = dict(_ANY)
            if operation.get("security"):
                added.update(_SECURED)
            if any("SchoolApiKey" in scheme for scheme in operation.get("security", [])):
                added.update(_RATE_LIMITED)  # each key's requests are limited
            if "requestBody" in operation:
                added.update(_WITH_BODY)
            # FastAPI declares a 422 where it validates parameters or a body, in its own
            # shape: the service answers those as a Problem. Not where the only parameters
            # are text in the path, which any segment is.
            if _FASTAPI_422 in answers.get("422", {}).get("content", {}).values():
                del answers["422"]
                if "requestBody" in operation or any(
                    parameter["in"] != "path"
                    or parameter["schema"].get("type") != "string"
                    or set(parameter["schema"]) - {"type", "title"}
                    for parameter in operation.get("parameters", [])
                ):
                    added.update(_VALIDATED)
            for status, answer in added.items():
                answers.setdefault(str(status), answer)
            for answer in answers.values():
                # A problem declared without its schema (the webhooks' refusals) has this one.
                declared = answer.get("content", {}).get(PROBLEM_JSON)
                if declared is not None:
                    declared.setdefault("schema", PROBLEM_REF)
            if "401" in answers:
                answers["401"]["headers"] = {
                    "WWW-Authenticate": {
                        "description": "`Bearer`: the credentials to send.",
                        "schema": {"type": "string"},
                    }
                }
    return openapi


# Problems raised by Starlette or FastAPI themselves (routing, body parsing, middleware).
HTTP_PROBLEMS: dict[int, tuple[str, str]] = {
    error.status_code: (error.slug, error.title)
    for error in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        TooManyRequests,
    )
}
HTTP_PROBLEMS[405] = ("method-not-allowed", "Method not allowed")


def _allowed_methods(request: Request, named: str) -> str:
    """Every method the path answers to. Starlette's `Allow` names only the methods of the
    first route whose path matches (`GET` for /v1/school, which also takes PATCH)."""
    methods = {m.strip().upper() for m in named.split(",") if m.strip()}
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        # A copy (nested dicts too): matching may note its progress in the scope.
        scope = {k: dict(v) if isinstance(v, dict) else v for k, v in request.scope.items()}
        scope["method"] = method
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            methods.add(method)
    return ", ".join(sorted(methods))


def _malformed_json() -> JSONResponse:
    return problem(400, "malformed-json", "Malformed JSON", "The body is not valid JSON.")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """One entry per invalid field, at the field's place in the request: pydantic reports a
    field of several types (`str | None`, the provider accounts) once per type, each with
    the type's label in its `loc`; the labels go, and so does "should be None" beside the
    error of the type the value was meant to be."""
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if loc[:1] == ("body",) and isinstance(exc.body, dict | list):
            loc = ("body", *_fields(exc.body, loc[1:]))
        entry = {"loc": list(loc), "msg": err.get("msg", ""), "type": err.get("type", "")}
        if loc not in found or found[loc]["type"] == "none_required":
            found[loc] = entry
    return list(found.values())


def _fields(value: Any, loc: tuple[Any, ...]) -> list[Any]:
    """The parts of a body error's `loc` that name a field or an item of the body: a part
    that does not (a label pydantic gives a member of a union) is left out. The last part
    may name a field the object lacks (a missing one)."""
    kept = []
    for index, part in enumerate(loc):
        if isinstance(value, dict) and part in value:  # noqa: SIM114 (types differ)
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        elif isinstance(value, dict) and index == len(loc) - 1:
            value = None  # a field the object lacks
        else:
            continue
        kept.append(part)
    return kept


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem(
            exc.status_code, exc.slug, exc.title, exc.detail, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return _malformed_json()
        return problem(
            422, "validation-error", "Validation error", "The request is not valid.", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = HTTP_PROBLEMS.get(exc.status_code, ("error", "Error"))
        # Keep the exception's headers (`Allow` on a 405, `WWW-Authenticate` on a 401).
        headers = dict(exc.headers or {})
        detail = str(exc.detail)
        if exc.status_code == 400 and isinstance(
            exc.__cause__, UnicodeDecodeError | RecursionError
        ):
            # FastAPI's own JSON parsing: the body is not UTF-8, or nests beyond reason.
            return _malformed_json()
        if exc.status_code == 405:
            headers["Allow"] = allowed = _allowed_methods(request, headers.get("Allow", ""))
            detail = f"{request.method} is not allowed on this path; it takes {allowed}."
        return problem(exc.status_code, slug, title, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal-error", "Internal server error", "Something went wrong.")
