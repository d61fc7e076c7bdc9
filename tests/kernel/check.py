#!/usr/bin/env python3
"""Checks what tests/kernel/guest.sh recorded in one kernel of the matrix (.ci/kernel-matrix).

    check.py RESULTS SERIES AMPROF

RESULTS holds the guest's files (NAME.out, NAME.err, NAME.rc and the captures), SERIES is the
kernel line (5.10, 6.1, ...), AMPROF the host's amprof, which reads the guest's captures (they
are symbolized when recorded). What each kernel must do is the table of docs/kernels.md:
every mode and --off-cpu from 6.1 on; on 5.10 frame pointers and stack copies, the default
falling back to the copy with one warning line, and --off-cpu turning itself off.
"""

import json
import subprocess
import sys
from pathlib import Path

# Processed instructions a program may need: 15% of the verifier's 1M budget.
HEADROOM_BOUND = 150_000
# Programs that load from 5.10 on; the others need 5.11-5.17 helpers.
OLD_KERNEL_PROGRAMS = {"sample_fp", "sample_copy_compat", "process_exec", "follow_children",
                       "forget_new_process"}

results = Path(sys.argv[1])
series = tuple(int(part) for part in sys.argv[2].split("."))
amprof = sys.argv[3]
modern = series >= (5, 17)
failures = []


def fail(message):
    failures.append(message)
    print(f"  FAIL {message}")


def ok(message):
    print(f"  ok   {message}")


def read(name):
    path = results / name
    return path.read_text(errors="replace") if path.exists() else ""


def command(name):
    """The exit code, stderr lines and --json summary of the guest's run NAME."""
    rc = int(read(f"{name}.rc").strip() or "-1")
    stderr = read(f"{name}.err").splitlines()
    try:
        summary = json.loads(read(f"{name}.out"))
    except ValueError:
        summary = None
    return rc, stderr, summary


def report(capture, *flags):
    out = subprocess.run([amprof, "report", "-i", str(results / capture), *flags],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"amprof report {capture} {' '.join(flags)}: {out.stderr.strip()}")
        return ""
    return out.stdout


def folded(capture, *flags):
    """(frames root first, count) of each folded line."""
    stacks = []
    for line in report(capture, "--format", "folded", *flags).splitlines():
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def check_headroom():
    rc, stderr, check = command("check")
    if rc != 0 or check is None:
        fail(f"amprof check exited {rc}: {' '.join(stderr)}")
        return
    for program in check["programs"]:
        name, insns = program["program"], program["verified_insns"]
        must_load = modern or name in OLD_KERNEL_PROGRAMS
        if not program["loaded"]:
            if must_load:
                fail(f"{name} refused: {program['refusal']}")
            elif not program["refusal"]:
                fail(f"{name} refused without a reason")
            continue
        if insns is not None and insns > HEADROOM_BOUND:
            fail(f"{name} needed {insns} verified instructions (bound {HEADROOM_BOUND})")
    figures = ", ".join(f"{p['program']} {p['verified_insns']}" for p in check["programs"]
                        if p["loaded"])
    ok(f"headroom: {figures}")


def check_record(name, asked, comm, depth):
    """A recording of `-g asked` ran (or fell back as this kernel must), its stacks complete."""
    rc, stderr, summary = command(name)
    if rc != 0 or summary is None:
        fail(f"{name}: exit {rc}: {' '.join(stderr)[:400]}")
        return
    expected = asked if modern or asked != "dwarf" else "dwarf-copy"
    if summary["call_graph"] != expected:
        fail(f"{name}: ran -g {summary['call_graph']}, expected {expected}")
    limits = summary["kernel_limits"]
    warnings = [line for line in stderr if "warning:" in line]
    if expected != asked:
        if len(limits) != 1 or len(warnings) != 1 or "sample_dwarf" not in warnings[0]:
            fail(f"{name}: the fallback should give one warning line, got {warnings}")
    elif limits or warnings:
        fail(f"{name}: unexpected warnings {warnings}")
    if any("sudo" in line for line in stderr):
        fail(f"{name}: tells root to use sudo: {stderr}")
    stacks = folded(f"{name}.data", "--comm", comm)
    total = sum(count for _, count in stacks)
    complete = sum(count for frames, count in stacks if frames.count("recurse") >= depth)
    share = complete / total if total else 0
    if total < 50 or share < 0.9:
        fail(f"{name}: {complete} of {total} samples have all {depth} frames of the recursion")
    else:
        ok(f"{name}: -g {summary['call_graph']}, {total} samples, {share:.0%} complete stacks"
           + (f" (warning: {warnings[0]})" if warnings else ""))


def check_pid():
    rc, stderr, summary = command("pid")
    pid = int(read("pid.pid").strip() or "0")
    if rc != 0 or summary is None:
        fail(f"-p: exit {rc}: {' '.join(stderr)[:400]}")
        return
    samples = folded("pid.data", "--pid", str(pid))
    total = sum(count for _, count in samples)
    if total < 50:
        fail(f"-p {pid}: {total} samples")
    else:
        ok(f"-p: {total} samples of the running process")


def check_off_cpu():
    rc, stderr, summary = command("offcpu")
    if rc != 0:
        fail(f"--off-cpu: exit {rc}: {' '.join(stderr)[:400]}")
        return
    warnings = [line for line in stderr if "warning:" in line]
    if any("sudo" in line for line in stderr):
        fail(f"--off-cpu: tells root to use sudo: {stderr}")
    if not modern:
        # Off-CPU programs need 5.15+ helpers: recording goes on without them, saying so once.
        # (Beside the default's fallback to the stack copy.)
        off = [line for line in warnings if "off-CPU time is not recorded" in line]
        if len(off) != 1 or len(warnings) != 2:
            fail(f"--off-cpu on an old kernel: expected one warning line, got {warnings}")
        else:
            ok(f"--off-cpu turns itself off: {off[0]}")
        return
    if warnings:
        fail(f"--off-cpu: unexpected warnings {warnings}")
    measured = json.loads(read("offcpu.out"))
    truth = {}
    for thread in measured["threads"]:
        for function, seconds in thread["blocked_in"].items():
            truth[function] = truth.get(function, 0) + seconds
    # The capture holds the command's process only.
    stacks = folded("offcpu.data", "--event", "off-cpu")
    profiled = {f: sum(c for frames, c in stacks if f in frames) for f in truth}
    total_truth, total_profiled = sum(truth.values()), sum(profiled.values())
    if total_profiled == 0:
        fail("--off-cpu: no off-CPU time in the blocking functions")
        return
    split = []
    for function in sorted(truth):
        want = truth[function] / total_truth
        got = profiled[function] / total_profiled
        split.append(f"{function} {got:.0%} (measured {want:.0%})")
        if abs(want - got) > 0.10:
            fail(f"--off-cpu: {function} has {got:.0%} of the off-CPU time, measured {want:.0%}")
    ok("--off-cpu split: " + ", ".join(split))


def check_mixed_waits(frequency):
    """tests/fixtures/mixed_waits.c: each function's share of the off-CPU time within 3 points
    of what its thread measured (waits of 40 ms to 0.2 ms, one site or two, blocked or
    runnable)."""
    name = f"mixed-{frequency}"
    rc = int(read(f"{name}.rc").strip() or "-1")
    if rc != 0:
        fail(f"{name}: exit {rc}: {read(f'{name}.err')[:400]}")
        return
    try:
        truth = json.loads(read(f"{name}.out"))
    except ValueError:
        fail(f"{name}: the fixture printed {read(f'{name}.out')[:200]!r}")
        return
    stacks = folded(f"{name}.data", "--event", "off-cpu")
    profiled = {f: sum(c for frames, c in stacks if f in frames) for f in truth}
    total_truth, total_profiled = sum(truth.values()), sum(profiled.values())
    if total_profiled == 0:
        fail(f"{name}: no off-CPU time in the fixture's functions")
        return
    split = []
    for function in truth:
        want = 100 * truth[function] / total_truth
        got = 100 * profiled[function] / total_profiled
        split.append(f"{function} {got:.1f} ({want:.1f})")
        if abs(want - got) > 3.0:
            fail(f"{name}: {function} has {got:.1f}% of the off-CPU time, measured {want:.1f}%")
    ok(f"--off-cpu -F {frequency} mixed waits, % (measured): " + ", ".join(split))


print(f"Linux {read('kernel').strip()}")
check_headroom()
check_record("dwarf", "dwarf", "recursion-nofp", 200)
check_record("copy", "dwarf-copy", "recursion-nofp", 200)
check_record("fp", "fp", "recursion-fp", 100)
check_pid()
check_off_cpu()
if modern:
    check_mixed_waits(99)
    check_mixed_waits(999)
sys.exit(1 if failures else 0)
