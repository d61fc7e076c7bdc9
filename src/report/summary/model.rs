//! The summary's model: what `report --json` writes, field by field (its serde names are the
//! JSON's), and what the text is written from.

use serde::Serialize;

use crate::capture::format::{Problems, Unwinding};

#[derive(Debug, Serialize)]
pub struct Summary {
    pub capture: CaptureInfo,
    pub windows: Vec<WindowInfo>,
    pub totals: Totals,
    pub top_self: Vec<FunctionCount>,
    pub top_total: Vec<FunctionCount>,
    pub top_processes: Vec<ProcessCount>,
    /// Captures recorded with `--off-cpu` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_cpu: Option<OffCpuSection>,
    /// The text shows the on-CPU top lists (not `--event off-cpu`).
    #[serde(skip)]
    pub on_cpu_lists: bool,
}

/// The summary's off-CPU section: off-CPU time of the selected processes (JSON `off_cpu`),
/// nanoseconds, as integers. (What a recording's `--json` says of its off-CPU samples is
/// another thing, `record::OffCpuSummary`.)
#[derive(Debug, Serialize)]
pub struct OffCpuSection {
    /// Off-CPU time a thread accumulates per off-CPU sample (`Meta::off_cpu_period_ns`).
    pub period_ns: u64,
    /// Off-CPU samples.
    pub samples: u64,
    /// Off-CPU samples the kernel side could not deliver (all processes).
    pub lost: u64,
    /// Time off the CPU, blocked and runnable.
    pub total_ns: u64,
    /// Waiting for something: a sleep, a lock, I/O.
    pub blocked_ns: u64,
    /// Preempted, waiting for a CPU (the run queue).
    pub runnable_ns: u64,
    /// Functions by off-CPU time as the innermost user frame (see [the summary's
    /// documentation](super)).
    pub top_self: Vec<FunctionTime>,
    /// Functions by off-CPU time anywhere in the stack.
    pub top_total: Vec<FunctionTime>,
    pub top_processes: Vec<ProcessTime>,
}

#[derive(Debug, Serialize)]
pub struct FunctionTime {
    pub function: String,
    pub module: String,
    pub ns: u64,
    /// Share of `total_ns`.
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct ProcessTime {
    pub pid: u32,
    pub name: String,
    pub ns: u64,
    /// Share of `total_ns`.
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct CaptureInfo {
    pub amprof_version: String,
    pub hostname: String,
    pub kernel_release: String,
    pub arch: String,
    pub cpus: u32,
    pub event: String,
    pub frequency_hz: u64,
    pub call_graph: String,
    /// What the recording's kernel refused and what was done instead.
    pub kernel_limits: Vec<String>,
    pub window_seconds: f64,
    /// Ring capacity (0: every window kept).
    pub keep: u32,
    /// `system`, `pids` or `command`.
    pub target: String,
    pub target_pids: Vec<u32>,
    pub target_command: Vec<String>,
    pub command_line: Vec<String>,
    /// Start of window 0, RFC 3339.
    pub start: String,
    pub start_unix_ns: i64,
    /// Seconds from the start to the end of the last window.
    pub duration_seconds: f64,
    /// `finalized`, `not-finalized` or `truncated`.
    pub state: String,
    /// Why recording stopped, when finalized.
    pub stopped_by: Option<String>,
    pub windows_evicted: u64,
}

#[derive(Debug, Serialize)]
pub struct WindowInfo {
    pub index: u64,
    /// Seconds from the start of the recording.
    pub start_offset_seconds: f64,
    pub seconds: f64,
    pub samples: u64,
    pub lost: u64,
    pub idle: u64,
    pub late: u64,
    /// Samples whose user stack unwinding stopped early (dwarf mode).
    pub truncated: u64,
    pub processes: usize,
    /// What the profiled system's files made amprof refuse or cut short in this window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Problems>,
    /// Captures recorded with `--off-cpu` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub off_cpu: Option<WindowOffCpu>,
}

/// A window's off-CPU samples (of the selected processes; `lost`: all processes).
#[derive(Debug, Serialize)]
pub struct WindowOffCpu {
    pub samples: u64,
    pub ns: u64,
    pub lost: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Selected samples.
    pub samples: u64,
    pub lost: u64,
    pub idle: u64,
    /// Samples whose user stack unwinding stopped early (dwarf mode).
    pub truncated: u64,
    /// Share of selected samples whose every frame has a symbol.
    pub fully_symbolized: f64,
    /// The windows' problems, summed (see the capture format's `Problems`).
    pub problems: Problems,
    /// DWARF mode: how user stacks were unwound (all samples of the windows read), and the
    /// unwind tables' size at the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwinding: Option<Unwinding>,
}

#[derive(Debug, Serialize)]
pub struct FunctionCount {
    pub function: String,
    pub module: String,
    pub samples: u64,
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct ProcessCount {
    pub pid: u32,
    pub name: String,
    pub samples: u64,
    pub percent: f64,
}
