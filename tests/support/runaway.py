"""A school's runaway script, as a process of its own: `python -m tests.support.runaway URL
TOKEN WORKERS SECONDS` runs WORKERS loops that each send `GET URL` with TOKEN back to back
for SECONDS, all starting at once, waiting `Retry-After` after a 429 as an HTTP client
library does. It prints `go` when it starts, then `{"200": n, "429": n, "in progress": n}`
(the 429s that named the key's requests in progress; and a count of each transport error,
after which a loop goes on) on its last line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import httpx


async def run(url: str, token: str, workers: int, seconds: float) -> Counter[str]:
    counts: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=30) as http:
        until = time.monotonic() + seconds

        async def loop() -> None:
            while time.monotonic() < until:
                try:
                    response = await http.get(url, headers=headers)
                except httpx.TransportError as error:
                    # As a script would, it tries again. (Seldom: a connection reset while
                    # a hundred are opened at once on a loaded machine.)
                    counts[type(error).__name__] += 1
                    continue
                counts[str(response.status_code)] += 1
                if response.status_code == 429:
                    if "in progress" in response.json()["detail"]:
                        counts["in progress"] += 1
                    await asyncio.sleep(float(response.headers["retry-after"]))

        print("go", flush=True)
        await asyncio.gather(*(loop() for _ in range(workers)))
    return counts


def main() -> None:
    url, token, workers, seconds = sys.argv[1:5]
    counts = asyncio.run(run(url, token, int(workers), float(seconds)))
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
