#!/usr/bin/env python3
"""What `record --push-to` costs and how soon windows arrive, measured in one run.

For each --frequencies (default 99 and 999 Hz), records the whole system for --seconds
(default 30) with --window (default 2s) while benches/workload.c keeps both cores busy, three
ways, each --runs times (default 3, medians reported):

  capture      `amprof record` alone (the baseline)
  otlp         the same with `--push-to otlp` to tests/otlp_receiver.py (--quick) on 127.0.0.1
  datadog      the same with `--push-to datadog` to the Datadog APM test agent on 127.0.0.1

and reports amprof's CPU seconds and peak RSS (what streaming adds is the difference to
`capture`), and the latency of each window from its end to the backend's acknowledgement
(median and max over all windows), as `record --json` measures it.

Usage (as root, from the repository, after `cargo build --release` and .ci/setup):
  python3 benches/streaming.py [--seconds 30] [--window 2s] [--frequencies 99,999] [--runs 3]
"""
import argparse, json, os, statistics, subprocess, tempfile, time, urllib.request

from compare import AMPROF, ROOT, build_workload
from exports import OTLP_PYTHON, free_port


def peak_rss_mib(pid, proc):
    """Peak VmHWM of pid while proc runs, polled (ru_maxrss would count the parent's copy)."""
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    return peak / 1024


def start_receiver(work):
    out = os.path.join(work, "otlp")
    proc = subprocess.Popen([OTLP_PYTHON, os.path.join(ROOT, "tests/otlp_receiver.py"),
                             "--quick", "--out", out], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, ["--push-to", "otlp", "--endpoint", f"http://127.0.0.1:{port}"]


def start_agent():
    port = free_port()
    proc = subprocess.Popen(["ddapm-test-agent", "--host", "127.0.0.1", "--port", str(port),
                             "--otlp-http-port", str(free_port()),
                             "--otlp-grpc-port", str(free_port())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return proc, ["--push-to", "datadog", "--service", "bench",
                  "--agent-url", f"http://127.0.0.1:{port}"]


def one(work, workload, freq, seconds, window, extra):
    capture = os.path.join(work, "capture.data")
    load = subprocess.Popen([workload, "100000000", "2"])
    try:
        proc = subprocess.Popen([AMPROF, "record", "-q", "--json", "-F", str(freq),
                                 "-d", f"{seconds}s", "--window", window, "-o", capture] + extra,
                                stdout=subprocess.PIPE, text=True)
        rss = peak_rss_mib(proc.pid, proc)
        out, _ = proc.communicate()
    finally:
        load.kill()
        load.wait()
    return rss, json.loads(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--window", default="2s")
    parser.add_argument("--frequencies", default="99,999")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="amprof-streaming-")
    workload = build_workload(work)
    receiver, otlp = start_receiver(work)
    agent, datadog = start_agent()
    rows = []
    try:
        for freq in [int(f) for f in args.frequencies.split(",")]:
            for name, extra in [("capture", []), ("otlp", otlp), ("datadog", datadog)]:
                cpus, rsss, latencies, sent, windows = [], [], [], 0, 0
                for _ in range(args.runs):
                    rss, summary = one(work, workload, freq, args.seconds, args.window, extra)
                    # amprof's own figures, after the push has finished.
                    cpus.append(summary["cpu_seconds"])
                    rsss.append(max(rss, summary["peak_rss_kib"] / 1024))
                    push = summary.get("push") or {}
                    latencies += push.get("latency_ms", [])
                    sent += len(push.get("sent", []))
                    windows += summary["windows"]
                row = {
                    "hz": freq, "mode": name,
                    "amprof_cpu_s": statistics.median(cpus),
                    "peak_rss_mib": statistics.median(rsss),
                    "windows": windows, "sent": sent,
                    "latency_ms_median": statistics.median(latencies) if latencies else None,
                    "latency_ms_max": max(latencies) if latencies else None,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        receiver.kill()
        agent.kill()
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
