#!/usr/bin/env python3
"""The targets of in-kernel user stack unwinding, measured in one run: `-g dwarf` walking user
stacks in eBPF with unwind tables built from .eh_frame, against `-g dwarf-copy` (the 16 KiB
stack copy unwound in userspace; in builds before in-kernel unwinding, that is what `-g dwarf`
is), `-g fp`, and perf. For each amprof mode of --modes (default fp,dwarf,dwarf-copy; a mode
this build rejects is reported as skipped) and each section of --sections:

  cargo      `cargo build --release --offline` of this repository, with the stock toolchain,
             into a scratch CARGO_TARGET_DIR (nothing is written into the repository); from
             --cargo-delay s (5) into the build, a --cargo-seconds (12) system-wide recording at
             99 Hz. The share of rustc's samples with complete stacks (rustc's: those of
             processes named `rustc`, see is_rustc), bytes per sample, the profiler's CPU and
             peak RSS (VmHWM polled every 50 ms, as benches/streaming.py does). Peers:
             `perf record -a --call-graph dwarf,65528` ("perf dwarf") and `perf record -a -g`
             ("perf fp"); the build is started anew for each.
  recursion  tests/fixtures/recursion.c (cc -O2 -fomit-frame-pointer) on 2 threads --depth
             (600) frames deep, recorded with -p for --seconds (8) at --frequency (499 Hz): the
             share of samples whose user stack has at least --depth frames and reaches the thread
             start. perf dwarf as in `cargo`, unwound by `perf script --max-stack 4096`.
  short      programs that live under 1 s, started one after another by this script from 2 s
             after a system-wide recording began (--seconds + 4 s long, --frequency): python3
             busy 0.3 s, gzip -9 and sort of a 4 MB file, a C++ program (-O2, no frame
             pointers) busy 0.3 s, tests/fixtures/short.c (-O2, no frame pointers) busy 0.3 s.
             The share of their samples with complete stacks (picked by pid), per program and
             over all.
  stock      benches/stacks.py's workloads (python3, gzip, sort, C++), each profiler attached
             with -p for --seconds at --frequency; perf there is stacks.py's `--call-graph
             dwarf` (perf's default 8 KiB copy).
  cost       999 Hz system-wide for --cost-seconds (10) while two python3 processes do a fixed
             amount of work (calibrated to ~--cost-seconds + 4 s, stock /usr/bin/python3, no
             frame pointers): the profiler's CPU (user + sys, wait4) and peak RSS, bytes per
             sample, lost samples, and the workload's wall and CPU time against an unprofiled
             run in the same run. Peers: `perf record -a -g` and `perf record -a --call-graph
             dwarf` (perf's default 8 KiB, as benches/compare.py: 64 KiB at 999 Hz would write
             over 100 MB/s).

A stack is complete when its user part reaches the process entry (_start, __libc_start_main)
or a thread's start (start_thread, clone3): benches/stacks.py's ENTRY. Bytes per sample, from
the kernel to user space: amprof's `ring_bytes / samples` from `record --json` (n/a from
builds that do not report ring_bytes); perf's perf.data size / its sample records (perf.data
holds little else). amprof's CPU covers recording, unwinding and symbolizing; perf's is its
record's, and `perf script` (where perf unwinds DWARF stacks) is reported apart as
postprocess_cpu_s. The in-kernel cost of amprof's programs (bpf_run_s over bpf_runs, idle CPUs'
samples included) is read from /proc/PID/fdinfo with BPF run-time stats enabled for the run
(BPF_ENABLE_STATS). System-wide rows carry the load average (loadavg) and cargo's the busiest
process names (top_processes): on a shared machine, other work shows there, in RSS (amprof
reads and symbolizes every process it samples) and in wall times.

Every trial is printed as a JSON line; then, per section, workload and profiler, the medians
over --runs (also a JSON line each), and Markdown tables of the medians. The profilers' order
turns by one each run.

Usage (as root, from the repository, after `cargo build --release`; needs perf, cc, g++):
  python3 benches/kernel_unwind.py [--modes fp,dwarf,dwarf-copy] [--runs 3]
      [--sections cargo,recursion,short,stock,cost] [--seconds 8] [--frequency 499]
      [--cargo-seconds 12] [--cargo-delay 5] [--depth 600] [--cost-seconds 10]
      [--json FILE] [--markdown FILE]
"""
import argparse, collections, ctypes, json, os, re, resource, shutil, signal, statistics, subprocess, sys, tempfile
import threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import perf_lost  # noqa: E402
from stacks import ENTRY, amprof_rejects, child_cpu, measure, stock_workloads  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMPROF = os.path.join(ROOT, "target/release/amprof")
PERF_DWARF_STACK = 65528  # the most perf's --call-graph dwarf copies
PYTHON = "/usr/bin/python3"  # Debian's: no frame pointers
# Names rustc's threads give themselves (LLVM's optimization, LTO and copy workers, their
# coordinator; "rustc" is the main thread's and the compiler thread's). amprof names a sample
# by its process (the main thread's comm; the sampled thread's when /proc/PID had gone), perf by
# its thread: with perf, a rustc sample is one whose thread has one of these names (a rustc
# process's idle "ctrl-c" thread aside), which also leaves out a rustc pid's samples before its
# exec (comm "cargo") and a linker's forked from rustc before its exec (comm "rustc").
RUSTC_THREADS = ("opt ", "lto ", "cpy ", "coordinator")


def is_rustc(name):
    return name == "rustc" or name.startswith(RUSTC_THREADS)


def complete(frames):
    """Whether a root-first list of user frames reaches the process or a thread's start."""
    return any(re.sub(r"(\+0x[0-9a-f]+)?( \(inlined\))?$", "", f) in ENTRY for f in frames)


# ---- running a profiler -------------------------------------------------------------------

def enable_bpf_stats():
    """Has the kernel count BPF programs' run time (BPF_ENABLE_STATS: held by the returned fd,
    undone when it closes; kernel.bpf_stats_enabled is left alone). None if refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(16)  # union bpf_attr, enable_stats.type = 0 (run time)
    fd = libc.syscall(321, 32, attr, 16)  # __NR_bpf on x86_64, BPF_ENABLE_STATS
    return fd if fd >= 0 else None


def bpf_run_time(pid, seen):
    """Adds to `seen` (prog_id -> (run_time_ns, run_cnt)) the BPF programs `pid` holds."""
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        except OSError:
            continue
        if "prog_id" in info and "run_time_ns" in info:
            seen[int(info["prog_id"])] = (int(info["run_time_ns"]), int(info["run_cnt"]))


def run_polled(argv, out_prefix):
    """Runs argv to its end, polling its VmHWM and its BPF programs' run time every 50 ms.
    Returns (exit code, CPU s of it and its waited children, peak RSS MiB, stdout, stderr,
    {prog_id: (run_time_ns, run_cnt)})."""
    bpf = {}
    with open(out_prefix + ".stdout", "w+") as so, open(out_prefix + ".stderr", "w+") as se:
        proc = subprocess.Popen(argv, stdout=so, stderr=se)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            bpf_run_time(proc.pid, bpf)
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        return (proc.returncode, usage.ru_utime + usage.ru_stime, peak / 1024, so.read(),
                se.read(), bpf)


def amprof_run(mode, seconds, freq, out, pid=None):
    """`amprof record` system-wide (or -p pid): its cost, and its capture at `out`."""
    argv = [AMPROF, "record", "-q", "--json", "-g", mode, "-F", str(freq), "-d", f"{seconds}s",
            "-o", out] + (["-p", str(pid)] if pid else [])
    code, cpu, rss, stdout, stderr, bpf = run_polled(argv, out)
    if code != 0:
        raise RuntimeError(f"amprof record -g {mode} failed ({code}): {stderr.strip()}")
    summary = json.loads(stdout)
    samples, ring = summary["samples"], summary.get("ring_bytes")
    return {"samples": samples, "lost": summary["lost"], "cpu_s": round(cpu, 3),
            "rss_mib": round(max(rss, summary["peak_rss_kib"] / 1024), 1),
            "ring_bytes": ring,
            "bytes_per_sample": round(ring / samples) if ring is not None and samples else None,
            # In-kernel cost (all of amprof's programs; their runs include idle CPUs' samples),
            # as of the last poll (up to 50 ms before the end). None without BPF stats.
            "bpf_run_s": round(sum(t for t, _ in bpf.values()) / 1e9, 4) if bpf else None,
            "bpf_runs": sum(n for _, n in bpf.values()) if bpf else None,
            "loadavg": os.getloadavg()[0]}


def amprof_stacks(out, pids=None):
    """[(process name, user frames root first, count)] of a capture (of `pids` only)."""
    argv = [AMPROF, "report", "--format", "folded", "-i", out]
    if pids is not None:
        if not pids:
            return []
        argv += ["--pid", ",".join(map(str, pids))]
    folded = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    stacks = []
    for line in folded.splitlines():
        stack, count = line.rsplit(" ", 1)
        process, *frames = stack.split(";")
        stacks.append((process, [f for f in frames if not f.endswith("_[k]")], int(count)))
    return stacks


PERF_HEADER = re.compile(r"^\s*(.*?)\s+(\d+)/(\d+)\s*$")


def perf_run(graph, seconds, freq, out, pid=None):
    """`perf record` system-wide (or -p pid) with `graph` ("fp", "dwarf" or "dwarf,SIZE"):
    its cost, and [(pid, thread name)] of its samples."""
    call_graph = ["-g"] if graph == "fp" else ["--call-graph", graph]
    argv = ["perf", "record", "-q", *(["-p", str(pid)] if pid else ["-a"]), *call_graph,
            "-F", str(freq), "-o", out, "--", "sleep", str(seconds)]
    # perf exits non-zero on SIGTERM when its -p target exits first: not a failure.
    _, cpu, rss, _, _, _ = run_polled(argv, out)
    # Without ip in the fields, perf script does not unwind: cheap.
    text = subprocess.run(["perf", "script", "-i", out, "-F", "comm,pid,tid"],
                          capture_output=True, text=True).stdout
    threads = []
    for line in text.splitlines():
        m = PERF_HEADER.match(line)
        if m:
            threads.append((int(m.group(2)), m.group(1)))
    size = os.path.getsize(out)
    return {"samples": len(threads), "lost": perf_lost(out), "cpu_s": round(cpu, 3),
            "rss_mib": round(rss, 1), "perf_data_bytes": size,
            "bytes_per_sample": round(size / len(threads)) if threads else None,
            "loadavg": os.getloadavg()[0]}, threads


def perf_stacks(out, pids=None):
    """[(pid, thread name, user frames root first)] of each sample of a perf.data (of `pids`
    only), unwound by `perf script` (whose CPU is returned too). Inlined frames are not
    looked up (perf would run addr2line on every binary with debug info: minutes)."""
    argv = ["perf", "script", "-i", out, "-F", "comm,pid,tid,ip,sym", "--max-stack", "4096",
            "--no-inline"]
    if pids is not None:
        if not pids:
            return [], 0.0
        argv += ["--pid", ",".join(map(str, sorted(pids)))]
    text, post = child_cpu(lambda: subprocess.run(argv, capture_output=True, text=True).stdout)
    samples, head, frames = [], None, []

    def flush():
        if head:
            user = [f for f in frames if not f[0].startswith("ffffffff")]
            samples.append((head[0], head[1], [f[1] for f in reversed(user)]))

    for line in text.splitlines():
        if line.startswith("\t"):
            parts = line.strip().split(" ", 1)
            frames.append((parts[0], parts[1] if len(parts) > 1 else "[unknown]"))
        elif line.strip():
            flush()
            m = PERF_HEADER.match(line)
            head, frames = (int(m.group(2)), m.group(1)) if m else None, []
    flush()
    return samples, post


def profilers_for(modes, perf_peers):
    return [f"amprof {m}" for m in modes] + perf_peers


def turned(items, run):
    k = run % len(items)
    return items[k:] + items[:k]


def clean(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


# ---- sections -----------------------------------------------------------------------------

def section_cargo(args, modes, work, run, emit):
    env = dict(os.environ)
    env.pop("RUSTFLAGS", None)
    for profiler in turned(profilers_for(modes, ["perf dwarf", "perf fp"]), run):
        target = os.path.join(work, "cargo-target")
        clean(target)
        env["CARGO_TARGET_DIR"] = target
        build = subprocess.Popen(["cargo", "build", "--release", "--offline", "--locked",
                                  "--manifest-path", os.path.join(ROOT, "Cargo.toml")],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        out = os.path.join(work, "cargo-" + profiler.replace(" ", "-"))
        clean(out)
        try:
            time.sleep(args.cargo_delay)
            if profiler.startswith("amprof"):
                row = amprof_run(profiler.split()[1], args.cargo_seconds, 99, out)
            else:
                graph = f"dwarf,{PERF_DWARF_STACK}" if profiler == "perf dwarf" else "fp"
                row, threads = perf_run(graph, args.cargo_seconds, 99, out)
        finally:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
            clean(target)
        if profiler.startswith("amprof"):
            every = amprof_stacks(out)
            rustc = [(p, f, c) for p, f, c in every if is_rustc(p)]
            stacks, post = [(f, c) for _, f, c in rustc], 0.0
            names = {p for p, _, _ in rustc}
            by_name = collections.Counter()
            for p, _, c in every:
                by_name[p] += c
        else:
            samples, post = perf_stacks(out, {pid for pid, comm in threads if is_rustc(comm)})
            stacks = [(f, 1) for _, comm, f in samples if is_rustc(comm)]
            # "opt cgu.07" and the like as "opt *".
            names = {re.sub(r" .*", " *", comm) for _, comm, _ in samples if is_rustc(comm)}
            by_name = collections.Counter(re.sub(r" .*", " *", comm) for _, comm in threads)
        total = sum(c for _, c in stacks)
        row.update({"section": "cargo", "workload": "rustc (cargo build)", "profiler": profiler,
                    "run": run, "rustc_samples": total,
                    "complete_share": round(sum(c for f, c in stacks if complete(f)) / total, 4)
                    if total else None,
                    "postprocess_cpu_s": round(post, 3), "rustc_names": sorted(names),
                    # What else ran: the machine may be shared.
                    "top_processes": dict(by_name.most_common(6))})
        emit(row)
        clean(out)


def section_recursion(args, modes, work, run, emit):
    binary = os.path.join(work, "recursion")
    if not os.path.exists(binary):
        subprocess.run(["cc", "-O2", "-fomit-frame-pointer", "-pthread", "-o", binary,
                        os.path.join(ROOT, "tests/fixtures/recursion.c")], check=True)
    for profiler in turned(profilers_for(modes, ["perf dwarf"]), run):
        load = subprocess.Popen([binary, str(args.seconds + 4), str(args.depth), "2"])
        out = os.path.join(work, "recursion-" + profiler.replace(" ", "-"))
        clean(out)
        try:
            time.sleep(1)  # both threads at the bottom of their recursion
            if profiler.startswith("amprof"):
                row = amprof_run(profiler.split()[1], args.seconds, args.frequency, out,
                                 pid=load.pid)
                stacks, post = [(f, c) for _, f, c in amprof_stacks(out)], 0.0
            else:
                row, _ = perf_run(f"dwarf,{PERF_DWARF_STACK}", args.seconds, args.frequency,
                                  out, pid=load.pid)
                samples, post = perf_stacks(out)
                stacks = [(f, 1) for _, _, f in samples]
        finally:
            load.kill()
            load.wait()
        total = sum(c for _, c in stacks)
        deep = sum(c for f, c in stacks if len(f) >= args.depth and complete(f))
        depths = sorted(len(f) for f, c in stacks for _ in range(c))
        row.update({"section": "recursion", "workload": f"recursion {args.depth} deep",
                    "profiler": profiler, "run": run, "workload_samples": total,
                    "complete_share": round(deep / total, 4) if total else None,
                    "reaches_start_share": round(sum(c for f, c in stacks if complete(f)) / total,
                                                 4) if total else None,
                    "median_user_frames": depths[len(depths) // 2] if depths else None,
                    "max_user_frames": depths[-1] if depths else None,
                    "postprocess_cpu_s": round(post, 3)})
        emit(row)
        clean(out)


def short_programs(work):
    small = os.path.join(work, "small.txt")
    if not os.path.exists(small):
        with open(small, "wb") as f:
            subprocess.run(["sh", "-c", "base64 -w 100 /dev/urandom | head -c 4000000"],
                           stdout=f, check=True)
    cxx = os.path.join(work, "cxx_workload")
    if not os.path.exists(cxx):
        subprocess.run(["g++", "-O2", "-fomit-frame-pointer", "-g", "-o", cxx,
                        os.path.join(ROOT, "tests/fixtures/cxx_workload.cpp")], check=True)
    short = os.path.join(work, "short")
    if not os.path.exists(short):
        subprocess.run(["cc", "-O2", "-fomit-frame-pointer", "-g", "-o", short,
                        os.path.join(ROOT, "tests/fixtures/short.c")], check=True)
    busy = "import time\nt=time.time()\nwhile time.time()-t<0.3: sum(i*i for i in range(10000))"
    return [("python3", [PYTHON, "-c", busy]), ("gzip", ["gzip", "-9", "-c", small]),
            ("sort", ["sort"] + [small] * 8), ("c++", [cxx, "0.3"]), ("short.c", [short, "300"])]


def section_short(args, modes, work, run, emit):
    programs = short_programs(work)
    seconds = args.seconds + 4
    for profiler in turned(profilers_for(modes, ["perf dwarf"]), run):
        out = os.path.join(work, "short-" + profiler.replace(" ", "-"))
        clean(out)
        started = []  # (program, pid, lifetime s)

        def loop():
            time.sleep(2)  # recording has begun
            end = time.monotonic() + seconds - 3
            while time.monotonic() < end:
                for name, argv in programs:
                    t = time.monotonic()
                    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
                    p.wait()
                    started.append((name, p.pid, time.monotonic() - t))

        thread = threading.Thread(target=loop)
        thread.start()
        if profiler.startswith("amprof"):
            row = amprof_run(profiler.split()[1], seconds, args.frequency, out)
        else:
            row, _ = perf_run(f"dwarf,{PERF_DWARF_STACK}", seconds, args.frequency, out)
        thread.join()
        if profiler.startswith("amprof"):
            by_program = {name: [(f, c) for _, f, c in amprof_stacks(
                out, [pid for n, pid, _ in started if n == name])] for name, _ in programs}
            post = 0.0
        else:
            program_of = {pid: name for name, pid, _ in started}
            samples, post = perf_stacks(out, set(program_of))
            by_program = {name: [] for name, _ in programs}
            for pid, _, frames in samples:
                if pid in program_of:
                    by_program[program_of[pid]].append((frames, 1))
        per = {}
        for name, stacks in list(by_program.items()) + [
                ("all", [s for v in by_program.values() for s in v])]:
            total = sum(c for _, c in stacks)
            lives = [life for n, _, life in started if name in (n, "all")]
            per[name] = {"samples": total, "processes": len(lives),
                         "median_lifetime_s": round(statistics.median(lives), 3) if lives else None,
                         "complete_share": round(sum(c for f, c in stacks if complete(f)) / total,
                                                 4) if total else None}
        row.update({"section": "short", "workload": "short-lived processes", "profiler": profiler,
                    "run": run, "complete_share": per["all"]["complete_share"],
                    "programs": per, "postprocess_cpu_s": round(post, 3)})
        emit(row)
        clean(out)


def section_stock(args, modes, work, run, emit):
    from stacks import complete_share
    for name, argv in stock_workloads(work, args.seconds).items():
        for profiler in turned(profilers_for(modes, ["perf dwarf"]), run):
            out = os.path.join(work, f"stock-{name}-{profiler.replace(' ', '-')}")
            clean(out)
            stacks, cpu, post = measure(AMPROF, argv, profiler, args.seconds, args.frequency, out)
            share, samples = complete_share(stacks)
            emit({"section": "stock", "workload": name, "profiler": profiler, "run": run,
                  "samples": samples, "complete_share": round(share, 4), "cpu_s": round(cpu, 3),
                  "postprocess_cpu_s": round(post, 3)})
            clean(out)


def python_work(rounds):
    return [PYTHON, "-c", f"sum(i*i for i in range({rounds}))"]


def run_work(rounds):
    """Two python3 processes of `rounds` each, started; returns a function that waits for them
    and gives (wall s, CPU s)."""
    start = time.monotonic()
    procs = [subprocess.Popen(python_work(rounds)) for _ in range(2)]

    def finish():
        cpu = 0.0
        for p in procs:
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
        return time.monotonic() - start, cpu
    return finish


def section_cost(args, modes, work, run, emit, state={}):
    if "rounds" not in state:
        rounds = 2_000_000
        while True:
            wall, _ = run_work(rounds)()
            if wall > 1.0:
                break
            rounds *= 4
        state["rounds"] = int(rounds * (args.cost_seconds + 4) / wall)
    rounds = state["rounds"]
    base_wall, base_cpu = run_work(rounds)()
    emit({"section": "cost", "workload": "2 python3, fixed work", "profiler": "none", "run": run,
          "workload_wall_s": round(base_wall, 3), "workload_cpu_s": round(base_cpu, 3)})
    for profiler in turned(profilers_for(modes, ["perf fp", "perf dwarf"]), run):
        out = os.path.join(work, "cost-" + profiler.replace(" ", "-"))
        clean(out)
        finish = run_work(rounds)
        try:
            time.sleep(0.5)
            if profiler.startswith("amprof"):
                row = amprof_run(profiler.split()[1], args.cost_seconds, 999, out)
            else:
                row, _ = perf_run("fp" if profiler == "perf fp" else "dwarf",
                                  args.cost_seconds, 999, out)
        finally:
            wall, cpu = finish()
        row.update({"section": "cost", "workload": "2 python3, fixed work", "profiler": profiler,
                    "run": run, "workload_wall_s": round(wall, 3), "workload_cpu_s": round(cpu, 3),
                    "slowdown_wall": round(wall / base_wall, 4),
                    "slowdown_cpu": round(cpu / base_cpu, 4)})
        emit(row)
        clean(out)


SECTIONS = {"cargo": section_cargo, "recursion": section_recursion, "short": section_short,
            "stock": section_stock, "cost": section_cost}


# ---- summary ------------------------------------------------------------------------------

def medians(rows):
    groups = {}
    for r in rows:
        if "skipped" not in r:
            groups.setdefault((r["section"], r["workload"], r["profiler"]), []).append(r)
    out = []
    for (section, workload, profiler), rs in groups.items():
        m = {"section": section, "workload": workload, "profiler": profiler, "runs": len(rs)}
        for key in rs[0]:
            if key in m or key == "run":
                continue
            values = [r.get(key) for r in rs]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                m[key] = round(statistics.median(values), 4)
            elif key == "programs":
                m[key] = {name: {k: (round(statistics.median([r[key][name][k] for r in rs
                                                              if r[key][name][k] is not None]), 4)
                                     if any(r[key][name][k] is not None for r in rs) else None)
                                 for k in rs[0][key][name]} for name in rs[0][key]}
            elif all(v is None for v in values):
                m[key] = None
            else:
                m[key] = values[0] if all(v == values[0] for v in values) else values
        out.append(m)
    return out


def pct(v):
    return "n/a" if v is None else f"{v * 100:.1f}%"


def num(v, fmt="{:.3f}"):
    return "n/a" if v is None else fmt.format(v)


def markdown(meds, profilers, skipped):
    get = {(m["section"], m["workload"], m["profiler"]): m for m in meds}
    lines = []
    if skipped:
        lines += [f"Skipped: {', '.join(f'amprof {m} ({why})' for m, why in skipped)}", ""]
    cols = [p for p in profilers if any(m["profiler"] == p for m in meds)]
    lines += ["### Complete stacks", "",
              "| workload | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    workloads = []
    for m in meds:
        if m["section"] != "cost" and (m["section"], m["workload"]) not in workloads:
            workloads.append((m["section"], m["workload"]))
    for section, workload in workloads:
        if section == "short":
            names = next(m["programs"] for m in meds if m["section"] == "short")
            for name in names:
                cells = []
                for p in cols:
                    m = get.get((section, workload, p))
                    if not m:
                        cells.append("")
                        continue
                    prog = m["programs"][name]
                    cells.append(f"{pct(prog['complete_share'])} ({num(prog['samples'], '{:.0f}')})")
                label = "short-lived, all" if name == "all" else f"short-lived {name}"
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            continue
        label = {"cargo": "rustc, cargo build, 99 Hz -a",
                 "recursion": f"{workload}: >= depth and complete"}.get(section, f"stock {workload}")
        cells = []
        for p in cols:
            m = get.get((section, workload, p))
            samples = m and (m.get("rustc_samples") or m.get("workload_samples") or m.get("samples"))
            cells.append(f"{pct(m['complete_share'])} ({num(samples, '{:.0f}')})" if m else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "(samples counted in parentheses; short-lived: per program, processes started "
              "after recording began)", "", "### Cost", "",
              "| profiler | bytes/sample cargo 99 Hz | bytes/sample 999 Hz | CPU s cargo 99 Hz "
              "| CPU s 999 Hz | in-kernel µs/sample 999 Hz | peak RSS MiB cargo "
              "| peak RSS MiB 999 Hz | lost 999 Hz | workload CPU × | workload wall × "
              "| post-processing CPU s cargo |",
              "| --- |" + " --- |" * 11]
    for p in cols:
        c = get.get(("cargo", "rustc (cargo build)", p), {})
        k = get.get(("cost", "2 python3, fixed work", p), {})
        kernel = (k["bpf_run_s"] / k["bpf_runs"] * 1e6 if k.get("bpf_run_s") is not None
                  and k.get("bpf_runs") else None)
        lines.append(f"| {p} | {num(c.get('bytes_per_sample'), '{:.0f}')} "
                     f"| {num(k.get('bytes_per_sample'), '{:.0f}')} | {num(c.get('cpu_s'))} "
                     f"| {num(k.get('cpu_s'))} | {num(kernel, '{:.2f}')} "
                     f"| {num(c.get('rss_mib'), '{:.1f}')} "
                     f"| {num(k.get('rss_mib'), '{:.1f}')} | {num(k.get('lost'), '{:.0f}')} "
                     f"| {num(k.get('slowdown_cpu'))} | {num(k.get('slowdown_wall'))} "
                     f"| {num(c.get('postprocess_cpu_s'))} |")
    lines += ["", "(workload × is against an unprofiled run of the same work in the same run; "
              "on a kernel without CONFIG_IRQ_TIME_ACCOUNTING (CI's has none) the sampling interrupt, BPF program included, is "
              "charged to the interrupted task, so the workload's CPU shows the in-kernel cost, and "
              "its wall time also shows whatever else runs on the machine. in-kernel: amprof's BPF "
              "programs' run time per run, from BPF_ENABLE_STATS)"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="fp,dwarf,dwarf-copy")
    parser.add_argument("--sections", default="cargo,recursion,short,stock,cost")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--frequency", type=int, default=499)
    parser.add_argument("--cargo-seconds", type=int, default=12)
    parser.add_argument("--cargo-delay", type=float, default=5)
    parser.add_argument("--depth", type=int, default=600)
    parser.add_argument("--cost-seconds", type=int, default=10)
    parser.add_argument("--json", help="write every trial and the medians here")
    parser.add_argument("--markdown", help="write the tables here")
    args = parser.parse_args()
    sections = args.sections.split(",")
    for s in sections:
        if s not in SECTIONS:
            parser.error(f"unknown section {s}: one of {', '.join(SECTIONS)}")
    work = tempfile.mkdtemp(prefix="amprof-kunwind-")
    stats_fd = enable_bpf_stats()
    if stats_fd is None:
        print("BPF run-time stats refused: bpf_run_s will be null", file=sys.stderr)
    modes, skipped, rows = [], [], []
    for mode in args.modes.split(","):
        why = amprof_rejects(AMPROF, mode, work)
        if why:
            skipped.append((mode, why))
            row = {"profiler": f"amprof {mode}", "skipped": why}
            rows.append(row)
            print(json.dumps(row), flush=True)
        else:
            modes.append(mode)

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    try:
        for section in sections:
            for run in range(args.runs):
                SECTIONS[section](args, modes, work, run, emit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if stats_fd is not None:
            os.close(stats_fd)
    meds = medians(rows)
    for m in meds:
        print(json.dumps({"median": m}), flush=True)
    profilers = profilers_for(modes, ["perf dwarf", "perf fp"])
    table = markdown(meds, profilers, skipped)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trials": rows, "medians": meds}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
