"""Pipeline benchmark: simulator -> N inference instances (pvapy distributor) -> collector.

For N = 1 and 2 it finds the highest detector rate at which every frame comes
out of the pipeline (no uniqueId gap at any instance, every frame published,
nothing left queued), and divides it by N x the bare-model rate of the same
backend, batch and threads, measured in the same run. Goal: >= 0.9.

    python benchmarks/pipeline.py [--backend onnxruntime --precision fp32 --batch 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from p4p.client.thread import Context
from waiting import stop, wait

from ptychoedge.inference.backends import open_model
from ptychoedge.inference.manifest import DEFAULT_MODEL, MODEL_DIR
from ptychoedge.inference.onnx_export import calibration_inputs
from ptychoedge.pvdb.processors import COLLECTOR_PROCESSOR, INSTANCE_PROCESSOR


def bare_rate(args) -> float:
    """Frames per second of the model alone, one process, same backend/batch/threads."""
    backend, manifest = open_model(args.backend, args.precision, args.model, args.model_dir,
                                   threads=args.threads)
    inputs = calibration_inputs(manifest)[: args.batch]
    inputs = np.repeat(inputs, -(-args.batch // len(inputs)), axis=0)[: args.batch]
    for _ in range(5):
        backend.infer(inputs)
    started, batches = time.perf_counter(), 0
    while time.perf_counter() - started < 3.0:
        backend.infer(inputs)
        batches += 1
    return batches * args.batch / (time.perf_counter() - started)


class Pipeline:
    def __init__(self, args, instances: int, logs: Path):
        self.ctx = Context("pva")
        self.prefix = f"bench{uuid.uuid4().hex[:6]}:"
        self.instances = instances
        self.children: list[subprocess.Popen] = []
        p = self.prefix

        def start(name: str, command: list[str]) -> None:
            log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
            self.children.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL))

        start("sim", [sys.executable, "-m", "ptychoedge.iocs.cli", "sim", "--prefix", p,
                      "--no-stage", "--log-dir", str(logs)])
        config = {"model": args.model, "modelDir": str(args.model_dir), "backend": args.backend,
                  "precision": args.precision, "batchSize": args.batch, "threads": args.threads}
        for i in range(1, instances + 1):
            start(f"instance-{i}", [
                "pvapy-hpc-consumer", "-ic", p + "Pva1:Image", "--consumer-id", str(i),
                "-oc", f"{p}recon:{i}", "-sc", f"{p}recon:{i}:status",
                "-pc", INSTANCE_PROCESSOR,
                "-pa", json.dumps(config), "-dg", "inference", "-du", "1", "-dt", "uniqueId",
                "-oo", str(instances), "-sqs", str(args.server_queue), "-rp", "0.5", "-dc"])
        start("collector", [
            "pvapy-hpc-collector", "-ic", f"{p}recon:*",
            "-pid", ",".join(str(i) for i in range(1, instances + 1)),
            "-sc", p + "collector:status",
            "-pc", COLLECTOR_PROCESSOR, "-pa", json.dumps({"prefix": p, "model": args.model,
                                                         "modelDir": str(args.model_dir)}),
            "-rp", "0.5", "-dc"])
        wait(lambda: str(self.ctx.get(p + "cam1:DetectorState_RBV", timeout=1)) == "Idle", 120,
             "the simulator")
        for i in range(1, instances + 1):
            wait(lambda i=i: self.ctx.get(f"{p}recon:{i}:status", timeout=1), 60, "instances")
        wait(lambda: self.ctx.get(p + "collector:status", timeout=1), 60, "the collector")

    def totals(self) -> dict[str, int]:
        totals = {"published": 0, "missed": 0, "queued": 0}
        for i in range(1, self.instances + 1):
            status = self.ctx.get(f"{self.prefix}recon:{i}:status", timeout=5)
            totals["published"] += status["userStats"]["published"]
            totals["queued"] += status["userStats"]["queued"]
            totals["missed"] += status["processorStats"]["nMissed"]
        totals["placed"] = self.ctx.get(self.prefix + "collector:status",
                                        timeout=5)["userStats"]["placed"]
        return totals

    def trial(self, rate: float, seconds: float) -> tuple[bool, dict]:
        """Run `rate` for `seconds`; whether every frame came through, and the counts."""
        previous = self.totals()
        while True:  # let the last trial's frames drain first
            time.sleep(1.0)
            before = self.totals()
            if before["queued"] == 0 and before["published"] == previous["published"]:
                break
            previous = before
        frames = int(rate * seconds)
        for name, value in (("cam1:ImageMode", "Multiple"), ("cam1:NumImages", frames),
                            ("cam1:AcquirePeriod", 1.0 / rate), ("cam1:Acquire", 1)):
            self.ctx.put(self.prefix + name, value, timeout=5)
        time.sleep(0.5)
        wait(lambda: int(self.ctx.get(self.prefix + "cam1:Acquire", timeout=2)) == 0,
             seconds + 60, "the acquisition's end")
        time.sleep(1.5)  # what is in flight, and a fresh status
        after = self.totals()
        delta = {key: after[key] - before[key] for key in after}
        delta["queued"] = after["queued"]
        delta["frames"] = frames
        ok = delta["published"] == frames and delta["missed"] == 0 and delta["queued"] == 0
        return ok, delta

    def stop(self) -> None:
        stop(self.children, 15)
        self.ctx.close()


def highest_rate(pipeline: Pipeline, start: float, seconds: float) -> tuple[float, dict]:
    """Raise the rate by 20% while every frame comes through, then narrow down once."""
    best, best_counts, rate = 0.0, {}, start
    while True:
        ok, counts = pipeline.trial(rate, seconds)
        print(f"    {rate:8.1f} Hz: {'ok  ' if ok else 'LOST'} {counts}", flush=True)
        if not ok:
            break
        best, best_counts, rate = rate, counts, rate * 1.2
    if best:
        middle = (best + rate) / 2
        ok, counts = pipeline.trial(middle, seconds)
        print(f"    {middle:8.1f} Hz: {'ok  ' if ok else 'LOST'} {counts}", flush=True)
        if ok:
            best, best_counts = middle, counts
    return best, best_counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="threads per instance")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds per trial")
    parser.add_argument("--server-queue", type=int, default=100,
                        help="pvAccess monitor queue per instance (frames)")
    parser.add_argument("--logs", type=Path, default=Path("benchmark-logs/pipeline"))
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)

    bare = bare_rate(args)
    print(f"bare model: {args.model} {args.backend} {args.precision} batch {args.batch}, "
          f"{args.threads} thread(s): {bare:.1f} frames/s", flush=True)
    results = []
    for n in args.instances:
        print(f"N = {n} instance(s)", flush=True)
        pipeline = Pipeline(args, n, args.logs)
        try:
            rate, counts = highest_rate(pipeline, 0.5 * n * bare, args.seconds)
        finally:
            pipeline.stop()
        ratio = rate / (n * bare)
        results.append((n, rate, ratio))
        print(f"N = {n}: highest loss-free rate {rate:.1f} Hz = {ratio:.2f} x N x bare "
              f"(goal >= 0.9)", flush=True)
    print("\n| N | bare model (frames/s) | highest loss-free rate (Hz) | ratio |")
    print("| --- | --- | --- | --- |")
    for n, rate, ratio in results:
        print(f"| {n} | {bare:.1f} | {rate:.1f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
