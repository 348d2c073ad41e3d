"""Per-key request limits, in this process's memory: a token bucket per key (the rate) and a
count of the key's requests in flight (the concurrency).

Each key's bucket holds `per_minute` requests and refills at `per_minute` a minute, so a
key may spend a minute's worth at once (a burst) and then goes on at the steady rate; a
request that finds the bucket empty is told how long until the next token. Two floats per
key and a few arithmetic operations a request: no lock (one event loop), no background
task. Why per process and not shared: README, Rate limits.

A bucket is made only for a token found to be a valid key (`take`, after the lookup);
before the lookup a request only spends from a bucket already there (`spend`). So a stream
of made-up tokens leaves nothing behind, and the buckets number at most the valid keys.

Not the `limits` package: its in-memory storages expire entries on a background timer (a
thread started every 10 ms in the sync one, a task and a thread hop per call in the async
one), and its moving window keeps an object per request; this needs none of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Idle buckets are dropped when this many are held (refilled buckets carry no state).
MAX_BUCKETS = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def spend(self, key: str) -> float | None:
        """Spend one request of `key` if it has a bucket: 0.0 when it may go ahead, else the
        seconds until it may (nothing spent); None when it has no bucket (nothing made)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        now = self._clock()
        tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.per_second)
        bucket.at = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return 0.0
        bucket.tokens = tokens
        return (1.0 - tokens) / self.per_second

    def forget(self, key: str) -> None:
        """Drop `key`'s bucket (a revoked key's)."""
        self._buckets.pop(key, None)

    def take(self, key: str) -> float:
        """As `spend`, making `key`'s bucket (full) if it has none: for a valid key only."""
        wait = self.spend(key)
        if wait is not None:
            return wait
        now = self._clock()
        if len(self._buckets) >= MAX_BUCKETS:
            self._forget_full(now)
        self._buckets[key] = _Bucket(self.capacity - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled: forgetting them changes nothing."""
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.at) * self.per_second < self.capacity
        }


class InFlight:
    """At most `cap` requests of one key at once, in this process: a count per key, held
    only while the key has a request in flight (so a made-up token's count goes with its
    request). Over the cap a request is refused at once (429, as over the rate), not queued
    (README, Rate limits): a queue would move the wait from the client, which knows how to
    back off, into this process, with no bound on what waits."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self._held: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    def enter(self, key: str) -> bool:
        """Count a request of `key` in, unless it already has `cap` in flight (False)."""
        held = self._held.get(key, 0)
        if held >= self.cap:
            return False
        self._held[key] = held + 1
        return True

    def leave(self, key: str) -> None:
        held = self._held.pop(key) - 1
        if held:
            self._held[key] = held
