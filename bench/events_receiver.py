"""A school's system receiving Campanile's webhooks, for bench/events.py: answers every POST
with 204 at once and keeps, per post, how long after the event's own timestamp (its
commit, to the millisecond) it arrived. `GET /stats` gives the count and the lags.

    python bench/events_receiver.py --port 9001

`Receiver` runs it in a process of its own, for the benchmarks that subscribe one endpoint
(bench/dispatch.py, bench/webhooks.py: --events on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
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


class Receiver:
    """This file in a process of its own, on a free port of loopback."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--port", str(self.port)],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def posts(self) -> int:
        """How many posts it has had (waiting for it to answer, if it is starting)."""
        async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
            for _ in range(100):
                with contextlib.suppress(httpx.TransportError):
                    await http.get(f"http://127.0.0.1:{self.port}/stats")
                    break
                await asyncio.sleep(0.1)
            stats = (await http.get(f"http://127.0.0.1:{self.port}/stats")).json()
        return int(stats["posts"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Starlette(routes=[Route("/events", receive, methods=["POST"]), Route("/stats", stats)])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
