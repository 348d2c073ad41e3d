"""A school's system receiving Campanile's webhooks, on loopback (uvicorn in the test's
event loop): it keeps every post and answers as the test says."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Receiver:
    """A school's system on loopback: what it answers is `answer(request number)`."""

    answer: Callable[[int], int] = lambda n: 204
    hang: bool = False
    hang_first: int = 0  # posts that hang, from the first
    location: str | None = None  # sent with each answer (a redirect's, say)
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    async def _events(self, request: Request) -> Response:
        body = await request.body()
        self.posts.append((dict(request.headers), body))
        if self.hang or len(self.posts) <= self.hang_first:
            await asyncio.sleep(3600)
        headers = {"location": self.location} if self.location else None
        return Response(status_code=self.answer(len(self.posts)), headers=headers)

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))  # its own port, or a new one
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/events", self._events, methods=["POST"])])
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise RuntimeError("the receiver stopped at start-up")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        self._server.force_exit = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
