"""A school's system receiving Campanile's webhooks, for bench/events.py: answers every POST
with 204 at once and keeps, per post, how long after the event's own timestamp (its
commit, to the millisecond) it arrived. `GET /stats` gives the count and the lags.

    python bench/events_receiver.py --port 9001
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

lags: list[float] = []
ids: set[str] = set()


async def receive(request: Request) -> Response:
    arrived = time.time()
    event = json.loads(await request.body())
    ids.add(event["id"])
    stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    lags.append(arrived - stamp)
    return Response(status_code=204)


async def stats(request: Request) -> JSONResponse:
    return JSONResponse({"posts": len(lags), "events": len(ids), "lags": lags})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Starlette(routes=[Route("/events", receive, methods=["POST"]), Route("/stats", stats)])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
