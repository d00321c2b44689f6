"""Refuse to start a server on names another program already serves.

Two servers of one PV name answer clients at random (pvxs only warns of it), and
two pipeline IOCs on one prefix would both restore `Run` and start instances.
Every program that serves a prefix asks first, as a client would.
"""

from __future__ import annotations

from collections.abc import Sequence

from p4p.client.thread import Context

TIMEOUT = 0.5  # s: a server on this network answers a search well within it


def refuse_if_served(program: str, names: Sequence[str], advice: str) -> None:
    """Exit with an error naming the first of `names` that already answers over pvAccess."""
    ctx = Context("pva", nt=False)
    try:
        replies = ctx.get(list(names), timeout=TIMEOUT, throw=False)
    finally:
        ctx.close()
    for name, reply in zip(names, replies, strict=True):
        if not isinstance(reply, Exception):
            raise SystemExit(f"{program}: error: {name} is already served by another "
                             f"program; stop it or {advice}")
