"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from app.errors import PROBLEM_JSON, PROBLEM_REF, problem

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health, operation_id="getLiveness", summary="Liveness")
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    operation_id="getReadiness",
    summary="Readiness",
    responses={
        503: {
            "description": "Not ready: the database is not reachable.",
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
    },
)
async def readyz(request: Request) -> Health | Response:
    """Readiness: the database answers."""
    try:
        async with request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return problem(503, "not-ready", "Not ready", "The database is not reachable.")
    return Health(status="ok")


@router.get(
    "/metrics",
    response_class=Response,
    operation_id="getMetrics",
    summary="Prometheus metrics",
    responses={
        200: {
            "description": "The Prometheus text exposition format.",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics() -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
