"""PVs of the simulated detector, areaDetector names under `$(D)`.

Geometry and scan settings are read when acquisition starts, as a real
detector applies a new region of interest only from the next acquisition.
"""

from ptychoedge.pvdb.spec import Kind, PvSpec

IMAGE = "Pva1:Image"
"""NTNDArray frames, served by the image server (pvapy PvaServer)."""

STATUS = "Pva1:Status"
"""The image server's own status structure, read by the control IOC."""

DETECTOR_STATES = (
    "Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting",
    "Error", "Waiting", "Initializing", "Disconnected", "Aborted",
)
DATA_TYPES = ("UInt8", "UInt16", "UInt32", "Float32")
IMAGE_MODES = ("Single", "Multiple", "Continuous")
SCAN_SOURCES = ("Pattern", "Stage", "Replay")
SCAN_PATTERNS = ("Raster", "Fermat")
# NDPluginCodec's compressors that a pipeline decodes (JPEG is lossy: not offered)
CODECS = ("None", "lz4", "blosc", "bslz4")
BLOSC_COMPRESSORS = ("blosclz", "lz4", "lz4hc", "zlib", "zstd")
BLOSC_SHUFFLES = ("None", "Byte", "Bit")

MIN_PERIOD = 1e-5  # s: 100 kHz, past anything this simulator can serve
MAX_SIZE = 2048

SETTINGS = (
    PvSpec("cam1:Acquire", Kind.ENUM, "Start or stop acquisition",
           initial=0, choices=("Done", "Acquire"), readback=True),
    PvSpec("cam1:AcquireTime", Kind.FLOAT, "Exposure time",
           initial=0.0005, units="s", low=0.0, high=100.0, precision=6, readback=True),
    PvSpec("cam1:AcquirePeriod", Kind.FLOAT, "Time between frames",
           initial=0.001, units="s", low=MIN_PERIOD, high=100.0, precision=6, readback=True),
    PvSpec("cam1:NumImages", Kind.INT, "Frames per acquisition in Multiple mode",
           initial=100, low=1, high=100_000_000, readback=True),
    PvSpec("cam1:ImageMode", Kind.ENUM, "Single, Multiple or Continuous",
           initial=2, choices=IMAGE_MODES, readback=True),
    PvSpec("cam1:ArrayCounter", Kind.INT, "Frame counter; set to 0 to restart uniqueId at 1",
           initial=0, low=0, high=2**31 - 1, readback=True, every_put=True),
    PvSpec("cam1:SizeX", Kind.INT, "Frame width",
           initial=128, units="px", low=16, high=MAX_SIZE, readback=True),
    PvSpec("cam1:SizeY", Kind.INT, "Frame height",
           initial=128, units="px", low=16, high=MAX_SIZE, readback=True),
    PvSpec("cam1:DataType", Kind.ENUM, "Pixel type",
           initial=1, choices=DATA_TYPES, readback=True),
    PvSpec("cam1:ScanSource", Kind.ENUM, "Where frame positions come from",
           initial=0, choices=SCAN_SOURCES, readback=True),
    PvSpec("cam1:ScanPattern", Kind.ENUM, "Pattern of the detector's own scan",
           initial=1, choices=SCAN_PATTERNS, readback=True),
    PvSpec("cam1:ScanStep", Kind.FLOAT, "Step between scan points",
           initial=0.25, units="um", low=0.001, high=100.0, readback=True),
    PvSpec("cam1:ScanPoints", Kind.INT, "Points in the detector's own scan",
           initial=400, low=1, high=100_000, readback=True),
    PvSpec("cam1:Photons", Kind.FLOAT, "Photons per frame",
           initial=1e6, low=1.0, high=1e12, precision=0, readback=True),
    PvSpec("cam1:Seed", Kind.INT, "Random seed of sample and noise",
           initial=0, low=0, high=2**31 - 1, readback=True),
    PvSpec("cam1:ReplayFile", Kind.STRING, "CXI (.cxi/.h5) or NumPy (.npz) scan to replay",
           initial="", readback=True),
    PvSpec("cam1:Codec", Kind.ENUM, "Compression of published frames, as NDPluginCodec",
           initial=0, choices=CODECS, readback=True),
    PvSpec("cam1:BloscCompressor", Kind.ENUM, "Blosc's inner compressor (Codec blosc)",
           initial=0, choices=BLOSC_COMPRESSORS, readback=True),
    PvSpec("cam1:BloscCLevel", Kind.INT, "Blosc compression level (Codec blosc)",
           initial=5, low=0, high=9, readback=True),
    PvSpec("cam1:BloscShuffle", Kind.ENUM, "Blosc shuffle: None, Byte or Bit (Codec blosc)",
           initial=1, choices=BLOSC_SHUFFLES, readback=True),
)

STATUS_PVS = (
    PvSpec("cam1:ArrayRate_RBV", Kind.FLOAT, "Frames published per second",
           units="Hz", precision=1, writable=False),
    PvSpec("cam1:DetectorState_RBV", Kind.ENUM, "Detector state",
           choices=DETECTOR_STATES, initial=8, writable=False),
    PvSpec("cam1:ArraySizeX_RBV", Kind.INT, "Width of the last frame", units="px",
           writable=False),
    PvSpec("cam1:ArraySizeY_RBV", Kind.INT, "Height of the last frame", units="px",
           writable=False),
    PvSpec("cam1:NumImagesCounter_RBV", Kind.INT, "Frames in the current acquisition",
           writable=False),
    PvSpec("cam1:ColorMode_RBV", Kind.ENUM, "Colour mode", choices=("Mono",), writable=False),
    PvSpec("cam1:Manufacturer_RBV", Kind.STRING, "Manufacturer",
           initial="ptychoedge", writable=False),
    PvSpec("cam1:Model_RBV", Kind.STRING, "Model",
           initial="Simulated ptychography detector", writable=False),
    PvSpec("cam1:StatusMessage_RBV", Kind.STRING, "Last message from the detector",
           initial="", writable=False),
)

PVS = SETTINGS + STATUS_PVS
