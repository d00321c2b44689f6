"""Transport benchmark: our detector simulator against pvapy-ad-sim-server.

Each case sends frames of one size at one rate for a few seconds into the same
no-op `pvapy-hpc-consumer`, first from `pvapy-ad-sim-server`, then from
`ptychoedge sim`, and reads the consumer's own counters. It prints, per case,
the delivered rate and frames missed of each and the ratio ours/peer, and at the
end the ratio at the highest rate the peer held with no loss (goal: >= 0.95).

    python benchmarks/transport.py [--seconds 5] [--sizes 128 512]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from p4p.client.thread import Context
from waiting import wait

START_DELAY = 2.0  # s for a consumer to connect before frames flow
REPORT_PERIOD = 0.5  # s between the consumer's status updates
RATES = {128: (500, 1000, 1500, 2000, 2500, 3000), 512: (250, 500, 750, 1000, 1250)}


@dataclass
class Delivery:
    received: int
    missed: int
    rate: float

    def __str__(self) -> str:
        return f"{self.rate:8.1f} Hz {self.missed:6d} missed"


class Consumer:
    """A no-op pvapy-hpc-consumer on `channel`, read through its status channel."""

    def __init__(self, channel: str, ctx: Context, log: Path):
        self.status = f"bench{uuid.uuid4().hex[:6]}:status"
        self.ctx = ctx
        self.process = subprocess.Popen(
            ["pvapy-hpc-consumer", "-ic", channel, "-sc", self.status,
             "-rp", str(REPORT_PERIOD), "-dc"],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: SIM115
        wait(lambda: self.ctx.get(self.status, timeout=0.5), 30, "consumer status")

    def stats(self) -> Delivery:
        status = self.ctx.get(self.status, timeout=5)
        processor, receiver = status["processorStats"], status["receiverStats"]
        received = receiver["nReceived"]
        seconds = processor["lastObjectTime"] - processor["firstObjectTime"]
        rate = (received - 1) / seconds if received > 1 and seconds > 0 else 0.0
        return Delivery(received, processor["nMissed"], rate)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def run_peer(size: int, rate: int, seconds: float, ctx: Context, logs: Path) -> Delivery:
    channel = f"peer{uuid.uuid4().hex[:6]}:Pva1:Image"
    consumer = Consumer(channel, ctx, logs / "peer-consumer.log")
    try:
        subprocess.run(
            ["pvapy-ad-sim-server", "-cn", channel, "-nx", str(size), "-ny", str(size),
             "-dt", "uint16", "-fps", str(rate), "-rt", str(seconds), "-std", str(START_DELAY),
             "-dc",
             "-rp", "1000"],
            stdout=open(logs / "peer-server.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
            check=True, timeout=seconds + 60)
        time.sleep(2 * REPORT_PERIOD)  # the last frames, and a fresh status
        return consumer.stats()
    finally:
        consumer.stop()


class OurSimulator:
    def __init__(self, ctx: Context, logs: Path):
        self.prefix = f"bench{uuid.uuid4().hex[:6]}:"
        self.ctx = ctx
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ptychoedge.iocs.cli", "sim", "--prefix", self.prefix,
             "--no-stage", "--log-dir", str(logs)],
            stdout=open(logs / "sim.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        wait(lambda: str(self.get("cam1:DetectorState_RBV")) == "Idle", 120, "simulator")

    def get(self, name: str):
        return self.ctx.get(self.prefix + name, timeout=2)

    def put(self, name: str, value) -> None:
        self.ctx.put(self.prefix + name, value, timeout=5)

    def run(self, size: int, rate: int, seconds: float, logs: Path) -> Delivery:
        consumer = Consumer(self.prefix + "Pva1:Image", self.ctx, logs / "sim-consumer.log")
        time.sleep(START_DELAY)  # as the peer's --start-delay: the consumer's monitor connects
        try:
            self.put("cam1:SizeX", size)
            self.put("cam1:SizeY", size)
            self.put("cam1:AcquirePeriod", 1.0 / rate)
            self.put("cam1:ImageMode", "Multiple")
            self.put("cam1:NumImages", int(rate * seconds))
            self.put("cam1:Acquire", 1)
            wait(lambda: self.get("cam1:Acquire_RBV") == 1, 120, "acquisition start")
            wait(lambda: self.get("cam1:Acquire_RBV") == 0, seconds + 60, "acquisition end")
            time.sleep(2 * REPORT_PERIOD)
            return consumer.stats()
        finally:
            consumer.stop()

    def stop(self) -> None:
        self.process.send_signal(2)
        self.process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per case")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512],
                        choices=sorted(RATES))
    parser.add_argument("--logs", type=Path, default=Path("benchmark-logs"),
                        help="folder for the processes' output")
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    ctx = Context("pva")
    sim = OurSimulator(ctx, args.logs)
    try:
        for size in args.sizes:
            print(f"\n{size}x{size} uint16, {args.seconds:g} s per case")
            print(f"{'rate':>7} | {'pvapy-ad-sim-server':>27} | {'ptychoedge sim':>27} | ratio")
            best = None
            for rate in RATES[size]:
                peer = run_peer(size, rate, args.seconds, ctx, args.logs)
                ours = sim.run(size, rate, args.seconds, args.logs)
                ratio = ours.rate / peer.rate if peer.rate else float("nan")
                print(f"{rate:>7} | {peer!s:>27} | {ours!s:>27} | {ratio:5.3f}", flush=True)
                if peer.missed == 0:
                    best = (rate, ratio, ours)
            if best:
                rate, ratio, ours = best
                print(f"highest rate the peer held with no loss: {rate} Hz; ours there: "
                      f"{ours.rate:.1f} Hz, {ours.missed} missed; ratio {ratio:.3f} (goal >= 0.95)")
            else:
                print("the peer lost frames at every rate tried")
    finally:
        sim.stop()
        ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
