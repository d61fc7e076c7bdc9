#!/usr/bin/env python3
"""What a 30 s system-wide capture costs to convert and to push, measured in one run.

Records the whole system for --seconds (default 30) while benches/workload.c keeps both cores
busy, at each --frequencies (default 99 and 999 Hz), then measures on that capture:

  perf.data   `amprof report --format perf` (samples/s, best of 3) next to the time
              `perf script` and `perf report --stdio` take to read the result
  datadog     `amprof push --to datadog` to the Datadog APM test agent: bytes and time
              per window (and with --service, one service for every program)
  otlp        `amprof push --to otlp` to tests/otlp_receiver.py (--quick, so that the
              receiver's checks are not timed) over HTTP (gzip) and gRPC: bytes and time
              per window

Usage (as root, from the repository, after `cargo build --release` and .ci/setup):
  python3 benches/exports.py [--seconds 30] [--frequencies 99,999] [--json FILE]
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

from compare import AMPROF, ROOT, build_workload  # the same binary and workload as compare.py

OTLP_PYTHON = "/opt/amprof-ci/venv/bin/python3"


def best_of(n, argv, **kw):
    """The shortest wall time of n runs of argv (the machine is noisy; the best run is the cost)."""
    times = []
    for _ in range(n):
        start = time.monotonic()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        times.append(time.monotonic() - start)
    return min(times)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(work, workload, freq, seconds):
    capture = os.path.join(work, f"capture-{freq}.data")
    load = subprocess.Popen([workload, "100000000", "2"])
    try:
        subprocess.run([AMPROF, "record", "-q", "-F", str(freq), "-d", f"{seconds}s",
                        "-o", capture], check=True)
    finally:
        load.kill()
        load.wait()
    summary = json.loads(subprocess.run([AMPROF, "report", "--json", "-i", capture], check=True,
                                        capture_output=True, text=True).stdout)
    return capture, summary


def perf_data(work, capture, samples):
    out = os.path.join(work, "perf.data")
    convert = best_of(3, [AMPROF, "report", "--format", "perf", "-i", capture, "-o", out])
    return {
        "amprof_to_perf_data_s": convert,
        "samples_per_s": samples / convert,
        "perf_data_bytes": os.path.getsize(out),
        "perf_script_s": best_of(3, ["perf", "script", "-i", out]),
        "perf_report_s": best_of(3, ["perf", "report", "--stdio", "-i", out]),
    }


def push(argv):
    """Runs an `amprof push ... --json` and returns its summary."""
    result = subprocess.run([AMPROF, "push", "-q", "--json"] + argv, capture_output=True,
                            text=True)
    if result.returncode != 0:
        sys.exit(f"push failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def per_window(summary):
    windows = [w for w in summary["windows"] if w["status"] == "sent"]
    return {
        "windows": len(windows),
        "bytes_per_window": [w["bytes"] for w in windows],
        "push_s": summary["seconds"],
        "s_per_window": summary["seconds"] / max(len(windows), 1),
    }


def datadog(capture):
    port = free_port()
    agent = subprocess.Popen(["ddapm-test-agent", "--host", "127.0.0.1", "--port", str(port),
                              "--otlp-http-port", str(free_port()),
                              "--otlp-grpc-port", str(free_port())],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/info", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("the Datadog APM test agent did not start")
                time.sleep(0.1)
        return {
            "per_program_services": per_window(push(["--to", "datadog", "--agent-url", url,
                                                     "-i", capture])),
            "one_service": per_window(push(["--to", "datadog", "--agent-url", url,
                                            "--service", "bench", "-i", capture])),
        }
    finally:
        agent.kill()
        agent.wait()


def otlp(work, capture):
    results = {}
    for protocol, scheme in [("http/protobuf", "http"), ("grpc", "grpc")]:
        out = os.path.join(work, f"otlp-{scheme}")
        receiver = subprocess.Popen([OTLP_PYTHON, os.path.join(ROOT, "tests/otlp_receiver.py"),
                                     "--protocol", scheme, "--out", out, "--quick"],
                                    stdout=subprocess.PIPE, text=True)
        try:
            port = int(receiver.stdout.readline())
            results[protocol] = per_window(push(["--to", "otlp", "--protocol", protocol,
                                                 "--endpoint", f"http://127.0.0.1:{port}",
                                                 "-i", capture]))
        finally:
            receiver.kill()
            receiver.wait()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--frequencies", default="99,999")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: recording loads eBPF")
    work = tempfile.mkdtemp(prefix="amprof-exports-")
    results = []
    try:
        workload = build_workload(work)
        for freq in [int(f) for f in args.frequencies.split(",")]:
            capture, summary = record(work, workload, freq, args.seconds)
            samples = summary["totals"]["samples"]
            result = {
                "frequency": freq, "seconds": args.seconds, "samples": samples,
                "windows": len(summary["windows"]), "capture_bytes": os.path.getsize(capture),
                "perf": perf_data(work, capture, samples),
                "datadog": datadog(capture),
                "otlp": otlp(work, capture),
            }
            results.append(result)
            print(json.dumps(result, indent=2), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
