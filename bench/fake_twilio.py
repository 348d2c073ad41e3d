"""A minimal fake Twilio Messages API for benchmarks: its own process, loopback, cheap.

    python bench/fake_twilio.py [--port 0] [--latency-ms 20] [--hang-share 0]

Prints its base URL (``http://127.0.0.1:PORT``) on the first line of stdout, then serves
until SIGTERM or SIGINT. Raw asyncio streams (uvloop when installed), HTTP/1.1 keep-alive,
one request at a time per connection, so the fake costs as little CPU as possible and the
benchmark measures the client:

- ``POST /2010-04-01/Accounts/{sid}/Messages.json``: after ``--latency-ms``, 201 with a
  Message JSON shaped like Twilio's (a fresh ``SM...`` sid, status ``queued``); 401 with
  Twilio's error JSON when there is no Basic authorization;
- ``GET  /2010-04-01/Accounts/{sid}/Messages.json``: an empty page (``find_sent``);
- ``GET  /__stats``: ``{"creates": n, "lists": n, "connections": n, "hung": n}``
  (connections accepted since start, which shows whether the client keeps its connections
  alive; creates left hanging).

With ``--hang-share S``, creates to a share S of the numbers (chosen by a hash of ``To``,
so the same numbers every run) get no answer for ``HANG_SECONDS``, longer than the
client's timeout (app.kit.http.TIMEOUT, 10 s): a provider brownout. They make no message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import json
import signal
import socket
import sys
import uuid
import zlib
from typing import Any
from urllib.parse import parse_qsl

API_VERSION = "2010-04-01"
# A hanging create is answered after this long (its client has given up by then).
HANG_SECONDS = 30.0
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


class Fake:
    def __init__(self, latency: float, hang_share: float = 0.0) -> None:
        self.latency = latency
        self.hang_share = hang_share
        self.hung = 0
        self.creates = 0
        self.lists = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Without it, Nagle + delayed ACK can cost 40 ms a request.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                status, payload = await self.answer(method, target, headers, body)
                data = json.dumps(payload, separators=(",", ":")).encode()
                close = headers.get("connection", "").lower() == "close"
                writer.write(
                    (
                        f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\n"
                        "Content-Type: application/json; charset=utf-8\r\n"
                        f"Content-Length: {len(data)}\r\n"
                        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
                    ).encode()
                    + data
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping: end the connection quietly
        finally:
            writer.close()

    async def answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any]]:
        path = target.split("?", 1)[0]
        if path == "/__stats":
            return 200, {
                "creates": self.creates,
                "lists": self.lists,
                "connections": self.connections,
                "hung": self.hung,
            }
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != API_VERSION or parts[3] != "Messages.json":
            return 404, {"code": 20404, "message": "not found", "status": 404}
        if not headers.get("authorization", "").startswith("Basic "):
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}
        account_sid = parts[2]
        if method == "GET":
            self.lists += 1
            return 200, {"messages": [], "next_page_uri": None, "page": 0, "page_size": 100}
        form = dict(parse_qsl(body.decode()))
        if hangs(form.get("To", ""), self.hang_share):
            self.hung += 1
            await asyncio.sleep(HANG_SECONDS)
            return 503, {"code": 20503, "message": "hung", "status": 503}
        await asyncio.sleep(self.latency)
        self.creates += 1
        sid = "SM" + uuid.uuid4().hex
        now = email.utils.formatdate(usegmt=True)
        return 201, {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": form.get("Body", ""),
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json"
            },
            "to": form.get("To"),
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json",
        }


def hangs(to: str, share: float) -> bool:
    """Whether creates to `to` hang: the same numbers every run, about `share` of them."""
    return share > 0 and zlib.crc32(to.encode()) % 10_000 < share * 10_000


async def serve(port: int, latency: float, hang_share: float) -> None:
    fake = Fake(latency, hang_share)
    server = await asyncio.start_server(fake.handle, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(json.dumps({"creates": fake.creates, "connections": fake.connections}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--hang-share", type=float, default=0.0)
    args = parser.parse_args()
    run: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    run(serve(args.port, args.latency_ms / 1000, args.hang_share))
    sys.exit(0)


if __name__ == "__main__":
    main()
