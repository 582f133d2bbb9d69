"""The invocation's time budget: every request's timeout is capped by what is left of it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from maintenance.exceptions import DeadlineExceededError


@dataclass(frozen=True)
class Deadline:
    at: float
    """`time.monotonic()` value after which no new request starts."""

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """`seconds` from now; None means no deadline (calls outside Lambda)."""
        return cls(math.inf if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def timeout(self, cap: float) -> float:
        """A request timeout: `cap`, or less when the deadline is nearer. Raises when it has passed."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceededError("the invocation's time for maintenance ran out")
        return min(cap, left)
