"""`/console`: the console's files, shipped in the package (`static/`), with headers that let
the page run only its own scripts and styles and talk only to this origin. Left out of the
OpenAPI document: they are pages, not operations of the API."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from app.errors import NotFound

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
HEADERS = {
    # No inline script or style, no other origin: an injected <script> or a stolen key has
    # nowhere to run or go.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # A new version of the console is picked up at the next load (ETag revalidation).
    "Cache-Control": "no-cache",
}


class File:
    """One of the console's files, held in memory (they are few and small)."""

    def __init__(self, path: Path) -> None:
        self.content = path.read_bytes()
        self.media_type = MEDIA_TYPES[path.suffix]
        self.etag = '"' + hashlib.sha256(self.content).hexdigest()[:16] + '"'

    def response(self, request: Request) -> Response:
        headers = {**HEADERS, "ETag": self.etag}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.content, media_type=self.media_type, headers=headers)


# The files there, by name: nothing else under /console is served.
FILES = {p.name: File(p) for p in STATIC.iterdir() if p.suffix in MEDIA_TYPES}

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("")
async def console(request: Request) -> Response:
    return FILES["index.html"].response(request)


@router.get("/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", headers=HEADERS)


@router.get("/{name}")
async def console_file(name: str, request: Request) -> Response:
    file = FILES.get(name)
    if file is None:
        raise NotFound("No such file in the console.")
    return file.response(request)
