"""Per-client token buckets: ``rate`` calls per second on average, bursts of up to ``burst``.

Each client identity (a token's id, else the peer's address) owns a bucket that
fills at ``rate`` tokens per second up to ``burst``; a call takes one token, and a
call that finds the bucket empty is refused with the time until a token is there.
"""

from __future__ import annotations

import threading
import time

__all__ = ["TokenBuckets"]

MAX_CLIENTS = 100_000
"""Buckets kept before idle, full ones are forgotten (a forgotten bucket is a full one)."""


class TokenBuckets:
    """Token buckets keyed by client identity.

    Parameters
    ----------
    rate : float
        Tokens added per second (> 0).
    burst : int
        Bucket size: calls a client may make at once after a quiet spell (>= 1).
    """

    def __init__(self, rate: float, burst: int, *, clock=time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = float(rate)
        self.burst = float(max(1, burst))
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def acquire(self, identity: str) -> float:
        """Take one token for ``identity``: 0.0 when allowed, else the seconds to wait before retrying."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(identity)
            if bucket is None:
                if len(self._buckets) >= MAX_CLIENTS:
                    self._forget_full(now)
                bucket = self._buckets[identity] = [self.burst, now]
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return 0.0
            bucket[0] = tokens
            return (1.0 - tokens) / self.rate

    def wait(self, identity: str) -> float:
        """Seconds until ``identity`` may make a call (0.0: now), without taking a token."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(identity)
            if bucket is None:
                return 0.0
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        full_after = self.burst / self.rate
        for identity, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[identity]
