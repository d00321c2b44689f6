"""PVs of a node agent (`ptychoedge node`), under `$(P)Node<n>:` of its pipeline.

The pipeline IOC writes `Spec` (which inference instances this host runs, as
JSON) and reads the rest; people read them to see what each host does.
"""

from ptychoedge.pvdb.spec import Kind, PvSpec

MAX_NODES = 16

SPEC = PvSpec("Spec", Kind.STRING, "Instances to run here (JSON, set by the pipeline)",
              initial="", readback=True)

STATUS_PVS = (
    PvSpec("Instances_RBV", Kind.INT, "Inference instances running here", writable=False),
    PvSpec("Restarts_RBV", Kind.INT, "Instances restarted after dying", writable=False),
    PvSpec("Host_RBV", Kind.STRING, "Host name of this node", initial="", writable=False),
    PvSpec("Heartbeat_RBV", Kind.INT, "Counts up once a second while the agent runs",
           writable=False),
    PvSpec("Message_RBV", Kind.STRING, "What the agent did last, and why", initial="",
           writable=False),
)

PVS = (SPEC, *STATUS_PVS)


def node_prefix(pipeline_prefix: str, node: int) -> str:
    """The agent of node `node` (1-based) of the pipeline on `pipeline_prefix`."""
    return f"{pipeline_prefix}Node{node}:"
