//! The kernel side of recording: loads amprof's eBPF object, attaches it to a cpu-clock perf event
//! on every online CPU, and hands the ring buffer's records to userspace as [`RingEvent`]s.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use amprof_abi::{
    EVENT_EXEC, EVENT_OFF_CPU, EVENT_SAMPLE, EventHeader, MAX_STACK_DEPTH, MAX_USER_FRAMES,
    OFF_CPU_BLOCKED, OFF_CPU_RUNNABLE, SampleHead, UNWIND_COPY, UNWIND_FP, UNWIND_TABLES,
    UNWIND_TABLES_COPY, UNWIND_TABLES_TRUNCATED, WINDOW_SLOTS, config,
};
use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        PerfEvent, RawTracePoint, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::{nr_cpus, online_cpus},
};

use serde::Serialize;

use super::{
    CallGraph,
    refusal::{Refusal, object_refusal, program_refusal},
};
use crate::{
    capture::{
        Detail,
        format::{OffCpu, OffCpuReason},
    },
    error::{Exit, coded},
};

/// The compiled eBPF program (ebpf-src/build.sh rebuilds it; CI checks it matches its source).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/ebpf-src/amprof.bpf.o"
));

/// How to sample.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    pub frequency_hz: u64,
    /// The window length: the kernel side counts lost and idle samples per window (from the
    /// start [`Sampler::start_windows`] sets).
    pub window_len_ns: u64,
    /// `Some`: sample only these processes (thread-group ids); `None`: the whole system.
    pub targets: Option<Vec<u32>>,
    /// Make the children that targets start targets too.
    pub follow_children: bool,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ring_bytes: u32,
    /// What `-g` asked for: the first mode of [`StackMode::chain`] the kernel takes runs.
    pub call_graph: CallGraph,
    /// With a stack copy: bytes of user stack to copy with each sample, for userspace to
    /// unwind.
    pub user_stack_bytes: u32,
    /// With the in-kernel walk: room for the unwind tables it follows (the stack copy then
    /// only covers code without tables).
    pub unwind_tables: TableSpace,
    /// `--off-cpu`: one off-CPU sample per this much of a thread's time off the CPU.
    pub off_cpu: Option<OffCpuConfig>,
}

/// How off-CPU time is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// A thread's blocks are summed until they reach this; the block that makes them does is
    /// sent with the sum.
    pub period_ns: u64,
    /// Off-CPU samples each CPU may send per window (a bound on what a process that switches
    /// without end can cost); beyond, the time waits in the threads' sums.
    pub max_per_window: u64,
}

/// Room for unwind tables in the kernel: fixed when the programs are loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpace {
    /// Rows of all binaries' tables (8 bytes each).
    pub rows: u32,
    /// Executable mappings of all processes with tables (32 bytes each).
    pub mappings: u32,
}

/// The maps through which userspace hands unwind tables to the eBPF program.
pub struct TableMaps {
    pub rows: MapData,
    pub mappings: MapData,
    pub processes: MapData,
    pub space: TableSpace,
}

/// How a sample's user frames were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserUnwind {
    /// Frame pointers in the kernel, or no user stack.
    FramePointers,
    /// A copy of the stack from the sample's registers, for userspace to unwind.
    Copy,
    /// The unwind tables, in the kernel, to the end of the stack.
    Tables,
    /// The tables as far as they went, then a copy of the stack from there.
    TablesThenCopy,
    /// The tables, cut short (depth limit, or an unreadable stack).
    TablesTruncated,
}

impl UserUnwind {
    fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            UNWIND_FP => Self::FramePointers,
            UNWIND_COPY => Self::Copy,
            UNWIND_TABLES => Self::Tables,
            UNWIND_TABLES_COPY => Self::TablesThenCopy,
            UNWIND_TABLES_TRUNCATED => Self::TablesTruncated,
            _ => return None,
        })
    }
}

/// One record from the kernel.
#[derive(Debug)]
pub enum RingEvent<'a> {
    Sample(RingSample<'a>),
    /// Process `pid` called execve at `time_ns`.
    Exec {
        pid: u32,
        time_ns: u64,
    },
}

/// A stack sample as the eBPF program wrote it.
#[derive(Debug)]
pub struct RingSample<'a> {
    pub time_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub comm: [u8; 16],
    /// Kernel frames then user frames, leaf first within each.
    pub frames: &'a [u64],
    pub kernel_frames: usize,
    /// The user stack could not be read (kernel thread, or a fault).
    pub no_user_stack: bool,
    /// How the user frames in `frames` were found, and whether a stack copy follows.
    pub user_unwind: UserUnwind,
    /// DWARF mode: the user instruction pointer, stack pointer and frame pointer where the
    /// copy starts (with [`UserUnwind::TablesThenCopy`], the instruction pointer is a return
    /// address: the caller of the last frame in `frames`)...
    pub user_regs: [u64; 3],
    /// ...and the user stack from the stack pointer up, for userspace to unwind.
    pub user_stack: &'a [u8],
    /// What kind of sample it is, and what it carries beyond its stack: an off-CPU sample
    /// (`--off-cpu`) is the stack a thread waited in, taken as it ran again, with the
    /// nanoseconds off the CPU it stands for, its own wait, and why.
    pub detail: Detail,
}

/// Parses one ring-buffer record. `scratch` holds the frames when the record is not 8-byte
/// aligned (ring-buffer records always are; synthetic ones in benchmarks may not be).
pub fn parse_event<'a>(bytes: &'a [u8], scratch: &'a mut Vec<u64>) -> Option<RingEvent<'a>> {
    if bytes.len() < size_of::<EventHeader>() {
        return None;
    }
    // SAFETY: the length was checked; EventHeader is plain old data, any bit pattern is valid.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    match header.kind {
        EVENT_EXEC => Some(RingEvent::Exec {
            pid: header.pid,
            time_ns: header.time_ns,
        }),
        EVENT_SAMPLE | EVENT_OFF_CPU if bytes.len() >= size_of::<SampleHead>() => {
            // SAFETY: as above.
            let head: SampleHead = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let kernel = head.kernel_bytes as usize / 8;
            let user = head.user_bytes as usize / 8;
            if kernel > MAX_STACK_DEPTH || user > MAX_USER_FRAMES {
                return None;
            }
            let user_unwind = UserUnwind::from_abi(head.user_unwind)?;
            let body = bytes.get(size_of::<SampleHead>()..)?;
            let raw = body.get(..(kernel + user) * 8)?;
            let user_stack = body
                .get((kernel + user) * 8..)?
                .get(..head.user_stack_bytes as usize)?;
            // SAFETY: every bit pattern is a valid u64.
            let (prefix, aligned, _) = unsafe { raw.align_to::<u64>() };
            let frames = if prefix.is_empty() {
                &aligned[..kernel + user]
            } else {
                scratch.clear();
                scratch.extend(
                    raw.chunks_exact(8)
                        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))),
                );
                &scratch[..]
            };
            Some(RingEvent::Sample(RingSample {
                time_ns: header.time_ns,
                pid: header.pid,
                tid: header.tid,
                cpu: header.cpu,
                comm: header.comm,
                frames,
                kernel_frames: kernel,
                no_user_stack: head.user_error != 0,
                user_unwind,
                user_regs: head.user_regs,
                user_stack,
                detail: match (header.kind, head.off_cpu_reason) {
                    (EVENT_SAMPLE, _) => Detail::OnCpu,
                    (_, reason) => Detail::OffCpu(OffCpu {
                        ns: head.off_cpu_ns,
                        wait_ns: head.off_cpu_wait_ns.min(head.off_cpu_ns),
                        reason: match reason {
                            OFF_CPU_RUNNABLE => OffCpuReason::Runnable,
                            OFF_CPU_BLOCKED => OffCpuReason::Blocked,
                            _ => return None,
                        },
                    }),
                },
            }))
        }
        _ => None,
    }
}

/// The loaded and attached eBPF side.
pub struct Sampler {
    settings: Array<MapData, u64>,
    /// The programs: dropping it detaches them all.
    ebpf: Option<Ebpf>,
    events: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    idle: PerCpuArray<MapData, u64>,
    off_cpu_lost: PerCpuArray<MapData, u64>,
    targets: HashMap<MapData, u32, u8>,
    possible_cpus: usize,
    cpus: Vec<u32>,
    /// The unwind table maps, until [`Self::take_table_maps`].
    table_maps: Option<TableMaps>,
    /// Bytes of records read from the ring buffer so far.
    ring_bytes: u64,
    mode: StackMode,
    off_cpu: bool,
    kernel_limits: Vec<String>,
}

impl Sampler {
    /// Loads the programs, writes the configuration and attaches: sampling starts on return.
    /// The user-stack mode is the first of [`StackMode::chain`] the kernel takes; what it
    /// refused on the way is in [`Self::kernel_limits`].
    pub fn start(cfg: &SamplerConfig) -> Result<Self> {
        let cpus = online_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let possible_cpus = nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        raise_memlock_limit();

        let chain = StackMode::chain(cfg.call_graph);
        let mut refused: Vec<(StackMode, Refusal)> = Vec::new();
        let mut loaded = None;
        for &mode in chain {
            // The tables' maps are big: sized only while the walk may load.
            let space = (mode == StackMode::Dwarf).then_some(cfg.unwind_tables);
            let mut ebpf = load_object(cfg, possible_cpus, space)?;
            let program: &mut PerfEvent = program_of(&mut ebpf, mode.sample_program())?;
            match load_retrying(|| program.load()) {
                Ok(()) => {
                    loaded = Some((mode, ebpf));
                    break;
                }
                Err(error) => refused.push((mode, program_refusal(mode.sample_program(), &error))),
            }
        }
        let Some((mode, mut ebpf)) = loaded else {
            return Err(no_sampling_program(cfg.call_graph, &refused));
        };
        let mut kernel_limits = Vec::new();
        if let Some((first, refusal)) = refused.first()
            && mode.call_graph() != cfg.call_graph
        {
            kernel_limits.push(format!(
                "{} was refused: {}; recording with -g {} instead: {}",
                first.what(),
                refusal.phrase(),
                mode.call_graph().name(),
                mode.cost(cfg.user_stack_bytes)
            ));
        }

        let mut settings: Array<MapData, u64> = take_map(&mut ebpf, "CONFIG")?;
        let user_stack_bytes = if mode == StackMode::FramePointers {
            0
        } else {
            cfg.user_stack_bytes
        };
        for (index, value) in [
            (config::FILTER_BY_TARGETS, u64::from(cfg.targets.is_some())),
            (config::WINDOW_LEN_NS, cfg.window_len_ns),
            (config::USER_STACK_BYTES, u64::from(user_stack_bytes)),
            (config::EXCLUDE_PID, u64::from(std::process::id())),
            (config::CPUS, possible_cpus as u64),
            (
                config::OFF_CPU_PERIOD_NS,
                cfg.off_cpu.map_or(0, |off| off.period_ns.max(1)),
            ),
            (
                config::OFF_CPU_MAX_PER_WINDOW,
                cfg.off_cpu.map_or(0, |off| off.max_per_window),
            ),
        ] {
            settings
                .set(index, value, 0)
                .context("cannot configure the eBPF program")?;
        }
        let mut targets: HashMap<MapData, u32, u8> = take_map(&mut ebpf, "TARGETS")?;
        for &pid in cfg.targets.iter().flatten() {
            targets
                .insert(pid, 1, 0)
                .context("cannot set the target processes")?;
        }

        // Exec events tell userspace that a process's mappings changed.
        attach_tracepoint(&mut ebpf, "process_exec", "sched", "sched_process_exec")?;
        let tables = mode == StackMode::Dwarf;
        if cfg.follow_children || tables {
            check_newtask_layout()?;
        }
        if cfg.follow_children {
            attach_tracepoint(&mut ebpf, "follow_children", "task", "task_newtask")?;
        }
        let table_maps = if tables {
            // A new process must not be unwound with the tables of an earlier one that had
            // its id.
            attach_tracepoint(&mut ebpf, "forget_new_process", "task", "task_newtask")?;
            let mut take = |name: &str| {
                ebpf.take_map(name)
                    .and_then(|map| match map {
                        aya::maps::Map::Array(data) | aya::maps::Map::HashMap(data) => Some(data),
                        _ => None,
                    })
                    .with_context(|| format!("the eBPF object has no {name} map"))
            };
            Some(TableMaps {
                rows: take("UNWIND_ROWS")?,
                mappings: take("MAPPINGS")?,
                processes: take("PROCESSES")?,
                space: cfg.unwind_tables,
            })
        } else {
            None
        };

        let program: &mut PerfEvent = program_of(&mut ebpf, mode.sample_program())?;
        for &cpu in &cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(cfg.frequency_hz),
                    false,
                )
                .map_err(|e| privilege_error(&e).unwrap_or_else(|| anyhow!(e)))
                .with_context(|| format!("cannot open the cpu-clock perf event on CPU {cpu}"))?;
        }

        let mut off_cpu = false;
        if cfg.off_cpu.is_some() {
            let (attached, limit) = attach_off_cpu(&mut ebpf, mode)?;
            off_cpu = attached;
            kernel_limits.extend(limit);
        }

        Ok(Self {
            events: RingBuf::try_from(
                ebpf.take_map("EVENTS")
                    .context("the eBPF object has no EVENTS map")?,
            )?,
            lost: take_map(&mut ebpf, "LOST")?,
            idle: take_map(&mut ebpf, "IDLE")?,
            off_cpu_lost: take_map(&mut ebpf, "OFF_CPU_LOST")?,
            targets,
            settings,
            ebpf: Some(ebpf),
            possible_cpus,
            cpus,
            table_maps,
            ring_bytes: 0,
            mode,
            off_cpu,
            kernel_limits,
        })
    }

    /// How user stacks are taken: the first mode of the requested chain the kernel accepted.
    pub fn stack_mode(&self) -> StackMode {
        self.mode
    }

    /// Whether off-CPU programs are attached (asked for, and accepted by the kernel).
    pub fn off_cpu(&self) -> bool {
        self.off_cpu
    }

    /// What the kernel refused and what was done instead, one line each.
    pub fn kernel_limits(&self) -> &[String] {
        &self.kernel_limits
    }

    /// The maps for unwind tables, if tables are on (once: the caller keeps them).
    pub fn take_table_maps(&mut self) -> Option<TableMaps> {
        self.table_maps.take()
    }

    /// Starts window 0 at `start_ns` (CLOCK_MONOTONIC): the kernel side's per-window counters
    /// count from there. Called once the programs are attached, which can take seconds on a
    /// machine whose CPUs are saturated: windows then start when sampling does.
    pub fn start_windows(&mut self, start_ns: u64) -> Result<()> {
        self.settings
            .set(config::WINDOW_START_NS, start_ns, 0)
            .context("cannot configure the eBPF program")
    }

    /// The CPUs being sampled.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus
    }

    /// Adds a process to the targets (used for a command, before it execs).
    pub fn add_target(&mut self, pid: u32) -> Result<()> {
        self.targets
            .insert(pid, 1, 0)
            .context("cannot add a target process")
    }

    /// Waits until the ring buffer has records or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        let mut fd = libc::pollfd {
            fd: self.events.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // EINTR (a signal) just ends the wait early, which is what the caller wants.
        unsafe { libc::poll(&mut fd, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
    }

    /// Hands every record now in the ring buffer to `handle`.
    pub fn drain(&mut self, mut handle: impl FnMut(RingEvent<'_>)) {
        let mut scratch = Vec::new();
        while let Some(record) = self.events.next() {
            self.ring_bytes += record.len() as u64;
            if let Some(event) = parse_event(&record, &mut scratch) {
                handle(event);
            }
        }
    }

    /// Bytes of records read from the ring buffer so far: what sampling cost in copying
    /// between the kernel and amprof.
    pub fn ring_bytes(&self) -> u64 {
        self.ring_bytes
    }

    /// Reads and clears the per-window counters of window `index`.
    pub fn take_window_counters(&mut self, index: u64) -> WindowCounters {
        let slot = (index % u64::from(WINDOW_SLOTS)) as u32;
        let zero = || PerCpuValues::try_from(vec![0u64; self.possible_cpus]);
        let take = |counter: &mut PerCpuArray<MapData, u64>| -> u64 {
            let total = counter
                .get(&slot, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0);
            if let Ok(zeros) = zero() {
                let _ = counter.set(slot, zeros, 0);
            }
            total
        };
        WindowCounters {
            lost: take(&mut self.lost),
            idle: take(&mut self.idle),
            off_cpu_lost: take(&mut self.off_cpu_lost),
        }
    }

    /// Detaches every program: no sample is taken after this returns. Records already in the
    /// ring buffer can still be drained.
    pub fn stop(&mut self) {
        self.ebpf = None;
    }
}

/// What the kernel side counted for one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounters {
    /// On-CPU samples the ring buffer had no room for.
    pub lost: u64,
    /// On-CPU samples that found a CPU idle.
    pub idle: u64,
    /// Off-CPU samples the ring buffer had no room for.
    pub off_cpu_lost: u64,
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
fn attach_off_cpu(ebpf: &mut Ebpf, mode: StackMode) -> Result<(bool, Option<String>)> {
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

/// Loads a program, again when the verifier was interrupted: it gives up with EAGAIN when a
/// signal is pending (or EINTR), which says nothing about the program, and a fallback to
/// another mode for it would cost the recording its stacks.
fn load_retrying(
    mut load: impl FnMut() -> std::result::Result<(), aya::programs::ProgramError>,
) -> std::result::Result<(), aya::programs::ProgramError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if attempts < 3
                    && matches!(io_error.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {}
            result => return result,
        }
    }
}

/// The program `name` of the object, as its type.
fn program_of<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("the eBPF object has no {name} program"))?;
    <&mut T>::try_from(program).with_context(|| format!("program {name} has an unexpected type"))
}

/// Creates the object's maps (sized for this machine and `cfg`; the unwind tables' only when
/// `tables` is given) without loading any program.
fn load_object(
    cfg: &SamplerConfig,
    possible_cpus: usize,
    tables: Option<TableSpace>,
) -> Result<Ebpf> {
    let space = tables.unwrap_or(TableSpace {
        rows: 1,
        mappings: 1,
    });
    let scratch_entries = 2 * possible_cpus as u32;
    EbpfLoader::new()
        .map_max_entries("EVENTS", cfg.ring_bytes)
        // Two entries per CPU: on-CPU samples, and off-CPU ones (which a cpu-clock sample can
        // interrupt).
        .map_max_entries("SCRATCH", scratch_entries)
        .map_max_entries("WALKS", scratch_entries)
        .map_max_entries("UNWIND_ROWS", space.rows.max(1))
        .map_max_entries("MAPPINGS", space.mappings.max(1))
        .map_max_entries(
            "FRAMES",
            (2 * possible_cpus * MAX_USER_FRAMES)
                .try_into()
                .unwrap_or(u32::MAX),
        )
        .load(OBJECT)
        .map_err(|error| {
            let refusal = object_refusal(&error);
            if refusal.privileges {
                coded(Exit::NoPermission, PRIVILEGE_MESSAGE)
            } else {
                anyhow!("cannot load amprof's eBPF object: {}", refusal.phrase())
            }
        })
}

/// The error when the kernel took none of the modes `call_graph` may record with.
fn no_sampling_program(call_graph: CallGraph, refused: &[(StackMode, Refusal)]) -> anyhow::Error {
    if refused.iter().any(|(_, r)| r.privileges) {
        return coded(Exit::NoPermission, PRIVILEGE_MESSAGE);
    }
    let reasons: Vec<String> = refused
        .iter()
        .map(|(mode, refusal)| format!("{}: {}", mode.sample_program(), refusal.phrase()))
        .collect();
    anyhow!(
        "the kernel refused the sampling program{} for -g {}: {}",
        if refused.len() > 1 { "s" } else { "" },
        call_graph.name(),
        reasons.join("; ")
    )
}

/// Before 5.11, BPF maps and programs count against RLIMIT_MEMLOCK, whose default (64 KiB or
/// 8 MiB) is far below what the ring buffer needs: lift it, as perf and bpftool do. Later
/// kernels account the memory to the cgroup, and the call may fail there (it does in some
/// containers) without harm.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain syscall on a value on the stack.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// A way to take user stacks in the kernel: the programs of one `-g` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackMode {
    /// The in-kernel walk with unwind tables (`bpf_loop`: 5.17).
    Dwarf,
    /// A stack copy from the registers `bpf_task_pt_regs` gives (5.15).
    Copy,
    /// A stack copy from registers found without `bpf_task_pt_regs` (older kernels).
    CopyCompat,
    /// Frame pointers, walked by `bpf_get_stack`.
    FramePointers,
}

impl StackMode {
    /// The modes that may record `call_graph`, in the order they are tried: the default walk
    /// falls back to the stack copy, then to frame pointers; a mode asked for explicitly only
    /// to other programs of its own (a stack copy is a stack copy, whatever gives the registers).
    pub fn chain(call_graph: CallGraph) -> &'static [StackMode] {
        match call_graph {
            CallGraph::Dwarf => &[
                StackMode::Dwarf,
                StackMode::Copy,
                StackMode::CopyCompat,
                StackMode::FramePointers,
            ],
            CallGraph::DwarfCopy => &[StackMode::Copy, StackMode::CopyCompat],
            CallGraph::Fp => &[StackMode::FramePointers],
        }
    }

    /// The `-g` mode this is.
    pub fn call_graph(self) -> CallGraph {
        match self {
            StackMode::Dwarf => CallGraph::Dwarf,
            StackMode::Copy | StackMode::CopyCompat => CallGraph::DwarfCopy,
            StackMode::FramePointers => CallGraph::Fp,
        }
    }

    /// The cpu-clock program.
    pub fn sample_program(self) -> &'static str {
        match self {
            StackMode::Dwarf => "sample_dwarf",
            StackMode::Copy => "sample_copy",
            StackMode::CopyCompat => "sample_copy_compat",
            StackMode::FramePointers => "sample_fp",
        }
    }

    /// The off-CPU programs: on `sched_switch`, and on `sys_exit`. The copy from registers
    /// found without `bpf_task_pt_regs` has none of its own (off-CPU time needs the helper to
    /// tell a thread's kernel entries apart): it tries the copy's.
    pub fn off_cpu_programs(self) -> (&'static str, &'static str) {
        match self {
            StackMode::Dwarf => ("off_cpu_switch_dwarf", "off_cpu_exit_dwarf"),
            StackMode::Copy | StackMode::CopyCompat => ("off_cpu_switch_copy", "off_cpu_exit_copy"),
            StackMode::FramePointers => ("off_cpu_switch_fp", "off_cpu_exit_fp"),
        }
    }

    /// What the mode is, for a sentence.
    fn what(self) -> String {
        match self {
            StackMode::Dwarf => "the in-kernel stack walk (sample_dwarf)".into(),
            mode => format!(
                "-g {} ({})",
                mode.call_graph().name(),
                mode.sample_program()
            ),
        }
    }

    /// What recording with this mode costs, against the in-kernel walk.
    fn cost(self, user_stack_bytes: u32) -> String {
        match self {
            StackMode::Dwarf => "nothing".into(),
            StackMode::Copy | StackMode::CopyCompat => format!(
                "stacks deeper than the {} KiB copied are cut short",
                user_stack_bytes / 1024
            ),
            StackMode::FramePointers => {
                "code built without frame pointers shows only its leaf frame".into()
            }
        }
    }

    /// Every program of the object, with the kind of event it is loaded for.
    pub const ALL_PROGRAMS: &'static [&'static str] = &[
        "sample_dwarf",
        "sample_copy",
        "sample_copy_compat",
        "sample_fp",
        "off_cpu_switch_dwarf",
        "off_cpu_exit_dwarf",
        "off_cpu_switch_copy",
        "off_cpu_exit_copy",
        "off_cpu_switch_fp",
        "off_cpu_exit_fp",
        "process_exec",
        "follow_children",
        "forget_new_process",
    ];
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the eBPF object has no {name} map"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
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
fn check_newtask_layout() -> Result<()> {
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

/// A permission failure from the kernel, as the one-line error with its own exit code.
fn privilege_error(error: &(dyn std::error::Error + 'static)) -> Option<anyhow::Error> {
    if has_privileges() {
        // Root is refused for other reasons (lockdown, a security module): the error says.
        return None;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return Some(coded(Exit::NoPermission, PRIVILEGE_MESSAGE));
        }
        cause = e.source();
    }
    let text = error.to_string();
    (text.contains("Operation not permitted") || text.contains("Permission denied"))
        .then(|| coded(Exit::NoPermission, PRIVILEGE_MESSAGE))
}

pub const PRIVILEGE_MESSAGE: &str = "recording needs root, or the CAP_BPF and CAP_PERFMON capabilities (and CAP_SYSLOG for kernel symbols): run it with sudo";

/// Checks up front that this process may load eBPF programs, so that an unprivileged user gets
/// one clear line (and exit code 4) before anything starts.
pub fn check_privileges() -> Result<()> {
    if has_privileges() {
        Ok(())
    } else {
        Err(coded(Exit::NoPermission, PRIVILEGE_MESSAGE))
    }
}

/// Root, or the capabilities that load and attach amprof's programs.
pub fn has_privileges() -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
            u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
        })
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_BPF) && has(CAP_PERFMON)
}

/// What the kernel said to one of amprof's programs (`amprof check`).
#[derive(Clone, Debug, Serialize)]
pub struct ProgramCheck {
    pub program: &'static str,
    pub loaded: bool,
    /// Instructions the verifier processed to accept it (`bpf_prog_info.verified_insns`;
    /// kernels before 5.16 do not report it).
    pub verified_insns: Option<u32>,
    /// Why the kernel refused it.
    pub refusal: Option<String>,
}

/// The verifier's limit on instructions processed per program.
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// Loads every program of the object (attaching none) and reports what the kernel said to each.
pub fn check_programs() -> Result<Vec<ProgramCheck>> {
    let possible_cpus = nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
    raise_memlock_limit();
    let cfg = SamplerConfig {
        frequency_hz: 99,
        window_len_ns: 1_000_000_000,
        targets: None,
        follow_children: false,
        ring_bytes: 1 << 20,
        call_graph: CallGraph::Dwarf,
        user_stack_bytes: 16 * 1024,
        unwind_tables: TableSpace {
            rows: 1,
            mappings: 1,
        },
        off_cpu: None,
    };
    let mut ebpf = load_object(&cfg, possible_cpus, None)?;
    let mut checks = Vec::new();
    for &name in StackMode::ALL_PROGRAMS {
        let program = ebpf
            .program_mut(name)
            .with_context(|| format!("the eBPF object has no {name} program"))?;
        use aya::programs::Program;
        let loaded = match program {
            Program::PerfEvent(p) => p.load(),
            Program::TracePoint(p) => p.load(),
            Program::RawTracePoint(p) => p.load(),
            _ => return Err(anyhow!("program {name} has an unexpected type")),
        };
        let check = match loaded {
            Ok(()) => ProgramCheck {
                program: name,
                loaded: true,
                verified_insns: program
                    .info()
                    .ok()
                    .and_then(|info| info.verified_instruction_count())
                    .filter(|&count| count > 0),
                refusal: None,
            },
            Err(error) => {
                let refusal = program_refusal(name, &error);
                if refusal.privileges {
                    return Err(coded(Exit::NoPermission, PRIVILEGE_MESSAGE));
                }
                ProgramCheck {
                    program: name,
                    loaded: false,
                    verified_insns: None,
                    refusal: Some(refusal.phrase()),
                }
            }
        };
        checks.push(check);
    }
    Ok(checks)
}
