"""Typed domain errors and the one place that renders them as problem+json (RFC 9457)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class AppError(Exception):
    status_code = 500
    slug = "internal-error"
    title = "Internal server error"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class BadRequest(AppError):
    status_code = 400
    slug = "bad-request"
    title = "Bad request"


class Unauthorized(AppError):
    status_code = 401
    slug = "unauthorized"
    title = "Unauthorized"


class Forbidden(AppError):
    status_code = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(AppError):
    status_code = 404
    slug = "not-found"
    title = "Not found"


class Conflict(AppError):
    status_code = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(AppError):
    status_code = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class Unprocessable(AppError):
    status_code = 422
    slug = "validation-error"
    title = "Validation error"


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
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem(exc.status_code, exc.slug, exc.title, exc.detail, **exc.extra)

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
