"""PVs of the pipeline IOC, under `$(P)` (default `EDGE1:`).

Knobs are settings with an `_RBV` readback that shows what the pipeline
applied; status PVs are read-only and refreshed once a second. The images
(`Recon:*`, `Mosaic:*`, `Refined:*`) are NTNDArrays, served as long as the IOC runs:
empty until the first patch (or the first refinement), then the latest (the last one
stays while the pipeline is stopped).
"""

from ptychoedge.pvdb.node import MAX_NODES
from ptychoedge.pvdb.spec import Kind, PvSpec

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
# Misfit: running, but the frames do not fit the model (iocs/residual_guard.py)
STATES = ("Idle", "Starting", "Running", "Scaling", "Fault", "Misfit")
# what adaptation (iocs/adaptation.py) is doing
ADAPT_STATES = ("Idle", "Collecting", "Training", "Checking", "Swapping", "Failed")
# what the refinement of the kept frames' image (iocs/refinement.py) is doing
REFINE_STATES = ("Idle", "Collecting", "Refining", "Failed")
MAX_INSTANCES = 64  # length of the per-instance waveform, and the knob's ceiling
# frames per batch: TensorRT engines are built for batches up to this (inference/backends.py)
MAX_BATCH = 256

IMAGES = ("Recon:Amplitude", "Recon:Phase", "Mosaic:Amplitude", "Mosaic:Phase")
"""NTNDArray images over PVA: the mosaic collector's, relayed by the IOC's image relay."""
REFINED_IMAGES = ("Refined:Amplitude", "Refined:Phase")
"""NTNDArray images over PVA at the instrument's object pixel: the refiner's (the network's
mosaic of the kept frames, then refined through the physics), relayed likewise."""

KNOBS = (
    PvSpec("Run", Kind.ENUM, "Run or stop the pipeline", initial=0, choices=("Stop", "Run"),
           readback=True, setting="run"),
    PvSpec("InputChannel", Kind.STRING, "Detector image PV (NTNDArray)",
           initial="SIM1:Pva1:Image", readback=True, allow_empty=False,
           setting="input_channel"),
    PvSpec("Nodes", Kind.INT, "Inference nodes (hosts)", initial=1, low=1, high=MAX_NODES,
           readback=True, setting="nodes"),
    PvSpec("InstancesPerNode", Kind.INT, "Inference instances on each node", initial=1,
           low=1, high=MAX_INSTANCES, readback=True, setting="instances"),
    PvSpec("BatchSize", Kind.INT, "Frames per inference batch", initial=8, low=1,
           high=MAX_BATCH, readback=True, setting="batch_size"),
    PvSpec("Backend", Kind.ENUM, "Inference backend", initial=1, choices=BACKENDS,
           readback=True, setting="backend"),
    PvSpec("Precision", Kind.ENUM, "Inference precision", initial=0, choices=PRECISIONS,
           readback=True, setting="precision"),
    # every put acts: a model refused, once mended, is tried again at a put of its name
    PvSpec("Model", Kind.STRING, "Model name in the model directory",
           initial="ptychonn-default", readback=True, allow_empty=False, every_put=True,
           setting="model"),
    PvSpec("AutoScale", Kind.ENUM, "Scale instances to the input rate", initial=0,
           choices=("Off", "On"), readback=True, setting="auto_scale"),
    PvSpec("TargetRate", Kind.FLOAT, "Rate to be ready for before frames come", initial=0.0,
           units="Hz", low=0.0, high=100_000.0, precision=1, readback=True, setting="target_rate"),
    PvSpec("MaxInstances", Kind.INT, "Most instances automatic scaling may run", initial=8,
           low=1, high=MAX_INSTANCES, readback=True, setting="max_instances"),
    PvSpec("AutoAdapt", Kind.ENUM, "Adapt the model when the residual alarm holds",
           initial=0, choices=("Off", "On"), readback=True, setting="auto_adapt"),
    PvSpec("AdaptFrames", Kind.INT, "Recent frames adaptation learns from", initial=2000,
           low=20, high=100_000, readback=True, setting="adapt_frames"),
    PvSpec("AdaptEpochs", Kind.INT, "Passes of adaptation's training over its frames",
           initial=30, low=1, high=1000, readback=True, setting="adapt_epochs"),
    PvSpec("AdaptInstrument", Kind.STRING,
           "Instrument file (CXI: probe, geometry) to adapt and refine with; empty: the model's",
           initial="", readback=True, setting="adapt_instrument"),
    PvSpec("RefineSeconds", Kind.FLOAT,
           "How long Refine refines the image (then two half-scans, a third of it each)",
           initial=20.0,
           units="s", low=1.0, high=3600.0, precision=0, readback=True,
           setting="refine_seconds"),
)

RESET_STATS = PvSpec("ResetStats", Kind.INT, "Put 1 to zero the counters", initial=0, low=0,
                     high=1, every_put=True)
ADAPT = PvSpec("Adapt", Kind.INT, "Put 1 to adapt the model to the kept frames",
               initial=0, low=0, high=1, every_put=True)
REFINE = PvSpec("Refine", Kind.INT,
                "Put 1 to refine the kept frames' image through the physics (Refined:*)",
                initial=0, low=0, high=1, every_put=True)

STATUS_PVS = (
    PvSpec("InputRate_RBV", Kind.FLOAT, "Detector frames per second", units="Hz",
           precision=1, writable=False),
    PvSpec("ProcessedRate_RBV", Kind.FLOAT, "Reconstructions published per second",
           units="Hz", precision=1, writable=False),
    PvSpec("FramesProcessed_RBV", Kind.INT, "Reconstructions published", writable=False),
    PvSpec("FramesMissed_RBV", Kind.INT, "Frames lost: never reconstructed", writable=False),
    PvSpec("MissedRate_RBV", Kind.FLOAT, "Frames lost per second (alarm above 0)",
           units="Hz", precision=1, writable=False),
    PvSpec("Backlog_RBV", Kind.INT, "Frames taken by the detector, not yet published",
           writable=False),
    PvSpec("FrameErrors_RBV", Kind.INT, "Malformed frames refused", writable=False),
    PvSpec("LatencyP50_RBV", Kind.FLOAT, "Median receipt-to-output time", units="ms",
           precision=2, writable=False),
    PvSpec("LatencyP99_RBV", Kind.FLOAT, "99th percentile receipt-to-output", units="ms",
           precision=2, writable=False),
    PvSpec("InferenceTime_RBV", Kind.FLOAT, "Inference time per frame", units="ms",
           precision=3, writable=False),
    PvSpec("Residual_RBV", Kind.FLOAT,
           "Mean diffraction residual (0 = perfect; alarm above the model's limits)",
           precision=3, writable=False),
    PvSpec("Variation_RBV", Kind.FLOAT,
           "How much the latest frames differ from one another, over their counting noise",
           units="x", precision=1, writable=False),
    PvSpec("Explained_RBV", Kind.FLOAT,
           "Share of how the frames differ that the images explain (alarm under 5% where "
           "they differ 10x their noise: one image for all)", units="%", precision=0,
           writable=False),
    PvSpec("Agreement_RBV", Kind.FLOAT,
           "How well neighbouring images agree where they overlap (alarm under 0% where "
           "the frames differ 10x their noise: not this sample, or positions out of step)",
           units="%", precision=0, writable=False),
    PvSpec("Instances_RBV", Kind.INT, "Inference instances running", writable=False),
    PvSpec("NodesUp_RBV", Kind.INT, "Inference nodes answering", writable=False),
    PvSpec("InstanceRates_RBV", Kind.FLOAT_ARRAY, "Published rate of each instance",
           units="Hz", precision=1, writable=False, length=MAX_INSTANCES),
    PvSpec("Restarts_RBV", Kind.INT, "Instances restarted after dying", writable=False),
    PvSpec("State_RBV", Kind.ENUM, "Pipeline state", choices=STATES, initial=0,
           writable=False),
    PvSpec("Message_RBV", Kind.STRING, "What the pipeline did last, and why",
           initial="", writable=False),
    PvSpec("AdaptState_RBV", Kind.ENUM, "What adaptation is doing", choices=ADAPT_STATES,
           initial=0, writable=False),
    PvSpec("AdaptProgress_RBV", Kind.FLOAT, "Adaptation's training done", units="%",
           precision=0, writable=False),
    PvSpec("AdaptLoss_RBV", Kind.FLOAT, "Adaptation's training loss", precision=4,
           writable=False),
    PvSpec("AdaptModel_RBV", Kind.STRING, "The model adaptation made last", initial="",
           writable=False),
    PvSpec("RefineState_RBV", Kind.ENUM, "What the refinement is doing",
           choices=REFINE_STATES, initial=0, writable=False),
    PvSpec("RefineProgress_RBV", Kind.FLOAT, "The refinement's time done", units="%",
           precision=0, writable=False),
    PvSpec("RefineError_RBV", Kind.FLOAT,
           "The refined image's Fourier error (0 = it explains every frame)", precision=5,
           writable=False),
    PvSpec("RefinedResolution_RBV", Kind.FLOAT,
           "The finest half-period the refined image resolves (two half-scans' FRC)",
           units="nm", precision=0, writable=False),
    PvSpec("RefinedInstrument_RBV", Kind.STRING,
           "The last refinement's instrument file: its refined probe (for AdaptInstrument)",
           initial="", writable=False),
)

PVS = KNOBS + (RESET_STATS, ADAPT, REFINE) + STATUS_PVS


def knob(setting: str) -> PvSpec:
    """The knob that sets the settings' field `setting`; KeyError if none does."""
    for spec in KNOBS:
        if spec.setting == setting:
            return spec
    raise KeyError(setting)


def initial_setting(setting: str) -> float | int | str:
    """The value the field `setting` starts with: an enum knob's by its choice's string."""
    spec = knob(setting)
    return spec.choices[int(spec.initial)] if spec.kind is Kind.ENUM else spec.initial


def instance_channels(prefix: str, index: int) -> dict[str, str]:
    """The pvAccess channels of inference instance `index` (1-based)."""
    base = f"{prefix}recon:{index}"
    return {"output": base, "status": f"{base}:status", "control": f"{base}:control"}


def mirror_channel(prefix: str) -> str:
    """Where a pvapy mirror serves an input channel whose server cannot distribute frames."""
    return f"{prefix}Mirror:Image"


def ring_channel(prefix: str) -> str:
    """The record of the frame ring that keeps the scan's frames for adaptation."""
    return f"{prefix}adapt:ring"


def refiner_images(prefix: str) -> str:
    """The prefix of the images the refiner serves (the relay serves them as $(P)Refined:*)."""
    return f"{prefix}refiner:"


def collector_channels(prefix: str) -> dict[str, str]:
    """The collector's channels; `images` is the prefix of the images it serves."""
    return {"input": f"{prefix}recon:*", "status": f"{prefix}collector:status",
            "control": f"{prefix}collector:control", "images": f"{prefix}collector:"}
