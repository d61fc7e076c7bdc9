//! Attaching the loaded programs: the sampling program to a cpu-clock perf event on every CPU,
//! the tracepoints (exec, children, new processes) and `--off-cpu`'s programs, with the checks
//! that the tracepoint records are laid out where the eBPF program reads them.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    programs::{
        PerfEvent, RawTracePoint, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};

use super::{
    PRIVILEGE_MESSAGE, StackMode,
    load::{load_retrying, program_of},
    privileges::privilege_error,
};
use crate::{
    error::{Exit, coded},
    record::refusal::{Refusal, program_refusal},
};

/// Attaches the sampling program of `mode` (loaded) to a cpu-clock perf event on each of
/// `cpus`, sampling at `frequency_hz`: sampling starts here.
pub(super) fn attach_cpu_clock(
    ebpf: &mut Ebpf,
    mode: StackMode,
    cpus: &[u32],
    frequency_hz: u64,
) -> Result<()> {
    let program: &mut PerfEvent = program_of(ebpf, mode.sample_program())?;
    for &cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(frequency_hz),
                false,
            )
            .map_err(|e| privilege_error(&e).unwrap_or_else(|| anyhow!(e)))
            .with_context(|| format!("cannot open the cpu-clock perf event on CPU {cpu}"))?;
    }
    Ok(())
}

/// `--off-cpu`: `sched/sched_switch` notes when target threads leave the CPU and when they
/// come back, and the `sys_exit` raw tracepoint sends the samples due from the threads' own
/// context (where their user stacks can be read). The kernel here has neither kprobes nor
/// BPF trampolines (fentry is refused), so nothing runs in a thread's context the moment it
/// is back on the CPU: its syscall exit is the first place that does.
///
/// The programs of the on-CPU mode are tried, then those with frame pointers. Returns whether
/// off-CPU time is recorded, and a line when the kernel refused something on the way: off-CPU
/// stacks walked by frame pointers instead (a silent fallback would leave code built without
/// them unnamed, with nothing said), or no off-CPU time at all.
pub(super) fn attach_off_cpu(ebpf: &mut Ebpf, mode: StackMode) -> Result<(bool, Option<String>)> {
    check_tracepoint_layout(
        "sched",
        "sched_switch",
        &[
            (" prev_state;", amprof_abi::SWITCH_PREV_STATE_OFFSET),
            (" next_pid;", amprof_abi::SWITCH_NEXT_PID_OFFSET),
        ],
        "cannot record off-CPU time",
    )?;
    ensure_tracefs()?;
    let mut first_refusal = None;
    for mode in [mode, StackMode::FramePointers] {
        let (switch, exit) = mode.off_cpu_programs();
        let program: &mut TracePoint = program_of(ebpf, switch)?;
        let mut loaded =
            load_retrying(|| program.load()).map_err(|e| (switch, program_refusal(switch, &e)));
        if loaded.is_ok() {
            let program: &mut RawTracePoint = program_of(ebpf, exit)?;
            loaded =
                load_retrying(|| program.load()).map_err(|e| (exit, program_refusal(exit, &e)));
        }
        match loaded {
            Ok(()) => {
                let program: &mut TracePoint = program_of(ebpf, switch)?;
                program
                    .attach("sched", "sched_switch")
                    .context("cannot attach to tracepoint sched/sched_switch")?;
                let program: &mut RawTracePoint = program_of(ebpf, exit)?;
                program
                    .attach("sys_exit")
                    .context("cannot attach to the sys_exit raw tracepoint")?;
                let limit = first_refusal.map(|(program, refusal): (&str, Refusal)| {
                    format!(
                        "the kernel refused {program}: {}; off-CPU stacks are walked by frame \
                         pointers instead: {}",
                        refusal.phrase(),
                        StackMode::FramePointers.cost(0)
                    )
                });
                return Ok((true, limit));
            }
            Err((program, refusal)) => {
                if refusal.privileges {
                    return Err(coded(Exit::NoPermission, PRIVILEGE_MESSAGE));
                }
                first_refusal.get_or_insert((program, refusal));
            }
        }
    }
    let (program, refusal) = first_refusal.expect("two modes were tried");
    Ok((
        false,
        Some(format!(
            "off-CPU time is not recorded: the kernel refused {program}: {}",
            refusal.phrase()
        )),
    ))
}

pub(super) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<()> {
    ensure_tracefs()?;
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("the eBPF object has no {program} program"))?
        .try_into()?;
    tracepoint.load().map_err(|error| {
        let refusal = program_refusal(program, &error);
        if refusal.privileges {
            coded(Exit::NoPermission, PRIVILEGE_MESSAGE)
        } else {
            anyhow!(
                "the kernel refused the {program} program: {}",
                refusal.phrase()
            )
        }
    })?;
    tracepoint
        .attach(category, name)
        .with_context(|| format!("cannot attach to tracepoint {category}/{name}"))?;
    Ok(())
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Tracepoints are found through tracefs, which a fresh machine may not have mounted: mount it,
/// as perf does.
fn ensure_tracefs() -> Result<()> {
    if std::path::Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let ret = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(anyhow!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Checks that `pid` and `clone_flags` sit in the `task/task_newtask` record where the eBPF
/// program reads them (the layout has not changed since the tracepoint appeared, but a wrong
/// offset would silently follow the wrong processes).
pub(super) fn check_newtask_layout() -> Result<()> {
    check_tracepoint_layout(
        "task",
        "task_newtask",
        &[
            (" pid;", amprof_abi::NEWTASK_PID_OFFSET),
            (" clone_flags;", amprof_abi::NEWTASK_FLAGS_OFFSET),
        ],
        "cannot follow the command's children",
    )
}

/// Checks that each `(field, offset)` is where the tracepoint's format file puts it: the
/// eBPF program reads records at offsets compiled in.
fn check_tracepoint_layout(
    category: &str,
    name: &str,
    fields: &[(&str, usize)],
    consequence: &str,
) -> Result<()> {
    ensure_tracefs()?;
    let path = format!("{TRACEFS}/events/{category}/{name}/format");
    let format = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let offset = |field: &str| -> Option<usize> {
        let line = format.lines().find(|l| l.contains(field))?;
        let rest = &line[line.find("offset:")? + "offset:".len()..];
        rest[..rest.find(';')?].trim().parse().ok()
    };
    if fields.iter().all(|&(field, at)| offset(field) == Some(at)) {
        Ok(())
    } else {
        Err(anyhow!(
            "this kernel's {name} tracepoint has an unexpected layout ({path}): {consequence}"
        ))
    }
}
