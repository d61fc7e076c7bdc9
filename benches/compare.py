#!/usr/bin/env python3
"""amprof against perf, bpftrace, BCC and samply: one machine, one workload, one run.

For each profiler and frequency, while a fixed-work CPU-bound workload keeps both cores busy,
the profiler records the whole system for --duration seconds. Measured per trial:

  cpu_s        the profiler's own CPU time (user + sys), from wait4()
  rss_mib      its peak resident memory
  bytes        what it wrote
  lost         samples it reports lost
  flame_s      wall time from the end of recording to a flamegraph SVG with symbols
  slowdown     the workload's wall time and CPU time against an unprofiled run of the same work

Each figure is reported as min/median/max over --runs trials and as a ratio to
`perf record -g` at the same frequency measured in the same run. Run as root from the
repository, after `cargo build --release`; benches/compare.sh installs the peers first.
"""
import argparse, json, os, platform, resource, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMPROF = os.path.join(ROOT, "target/release/amprof")


def run_waited(argv, **kw):
    """Runs argv; returns (exit status, wall seconds, rusage of it and its waited children)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.monotonic() - start, usage


def cpu(usage):
    return usage.ru_utime + usage.ru_stime


def size_of(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path) if os.path.exists(path) else 0


def timed_shell(command):
    start = time.monotonic()
    subprocess.run(["sh", "-c", command], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - start


class Profiler:
    """How to record system-wide with one tool, and how to get a flamegraph out of it."""

    def __init__(self, name, record, flame=None, lost=None, output=None):
        self.name, self.record, self.flame, self.lost, self.output = name, record, flame, lost, output


def amprof(mode):
    return Profiler(
        f"amprof {mode}",
        lambda f, d, out, pid: [AMPROF, "record", "-q", "-g", mode, "-F", str(f), "-d", f"{d}s",
                           "-o", out],
        flame=lambda out: timed_shell(f"{AMPROF} report --format flamegraph -i {out} -o {out}.svg"),
        lost=lambda out: json.loads(subprocess.run(
            [AMPROF, "report", "--json", "-i", out], capture_output=True, check=True,
            text=True).stdout)["totals"]["lost"],
    )


def perf_lost(out):
    text = subprocess.run(["perf", "report", "--stats", "-i", out], capture_output=True,
                          text=True).stdout
    lost = 0
    for line in text.splitlines():
        words = line.split()
        if words and words[0].startswith("LOST") and words[-1].isdigit():
            lost += int(words[-1])
    return lost


def perf(mode):
    graph = ["-g"] if mode == "fp" else ["--call-graph", "dwarf"]
    return Profiler(
        f"perf {mode}",
        lambda f, d, out, pid: ["perf", "record", "-q", "-a", *graph, "-F", str(f), "-o", out,
                           "--", "sleep", str(d)],
        flame=lambda out: timed_shell(
            f"perf script -i {out} 2>/dev/null | inferno-collapse-perf | inferno-flamegraph > {out}.svg"),
        lost=perf_lost,
    )


def bpftrace():
    return Profiler(
        "bpftrace",
        lambda f, d, out, pid: ["bpftrace", "-q", "-o", out, "-e",
                           f"profile:hz:{f} {{ @[kstack, ustack, comm] = count(); }} "
                           f"interval:s:{d} {{ exit(); }}"],
    )


def bcc():
    # profile-bpfcc -f prints folded stacks, the input of inferno-flamegraph.
    return Profiler(
        "bcc profile",
        lambda f, d, out, pid: ["sh", "-c", f"exec profile-bpfcc -F {f} -f {d} > {out}"],
        flame=lambda out: timed_shell(f"inferno-flamegraph < {out} > {out}.svg"),
    )


def samply():
    # samply cannot profile the whole system on Linux: it attaches to the workload only, so
    # its figures are for a lighter job than the others'.
    return Profiler(
        "samply (pid)",
        lambda f, d, out, pid: ["samply", "record", "-p", str(pid), "--rate", str(f), "-d",
                                str(d), "--save-only", "-o", out],
    )


def build_workload(work):
    """Compiles benches/workload.c into `work` and returns its path (also used by exports.py)."""
    workload = os.path.join(work, "workload")
    subprocess.run(["cc", "-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o", workload,
                    os.path.join(ROOT, "benches/workload.c")], check=True)
    return workload


def calibrate(workload, seconds):
    """Rounds of the workload that take about `seconds` unprofiled."""
    rounds = 2000
    while True:
        _, wall, _ = run_waited([workload, str(rounds), "2"])
        if wall > 1.0:
            return int(rounds * seconds / wall)
        rounds *= 4


PARANOID = "/proc/sys/kernel/perf_event_paranoid"


def trial(profiler, freq, duration, workload, rounds, work):
    """One recording by `profiler`, under the workload. samply refuses to run, even as root,
    unless kernel.perf_event_paranoid <= 1: it is lowered for its trials and restored."""
    paranoid = open(PARANOID).read().strip()
    if profiler.name.startswith("samply") and int(paranoid) > 1:
        open(PARANOID, "w").write("1")
    try:
        return measure(profiler, freq, duration, workload, rounds, work)
    finally:
        open(PARANOID, "w").write(paranoid)


def measure(profiler, freq, duration, workload, rounds, work):
    out = os.path.join(work, profiler.name.replace(" ", "-") + f"-{freq}")
    for p in (out, out + ".svg"):
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
    load = subprocess.Popen([workload, str(rounds), "2"])
    load_start = time.monotonic()
    time.sleep(0.5)
    status, _, usage = run_waited(profiler.record(freq, duration, out, load.pid),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, load_status, load_usage = os.wait4(load.pid, 0)
    load_wall = time.monotonic() - load_start
    result = {
        "profiler": profiler.name, "frequency": freq, "status": status,
        "cpu_s": cpu(usage), "rss_mib": usage.ru_maxrss / 1024, "bytes": size_of(out),
        "workload_wall_s": load_wall, "workload_cpu_s": cpu(load_usage),
    }
    if profiler.flame and status == 0:
        try:
            result["flame_s"] = profiler.flame(out)
        except subprocess.CalledProcessError:
            pass
    if profiler.lost and status == 0:
        try:
            result["lost"] = profiler.lost(out)
        except (subprocess.CalledProcessError, KeyError, ValueError):
            pass
    return result


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return (min(values), statistics.median(values), max(values))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--frequencies", default="99,999")
    ap.add_argument("--profilers", default="amprof fp,amprof dwarf,perf fp,perf dwarf,bpftrace,bcc profile,samply (pid)")
    ap.add_argument("--json", help="write every trial here")
    ap.add_argument("--markdown", help="write the summary table here")
    args = ap.parse_args()

    available = {
        "amprof fp": amprof("fp"), "amprof dwarf": amprof("dwarf"),
        "perf fp": perf("fp"), "perf dwarf": perf("dwarf"),
        "bpftrace": bpftrace(), "bcc profile": bcc(), "samply (pid)": samply(),
    }
    tools = {"perf": "perf", "bpftrace": "bpftrace", "bcc": "profile-bpfcc", "samply": "samply"}
    profilers = []
    for name in args.profilers.split(","):
        tool = tools.get(name.split()[0])
        if tool and not shutil.which(tool):
            print(f"skipping {name}: {tool} is not installed", file=sys.stderr)
            continue
        if name == "bcc profile" and subprocess.run(
                ["profile-bpfcc", "-F", "99", "-f", "1"], capture_output=True).returncode != 0:
            # BCC compiles its program at run time against the running kernel's headers.
            print("skipping bcc profile: it cannot compile its BPF program on this kernel "
                  "(no kernel headers, no CONFIG_IKHEADERS)", file=sys.stderr)
            continue
        profilers.append(available[name])
    freqs = [int(f) for f in args.frequencies.split(",")]

    work = tempfile.mkdtemp(prefix="amprof-compare-")
    workload = build_workload(work)
    rounds = calibrate(workload, args.duration + 4)
    print(f"workload: {rounds} rounds on 2 threads (~{args.duration + 4} s unprofiled)", flush=True)

    trials = []
    for run in range(args.runs):
        _, base_wall, base_usage = run_waited([workload, str(rounds), "2"])
        trials.append({"profiler": "none", "frequency": 0, "run": run,
                       "workload_wall_s": base_wall, "workload_cpu_s": cpu(base_usage)})
        print(f"run {run + 1}: unprofiled workload {base_wall:.2f} s", flush=True)
        for freq in freqs:
            for profiler in profilers:
                t = trial(profiler, freq, args.duration, workload, rounds, work)
                t["run"] = run
                t["slowdown_wall"] = t["workload_wall_s"] / base_wall
                t["slowdown_cpu"] = t["workload_cpu_s"] / cpu(base_usage)
                trials.append(t)
                print(f"  {profiler.name:12} {freq:4} Hz: cpu {t['cpu_s']:.3f} s  rss "
                      f"{t['rss_mib']:.1f} MiB  bytes {t['bytes']}  lost {t.get('lost')}  "
                      f"flame {t.get('flame_s')}  slowdown {t['slowdown_wall']:.3f}  "
                      f"status {t['status']}", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(trials, f, indent=1)

    # Summary: min/median/max and the ratio of medians to perf fp at the same frequency.
    metrics = [("cpu_s", "CPU s"), ("rss_mib", "peak RSS MiB"), ("bytes", "bytes"),
               ("lost", "lost"), ("flame_s", "to flamegraph s"),
               ("slowdown_wall", "workload wall ×"), ("slowdown_cpu", "workload CPU ×")]
    lines = [f"Machine: {platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs; "
             f"{args.runs} runs of {args.duration} s system-wide recordings; workload: "
             f"benches/workload.c, 2 threads, fixed work.", ""]
    for freq in freqs:
        lines += [f"### {freq} Hz", "",
                  "| profiler | " + " | ".join(label for _, label in metrics) + " |",
                  "| --- |" + " --- |" * len(metrics)]
        def med(name, key):
            s = stats([t.get(key) for t in trials
                       if t["profiler"] == name and t["frequency"] == freq])
            return s[1] if s else None
        for profiler in profilers:
            cells = []
            for key, _ in metrics:
                s = stats([t.get(key) for t in trials
                           if t["profiler"] == profiler.name and t["frequency"] == freq])
                if s is None:
                    cells.append("n/a")
                    continue
                fmt = (lambda v: f"{v:.0f}") if key in ("bytes", "lost") else (lambda v: f"{v:.3f}")
                cell = f"{fmt(s[1])} ({fmt(s[0])}–{fmt(s[2])})"
                base = med("perf fp", key)
                if base and profiler.name != "perf fp" and key not in ("lost",):
                    cell += f" = {s[1] / base:.2f}× perf"
                cells.append(cell)
            lines.append(f"| {profiler.name} | " + " | ".join(cells) + " |")
        lines.append("")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
