"""A second server on a prefix already served refuses to start, and the first carries on."""

from __future__ import annotations

import subprocess

from conftest import ptychoedge, pva_ready, start_ioc, start_sim, wait_until

from ptychoedge.pvdb.node import node_prefix


def test_sim_ioc_and_node_refuse_a_prefix_already_served(spawn, pva, prefix, tmp_path):
    d, p = prefix, prefix.replace(":", "E:")
    sim = start_sim(spawn, d, tmp_path, "--no-stage")
    ioc = start_ioc(spawn, pva, p, d + "Pva1:Image", tmp_path / "state")
    agent = node_prefix(p, 2)
    node = spawn(*ptychoedge("node", "--pipeline", p, "--node", "2",
                             "--log-dir", str(tmp_path / "node")), name="node")
    wait_until(pva_ready(pva, agent + "Heartbeat_RBV"), 60, "the node agent", node)

    seconds = {
        d + "cam1:DetectorState_RBV": ("sim", "--prefix", d, "--no-stage",
                                       "--log-dir", str(tmp_path / "second-sim")),
        p + "State_RBV": ("ioc", "--prefix", p, "--input-channel", d + "Pva1:Image",
                          "--state-dir", str(tmp_path / "second-state")),
        agent + "Heartbeat_RBV": ("node", "--pipeline", p, "--node", "2",
                                  "--log-dir", str(tmp_path / "second-node")),
    }
    for served, args in seconds.items():
        second = subprocess.run(ptychoedge(*args), capture_output=True, text=True, timeout=60)
        assert second.returncode != 0, args
        assert f"{served} is already served by another program" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
    assert sim.alive() and ioc.alive() and node.alive()
    assert pva.get(p + "State_RBV", timeout=5) is not None
