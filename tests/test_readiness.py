"""The readiness signal (pvdb/readiness.py): what `ptychoedge sim`, `ioc` and `node` write
when they serve, and to whom."""

from __future__ import annotations

import os

from ptychoedge.pvdb import readiness


def test_the_ready_file_appears_whole_with_who_serves_what(tmp_path):
    path = tmp_path / "sim.ready"
    environ = {readiness.ENV: str(path), "OTHER": "kept"}
    ready = readiness.claim(environ)
    assert readiness.announced(path) is None  # not before it serves
    ready.announce("SIM1:")
    assert readiness.announced(path) == {"pid": os.getpid(), "serves": "SIM1:"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.ready"]  # nothing aside left


def test_the_name_is_taken_out_of_the_environment_so_children_do_not_announce(tmp_path):
    environ = {readiness.ENV: str(tmp_path / "ioc.ready"), "OTHER": "kept"}
    readiness.claim(environ)
    assert environ == {"OTHER": "kept"}  # what the children it starts inherit
    assert readiness.claim(environ).path is None


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(readiness.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    readiness.claim().announce("P:")
    assert list(tmp_path.iterdir()) == []
