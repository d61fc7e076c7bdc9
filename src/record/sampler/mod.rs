//! The kernel side of recording: loads amprof's eBPF object, attaches it to a cpu-clock perf event
//! on every online CPU, and hands the ring buffer's records to userspace as [`RingEvent`]s.
//!
//! [`Sampler::start`] runs the steps in order, each in its own file: `load.rs` (the object, then
//! the programs of the first `-g` mode the kernel takes, falling back mode by mode), `attach.rs`
//! (perf events on every CPU, tracepoints, the off-CPU programs), then the running [`Sampler`]
//! here (configuration, targets, the ring buffer drained through `records.rs`, per-window
//! counters). `privileges.rs` says up front whether any of it may run.

mod attach;
mod load;
mod privileges;
mod records;

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use amprof_abi::{WINDOW_SLOTS, config};
use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    util::{nr_cpus, online_cpus},
};

use self::{
    attach::{attach_cpu_clock, attach_off_cpu, attach_tracepoint, check_newtask_layout},
    load::{load_first_mode, raise_memlock_limit},
};
pub use self::{
    load::{ProgramCheck, StackMode, VERIFIER_LIMIT, check_programs},
    privileges::{PRIVILEGE_MESSAGE, check_privileges, has_privileges},
    records::{RingEvent, RingSample, UserUnwind, parse_event},
};
use super::CallGraph;

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

        let (mode, mut ebpf, fallback) = load_first_mode(cfg, possible_cpus)?;
        let mut kernel_limits: Vec<String> = fallback.into_iter().collect();

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

        attach_cpu_clock(&mut ebpf, mode, &cpus, cfg.frequency_hz)?;

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

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the eBPF object has no {name} map"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}
