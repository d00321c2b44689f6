"""What the supervisor's parts tell the operator: the latest news, restarts and faults."""

from __future__ import annotations

import time

FAULT_HOLD = 5.0  # s a restart keeps the pipeline's state at Fault


class News:
    """The message for `Message_RBV`, the restarts for `Restarts_RBV`, and a Fault's hold."""

    def __init__(self) -> None:
        self.message = ""
        self.restarts = 0
        self._fault_until = 0.0

    def say(self, message: str) -> None:
        """Make `message` the latest news."""
        self.message = message

    def restarted(self, count: int = 1) -> None:
        """Count `count` children started again after dying."""
        self.restarts += count

    def hold_fault(self) -> None:
        """Show the pipeline at Fault for a while: a child died."""
        self._fault_until = time.monotonic() + FAULT_HOLD

    @property
    def fault(self) -> bool:
        """Whether a death is recent enough to show as a Fault."""
        return time.monotonic() < self._fault_until
