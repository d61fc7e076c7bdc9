#!/usr/bin/env python3
"""The cost of off-CPU profiling (issue 16): a ping-pong workload (benches/pingpong.c: two
threads passing a byte through two pipes, two context switches a round trip) at --rates
context switches a second (default 10000,100000,0; 0 = as fast as it goes), alone and under
each tool of --tools, all attached to the workload's process:

  amprof    `amprof record --off-cpu -p PID` (--amprof, default target/release/amprof; its
            on-CPU sampling at the default frequency runs too, as a user would have it)
  bcc       BCC's `offcputime-bpfcc -f -p PID`
  bpftrace  an offcputime for bpftrace on the sched_switch tracepoint (BPFTRACE_SCRIPT below:
            Debian's bpftrace ships no offcputime.bt; the one of the BPF Performance Tools book
            needs a kprobe on finish_task_switch, and kernels without CONFIG_KPROBES, like this
            project's CI machine, have none): the stack is taken when a thread leaves the CPU,
            its off-CPU nanoseconds summed per stack when it comes back.
  perf      `perf record --off-cpu -p PID`, only where perf was built with BPF skeletons:
            Debian's perf 6.1 ignores the option ("no BUILD_BPF_SKEL=1"); the script detects
            that (a recording of `true` has no offcpu-time event) and reports it as skipped.

A tool that is installed but cannot run on this kernel (BCC compiles its program at start-up
against the kernel headers and attaches a kprobe) is reported as skipped with its error; a
tool of --tools that is not installed is an error (install below, or leave it out of --tools).

Each trial: the workload starts; the tool starts and attaches (attached = its process holds a
BPF program that has run, from /proc/PID/fdinfo with BPF run-time stats enabled; alone: after
--settle s); after --settle s more, a window of --seconds in which are measured:
  - the workload: switches/s and round trips/s achieved, and its CPU (user + sys) per round
    trip, from the running totals it prints every 100 ms. The tools' BPF programs run in the
    context switch, so their in-kernel cost is charged to the workload: it shows as more CPU
    per round trip (rate-limited) or fewer round trips a second (unlimited).
  - the tool: its CPU (user + sys of its process tree, /proc/PID/stat), and its BPF programs'
    run time and runs.
Then the tool is stopped with SIGINT (as Ctrl-C): its total CPU (wait4, start-up and output
included) and how long it took to exit are reported, with what it saw: amprof's `record --json`
summary (on- and off-CPU samples and lost, and every off-CPU key it has; "lost" in the tables
is off-CPU samples lost), BCC's stack traces it could not store, perf's LOST records (bpftrace
sums in maps and counts nothing it drops: n/a), and the off-CPU seconds each tool
reports for the workload against the workload's own (3 threads' wall time less their CPU from
the tool's attaching to its detaching, its BPF programs gone; for amprof, over the length it
says it recorded: seen_share, ~1.0 when nothing is lost; the moments are polled, every 50 and
20 ms, so over a ~7 s span it is good to about 1%; bpftrace reads its maps before it detaches,
so its share is a little low). amprof is attached when it has written its capture's header
(it loads and runs its programs a second or two before it records).

Slowdowns are against the median of the workload alone in the same run; ratios compare amprof
with each peer's medians in the same run. Every trial is a JSON line, then medians, then
Markdown tables. The tools' order turns by one each run.

Install (Debian 12, as root): apt-get install gcc bpftrace bpfcc-tools linux-perf
Usage (as root, from the repository, after `cargo build --release`):
  python3 benches/off_cpu.py [--amprof PATH] [--tools none,amprof,bcc,bpftrace,perf]
      [--rates 10000,100000,0] [--seconds 5] [--settle 1] [--runs 3] [--json FILE]
      [--markdown FILE]
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernel_unwind import bpf_run_time, enable_bpf_stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("none", "amprof", "bcc", "bpftrace", "perf")
INSTALL = {"bcc": ("offcputime-bpfcc", "bpfcc-tools"), "bpftrace": ("bpftrace", "bpftrace"),
           "perf": ("perf", "linux-perf")}
WORKLOAD_THREADS = 3  # main (the reporter), ping, pong: all off the CPU when not running

# offcputime for bpftrace without kprobes. `pid` is the tgid of the task leaving the CPU (the
# current one at sched_switch), args->next_pid the thread coming back.
BPFTRACE_SCRIPT = """
tracepoint:sched:sched_switch
{
  if (pid == $1) {
    @start[tid] = nsecs;
    @kst[tid] = kstack;
    @ust[tid] = ustack;
    @name[tid] = comm;
  }
  $t = @start[args->next_pid];
  if ($t != 0) {
    @[@kst[args->next_pid], @ust[args->next_pid], @name[args->next_pid]] = sum(nsecs - $t);
    delete(@start[args->next_pid]);
  }
}
END { clear(@start); clear(@kst); clear(@ust); clear(@name); }
"""


# ---- the workload -------------------------------------------------------------------------

def build_pingpong(work):
    binary = os.path.join(work, "pingpong")
    subprocess.run(["cc", "-O2", "-g", "-fno-omit-frame-pointer", "-pthread", "-o", binary,
                    os.path.join(ROOT, "benches/pingpong.c")], check=True)
    return binary


class Workload:
    """pingpong running at `rate` switches/s until stopped; its running totals collected."""

    def __init__(self, binary, rate):
        self.proc = subprocess.Popen([binary, str(rate), "100000"], stdout=subprocess.PIPE,
                                     text=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()
        self.reader.join(timeout=5)

    def span(self, t0, t1):
        """The totals' differences over the reports nearest inside [t0, t1]."""
        inside = [l for l in self.lines if t0 <= l["t"] <= t1]
        if len(inside) < 2:
            raise RuntimeError(f"the workload reported {len(inside)} times in the window")
        a, b = inside[0], inside[-1]
        return {k: b[k] - a[k] for k in ("t", "round_trips", "switches", "voluntary", "cpu_s")}


# ---- measuring a tool ---------------------------------------------------------------------

def tree(pid):
    """pid and its descendants (from /proc/*/stat)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_cpu(pid):
    """CPU seconds (user + sys, all threads, and waited children's) of pid's process tree."""
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


def tree_bpf(pid):
    seen = {}
    for p in tree(pid):
        bpf_run_time(p, seen)
    return seen


def bpf_delta(before, after):
    run_ns = sum(t - before.get(i, (0, 0))[0] for i, (t, _) in after.items())
    runs = sum(n - before.get(i, (0, 0))[1] for i, (_, n) in after.items())
    return run_ns / 1e9, runs


def tool_argv(tool, pid, out, amprof):
    if tool == "amprof":
        return [amprof, "record", "--off-cpu", "-q", "--json", "-p", str(pid), "-o", out]
    if tool == "bcc":
        return ["offcputime-bpfcc", "-f", "-p", str(pid)]
    if tool == "bpftrace":
        return ["bpftrace", "-e", BPFTRACE_SCRIPT, str(pid)]
    if tool == "perf":
        return ["perf", "record", "-q", "--off-cpu", "-g", "-p", str(pid), "-o", out]
    raise ValueError(tool)


def parse_output(tool, stdout, stderr, out, amprof, pid):
    """What the tool saw: {off_cpu_s (of the workload), stacks, samples, lost, ...}."""
    seen = {}
    if tool == "amprof":
        summary = json.loads(stdout)
        seen["on_cpu_samples"] = summary.get("samples")
        seen["on_cpu_lost"] = summary.get("lost")
        # Whatever off-CPU counts this build reports ({"off_cpu": {"samples", "seconds",
        # "lost"}} at the time of writing), flattened: off_cpu_samples, off_cpu_lost...
        for key, value in summary.items():
            if "off_cpu" in key or "offcpu" in key:
                if isinstance(value, dict):
                    seen.update({f"off_cpu_{k}": v for k, v in value.items()})
                else:
                    seen[key] = value
        seen["samples"] = seen.get("off_cpu_samples")
        seen["lost"] = seen.get("off_cpu_lost")
        seen["off_cpu_s"] = seen.get("off_cpu_seconds")
        seen["recorded_s"] = summary.get("seconds")
        folded = subprocess.run([amprof, "report", "--event", "off-cpu", "--format", "folded",
                                 "-i", out], capture_output=True, text=True)
        if folded.returncode == 0:
            # Off-CPU stacks are weighted in microseconds (in builds whose folded export knows
            # off-CPU samples: 0 before).
            weights = [int(l.rsplit(" ", 1)[1]) for l in folded.stdout.splitlines() if l.strip()]
            seen["stacks"] = len(weights)
            seen["report_off_cpu_s"] = sum(weights) / 1e6
        else:
            seen["report_error"] = " ".join(folded.stderr.split())[:200]
        seen["capture_bytes"] = os.path.getsize(out) if os.path.exists(out) else None
    elif tool == "bcc":
        weights = [int(l.rsplit(" ", 1)[1]) for l in stdout.splitlines()
                   if re.search(r" \d+$", l) and ";" in l]
        seen["stacks"] = len(weights)
        seen["off_cpu_s"] = sum(weights) / 1e6  # microseconds
        m = re.search(r"WARNING: (\d+) stack traces lost", stdout + stderr)
        seen["lost"] = int(m.group(1)) if m else 0  # stack ids it could not store
    elif tool == "bpftrace":
        weights = [int(v) for v in re.findall(r"\]: (\d+)$", stdout, re.M)]
        seen["stacks"] = len(weights)
        seen["off_cpu_s"] = sum(weights) / 1e9  # nanoseconds
        m = re.search(r"Lost (\d+) events", stdout + stderr)
        seen["lost"] = int(m.group(1)) if m else None  # maps only: nothing it would count
    elif tool == "perf":
        script = subprocess.run(["perf", "script", "-i", out, "-F", "event,period"],
                                capture_output=True, text=True).stdout
        periods = [int(l.split()[-1]) for l in script.splitlines()
                   if "offcpu-time" in l and l.split()[-1].isdigit()]
        seen["samples"] = len(periods)
        seen["off_cpu_s"] = sum(periods) / 1e9
        from compare import perf_lost
        seen["lost"] = perf_lost(out)
    return seen


def trial(tool, rate, args, binary, work, amprof):
    workload = Workload(binary, rate)
    pid = workload.proc.pid
    out = os.path.join(work, f"{tool}.data")
    for path in (out,):
        if os.path.exists(path):
            os.remove(path)
    row = {"tool": tool, "rate": rate}
    proc = None
    try:
        time.sleep(0.2)
        started = time.monotonic()
        if tool != "none":
            so = open(os.path.join(work, "tool.stdout"), "w+")
            se = open(os.path.join(work, "tool.stderr"), "w+")
            proc = subprocess.Popen(tool_argv(tool, pid, out, amprof), stdout=so, stderr=se)
            # Attached: one of its BPF programs has run (BPF stats on) or exists (off).
            while True:
                if proc.poll() is not None:
                    se.seek(0)
                    raise RuntimeError(f"{tool} exited ({proc.returncode}) before attaching: "
                                       + " ".join(se.read().split())[:300])
                progs = tree_bpf(proc.pid)
                # amprof loads and runs its programs well before it records (kernel symbols,
                # unwind tables): it writes the capture's header when it starts.
                if (progs and (args.no_bpf_stats or any(n for _, n in progs.values()))
                        and (tool != "amprof" or os.path.exists(out)
                             and os.path.getsize(out) > 0)):
                    break
                if time.monotonic() - started > args.attach_timeout:
                    raise RuntimeError(f"{tool} did not attach within {args.attach_timeout} s")
                time.sleep(0.05)
            attached = time.monotonic()
            row["attach_s"] = round(attached - started, 2)
        else:
            attached = time.monotonic()
        time.sleep(args.settle)
        t0 = time.monotonic()
        cpu0 = tree_cpu(proc.pid) if proc else 0.0
        bpf0 = tree_bpf(proc.pid) if proc else {}
        time.sleep(args.seconds)
        cpu1 = tree_cpu(proc.pid) if proc else 0.0
        bpf1 = tree_bpf(proc.pid) if proc else {}
        t1 = time.monotonic()
        if proc:
            proc.send_signal(signal.SIGINT)
            stopping = time.monotonic()
            # Detached: its BPF programs are gone (or it has exited: WNOWAIT leaves it to wait4).
            while (os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
                   and tree_bpf(proc.pid)):
                if time.monotonic() - stopping > args.stop_timeout:
                    # Seen once: bpftrace 0.17 asleep in epoll_wait, SIGINT caught, for minutes.
                    raise RuntimeError(f"{tool} still attached {args.stop_timeout} s after SIGINT")
                time.sleep(0.02)
            detached = time.monotonic()
            _, status, usage = os.wait4(proc.pid, 0)
            stopped = time.monotonic()
            proc.returncode = os.waitstatus_to_exitcode(status)
            so.seek(0)
            se.seek(0)
            stdout, stderr = so.read(), se.read()
            so.close()
            se.close()
            if proc.returncode not in (0, -signal.SIGINT, 130):
                raise RuntimeError(f"{tool} failed ({proc.returncode}): "
                                   + " ".join(stderr.split())[:300])
            run_s, runs = bpf_delta(bpf0, bpf1)
            row.update({
                "tool_cpu_per_s": round((cpu1 - cpu0) / (t1 - t0), 5),
                "tool_cpu_total_s": round(usage.ru_utime + usage.ru_stime, 3),
                "stop_s": round(stopped - stopping, 2),
                "detach_s": round(detached - stopping, 2),
                "bpf_run_per_s": round(run_s / (t1 - t0), 6) if bpf1 else None,
                "bpf_ns_per_run": round(run_s * 1e9 / runs) if runs else None,
                "bpf_runs_per_s": round(runs / (t1 - t0)) if bpf1 else None})
        time.sleep(0.25)
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        workload.stop()
    w = workload.span(t0, t1)
    row.update({"switches_per_s": round(w["switches"] / w["t"]),
                "voluntary_per_s": round(w["voluntary"] / w["t"]),
                "round_trips_per_s": round(w["round_trips"] / w["t"]),
                "workload_cpu_per_s": round(w["cpu_s"] / w["t"], 4),
                "loadavg": os.getloadavg()[0],  # others' work on a shared machine shows here
                "workload_cpu_us_per_round_trip": round(w["cpu_s"] * 1e6 / w["round_trips"], 3)
                if w["round_trips"] else None})
    if proc:
        seen = parse_output(tool, stdout, stderr, out, amprof, pid)
        # The workload's own off-CPU time over the tool's attached span.
        try:
            # Its rate over the reports inside the span, times the span (reports are 100 ms
            # apart: the first and last are up to that far inside).
            # amprof says how long it recorded (from its start to the signal).
            own = workload.span(attached, detached)
            length = seen.get("recorded_s") or (detached - attached)
            own_off = (WORKLOAD_THREADS - own["cpu_s"] / own["t"]) * length
            if seen.get("off_cpu_s") is not None and own_off > 0:
                seen["seen_share"] = round(seen["off_cpu_s"] / own_off, 4)
        except RuntimeError:
            pass
        row.update(seen)
    if os.path.exists(out):
        os.remove(out)
    return row


# ---- which tools can run ------------------------------------------------------------------

def why_not(tool, amprof, work):
    """None if `tool` runs here, else why (a one-line reason). Exits if it is not installed."""
    if tool == "none":
        return None
    if tool == "amprof":
        if not os.access(amprof, os.X_OK):
            sys.exit(f"off_cpu.py: no amprof at {amprof} (cargo build --release, or --amprof)")
        help_text = subprocess.run([amprof, "record", "--help"], capture_output=True,
                                   text=True).stdout
        if "--off-cpu" not in help_text:
            return f"{amprof} has no record --off-cpu"
        return None
    command, package = INSTALL[tool]
    if not shutil.which(command):
        sys.exit(f"off_cpu.py: {command} is not installed: apt-get install {package} "
                 f"(or leave {tool} out of --tools)")
    if tool == "perf":
        data = os.path.join(work, "probe.perf")
        run = subprocess.run(["perf", "record", "-q", "--off-cpu", "-o", data, "--", "true"],
                             capture_output=True, text=True)
        events = subprocess.run(["perf", "evlist", "-i", data], capture_output=True,
                                text=True).stdout
        if "offcpu-time" not in events:
            said = " ".join(run.stderr.split())
            return f"perf {perf_version()} has no --off-cpu" + (f" ({said})" if said else "")
        return None
    if tool == "bcc":
        # BCC compiles its program against the kernel headers and attaches a kprobe on
        # finish_task_switch at start-up: a 1 s run of the whole system tells.
        run = subprocess.run(["offcputime-bpfcc", "-f", "1"], capture_output=True, text=True)
    else:
        run = subprocess.run(["bpftrace", "-e", BPFTRACE_SCRIPT + "interval:s:1 { exit(); }",
                              "1"], capture_output=True, text=True)
    if run.returncode != 0:
        errors = [l.strip() for l in (run.stderr + run.stdout).splitlines()
                  if re.search(r"error|unable|no such|not found|exception", l, re.I)]
        why = f"{command} cannot run here: " + ("; ".join(errors[:3]) or
                                                 f"exit code {run.returncode}")
        if tool == "bcc" and not kprobes():
            why += " (and this kernel has no kprobes, which offcputime attaches)"
        return why
    return None


def kprobes():
    """Whether the kernel can attach kprobes (perf's kprobe PMU or tracefs kprobe_events)."""
    return (os.path.exists("/sys/bus/event_source/devices/kprobe")
            or os.path.exists("/sys/kernel/tracing/kprobe_events")
            or os.path.exists("/sys/kernel/debug/tracing/kprobe_events"))


def perf_version():
    return subprocess.run(["perf", "--version"], capture_output=True, text=True).stdout.split()[-1]


# ---- summary ------------------------------------------------------------------------------

def medians(rows):
    groups = {}
    for r in rows:
        if "skipped" not in r and "error" not in r:
            groups.setdefault((r["rate"], r["tool"]), []).append(r)
    out = []
    for (rate, tool), rs in groups.items():
        m = {"rate": rate, "tool": tool, "runs": len(rs)}
        for key in rs[0]:
            if key in m or key == "run":
                continue
            values = [r.get(key) for r in rs if r.get(key) is not None]
            if values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                              for v in values):
                m[key] = round(statistics.median(values), 6)
            else:
                m[key] = values[0] if values else None
        out.append(m)
    # Against the workload alone, in the same run.
    for m in out:
        alone = next((a for a in out if a["rate"] == m["rate"] and a["tool"] == "none"), None)
        if alone and m["tool"] != "none":
            m["rate_ratio"] = round(m["round_trips_per_s"] / alone["round_trips_per_s"], 4)
            if m.get("workload_cpu_us_per_round_trip") and alone.get(
                    "workload_cpu_us_per_round_trip"):
                m["cpu_per_round_trip_ratio"] = round(
                    m["workload_cpu_us_per_round_trip"] / alone["workload_cpu_us_per_round_trip"],
                    4)
    return out


def fmt(v, f="{:.3f}"):
    return "n/a" if v is None else f.format(v)


def rate_name(rate):
    return "unlimited" if rate == 0 else f"{rate // 1000}k/s"


def markdown(meds, tools, skipped):
    get = {(m["rate"], m["tool"]): m for m in meds}
    rates = sorted({m["rate"] for m in meds}, key=lambda r: r or float("inf"))
    lines = []
    if skipped:
        lines += ["Not measured: " + "; ".join(f"{t}: {why}" for t, why in skipped), ""]
    lines += ["| rate (aimed) | tool | switches/s | round trips/s (× alone) "
              "| workload CPU µs/round trip (× alone) | tool CPU % of a core "
              "| tool CPU s in all | BPF ns/run | off-CPU seen | stacks | off-CPU samples "
              "| off-CPU lost |",
              "| --- |" + " --- |" * 11]
    for rate in rates:
        for tool in tools:
            m = get.get((rate, tool))
            if not m:
                continue
            rt = fmt(m["round_trips_per_s"], "{:.0f}")
            if "rate_ratio" in m:
                rt += f" ({m['rate_ratio']:.3f}×)"
            cpu = fmt(m.get("workload_cpu_us_per_round_trip"), "{:.2f}")
            if "cpu_per_round_trip_ratio" in m:
                cpu += f" ({m['cpu_per_round_trip_ratio']:.3f}×)"
            lines.append(
                f"| {rate_name(rate)} | {tool} | {fmt(m['switches_per_s'], '{:.0f}')} | {rt} "
                f"| {cpu} | {fmt(m.get('tool_cpu_per_s') and m['tool_cpu_per_s'] * 100, '{:.2f}')} "
                f"| {fmt(m.get('tool_cpu_total_s'))} | {fmt(m.get('bpf_ns_per_run'), '{:.0f}')} "
                f"| {fmt(m.get('seen_share') and m['seen_share'] * 100, '{:.1f}%')} "
                f"| {fmt(m.get('stacks'), '{:.0f}')} | {fmt(m.get('samples'), '{:.0f}')} "
                f"| {fmt(m.get('lost'), '{:.0f}')} |")
    peers = [t for t in tools if t not in ("none", "amprof")]
    ratio_lines = []
    for rate in rates:
        a = get.get((rate, "amprof"))
        if not a:
            continue
        for peer in peers:
            p = get.get((rate, peer))
            if not p:
                continue
            cells = []
            for key, name in (("tool_cpu_per_s", "tool CPU"),
                              ("workload_cpu_us_per_round_trip", "workload CPU/round trip"),
                              ("round_trips_per_s", "round trips/s")):
                if a.get(key) and p.get(key):
                    cells.append(f"{name} {a[key] / p[key]:.2f}×")
            ratio_lines.append(f"| {rate_name(rate)} | amprof / {peer} | " + ", ".join(cells)
                               + " |")
    if ratio_lines:
        lines += ["", "| rate | ratio | medians |", "| --- | --- | --- |"] + ratio_lines
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--amprof", default=os.path.join(ROOT, "target/release/amprof"))
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--rates", default="10000,100000,0")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--settle", type=float, default=1)
    parser.add_argument("--attach-timeout", type=float, default=60)
    parser.add_argument("--stop-timeout", type=float, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-bpf-stats", action="store_true",
                        help="leave BPF run-time stats off (no BPF ns/run; attach = a program "
                        "exists)")
    parser.add_argument("--json", help="write every trial and the medians here")
    parser.add_argument("--markdown", help="write the tables here")
    args = parser.parse_args()
    tools = args.tools.split(",")
    for t in tools:
        if t not in TOOLS:
            parser.error(f"unknown tool {t}: one of {', '.join(TOOLS)}")
    if "none" not in tools:
        tools.insert(0, "none")  # slowdowns are against it
    rates = [int(r) for r in args.rates.split(",")]
    if os.geteuid() != 0:
        sys.exit("off_cpu.py: run as root (the tools load BPF programs)")
    amprof = os.path.abspath(args.amprof)
    work = tempfile.mkdtemp(prefix="amprof-offcpu-")
    stats_fd = None if args.no_bpf_stats else enable_bpf_stats()
    if stats_fd is None and not args.no_bpf_stats:
        sys.exit("off_cpu.py: BPF run-time stats refused (try --no-bpf-stats)")
    rows, skipped, runnable = [], [], []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    try:
        for tool in tools:
            why = why_not(tool, amprof, work)
            if why:
                skipped.append((tool, why))
                emit({"tool": tool, "skipped": why})
            else:
                runnable.append(tool)
        binary = build_pingpong(work)
        for run in range(args.runs):
            k = run % len(runnable)
            for rate in rates:
                for tool in runnable[k:] + runnable[:k]:
                    try:
                        row = trial(tool, rate, args, binary, work, amprof)
                    except RuntimeError as e:
                        row = {"tool": tool, "rate": rate, "error": str(e)}
                    row["run"] = run
                    emit(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if stats_fd is not None:
            os.close(stats_fd)
    meds = medians(rows)
    for m in meds:
        print(json.dumps({"median": m}), flush=True)
    table = markdown(meds, runnable, skipped)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trials": rows, "medians": meds}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
