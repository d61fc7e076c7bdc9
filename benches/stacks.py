#!/usr/bin/env python3
"""Complete stacks without frame pointers: amprof fp, amprof dwarf and perf --call-graph dwarf
on stock Debian binaries (python3, gzip, sort, a C++ program), measured in one run.

For each workload and profiler: the share of the workload's samples whose user stack reaches
the process entry point (_start) or a thread's start routine (clone3/start_thread), and the
profiler's own CPU time (user + sys) while recording (and, for perf, while `perf script`
unwinds: perf unwinds after the fact).

Usage (as root, from the repository):
  python3 benches/stacks.py [--seconds 5] [--frequency 499] [--modes fp,dwarf] [--json FILE]
--modes lists amprof's -g modes to measure (perf dwarf is always measured); a mode this build
of amprof rejects is reported as skipped. benches/kernel_unwind.py reuses these workloads.
Needs: target/release/amprof (cargo build --release), perf (linux-perf), g++.
"""
import argparse, json, os, re, resource, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A stack is complete when it reaches glibc's process start (under _start, which stripped
# binaries do not name) or a thread's start routine.
ENTRY = {"_start", "__libc_start_main", "__libc_start_main_impl", "__libc_start_call_main",
         "clone3", "__clone3", "clone", "__clone", "start_thread"}


def child_cpu(run):
    """Runs `run()` and returns (its result, CPU seconds of the children it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def amprof_rejects(amprof, mode, work):
    """Why this build of amprof cannot record with `-g mode` (None if it can): a short
    recording of `true` with that mode."""
    out = os.path.join(work, f"probe-{mode}.data")
    run = subprocess.run([amprof, "record", "-q", "-g", mode, "-d", "1s", "-o", out, "--", "true"],
                         capture_output=True, text=True)
    if run.returncode == 0:
        return None
    lines = [l.strip() for l in run.stderr.splitlines() if l.strip()]
    return lines[0] if lines else f"exit code {run.returncode}"


def start_workload(argv):
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def amprof_record(amprof, mode, pid, seconds, freq, out):
    argv = [amprof, "record", "-q", "-g", mode, "-F", str(freq), "-d", f"{seconds}s",
            "-p", str(pid), "-o", out]
    _, cpu = child_cpu(lambda: subprocess.run(argv, check=True))
    folded = subprocess.run([amprof, "report", "--format", "folded", "-i", out],
                            check=True, capture_output=True, text=True).stdout
    stacks = []
    for line in folded.splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = [f for f in stack.split(";")[1:] if not f.endswith("_[k]")]
        stacks.append((frames, int(count)))
    return stacks, cpu, 0.0


def perf_record(pid, seconds, freq, out):
    argv = ["perf", "record", "-q", "-F", str(freq), "--call-graph", "dwarf", "-p", str(pid),
            "-o", out, "--", "sleep", str(seconds)]
    # perf exits on SIGTERM when its target exits first: not a failure.
    _, cpu = child_cpu(lambda: subprocess.run(argv, stderr=subprocess.DEVNULL))
    script, post = child_cpu(lambda: subprocess.run(
        ["perf", "script", "-i", out, "-F", "ip,sym"], check=True, capture_output=True,
        text=True).stdout)
    stacks, frames = [], []
    for line in script.splitlines() + [""]:
        line = line.strip()
        if not line:
            if frames:
                user = [f for f in frames if not f.startswith("ffffffff")]
                # perf lists leaf first; root first like folded stacks:
                stacks.append(([f.split(" ", 1)[1] if " " in f else f for f in reversed(user)], 1))
                frames = []
            continue
        frames.append(line)
    return stacks, cpu, post


def complete_share(stacks):
    total = sum(c for _, c in stacks)
    complete = sum(c for frames, c in stacks if any(f.split("+")[0] in ENTRY for f in frames))
    return (complete / total if total else 0.0), total


def stock_workloads(work, seconds):
    """The workloads, by name: stock Debian binaries built without frame pointers (and a C++
    program built like them), each busy for at least `seconds` + 3 s."""
    data = os.path.join(work, "data.txt")
    if not os.path.exists(data):
        with open(data, "wb") as f:  # ~100 MB of text
            subprocess.run(["sh", "-c", "base64 -w 100 /dev/urandom | head -c 100000000"],
                           stdout=f, check=True)
    cxx = os.path.join(work, "cxx_workload")
    if not os.path.exists(cxx):
        subprocess.run(["g++", "-O2", "-fomit-frame-pointer", "-g", "-o", cxx,
                        os.path.join(ROOT, "tests/fixtures/cxx_workload.cpp")], check=True)
    busy = "import time\nt=time.time()\nwhile time.time()-t<%d: sum(i*i for i in range(10000))"
    long_enough = seconds + 3
    # /usr/bin/python3: Debian's, not whatever a PATH (pyenv...) puts first.
    return {
        "python3": ["/usr/bin/python3", "-c", busy % long_enough],
        "gzip": ["sh", "-c", f"while :; do gzip -9 -c {data} > /dev/null; done"],
        "sort": ["sh", "-c",
                 f"while :; do sort --parallel=2 -S 100M {data} {data} {data} {data} {data}"
                 " > /dev/null; done"],
        "c++": [cxx, str(long_enough)],
    }


def measure(amprof, argv, profiler, seconds, freq, out):
    """Starts the workload `argv`, records its worker with `profiler` ("amprof MODE" or
    "perf dwarf") and returns (stacks, record CPU s, post-processing CPU s)."""
    proc = start_workload(argv)
    time.sleep(1)  # let the loop start its first real process
    target = proc.pid
    if argv[0] == "sh":  # profile the worker, not the shell loop
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        target = int(children[0]) if children else proc.pid
    try:
        if profiler == "perf dwarf":
            return perf_record(target, seconds, freq, out)
        return amprof_record(amprof, profiler.split()[1], target, seconds, freq, out)
    finally:
        subprocess.run(["pkill", "-P", str(proc.pid)])
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--frequency", type=int, default=499)
    ap.add_argument("--modes", default="fp,dwarf", help="amprof -g modes, comma-separated")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    amprof = os.path.join(ROOT, "target/release/amprof")
    work = tempfile.mkdtemp(prefix="amprof-stacks-")
    results = []
    profilers = []
    for mode in args.modes.split(","):
        why = amprof_rejects(amprof, mode, work)
        if why:
            print(f"amprof {mode}: skipped ({why})", flush=True)
            results.append({"profiler": f"amprof {mode}", "skipped": why})
        else:
            profilers.append(f"amprof {mode}")
    profilers.append("perf dwarf")
    for name, argv in stock_workloads(work, args.seconds).items():
        for profiler in profilers:
            out = os.path.join(work, f"{name}-{profiler.replace(' ', '-')}")
            stacks, cpu, post = measure(amprof, argv, profiler, args.seconds, args.frequency, out)
            share, samples = complete_share(stacks)
            results.append({"workload": name, "profiler": profiler, "samples": samples,
                            "complete_share": round(share, 4), "record_cpu_s": round(cpu, 3),
                            "postprocess_cpu_s": round(post, 3)})
            print(f"{name:8} {profiler:13} samples {samples:6}  complete {share*100:5.1f}%  "
                  f"record CPU {cpu:6.3f} s  post-processing CPU {post:6.3f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
