"""Autoscaler benchmark: what automatic scaling settles on, against a hand sweep, in one run.

For each detector rate it runs the pipeline with a fixed number of instances,
1 to --max-instances (the hand sweep: processed rate, frames lost and the peak
backlog of each; a count holds the rate when nothing is lost and at most half a
second of frames ever waits),
then starts again from one instance with automatic scaling on and records the
count it settled on, how long that took, the processed rate and the frames
lost. A frame counts as delivered only when its reconstruction was published.
Writes autoscale.png: processed rate and frames lost against instances for
each detector rate, with the autoscaler's choice marked.

    python benchmarks/autoscale.py --rates 150 300 500 --max-instances 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from p4p.client.thread import Context
from waiting import read, stop, wait


class Bench:
    def __init__(self, logs: Path):
        tag = uuid.uuid4().hex[:6]
        self.d, self.p = f"bs{tag}:", f"be{tag}:"
        self.ctx = Context("pva", nt=False)
        self.children = []
        for name, args in (("sim", ["sim", "--prefix", self.d, "--no-stage", "--log-dir",
                                     str(logs)]),
                           ("ioc", ["ioc", "--prefix", self.p, "--input-channel",
                                    self.d + "Pva1:Image", "--state-dir", str(logs / "state")])):
            log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
            self.children.append(subprocess.Popen(
                [sys.executable, "-m", "ptychoedge.iocs.cli", *args], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        wait(lambda: self.get(self.d + "cam1:DetectorState_RBV") == "Idle", 120, "the detector")
        wait(lambda: self.get(self.p + "State_RBV") is not None, 120, "the pipeline IOC")
        self.put(self.p + "Run", "Run")

    def get(self, name: str):
        return read(self.ctx, name)

    def put(self, name: str, value) -> None:
        self.ctx.put(name, value, timeout=5)

    def fixed(self, instances: int) -> None:
        self.put(self.p + "AutoScale", "Off")
        self.put(self.p + "InstancesPerNode", instances)
        wait(lambda: self.get(self.p + "State_RBV") == "Running"
             and self.get(self.p + "Instances_RBV") == instances, 120, f"{instances} instances")

    def acquire(self, frames: int, rate: float) -> None:
        wait(lambda: self.get(self.d + "cam1:Acquire_RBV") == "Done", 60, "the detector idle")
        for name, value in (("cam1:ImageMode", "Multiple"), ("cam1:NumImages", frames),
                            ("cam1:AcquirePeriod", 1.0 / rate), ("cam1:Acquire", 1)):
            self.put(self.d + name, value)

    def warm_up(self, rate: float) -> None:
        """Two seconds of frames: new instances hold their first outputs for a second."""
        self.acquire(int(2 * rate), rate)
        time.sleep(1.0)
        wait(lambda: self.get(self.d + "cam1:Acquire_RBV") == "Done"
             and self.get(self.p + "Backlog_RBV") == 0, 60, "the warm-up drained")

    def trial(self, rate: float, seconds: float, watch=None) -> dict:
        """Acquire at `rate` for `seconds`; frames published and lost, once all drained."""
        wait(lambda: self.get(self.d + "cam1:Acquire_RBV") == "Done", 60, "the detector idle")
        before = self.get(self.p + "FramesProcessed_RBV")
        frames = int(rate * seconds)
        self.acquire(frames, rate)
        started, rates, inputs, backlog = time.monotonic(), [], [], 0
        time.sleep(1.0)
        while self.get(self.d + "cam1:Acquire_RBV") == "Acquire":
            rates.append(self.get(self.p + "ProcessedRate_RBV"))
            inputs.append(self.get(self.p + "InputRate_RBV"))
            backlog = max(backlog, self.get(self.p + "Backlog_RBV"))
            if watch:
                watch(time.monotonic() - started)
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # drain: everything published, or given up
            processed = self.get(self.p + "FramesProcessed_RBV") - before
            if processed >= frames or (self.get(self.p + "Backlog_RBV") == 0
                                       and self.get(self.p + "ProcessedRate_RBV") == 0):
                break
            time.sleep(0.5)
        processed = self.get(self.p + "FramesProcessed_RBV") - before
        # Held: nothing lost, and nothing piled up (at most half a second of frames waiting)
        return {"frames": frames, "processed": processed, "lost": frames - processed,
                "processed_rate": steady_median(rates), "input_rate": steady_median(inputs),
                "peak_backlog": backlog, "held": processed == frames and backlog <= rate / 2}

    def autoscaled(self, rate: float, seconds: float) -> dict:
        self.fixed(1)
        self.put(self.p + "AutoScale", "On")
        changes = [(0.0, 1)]

        def watch(elapsed: float) -> None:
            count = self.get(self.p + "InstancesPerNode_RBV")
            if count != changes[-1][1]:
                changes.append((elapsed, count))
        result = self.trial(rate, seconds, watch)
        result.update(instances=changes[-1][1], settled_after=changes[-1][0],
                      steps=[count for _, count in changes],
                      message=self.get(self.p + "Message_RBV"))
        return result

    def stop(self) -> None:
        stop(self.children)
        self.ctx.close()


def steady_median(samples: list[float]) -> float:
    """The median once the first quarter (the start) is left out."""
    steady = sorted(samples[len(samples) // 4:]) or [0.0]
    return steady[len(steady) // 2]


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axis, lost_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    for entry in results:
        counts = [t["instances"] for t in entry["sweep"]]
        line, = rate_axis.plot(counts, [t["processed_rate"] for t in entry["sweep"]], "o-",
                               label=f"detector {entry['rate']:g} Hz")
        rate_axis.axhline(entry["rate"], color=line.get_color(), ls=":", lw=0.8)
        lost_axis.plot(counts, [t["lost"] + t["peak_backlog"] for t in entry["sweep"]], "o-",
                       color=line.get_color(), label=f"detector {entry['rate']:g} Hz")
        auto = entry["auto"]
        rate_axis.plot([auto["instances"]], [auto["processed_rate"]], "*", ms=16,
                       color=line.get_color())
    rate_axis.set(xlabel="instances", ylabel="processed rate (Hz)",
                  title="processed rate (dotted: detector; star: autoscaler)")
    lost_axis.set(xlabel="instances", ylabel="frames lost or waiting (peak backlog)",
                  title="frames lost + peak backlog in the hand sweep")
    lost_axis.set_yscale("symlog", linthresh=1)
    for axis in (rate_axis, lost_axis):
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[150, 300, 500])
    parser.add_argument("--max-instances", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="per hand-sweep trial")
    parser.add_argument("--auto-seconds", type=float, default=40.0,
                        help="per automatic-scaling trial")
    parser.add_argument("--out", type=Path, default=Path("benchmark-logs/autoscale"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    bench = Bench(args.out)
    results = []
    try:
        bench.put(bench.p + "MaxInstances", args.max_instances)
        for rate in args.rates:
            sweep = []
            for n in range(1, args.max_instances + 1):
                bench.fixed(n)
                bench.warm_up(rate)
                trial = {"instances": n, **bench.trial(rate, args.seconds)}
                sweep.append(trial)
                print(f"{rate:6g} Hz, {n} fixed: detector delivered {trial['input_rate']:.0f} Hz, "
                      f"{trial['processed_rate']:6.0f} Hz processed, "
                      f"{trial['lost']} of {trial['frames']} lost, backlog up to "
                      f"{trial['peak_backlog']}: {'held' if trial['held'] else 'NOT held'}",
                      flush=True)
            auto = bench.autoscaled(rate, args.auto_seconds)
            print(f"{rate:6g} Hz, automatic: settled on {auto['instances']} after "
                  f"{auto['settled_after']:.0f} s (steps {auto['steps']}), "
                  f"{auto['processed_rate']:.0f} Hz processed, {auto['lost']} of "
                  f"{auto['frames']} lost | {auto['message']}", flush=True)
            results.append({"rate": rate, "sweep": sweep, "auto": auto})
    finally:
        bench.stop()
    (args.out / "autoscale.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out / "autoscale.png")
    print("\n| detector (Hz) | smallest count that held (sweep) | autoscaler settled on | "
          "settled after (s) | processed (Hz) | frames lost while scaling |")
    print("| --- | --- | --- | --- | --- | --- |")
    for entry in results:
        free = [t["instances"] for t in entry["sweep"] if t["held"]]
        auto = entry["auto"]
        print(f"| {entry['rate']:g} | {min(free) if free else 'none'} | {auto['instances']} | "
              f"{auto['settled_after']:.0f} | {auto['processed_rate']:.0f} | "
              f"{auto['lost']} of {auto['frames']} |")
    print(f"\npicture: {args.out / 'autoscale.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
