"""Compressed frames (lz4, blosc, bslz4) as NDPluginCodec and pvapy-ad-sim-server -hcm
send them, and float32 frames as NDProcess sends them, through a real pvapy-hpc-consumer:
reconstructed exactly like the raw frames."""

from __future__ import annotations

import json
import queue
import struct
import sys
from pathlib import Path

import bitshuffle
import blosc
import h5py
import lz4.block
import numpy as np
import pytest
import torch
from codec_frames import BAD, FLOAT_CODECS, FRAMES, VARIANTS, unique_ids
from conftest import ptychoedge, pva_ready, wait_until
from test_processor import DEEP_QUEUE, INSTRUMENT, Instance, acquire, collect, put

from ptychoedge.inference import frames
from ptychoedge.inference.backends import open_backend
from ptychoedge.inference.batcher import Reconstructor
from ptychoedge.inference.manifest import Manifest, load_model, save_model
from ptychoedge.inference.model import ModelShape, PtychoNN
from ptychoedge.inference.preprocess import FrameError, Preprocessing
from ptychoedge.pvdb.processors import INSTANCE_PROCESSOR
from ptychoedge.sim import physics

CODEC_SERVER = Path(__file__).with_name("codec_frames_server.py")
USHORT = 6  # pvAccess ScalarType of uint16 pixels
H5_FILTERS = {"lz4": 32004, "bslz4": 32008, "blosc": 32001}


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A small model of the shipped preprocessing (128-pixel frames to 64-pixel patches)."""
    torch.manual_seed(0)
    shape = ModelShape(64, 4)
    save_model(PtychoNN(shape), Manifest.for_instrument(
        "small-a", shape, Preprocessing(128, 64), INSTRUMENT), tmp_path / "models")
    return tmp_path / "models"


def diffraction(count: int) -> np.ndarray:
    """The frames codec_frames_server.py sends (same simulator, same seed)."""
    simulator = physics.PtychographySimulator(128, seed=3)
    return simulator.frames(physics.fermat_spiral_positions(count, 0.25e-6))[0]


# -- decoding, in this process (no pvaccess) ----------------------------------------

def h5_chunk(image: np.ndarray, codec: str) -> bytes:
    """A chunk as the HDF5 filters (hdf5plugin's LZ4, Bitshuffle, Blosc) store it."""
    raw = np.ascontiguousarray(image)
    if codec == "lz4":  # total size, block size, then (size, block) pairs: one block here
        block = lz4.block.compress(raw.tobytes(), store_size=False)
        return struct.pack(">QII", raw.nbytes, raw.nbytes, len(block)) + block
    if codec == "bslz4":  # total size, block size in bytes, then the bitshuffle stream
        stream = bitshuffle.compress_lz4(raw.ravel(), 0).tobytes()
        return struct.pack(">QI", raw.nbytes, 8192 // raw.itemsize * raw.itemsize) + stream
    return blosc.compress(raw.tobytes(), typesize=raw.itemsize, cname="lz4")


@pytest.mark.parametrize("codec,settings", VARIANTS)
def test_ndplugincodec_payloads_decode_exactly(codec, settings):
    for image in diffraction(3):
        payload = frames.compress(image, codec, **settings)
        assert payload.nbytes < image.nbytes
        out = frames.decompress(payload, codec, USHORT, image.nbytes)
        np.testing.assert_array_equal(out.reshape(image.shape), image)


@pytest.mark.parametrize("codec", sorted(H5_FILTERS))
def test_hdf5_filter_chunks_decode_exactly(codec):
    image = diffraction(1)[0]
    out = frames.decompress(np.frombuffer(h5_chunk(image, codec), np.uint8), codec, USHORT,
                            image.nbytes)
    np.testing.assert_array_equal(out.reshape(image.shape), image)


def test_real_hdf5_filters_match(tmp_path):
    """The framing assumed above is what hdf5plugin's filters write."""
    hdf5plugin = pytest.importorskip("hdf5plugin")
    images = diffraction(2)
    made = {"lz4": hdf5plugin.LZ4(), "bslz4": hdf5plugin.Bitshuffle(cname="lz4"),
            "blosc": hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.BITSHUFFLE)}
    with h5py.File(tmp_path / "f.h5", "w") as f:
        for codec, options in made.items():
            f.create_dataset(codec, data=images, chunks=(1, 128, 128), **options)
        for codec in made:
            for i, image in enumerate(images):
                chunk = np.frombuffer(f[codec].id.read_direct_chunk((i, 0, 0))[1], np.uint8)
                out = frames.decompress(chunk, codec, USHORT, image.nbytes)
                np.testing.assert_array_equal(out.reshape(image.shape), image)


def test_blosc_header_disagreeing_with_the_size_is_refused_before_decoding():
    image = diffraction(1)[0]
    payload = frames.compress(image, "blosc")
    with pytest.raises(FrameError, match="blosc header says"):
        frames.decompress(payload, "blosc", USHORT, image.nbytes * 4)
    with pytest.raises(FrameError, match="compressed bytes"):
        frames.decompress(payload[:-7], "blosc", USHORT, image.nbytes)


def test_unknown_codec_names_what_is_known():
    with pytest.raises(frames.CodecUnavailable, match="unknown codec.*blosc, bslz4, lz4"):
        frames.decompress(np.zeros(8, np.uint8), "jpeg", USHORT, 16)


# -- real processes -----------------------------------------------------------------

def reconstructions(outputs: dict, ids) -> np.ndarray:
    return np.stack([np.asarray(outputs[i]["value"]).reshape(2, 64, 64) for i in ids])


def test_compressed_and_float_streams_are_reconstructed_like_the_raw_frames(
        spawn, prefix, pva, model_dir, tmp_path):
    channel, go = prefix + "codec:Image", tmp_path / "go"
    server = spawn(sys.executable, str(CODEC_SERVER), channel, str(go), name="codec-frames")
    instance = Instance(spawn, pva, channel, prefix, model_dir, batchSize=1)
    wanted = set(range(1, 1 + FRAMES * (1 + len(VARIANTS) + len(FLOAT_CODECS))))
    outputs = collect(pva, instance.output, wanted, go.touch)
    raw = reconstructions(outputs, unique_ids(0))
    assert np.isfinite(raw).all() and raw.std() > 0
    names = [f"{codec} {settings}" for codec, settings in VARIANTS] + [
        f"float32, {codec}" for codec in FLOAT_CODECS]
    for variant, name in enumerate(names, start=1):
        np.testing.assert_array_equal(reconstructions(outputs, unique_ids(variant)), raw,
                                      err_msg=name)
    instance.wait_published(len(wanted))  # its report comes up to 0.5 s later
    stats = instance.stats()
    assert stats["errors"] == 0 and stats["published"] == len(wanted)
    server.stop()


def test_bad_compressed_frames_are_still_refused(spawn, prefix, pva, model_dir, tmp_path):
    channel, go = prefix + "codec:Image", tmp_path / "go"
    server = spawn(sys.executable, str(CODEC_SERVER), channel, str(go), "bad",
                   name="codec-frames")
    instance = Instance(spawn, pva, channel, prefix, model_dir)
    go.touch()
    wait_until(lambda: instance.stats()["errors"] >= len(BAD), 60, "the bad frames",
               instance.child)
    instance.wait_published(1)
    stats = instance.stats()
    assert stats["published"] == 1 and stats["errors"] == len(BAD)
    for kind in set(BAD.values()):
        assert stats[f"errors_{kind}"] == list(BAD.values()).count(kind), kind
    assert instance.child.alive()
    server.stop()


def test_missing_codec_package_is_one_clear_message(spawn, prefix, pva, model_dir, tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "blosc.py").write_text("raise ImportError('blosc hidden by the test')\n")
    channel, go = prefix + "codec:Image", tmp_path / "go"
    server = spawn(sys.executable, str(CODEC_SERVER), channel, str(go), name="codec-frames")
    args = {"model": "small-a", "modelDir": str(model_dir), "backend": "torch", "batchSize": 1}
    consumer = spawn(
        "pvapy-hpc-consumer", "--input-channel", channel, "--output-channel",
        prefix + "recon:1", "--status-channel", prefix + "recon:1:status",
        "--processor-class", INSTANCE_PROCESSOR,
        "--processor-args", json.dumps(args),
        "--report-period", "0.5", "--disable-curses", name="consumer",
        env={"PYTHONPATH": str(hidden)})
    wait_until(pva_ready(pva, prefix + "recon:1:status"), 60, "consumer status", consumer)
    go.touch()
    blosc_frames = FRAMES * sum(codec == "blosc" for codec, _ in VARIANTS)
    others = FRAMES * (1 + len(VARIANTS) + len(FLOAT_CODECS)) - blosc_frames

    def stats() -> dict:
        status = pva.get(prefix + "recon:1:status", timeout=5)
        return status["userStats"]

    wait_until(lambda: stats()["published"] + stats()["errors"] >= others + blosc_frames, 60,
               "every frame", consumer)
    assert stats()["published"] == others  # raw, lz4, bslz4 and float all reconstructed
    assert stats()["errors_decode"] == blosc_frames
    said = [line for line in consumer.log().splitlines() if "cannot be decoded" in line]
    assert len(said) == 1, said
    assert "'blosc'" in said[0] and "pip install" in said[0]
    server.stop()


def test_simulated_detector_publishes_every_codec(spawn, prefix, pva, model_dir, tmp_path):
    """`cam1:Codec`: the same scan, raw and then compressed, gives the same patches."""
    sim = spawn(*ptychoedge("sim", "--prefix", prefix, "--no-stage", "--log-dir",
                            str(tmp_path)), name="sim")
    wait_until(sim.ready, 60, "simulated detector", sim)
    points = 5
    put(pva, prefix + "cam1:ScanPoints", points)
    instance = Instance(spawn, pva, prefix + "Pva1:Image", prefix, model_dir, batchSize=1)
    put(pva, prefix + "cam1:ImageMode", "Single")
    put(pva, prefix + "cam1:Acquire", 1)
    instance.wait_published(1)  # the output channel exists from the first output on
    patches = {}
    first = 2
    for codec in ("None", "lz4", "blosc", "bslz4"):
        put(pva, prefix + "cam1:Codec", codec)
        ids = set(range(first, first + points))
        wait_until(lambda: pva.get(prefix + "cam1:Acquire_RBV", timeout=5)["value"]["index"]
                   == 0, 30, "the last acquisition's end", sim)
        outputs = collect(pva, instance.output, ids, lambda: acquire(pva, prefix, points, 0.02))
        patches[codec] = reconstructions(outputs, sorted(ids))
        first += points
    for codec in ("lz4", "blosc", "bslz4"):
        np.testing.assert_array_equal(patches[codec], patches["None"], err_msg=codec)
    assert instance.stats()["errors"] == 0


# -- pvapy-ad-sim-server -hcm: chunks straight from compressed HDF5 files --------------

def write_compressed_h5(path: Path, images: np.ndarray, codec: str, hdf5plugin) -> None:
    """Frames in an HDF5 file, one chunk each, compressed by the real filters."""
    options = {"lz4": hdf5plugin.LZ4(), "bslz4": hdf5plugin.Bitshuffle(cname="lz4"),
               "blosc": hdf5plugin.Blosc(cname="lz4")}[codec]
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=images, chunks=(1, *images.shape[1:]), **options)


@pytest.mark.parametrize("codec", sorted(H5_FILTERS))
def test_ad_sim_server_compressed_hdf5_stream(codec, spawn, prefix, pva, model_dir, tmp_path):
    # pvapy-ad-sim-server reads the file's first frame through the filter (with
    # hdf5plugin, which it imports when it is there): without it, it cannot start.
    hdf5plugin = pytest.importorskip("hdf5plugin")
    images = diffraction(FRAMES)
    write_compressed_h5(tmp_path / "scan.h5", images, codec, hdf5plugin)
    channel = prefix + "hcm:Image"
    instance = Instance(spawn, pva, channel, prefix, model_dir, batchSize=1)
    server = spawn("pvapy-ad-sim-server", "-if", str(tmp_path / "scan.h5"), "-hds", "/data",
                   "-hcm", "-cn", channel, "-fps", "50", "-rt", "60", "-std", "1", "-dc",
                   "-rp", "0", name="ad-sim-server")
    wait_until(lambda: instance.stats()["published"] >= 2 * FRAMES, 60, "the frames",
               server)
    stats = instance.stats()
    assert stats["errors"] == 0
    # what the raw frames give, here with the same model (one frame per batch, as there)
    model, manifest = load_model("small-a", model_dir)
    reconstructor = Reconstructor(open_backend("torch", "fp32", model, manifest, threads=1),
                                  manifest)
    expected = np.stack([reconstructor([image])[0][0] for image in images])
    outputs = collect_some(pva, instance.output, FRAMES)
    assert len(outputs) == FRAMES
    for unique_id, output in outputs.items():
        got = np.asarray(output["value"]).reshape(2, 64, 64)
        np.testing.assert_allclose(got, expected[(unique_id - 1) % FRAMES], rtol=0, atol=1e-6,
                                   err_msg=f"frame {unique_id}")
    server.stop()


def collect_some(ctx, channel: str, count: int, timeout: float = 60) -> dict[int, object]:
    """The next `count` outputs on `channel` with distinct uniqueIds."""
    received: queue.Queue = queue.Queue()
    subscription = ctx.monitor(channel, received.put, request=DEEP_QUEUE)
    outputs: dict[int, object] = {}
    try:
        while len(outputs) < count:
            output = received.get(timeout=timeout)
            outputs[output["uniqueId"]] = output
    finally:
        subscription.close()
    return outputs
