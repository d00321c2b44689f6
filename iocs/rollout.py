"""Rolling a configuration out to the running instances, and the model to the collector.

A configuration goes to every instance that does not run it, as a `configure`
request on its control channel, numbered so that only the answer to the latest
request counts; the answer comes back in the instance's status (`answered`,
`configError`). A request not confirmed after a while is sent again: an instance
still starting up may not have heard it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ptychoedge.iocs.instances import Instance
from ptychoedge.pvdb.processors import ModelConfig, collector_configure_args, configure_args

log = logging.getLogger(__name__)

RESEND_AFTER = 5.0  # s before an unconfirmed configuration is sent again


class Rollout:
    """Brings the instances to the configuration asked for; `in_force` is the one they run."""

    def __init__(self, ctx: Any):
        self._ctx = ctx
        # What the instances were last confirmed to run; new instances start with it,
        # then get the knobs' configuration, so a bad one is refused, not fatal.
        self.in_force = ModelConfig()
        self._pending: ModelConfig | None = None  # sent, not yet confirmed
        self._request = 0  # number of the last request sent
        self._pending_since = 0.0
        self._collector_told_at = 0.0

    def forget(self) -> None:
        """Send the next configuration afresh, even one refused before."""
        self._pending = None

    def step(self, wanted: ModelConfig, instances: list[Instance]) -> str | None:
        """Bring the reporting `instances` a step closer to `wanted`: `in_force` becomes it
        once all run it. Why they refused it, or None."""
        reporting = [i for i in instances if i.report is not None and i.report.user is not None]
        if not reporting:
            return None
        statuses = [i.report.user for i in reporting]
        if all(status.config == wanted for status in statuses):
            self.in_force = wanted
            return None
        # only the instances' answers to the latest request count: no earlier refusal
        errors = {s.config_error for s in statuses
                  if s.answered == self._request and s.config_error}
        if self._pending == wanted and errors:
            self._pending = None
            return sorted(errors)[0]
        if self._pending != wanted or time.monotonic() - self._pending_since > RESEND_AFTER:
            self._request += 1
            for instance, status in zip(reporting, statuses, strict=True):
                if status.config != wanted:
                    instance.send(self._ctx, "configure", configure_args(wanted, self._request))
            self._pending, self._pending_since = wanted, time.monotonic()
        return None

    def tell_collector(self, collector: Instance | None, model: str, redraw: str = "") -> None:
        """Tell the collector the instances' model: a new one starts a new mosaic, from the
        scan so far as `redraw` (a mosaic file) has it where given."""
        drawing = collector_model(collector)
        now = time.monotonic()
        if (collector is not None and drawing is not None and drawing != model
                and now - self._collector_told_at > RESEND_AFTER):
            collector.send(self._ctx, "configure", collector_configure_args(model, redraw))
            self._collector_told_at = now


def collector_model(collector: Instance | None) -> str | None:
    """The model the collector's mosaic is of, as it last reported; None before a report."""
    if collector is None or collector.report is None or collector.report.user is None:
        return None
    return collector.report.user.model
