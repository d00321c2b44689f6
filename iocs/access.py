"""EPICS access security for a softioc IOC: an ACF file, loaded at iocInit.

Every setting built from the PV spec (pvdb/records.py) is in the access
security group `KNOBS`; readbacks and status records are in `DEFAULT`. An ACF
file can so restrict who may change the pipeline while anyone may watch it
(`ptychoedge.acf` beside this module is an example). A group the file does not
define falls back to its `DEFAULT` group, as EPICS does.

Both servers of a softioc IOC enforce the file: Channel Access (EPICS base's
rsrv) and pvAccess (pvxs's QSRV2, "Put not permitted"). Clients are matched by
the address they connect from, not the host name they claim (`asCheckClientIP`):
a CA client names its own host and could claim any name, and pvxs matches PVA
clients by address anyway. Host names in an HAG are resolved to addresses once,
when the file loads.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path

from epicscorelibs.ioc import dbCore
from softioc import imports, softioc

from ptychoedge.pvdb.records import SETTINGS_ASG

log = logging.getLogger(__name__)

KNOBS_ASG = SETTINGS_ASG
EXAMPLE_ACF = Path(__file__).with_name("ptychoedge.acf")


class AccessSecurityError(RuntimeError):
    """An access security file that cannot be used, with the reason."""


def _int(name: str) -> ctypes.c_int:
    return ctypes.c_int.in_dll(dbCore, name)


def configure(acf: Path, check_client_ip: bool = True) -> None:
    """Have iocInit load `acf`; call before iocInit. A file that cannot be read is refused."""
    try:
        with open(acf, "rb") as handle:
            handle.read(1)
    except OSError as error:
        raise AccessSecurityError(
            f"cannot read access security file {acf}: {error.strerror}") from error
    # asSetFilename, and a listener that prints `user@host RECORD.FIELD old -> new` for
    # every put a TRAPWRITE rule allows: an audit trail of the knobs.
    imports.install_pv_logging(str(acf.resolve()))
    _int("asCheckClientIP").value = int(check_client_ip)


def check_loaded(acf: Path) -> None:
    """After iocInit: whether the file was loaded (EPICS printed why, if not)."""
    if not _int("asActive").value:
        raise AccessSecurityError(
            f"access security file {acf} could not be loaded (the ERROR lines above say "
            "why); the IOC does not serve without it")


def init_ioc(dispatcher, acf: Path | None, program: str) -> None:
    """iocInit, with the access security file `acf` if given; exits with the reason if the
    file cannot be used (a user's mistake: no traceback)."""
    if acf is not None:
        try:
            configure(acf)
        except AccessSecurityError as error:
            raise SystemExit(f"{program}: error: {error}") from None
    softioc.iocInit(dispatcher)
    if acf is not None:
        try:
            check_loaded(acf)
        except AccessSecurityError as error:
            # iocInit stopped half-way: EPICS' exit handlers would wait for ever
            print(f"{program}: error: {error}", file=sys.stderr, flush=True)
            os._exit(1)
        log.info("access security from %s", acf)
