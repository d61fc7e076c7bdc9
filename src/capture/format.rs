//! The records of a capture file, as protobuf messages (prost).
//!
//! These types *are* the schema: field numbers are the wire format and must never be reused or
//! renumbered. Adding a field is a compatible change (old readers skip it); changing the meaning
//! of one is not, and needs a new [`super::FORMAT_VERSION`]. The file layout around these records
//! is described in [`super`] and in `docs/capture-format.md`.
//!
//! A [`Window`] is self-contained: it carries the processes, mappings, modules, functions and
//! locations its stacks refer to. Windows can therefore be evicted from a ring, cut out of a file
//! or exported one by one, and a reader never needs more than one window in memory.

use prost::Message;

/// The first record of every capture: what was recorded, where and how.
#[derive(Clone, PartialEq, Message)]
pub struct Meta {
    #[prost(string, tag = "1")]
    pub amprof_version: String,
    #[prost(string, tag = "2")]
    pub hostname: String,
    /// `uname -r`.
    #[prost(string, tag = "3")]
    pub kernel_release: String,
    /// `uname -m`.
    #[prost(string, tag = "4")]
    pub arch: String,
    /// Online CPUs sampled.
    #[prost(uint32, tag = "5")]
    pub cpus: u32,
    /// Sampling frequency per CPU, in Hz.
    #[prost(uint64, tag = "6")]
    pub frequency_hz: u64,
    /// The perf event sampled, e.g. `cpu-clock`.
    #[prost(string, tag = "7")]
    pub event: String,
    /// Length of a window in nanoseconds.
    #[prost(uint64, tag = "8")]
    pub window_ns: u64,
    /// Windows kept in the ring (0: all).
    #[prost(uint32, tag = "9")]
    pub keep: u32,
    /// What was profiled.
    #[prost(message, optional, tag = "10")]
    pub target: Option<Target>,
    /// amprof's own command line.
    #[prost(string, repeated, tag = "11")]
    pub command_line: Vec<String>,
    /// CLOCK_MONOTONIC at the start of window 0; every `*_ns` time in the file is on this clock.
    #[prost(uint64, tag = "12")]
    pub start_ns: u64,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC at the start, in ns: add it to a monotonic time to
    /// get nanoseconds since the Unix epoch.
    #[prost(int64, tag = "13")]
    pub realtime_offset_ns: i64,
    /// Stack unwinding used for user stacks: `fp` (frame pointers), `dwarf` (CFI, walked in
    /// the kernel with unwind tables) or `dwarf-copy` (CFI, from stack copies).
    #[prost(string, tag = "14")]
    pub call_graph: String,
    /// The requested duration in ns (0: until interrupted).
    #[prost(uint64, tag = "15")]
    pub duration_ns: u64,
    /// Bytes of user stack copied per sample in `dwarf` mode.
    #[prost(uint32, tag = "16")]
    pub user_stack_bytes: u32,
    /// Inlined functions were symbolized (`--inline`).
    #[prost(bool, tag = "17")]
    pub inline: bool,
    /// Off-CPU time was recorded (`--off-cpu`): each thread gives one off-CPU sample per this
    /// many nanoseconds it spends off the CPU (see [`Window::off_cpu_ns`]). 0: not recorded.
    #[prost(uint64, tag = "18")]
    pub off_cpu_period_ns: u64,
    /// What the recording's kernel refused and what was done instead, one sentence each
    /// (e.g. the in-kernel stack walk, and the mode `call_graph` names that ran in its place).
    #[prost(string, repeated, tag = "19")]
    pub kernel_limits: Vec<String>,
}

impl Meta {
    /// The time one on-CPU sample stands for: the sampling period, in ns.
    pub fn sample_period_ns(&self) -> u64 {
        1_000_000_000 / self.frequency_hz.max(1)
    }
}

/// The delta of a sample at `time_ns` from the one before (at `previous_ns`, updated): never
/// negative (see [`Window::push_sample`]).
fn next_delta(previous_ns: &mut u64, time_ns: u64) -> u64 {
    let delta = time_ns.saturating_sub(*previous_ns);
    *previous_ns = time_ns.max(*previous_ns);
    delta
}

/// Appending samples: the one place that writes the sample columns. Each kind's times are
/// deltas from the sample of that kind before it (the first from the window's start), so the
/// writer keeps that time: `previous_ns`, the window's `start_ns` before the first sample.
/// Samples come in time order; one earlier than the one before is put at that one's time
/// (a delta cannot be negative).
impl Window {
    pub fn push_sample(
        &mut self,
        previous_ns: &mut u64,
        time_ns: u64,
        tid: u32,
        cpu: u32,
        stack: u32,
    ) {
        self.sample_time_deltas
            .push(next_delta(previous_ns, time_ns));
        self.sample_tids.push(tid);
        self.sample_cpus.push(cpu);
        self.sample_stacks.push(stack);
    }

    /// An off-CPU sample: `off` is the time off the CPU it stands for, its wait, and why.
    pub fn push_off_cpu_sample(
        &mut self,
        previous_ns: &mut u64,
        time_ns: u64,
        tid: u32,
        cpu: u32,
        stack: u32,
        off: OffCpu,
    ) {
        self.off_cpu_time_deltas
            .push(next_delta(previous_ns, time_ns));
        self.off_cpu_tids.push(tid);
        self.off_cpu_cpus.push(cpu);
        self.off_cpu_stacks.push(stack);
        self.off_cpu_ns.push(off.ns);
        self.off_cpu_reasons.push(off.reason as i32);
        self.off_cpu_wait_ns.push(off.wait_ns);
    }
}

/// What a recording was asked to profile.
#[derive(Clone, PartialEq, Message)]
pub struct Target {
    #[prost(enumeration = "TargetKind", tag = "1")]
    pub kind: i32,
    /// With `PIDS`: the processes; with `COMMAND`: the command's pid.
    #[prost(uint32, repeated, tag = "2")]
    pub pids: Vec<u32>,
    /// With `COMMAND`: its argv.
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TargetKind {
    System = 0,
    Pids = 1,
    Command = 2,
}

/// One time window: `[start_ns, end_ns)` on the monotonic clock, every sample taken in it, and
/// everything needed to name the frames of those samples.
#[derive(Clone, PartialEq, Message)]
pub struct Window {
    /// 0 for the window that starts at `Meta::start_ns`, then 1, 2... Indices survive eviction:
    /// a ring that dropped windows 0-3 starts at index 4.
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(uint64, tag = "2")]
    pub start_ns: u64,
    #[prost(uint64, tag = "3")]
    pub end_ns: u64,
    /// Samples the kernel side took but could not deliver (ring buffer full).
    #[prost(uint64, tag = "4")]
    pub lost: u64,
    /// Samples that found a CPU idle; not stored as stacks.
    #[prost(uint64, tag = "5")]
    pub idle: u64,
    /// Samples that arrived after this window had been written, counted here (they are dropped).
    #[prost(uint64, tag = "6")]
    pub late: u64,
    /// Windows evicted from the ring before this one was written.
    #[prost(uint64, tag = "7")]
    pub evicted_before: u64,
    #[prost(message, repeated, tag = "8")]
    pub processes: Vec<Process>,
    #[prost(message, repeated, tag = "9")]
    pub threads: Vec<Thread>,
    #[prost(message, repeated, tag = "10")]
    pub modules: Vec<Module>,
    #[prost(message, repeated, tag = "11")]
    pub mappings: Vec<Mapping>,
    #[prost(message, repeated, tag = "12")]
    pub functions: Vec<Function>,
    #[prost(message, repeated, tag = "13")]
    pub locations: Vec<Location>,
    #[prost(message, repeated, tag = "14")]
    pub stacks: Vec<Stack>,
    /// Samples, one column per field, in time order. Times are deltas: the first from
    /// `start_ns`, each next from the one before.
    #[prost(uint64, repeated, tag = "15")]
    pub sample_time_deltas: Vec<u64>,
    /// Thread id of each sample (see `threads`).
    #[prost(uint32, repeated, tag = "16")]
    pub sample_tids: Vec<u32>,
    #[prost(uint32, repeated, tag = "17")]
    pub sample_cpus: Vec<u32>,
    /// Index into `stacks` of each sample.
    #[prost(uint32, repeated, tag = "18")]
    pub sample_stacks: Vec<u32>,
    /// Samples whose user stack unwinding stopped early (DWARF mode).
    #[prost(uint64, tag = "19")]
    pub truncated: u64,
    /// What the profiled system's files made amprof give up on while this window was recorded
    /// and symbolized; absent when nothing was.
    #[prost(message, optional, tag = "20")]
    pub problems: Option<Problems>,
    /// DWARF mode: how the user stacks of this window's samples were unwound, and the size of
    /// the unwind tables in the kernel; absent in frame-pointer mode.
    #[prost(message, optional, tag = "21")]
    pub unwinding: Option<Unwinding>,
    /// Off-CPU samples (`record --off-cpu`), one column per field like the on-CPU samples
    /// above, in time order, and kept apart from them so that no reader counts one as the
    /// other. Each is the stack a thread waited in, taken when it ran again: times are then
    /// (deltas as above). The kernel keeps a wait of `w` ns with probability
    /// `min(1, w / period)` (see `Meta::off_cpu_period_ns`), and a kept one stands for
    /// `max(w, period)` ns, `off_cpu_ns`: summed, an unbiased estimate of the time off the
    /// CPU per stack, whatever the mix of wait lengths. The wait itself is `off_cpu_wait_ns`.
    #[prost(uint64, repeated, tag = "22")]
    pub off_cpu_time_deltas: Vec<u64>,
    #[prost(uint32, repeated, tag = "23")]
    pub off_cpu_tids: Vec<u32>,
    /// The CPU the thread ran again on.
    #[prost(uint32, repeated, tag = "24")]
    pub off_cpu_cpus: Vec<u32>,
    /// Index into `stacks` of each off-CPU sample.
    #[prost(uint32, repeated, tag = "25")]
    pub off_cpu_stacks: Vec<u32>,
    /// Nanoseconds off the CPU each off-CPU sample stands for.
    #[prost(uint64, repeated, tag = "26")]
    pub off_cpu_ns: Vec<u64>,
    /// Why the thread was off the CPU, per off-CPU sample.
    #[prost(enumeration = "OffCpuReason", repeated, tag = "27")]
    pub off_cpu_reasons: Vec<i32>,
    /// Off-CPU samples the kernel side could not deliver (ring buffer full).
    #[prost(uint64, tag = "28")]
    pub off_cpu_lost: u64,
    /// How long each off-CPU sample's own wait lasted, ns (at most its `off_cpu_ns`): where
    /// a timeline draws it. Empty in captures of amprof 0.1 before per-wait sampling, whose
    /// samples summed the waits before them: read as `off_cpu_ns` (see [`Window::off_cpu_wait`]).
    #[prost(uint64, repeated, tag = "29")]
    pub off_cpu_wait_ns: Vec<u64>,
}

/// What an off-CPU sample stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OffCpu {
    /// Nanoseconds off the CPU it stands for, ending at the sample's time: what profiles sum.
    pub ns: u64,
    /// Nanoseconds its own wait lasted, ending at the sample's time (at most `ns`): what a
    /// timeline draws.
    pub wait_ns: u64,
    pub reason: OffCpuReason,
}

impl Window {
    /// The wait of off-CPU sample `index`: its column's value, at most what it stands for, or
    /// what it stands for in captures without the column.
    pub fn off_cpu_wait(&self, index: usize) -> Option<u64> {
        let ns = *self.off_cpu_ns.get(index)?;
        Some(
            self.off_cpu_wait_ns
                .get(index)
                .map_or(ns, |&wait| wait.min(ns)),
        )
    }
}

/// Why a thread was off the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum OffCpuReason {
    /// It gave up the CPU to wait: a sleep, a lock, I/O, a read of an empty pipe.
    Blocked = 0,
    /// It was preempted while it could still run, and waited for a CPU (the run queue).
    Runnable = 1,
}

impl OffCpuReason {
    /// The name outputs use: `blocked` or `runnable`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blocked => "blocked",
            Self::Runnable => "runnable",
        }
    }
}

/// How user stacks were unwound in one window (DWARF mode). Each sample with a user stack
/// counts in one of the first four.
#[derive(Clone, PartialEq, Eq, Message, serde::Serialize)]
pub struct Unwinding {
    /// Walked in the kernel with unwind tables, to the end of the stack.
    #[prost(uint64, tag = "1")]
    pub in_kernel: u64,
    /// Walked in the kernel as far as the tables went, then unwound from a copy of the rest
    /// of the stack (code without a table: JIT code, or a binary whose table was building).
    #[prost(uint64, tag = "2")]
    pub kernel_then_copy: u64,
    /// Unwound from a stack copy alone (`-g dwarf-copy`, or no table yet for the process).
    #[prost(uint64, tag = "3")]
    pub copied: u64,
    /// Walked in the kernel and cut short: the depth limit, or a stack that could not be read.
    #[prost(uint64, tag = "4")]
    pub kernel_truncated: u64,
    /// Unwind tables in the kernel at the window's end (binaries, besides the vDSO)...
    #[prost(uint64, tag = "5")]
    pub tables: u64,
    /// ...their rows (8 bytes each)...
    #[prost(uint64, tag = "6")]
    pub table_rows: u64,
    /// ...and the room for rows, fixed for the recording.
    #[prost(uint64, tag = "7")]
    pub table_row_capacity: u64,
    /// Processes whose mappings the kernel had tables for at the window's end.
    #[prost(uint64, tag = "8")]
    pub processes_with_tables: u64,
}

impl Unwinding {
    /// Adds `other`'s sample counts to these, and takes its table sizes (the latest).
    pub fn add(&mut self, other: &Unwinding) {
        self.in_kernel += other.in_kernel;
        self.kernel_then_copy += other.kernel_then_copy;
        self.copied += other.copied;
        self.kernel_truncated += other.kernel_truncated;
        self.tables = other.tables;
        self.table_rows = other.table_rows;
        self.table_row_capacity = other.table_row_capacity;
        self.processes_with_tables = other.processes_with_tables;
    }

    /// Samples with a user stack unwound in DWARF mode.
    pub fn samples(&self) -> u64 {
        self.in_kernel + self.kernel_then_copy + self.copied + self.kernel_truncated
    }

    /// One line for a summary: `user stacks: 97.1% walked in the kernel, 2.0% in the kernel
    /// then from a stack copy, 0.8% from a stack copy, 0.1% cut short in the kernel; unwind
    /// tables: 42 binaries, 1.20 M rows (9.2 of 64 MiB)`.
    pub fn phrase(&self) -> String {
        let total = self.samples().max(1) as f64;
        let share = |n: u64| 100.0 * n as f64 / total;
        let mut text = format!(
            "user stacks: {:.1}% walked in the kernel, {:.1}% in the kernel then from a stack copy, {:.1}% from a stack copy, {:.1}% cut short in the kernel",
            share(self.in_kernel),
            share(self.kernel_then_copy),
            share(self.copied),
            share(self.kernel_truncated),
        );
        if self.table_row_capacity > 0 {
            let mib = |rows: u64| rows as f64 * 8.0 / (1024.0 * 1024.0);
            text.push_str(&format!(
                "; unwind tables: {} binaries, {:.2} M rows ({:.1} of {:.0} MiB)",
                self.tables,
                self.table_rows as f64 / 1e6,
                mib(self.table_rows),
                mib(self.table_row_capacity),
            ));
        }
        text
    }
}

/// Hostile or broken input amprof met and worked around, counted (never fatal). Each count
/// belongs to the window during which it was met.
#[derive(Clone, PartialEq, Eq, Message, serde::Serialize)]
pub struct Problems {
    /// Files of sampled processes amprof would not or could not read: not regular files (FIFOs,
    /// devices, sockets, directories), symlinks where none may be, too large, busy (a lease),
    /// gone, or too slow to read.
    #[prost(uint64, tag = "1")]
    pub files_refused: u64,
    /// Binaries with no usable unwind information (malformed section headers, no CFI):
    /// DWARF unwinding stops at their frames.
    #[prost(uint64, tag = "2")]
    pub unwind_info_unusable: u64,
    /// Lines of perf maps (`/tmp/perf-PID.map`) skipped as malformed, or beyond the size and
    /// entry caps.
    #[prost(uint64, tag = "3")]
    pub perf_map_lines_skipped: u64,
    /// Locations left without symbols because symbolization ran out of time (recording was
    /// stopping, or a file took too long): they keep their module and offset.
    #[prost(uint64, tag = "4")]
    pub locations_not_symbolized: u64,
    /// Pages of mapped files that shrank while amprof read them, read as zeros.
    #[prost(uint64, tag = "5")]
    pub file_pages_vanished: u64,
    /// Executable mappings not kept because a process (or all of them) had more than the caps.
    #[prost(uint64, tag = "6")]
    pub mappings_dropped: u64,
    /// Unwind tables that did not fit in the room for them (`record --unwind-table-rows`):
    /// those binaries were unwound from stack copies.
    #[prost(uint64, tag = "7")]
    pub unwind_tables_no_room: u64,
}

impl Problems {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Problems) {
        self.files_refused += other.files_refused;
        self.unwind_info_unusable += other.unwind_info_unusable;
        self.perf_map_lines_skipped += other.perf_map_lines_skipped;
        self.locations_not_symbolized += other.locations_not_symbolized;
        self.file_pages_vanished += other.file_pages_vanished;
        self.mappings_dropped += other.mappings_dropped;
        self.unwind_tables_no_room += other.unwind_tables_no_room;
    }

    pub fn is_empty(&self) -> bool {
        *self == Problems::default()
    }

    /// `Some(self)` unless every count is zero (what a window stores).
    pub fn nonzero(self) -> Option<Problems> {
        (!self.is_empty()).then_some(self)
    }

    /// The nonzero counts, as `what: N` phrases for a one-line note.
    pub fn phrases(&self) -> Vec<String> {
        [
            (self.files_refused, "files refused"),
            (
                self.unwind_info_unusable,
                "binaries without usable unwind info",
            ),
            (self.perf_map_lines_skipped, "perf-map lines skipped"),
            (
                self.locations_not_symbolized,
                "locations left unnamed (time ran out)",
            ),
            (
                self.file_pages_vanished,
                "file pages that vanished while read",
            ),
            (self.mappings_dropped, "mappings over the caps"),
            (
                self.unwind_tables_no_room,
                "unwind tables without room in the kernel",
            ),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{what}: {n}"))
        .collect()
    }
}

/// A process image: a pid between two execs.
#[derive(Clone, PartialEq, Message)]
pub struct Process {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    /// The process's name: the `comm` of its main thread.
    #[prost(string, tag = "2")]
    pub name: String,
    /// `/proc/PID/exe` when it was first seen, if readable.
    #[prost(string, tag = "3")]
    pub exe: String,
    /// When amprof first saw it (monotonic ns).
    #[prost(uint64, tag = "4")]
    pub first_seen_ns: u64,
    /// Its mappings could not be read (it had exited): its user frames have no module.
    #[prost(bool, tag = "5")]
    pub maps_unavailable: bool,
}

/// A thread seen in samples.
#[derive(Clone, PartialEq, Message)]
pub struct Thread {
    #[prost(uint32, tag = "1")]
    pub tid: u32,
    /// Index into `Window::processes`.
    #[prost(uint32, tag = "2")]
    pub process: u32,
    /// The thread's `comm`.
    #[prost(string, tag = "3")]
    pub name: String,
}

/// A file (or pseudo-file) code runs from.
#[derive(Clone, PartialEq, Message)]
pub struct Module {
    /// Path as the process saw it (`[vdso]`, `[kernel.kallsyms]`, `[anon]` for pseudo ones).
    #[prost(string, tag = "1")]
    pub path: String,
    /// GNU build-id, when the file has one.
    #[prost(bytes = "vec", tag = "2")]
    pub build_id: Vec<u8>,
    #[prost(enumeration = "ModuleKind", tag = "3")]
    pub kind: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ModuleKind {
    /// An ELF file on disk.
    File = 0,
    /// The kernel (addresses are kernel virtual addresses).
    Kernel = 1,
    /// The vDSO.
    Vdso = 2,
    /// Anonymous executable memory, e.g. JIT code.
    Anonymous = 3,
}

/// A range of a process's address space backed by a module.
#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    /// Index into `Window::processes`.
    #[prost(uint32, tag = "1")]
    pub process: u32,
    #[prost(uint64, tag = "2")]
    pub start: u64,
    #[prost(uint64, tag = "3")]
    pub end: u64,
    /// Offset in the file of `start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// Index into `Window::modules`.
    #[prost(uint32, tag = "5")]
    pub module: u32,
}

/// A named function (or symbol).
#[derive(Clone, PartialEq, Message)]
pub struct Function {
    /// Demangled name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Source file, when debug info gave one.
    #[prost(string, tag = "2")]
    pub file: String,
}

/// One source-level frame of a location: a function and, when known, the line.
#[derive(Clone, PartialEq, Message)]
pub struct Line {
    /// Index into `Window::functions`.
    #[prost(uint32, tag = "1")]
    pub function: u32,
    /// 0 when unknown.
    #[prost(uint32, tag = "2")]
    pub line: u32,
}

/// An instruction address in a process (or the kernel), with what it symbolized to.
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    /// The address as sampled: the interrupted instruction for a stack's leaf frame, a return
    /// address for the others.
    #[prost(uint64, tag = "1")]
    pub address: u64,
    /// Index + 1 into `Window::mappings`; 0 when the address is in no known mapping.
    #[prost(uint32, tag = "2")]
    pub mapping: u32,
    /// Index + 1 into `Window::modules` for kernel locations (which have no mapping); else 0.
    #[prost(uint32, tag = "3")]
    pub kernel_module: u32,
    /// Source-level frames at this address, innermost (most inlined) first; empty when the
    /// address could not be symbolized.
    #[prost(message, repeated, tag = "4")]
    pub lines: Vec<Line>,
}

/// A distinct call stack of a process, with how many samples hit it (on the CPU and off it).
#[derive(Clone, PartialEq, Message)]
pub struct Stack {
    /// Index into `Window::processes`.
    #[prost(uint32, tag = "1")]
    pub process: u32,
    /// Indices into `Window::locations`, leaf first: the kernel frames, then the user frames.
    #[prost(uint32, repeated, tag = "2")]
    pub locations: Vec<u32>,
    /// How many of the leading `locations` are kernel frames.
    #[prost(uint32, tag = "3")]
    pub kernel_frames: u32,
    /// Samples with this stack in the window.
    #[prost(uint64, tag = "4")]
    pub count: u64,
    /// The user stack could not be read (see `user_error` in the eBPF ABI), e.g. a kernel thread.
    #[prost(bool, tag = "5")]
    pub no_user_stack: bool,
    /// DWARF unwinding stopped before the end of the stack: the outermost frames are missing.
    #[prost(bool, tag = "6")]
    pub truncated: bool,
    /// Off-CPU samples with this stack in the window (`count` is on-CPU samples only).
    #[prost(uint64, tag = "7")]
    pub off_cpu_count: u64,
    /// The nanoseconds off the CPU those off-CPU samples stand for.
    #[prost(uint64, tag = "8")]
    pub off_cpu_ns: u64,
}

/// The last record of a capture that was finalized cleanly.
#[derive(Clone, PartialEq, Message)]
pub struct End {
    /// Monotonic ns when recording stopped (the end of the last window).
    #[prost(uint64, tag = "1")]
    pub end_ns: u64,
    /// Windows written over the whole recording, evicted ones included.
    #[prost(uint64, tag = "2")]
    pub windows_closed: u64,
    #[prost(uint64, tag = "3")]
    pub windows_evicted: u64,
    /// Why recording stopped: `duration`, `signal`, `command-exited`, `targets-exited`.
    #[prost(string, tag = "4")]
    pub reason: String,
}
