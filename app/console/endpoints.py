"""`/console`: the console's files, shipped in the package (`static/`), with headers that let
the page run only its own scripts and styles and talk only to this origin. Left out of the
OpenAPI document: they are pages, not operations of the API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from app.errors import NotFound

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The files there, by name: nothing else under /console is served.
FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in MEDIA_TYPES}
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

router = APIRouter(prefix="/console", include_in_schema=False)


def _file(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise NotFound("No such file in the console.")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)


@router.get("")
async def console() -> FileResponse:
    return _file("index.html")


@router.get("/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", headers=HEADERS)


@router.get("/{name}")
async def console_file(name: str) -> FileResponse:
    return _file(name)
