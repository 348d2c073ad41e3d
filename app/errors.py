"""Typed domain errors and the one place that renders them as problem+json (RFC 9457)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": f"urn:campanile:problem:{slug}", "title": title, "status": status}
    body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


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
            return problem(400, "malformed-json", "Malformed JSON", "The body is not valid JSON.")
        return problem(
            422, "validation-error", "Validation error", "The request is not valid.", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}.get(
            exc.status_code, "Error"
        )
        return problem(exc.status_code, title.lower().replace(" ", "-"), title, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal-error", "Internal server error", "Something went wrong.")
