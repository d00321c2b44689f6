"""Soak benchmark: a sustained run at 80% of the measured capacity, no frame lost, flat memory.

Starts the simulated detector and the pipeline IOC with a fixed number of
instances, measures the capacity (the highest rate at which a short trial
loses nothing and piles nothing up: every frame published, at most half a
second of frames ever waiting), then acquires continuously at 80% of it for
--minutes. Every --sample seconds it records the frames in (the detector's
counter) and out (FramesProcessed_RBV), FramesMissed_RBV, Backlog_RBV,
LatencyP99_RBV and the resident memory (VmRSS) of every process: the IOC, its
instances and collector, and the simulator's processes. At the end it prints
frames in/out/lost and each process's RSS at the start and end and its slope
(MB/h, least squares after the first minute), and writes soak.png (rates,
backlog and RSS against time) and soak.json.

    python benchmarks/soak.py [--minutes 10] [--rate HZ] [--instances 2]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from p4p.client.thread import Context
from waiting import read, stop, wait

WARM_UP = 60.0  # s left out of the RSS slope: caches and allocators settle first


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the command name may hold spaces and parentheses: the ppid follows the last ')'
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def process_name(pid: int) -> str | None:
    """A stable name for one of our processes, from its command line."""
    try:
        args = (Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                .split("\0"))
    except OSError:
        return None
    line = " ".join(args)
    if "--consumer-id" in args:
        return f"instance-{args[args.index('--consumer-id') + 1]}"
    for pattern, name in (("pvapy-hpc-collector", "collector"), ("pvapy-mirror", "mirror"),
                          ("image_server", "image-server"), ("detector_ioc", "detector-ioc"),
                          ("stage_ioc", "stage-ioc"), ("cli ioc", "pipeline-ioc"),
                          ("cli sim", "sim-launcher")):
        if pattern in line:
            return name
    return Path(args[0]).name or None


def rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(found.group(1)) / 1024 if found else None


class Soak:
    def __init__(self, logs: Path, instances: int):
        tag = uuid.uuid4().hex[:6]
        self.d, self.p = f"ss{tag}:", f"se{tag}:"
        self.ctx = Context("pva", nt=False)
        self.children: dict[str, subprocess.Popen] = {}
        for name, args in (("sim", ["sim", "--prefix", self.d, "--no-stage", "--log-dir",
                                     str(logs)]),
                           ("ioc", ["ioc", "--prefix", self.p, "--input-channel",
                                    self.d + "Pva1:Image", "--state-dir",
                                    str(logs / f"state-{tag}")])):
            log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "ptychoedge.iocs.cli", *args], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait(lambda: self.get(self.d + "cam1:DetectorState_RBV") == "Idle", 120, "the detector")
        wait(lambda: self.get(self.p + "State_RBV") is not None, 120, "the pipeline IOC")
        self.put(self.p + "AutoScale", "Off")
        self.put(self.p + "InstancesPerNode", instances)
        self.put(self.p + "Run", "Run")
        wait(lambda: self.get(self.p + "State_RBV") == "Running"
             and self.get(self.p + "Instances_RBV") == instances, 180, f"{instances} instances")

    def get(self, name: str):
        return read(self.ctx, name)

    def put(self, name: str, value) -> None:
        self.ctx.put(name, value, timeout=5)

    def counts(self) -> dict:
        names = {"processed": "FramesProcessed_RBV", "missed": "FramesMissed_RBV",
                 "backlog": "Backlog_RBV", "p99": "LatencyP99_RBV", "errors": "FrameErrors_RBV",
                 "in_rate": "InputRate_RBV", "out_rate": "ProcessedRate_RBV",
                 "restarts": "Restarts_RBV"}
        values = {key: self.get(self.p + pv) for key, pv in names.items()}
        values["detector"] = self.get(self.d + "cam1:ArrayCounter_RBV")
        return values

    def memory(self) -> dict[str, float]:
        found = {}
        for child in self.children.values():
            for pid in process_tree(child.pid):
                name, rss = process_name(pid), rss_mb(pid)
                if name and rss is not None:
                    found[name] = found.get(name, 0.0) + rss
        return found

    def acquire(self, frames: int | None, rate: float) -> None:
        wait(lambda: self.get(self.d + "cam1:Acquire_RBV") == "Done", 60, "the detector idle")
        mode = "Continuous" if frames is None else "Multiple"
        self.put(self.d + "cam1:ImageMode", mode)
        if frames is not None:
            self.put(self.d + "cam1:NumImages", frames)
        self.put(self.d + "cam1:AcquirePeriod", 1.0 / rate)
        self.put(self.d + "cam1:Acquire", 1)

    def drained(self, processed_target: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.counts()
            if counts["processed"] >= processed_target or (
                    counts["backlog"] == 0 and counts["out_rate"] == 0):
                return
            time.sleep(0.5)

    def trial(self, rate: float, seconds: float) -> dict:
        """`rate` for `seconds`: held when every frame is published and little piles up."""
        before = self.counts()
        frames = int(rate * seconds)
        self.acquire(frames, rate)
        peak = 0
        time.sleep(1.0)
        while self.get(self.d + "cam1:Acquire_RBV") == "Acquire":
            peak = max(peak, self.get(self.p + "Backlog_RBV") or 0)
            time.sleep(0.5)
        self.drained(before["processed"] + frames)
        after = self.counts()
        sent = after["detector"] - before["detector"]
        processed = after["processed"] - before["processed"]
        return {"rate": rate, "frames": sent, "processed": processed,
                "missed": after["missed"] - before["missed"], "peak_backlog": peak,
                "held": sent == frames and processed == frames and peak <= rate / 2}

    def stop(self) -> None:
        stop(list(self.children.values()))
        self.ctx.close()


def capacity(soak: Soak, start: float, seconds: float, ceiling: float) -> float:
    """Raise the rate by 25% while a trial holds, then try the middle once."""
    soak.trial(start / 2, 2.0)  # warm-up: new instances hold their first outputs
    best, rate = 0.0, start
    while rate <= ceiling:
        result = soak.trial(rate, seconds)
        print(f"  capacity trial {rate:7.1f} Hz: {'held' if result['held'] else 'NOT held'} "
              f"{result}", flush=True)
        if not result["held"]:
            break
        best, rate = rate, rate * 1.25
    if best and rate <= ceiling:
        middle = (best + rate) / 2
        result = soak.trial(middle, seconds)
        print(f"  capacity trial {middle:7.1f} Hz: {'held' if result['held'] else 'NOT held'} "
              f"{result}", flush=True)
        if result["held"]:
            best = middle
    return best


def slope_mb_per_hour(times: list[float], values: list[float]) -> float:
    keep = [(t, v) for t, v in zip(times, values, strict=True) if t >= WARM_UP]
    if len(keep) < 3:
        keep = list(zip(times, values, strict=True))
    if len(keep) < 2:
        return 0.0
    t, v = np.array(keep).T
    return float(np.polyfit(t / 3600.0, v, 1)[0])


def plot(samples: list[dict], rate: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s["t"] for s in samples]) / 60.0
    figure, (rates, backlog, memory) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    rates.plot(t, [s["in_rate"] for s in samples], label="input (InputRate_RBV)")
    rates.plot(t, [s["out_rate"] for s in samples], label="processed (ProcessedRate_RBV)")
    rates.axhline(rate, color="grey", ls=":", lw=0.8, label=f"set {rate:.0f} Hz")
    rates.set(ylabel="Hz", title="rates")
    lost = backlog.twinx()
    backlog.plot(t, [s["backlog"] for s in samples], color="C2", label="backlog (frames)")
    lost.plot(t, [s["missed"] for s in samples], color="C3", label="frames missed (total)")
    backlog.set(ylabel="backlog (frames)", title="backlog and frames lost")
    lost.set_ylabel("frames missed")
    backlog.legend(loc="upper left")
    lost.legend(loc="upper right")
    names = sorted({name for s in samples for name in s["rss"]})
    for name in names:
        memory.plot(t, [s["rss"].get(name, np.nan) for s in samples], label=name)
    memory.set(xlabel="minutes", ylabel="RSS (MB)", title="resident memory per process")
    memory.legend(fontsize=8, ncol=2)
    rates.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--rate", type=float, default=None,
                        help="soak at this rate (Hz) and skip the capacity measurement")
    parser.add_argument("--fraction", type=float, default=0.8,
                        help="share of the measured capacity to soak at")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--start-rate", type=float, default=100.0,
                        help="first capacity trial (Hz)")
    parser.add_argument("--max-rate", type=float, default=2000.0,
                        help="highest capacity trial (Hz)")
    parser.add_argument("--trial-seconds", type=float, default=6.0)
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=Path("benchmark-logs/soak"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    soak = Soak(args.out, args.instances)
    samples: list[dict] = []
    measured = None
    try:
        if args.rate is None:
            measured = capacity(soak, args.start_rate, args.trial_seconds, args.max_rate)
            if not measured:
                raise SystemExit(f"soak: not even {args.start_rate} Hz held")
            rate = args.fraction * measured
            print(f"capacity with {args.instances} instance(s): {measured:.1f} Hz; soaking "
                  f"at {rate:.1f} Hz for {args.minutes:g} min", flush=True)
        else:
            rate = args.rate
            soak.trial(rate / 2, 2.0)  # warm-up
            print(f"soaking at {rate:.1f} Hz for {args.minutes:g} min", flush=True)
        before = soak.counts()
        soak.acquire(None, rate)
        started = time.monotonic()
        end = started + 60.0 * args.minutes
        while True:
            now = time.monotonic()
            counts = soak.counts()
            sample = {"t": now - started, **counts, "rss": soak.memory(),
                      "in": counts["detector"] - before["detector"],
                      "out": counts["processed"] - before["processed"],
                      "missed": counts["missed"] - before["missed"]}
            samples.append(sample)
            total = sum(sample["rss"].values())
            print(f"\r{sample['t'] / 60:5.1f}/{args.minutes:g} min  in {sample['in']:7d}  "
                  f"out {sample['out']:7d}  missed {sample['missed']:4d}  backlog "
                  f"{counts['backlog']:4d}  p99 {counts['p99']:7.1f} ms  "
                  f"RSS {total:7.0f} MB", end="", flush=True)
            if now >= end:
                break
            time.sleep(max(0.0, min(args.sample - (time.monotonic() - now), end - now)))
        print(flush=True)
        soak.put(soak.d + "cam1:Acquire", 0)
        wait(lambda: soak.get(soak.d + "cam1:Acquire_RBV") == "Done", 30, "the detector stop")
        time.sleep(1.0)
        sent = soak.get(soak.d + "cam1:ArrayCounter_RBV") - before["detector"]
        soak.drained(before["processed"] + sent)
        time.sleep(1.5)  # a fresh status after the last outputs
        final = soak.counts()
        final_rss = soak.memory()
    finally:
        soak.stop()

    frames_out = final["processed"] - before["processed"]
    result = {
        "rate": rate, "capacity": measured, "instances": args.instances,
        "minutes": args.minutes, "frames_in": sent, "frames_out": frames_out,
        "frames_lost": sent - frames_out, "frames_missed": final["missed"] - before["missed"],
        "frame_errors": final["errors"] - before["errors"],
        "restarts": final["restarts"], "peak_backlog": max(s["backlog"] for s in samples),
        "latency_p99_max_ms": max(s["p99"] for s in samples),
        "rss": {}, "samples": samples,
    }
    print(f"\nsoak at {rate:.1f} Hz ({args.fraction:.0%} of {measured:.1f} Hz) for "
          f"{args.minutes:g} min with {args.instances} instance(s)" if measured else
          f"\nsoak at {rate:.1f} Hz for {args.minutes:g} min with {args.instances} instance(s)")
    print(f"frames in {sent}, out {frames_out}, lost {sent - frames_out} "
          f"(FramesMissed {result['frames_missed']}, errors {result['frame_errors']}, "
          f"restarts {result['restarts']}); backlog up to {result['peak_backlog']}; "
          f"latency p99 up to {result['latency_p99_max_ms']:.1f} ms")
    print("\n| process | RSS start (MB) | RSS end (MB) | slope (MB/h) |")
    print("| --- | --- | --- | --- |")
    for name in sorted({n for s in samples for n in s["rss"]}):
        series = [(s["t"], s["rss"][name]) for s in samples if name in s["rss"]]
        start_mb, end_mb = series[0][1], final_rss.get(name, series[-1][1])
        slope = slope_mb_per_hour([t for t, _ in series], [v for _, v in series])
        result["rss"][name] = {"start": start_mb, "end": end_mb, "slope_mb_per_h": slope}
        print(f"| {name} | {start_mb:.1f} | {end_mb:.1f} | {slope:+.1f} |")
    (args.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(samples, rate, args.out / "soak.png")
    print(f"\npicture: {args.out / 'soak.png'}; figures: {args.out / 'soak.json'}")
    return 0 if sent == frames_out else 1


if __name__ == "__main__":
    raise SystemExit(main())
