"""Training speed of ``chainrule serve`` with pages streaming its events, against none.

Starts the server in this process (the page's default network, 784-100-10 on MNIST, SGD at
0.1, batch 32, one BLAS thread), starts training, and alternates rounds without and with
``--clients`` event streams reading as fast as they can (each one a thread with its own
connection, as a browser tab is). Each round measures, over ``--seconds``, the steps per second
(wall clock) and the median time of one training step (measured inside the training thread,
which other jobs on a shared machine disturb far less). Prints every round and the ratios of the
medians over rounds; the issue asks for the streams to cost at most 20 %.

Usage: ``python benchmarks/serve_clients.py [--clients 20] [--rounds 5] [--seconds 2]``
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from typing import Any

import chainrule as cr
from chainrule.server import create_server


def reader(port: int, stop: threading.Event, counts: list[int], i: int, errors: list[str]) -> None:
    """One page: the event stream, read until ``stop``; its events counted in ``counts[i]``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            head = sock.recv(65536)
            if not head.startswith(b"HTTP/1.0 200"):
                errors.append(head.split(b"\r\n")[0].decode())
                return
            counts[i] = head.count(b"\n\n") - 1  # the stream's first line is "retry: ..."
            sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    errors.append("the stream ended")
                    return
                counts[i] += chunk.count(b"\n\n")
    except OSError as exc:
        errors.append(str(exc))


def measure(server: Any, seconds: float) -> tuple[float, float]:
    """Steps per second and the median seconds of a step over ``seconds``."""
    session = server.session
    a, t0 = session.step, time.perf_counter()
    time.sleep(seconds)
    b, t1 = session.step, time.perf_counter()
    times = [d for start, d in list(session.step_times) if t0 <= start < t1]
    return (b - a) / (t1 - t0), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    server = create_server(port=0)
    server.start()
    results: dict[str, list[float]] = {
        k: [] for k in ("alone_sps", "alone_step", "with_sps", "with_step")
    }
    errors: list[str] = []
    events: list[int] = []
    try:
        with cr.threads(1):
            server.session.command("start", {})
            time.sleep(1.0)  # the first pictures, the caches warm
            for r in range(args.rounds):
                sps, step = measure(server, args.seconds)
                results["alone_sps"].append(sps)
                results["alone_step"].append(step)
                stop = threading.Event()
                counts = [0] * args.clients
                threads = [
                    threading.Thread(target=reader, args=(server.port, stop, counts, i, errors))
                    for i in range(args.clients)
                ]
                for t in threads:
                    t.start()
                time.sleep(0.5)  # every page connected and given its snapshot
                sps2, step2 = measure(server, args.seconds)
                stop.set()
                for t in threads:
                    t.join()
                events.extend(counts)
                results["with_sps"].append(sps2)
                results["with_step"].append(step2)
                print(
                    f"round {r + 1}: alone {sps:7.1f} steps/s, median step {step * 1e3:6.3f} ms | "
                    f"{args.clients} pages {sps2:7.1f} steps/s, median step {step2 * 1e3:6.3f} ms",
                    flush=True,
                )
            server.session.command("pause", {})
    finally:
        server.stop()
    sps_ratio = statistics.median(results["with_sps"]) / statistics.median(results["alone_sps"])
    step_ratio = statistics.median(results["with_step"]) / statistics.median(results["alone_step"])
    print(f"pages: {args.clients}, errors: {len(errors)} {errors[:3]}")
    print(f"events per page per round: min {min(events)}, median {statistics.median(events)}")
    print(f"steps per second, {args.clients} pages / none (medians): {sps_ratio:.3f}")
    print(f"median step time, {args.clients} pages / none (medians): {step_ratio:.3f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {**results, "errors": errors, "sps_ratio": sps_ratio, "step_ratio": step_ratio},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
