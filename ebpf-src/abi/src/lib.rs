//! The binary interface between amprof's eBPF program and its userspace.
//!
//! Everything here is `#[repr(C)]` and plain data: the eBPF program writes these structures into a
//! BPF ring buffer and userspace reads them back byte for byte. A change to any layout or constant
//! is a change to both sides: rebuild the object with `ebpf-src/build.sh` (CI fails while the
//! committed object does not match its source).
#![no_std]

/// The kernel's `PERF_MAX_STACK_DEPTH` default: `bpf_get_stack` returns at most this many frames
/// unless `kernel.perf_event_max_stack` is raised, and the verifier needs a constant bound anyway.
pub const MAX_STACK_DEPTH: usize = 127;
/// Bytes of one stack (kernel or user) at full depth.
pub const MAX_STACK_BYTES: usize = MAX_STACK_DEPTH * 8;
/// Most bytes of user stack a sample can carry in DWARF mode (`--stack-size`): perf's limit too.
pub const MAX_USER_STACK_BYTES: usize = 64 * 1024;
/// The smallest piece of user stack worth copying when a larger copy faults (the stack ends
/// closer to the stack pointer than the requested size).
pub const MIN_USER_STACK_BYTES: usize = 512;
/// `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;

/// Number of per-window counter slots (lost and idle samples). A window's counters live in slot
/// `window_index % WINDOW_SLOTS`; userspace reads and clears a slot when it closes that window,
/// long before the slot comes round again.
pub const WINDOW_SLOTS: u32 = 64;

/// Event kinds, the first field of every ring-buffer record.
pub const EVENT_SAMPLE: u32 = 1;
/// A process called execve: its address space was replaced, so its mappings must be read again.
pub const EVENT_EXEC: u32 = 2;
/// An off-CPU sample (`--off-cpu`): a [`SampleHead`] whose stack is where a thread blocked,
/// taken as it ran again, and whose `off_cpu_ns` is the time off the CPU it stands for.
pub const EVENT_OFF_CPU: u32 = 3;

/// `SampleHead::off_cpu_reason`: the thread gave up the CPU to wait (sleep, lock, I/O).
pub const OFF_CPU_BLOCKED: u32 = 0;
/// `SampleHead::off_cpu_reason`: the thread was preempted while runnable, and waited for a CPU.
pub const OFF_CPU_RUNNABLE: u32 = 1;

/// Off-CPU samples one CPU sent in its current window (the value of `OFF_CPU_SENT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuBudget {
    /// The window index the count is for.
    pub window: u64,
    pub sent: u64,
}

/// Kernel frames kept of where a thread blocked (its stack below `schedule` rarely goes deeper).
pub const OFF_CPU_KERNEL_FRAMES: usize = 48;
/// Bytes of them.
pub const OFF_CPU_KERNEL_BYTES: u32 = (OFF_CPU_KERNEL_FRAMES * 8) as u32;
/// A mask that keeps any multiple of 8 up to `OFF_CPU_KERNEL_BYTES` (for the verifier).
pub const OFF_CPU_KERNEL_BYTES_MASK: u32 = 0x1f8;
/// Threads whose off-CPU state the kernel side keeps at once (an LRU map: threads that exited
/// make room).
pub const MAX_OFF_CPU_THREADS: u32 = 16384;

/// Where the kernel side keeps a thread's off-CPU state between context switches (the value
/// of the `OFF_CPU_THREADS` map, keyed by thread id).
///
/// Each wait is decided on alone when it ends: a wait of `w` ns is kept with probability
/// `min(1, w / period)` and, if kept, stands for `max(w, period)` ns. The expected time
/// recorded for every wait is then exactly `w`, whatever the lengths of the waits around it,
/// and a thread sends about one sample per period of its time off the CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffCpuThread {
    /// `bpf_ktime_get_ns()` when the thread left the CPU; 0 while it runs.
    pub since_ns: u64,
    /// Per reason (`OFF_CPU_BLOCKED`, `OFF_CPU_RUNNABLE`): the weight of a kept wait not yet
    /// sent (0: none due)...
    pub due_ns: [u64; 2],
    /// ...and how long that wait really was.
    pub due_wait_ns: [u64; 2],
    /// Why it left the CPU last: `OFF_CPU_BLOCKED` or `OFF_CPU_RUNNABLE`.
    pub reason: u32,
    /// Bytes of `kernel`.
    pub kernel_bytes: u32,
    /// Its user instruction and stack pointers when it left the CPU (zeros for a kernel
    /// thread): while they are the same, it is still in the kernel entry it waited in.
    pub user_entry: [u64; 2],
    /// The kernel stack it left the CPU in, leaf first: the blocked wait's own stack.
    pub kernel: [u64; OFF_CPU_KERNEL_FRAMES],
}

impl Default for OffCpuThread {
    fn default() -> Self {
        Self {
            since_ns: 0,
            due_ns: [0; 2],
            due_wait_ns: [0; 2],
            reason: 0,
            kernel_bytes: 0,
            user_entry: [0; 2],
            kernel: [0; OFF_CPU_KERNEL_FRAMES],
        }
    }
}

/// Byte offsets in the `sched/sched_switch` tracepoint record (checked against the kernel's
/// format file before attaching): `prev_state` (a long) and `next_pid`.
pub const SWITCH_PREV_STATE_OFFSET: usize = 32;
pub const SWITCH_NEXT_PID_OFFSET: usize = 56;
/// `prev_state` bits that mean the thread waits for something else than a CPU (S, D, T, t, X,
/// Z, P, I); none set (R, or R+ for a preemption): it is runnable.
pub const SWITCH_STATE_MASK: u64 = 0xff;

/// Indices into the `CONFIG` array map, written by userspace before the programs are attached.
pub mod config {
    /// Non-zero: sample only tasks whose thread-group id is a key of the `TARGETS` map.
    pub const FILTER_BY_TARGETS: u32 = 0;
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the start of window 0.
    pub const WINDOW_START_NS: u32 = 1;
    /// Length of one window in nanoseconds.
    pub const WINDOW_LEN_NS: u32 = 2;
    /// The stack-copy and DWARF programs: bytes of user stack to copy (at most
    /// `MAX_USER_STACK_BYTES`) with the user registers, for userspace to unwind with the
    /// binaries' CFI.
    pub const USER_STACK_BYTES: u32 = 3;
    /// A process never to sample: amprof itself (its own work is not what the user profiles,
    /// and symbolizing itself would feed back into what it measures).
    pub const EXCLUDE_PID: u32 = 4;
    /// `--off-cpu`: the sampling period of off-CPU time, in nanoseconds (see `OffCpuThread`).
    pub const OFF_CPU_PERIOD_NS: u32 = 5;
    /// Off-CPU samples one CPU may send per window; beyond, they are counted as lost.
    pub const OFF_CPU_MAX_PER_WINDOW: u32 = 6;
    /// Possible CPUs: off-CPU samples are built in `SCRATCH` entries from this index on.
    pub const CPUS: u32 = 7;
    /// Entries in the map.
    pub const LEN: u32 = 8;
}

/// Byte offset of `pid` in the `task/task_newtask` tracepoint record. The verifier only allows
/// constant offsets into a tracepoint's context, so the layout is compiled in; userspace checks
/// it against the kernel's format file before attaching.
pub const NEWTASK_PID_OFFSET: usize = 8;
/// Byte offset of `clone_flags` in the `task/task_newtask` tracepoint record.
pub const NEWTASK_FLAGS_OFFSET: usize = 32;

/// Fixed-size head of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// [`EVENT_SAMPLE`], [`EVENT_EXEC`] or [`EVENT_OFF_CPU`].
    pub kind: u32,
    /// CPU the event happened on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// Thread-group id (the process id users see).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name (`comm`), NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// A stack sample, as written to the ring buffer: the header, then `kernel_bytes` of kernel return
/// addresses, then `user_bytes` of user return addresses, both leaf first, then (DWARF mode)
/// `user_stack_bytes` of raw user stack starting at the user stack pointer. The record is cut to
/// the sum, so shallow stacks cost little.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleHead {
    pub header: EventHeader,
    /// Bytes of kernel addresses that follow (a multiple of 8), or 0.
    pub kernel_bytes: u32,
    /// Bytes of user addresses that follow the kernel ones (a multiple of 8), or 0.
    pub user_bytes: u32,
    /// `bpf_get_stack`'s error for the kernel stack (negative errno), or 0.
    pub kernel_error: i32,
    /// `bpf_get_stack`'s error for the user stack (negative errno), or 0. `-EFAULT` is normal
    /// for kernel threads, which have no user stack. In DWARF mode, non-zero when the user
    /// registers or stack could not be read.
    pub user_error: i32,
    /// Bytes of raw user stack that follow the frames (DWARF mode), or 0.
    pub user_stack_bytes: u32,
    /// How the user frames were found: one of the `UNWIND_*` constants.
    pub user_unwind: u32,
    /// User-mode instruction pointer, stack pointer and frame pointer (DWARF mode) where the
    /// stack copy starts: at the sample ([`UNWIND_COPY`]), or where the in-kernel walk stopped
    /// ([`UNWIND_TABLES_COPY`]; the instruction pointer is then a return address, the caller of
    /// the last frame in `user_bytes`, not itself among them).
    pub user_regs: [u64; 3],
    /// [`EVENT_OFF_CPU`]: the nanoseconds off the CPU this sample stands for (its weight); else 0.
    pub off_cpu_ns: u64,
    /// [`EVENT_OFF_CPU`]: `OFF_CPU_BLOCKED` or `OFF_CPU_RUNNABLE`.
    pub off_cpu_reason: u32,
    pub _pad: u32,
    /// [`EVENT_OFF_CPU`]: how long the wait really was (`off_cpu_ns` is what it stands for:
    /// at least one period).
    pub off_cpu_wait_ns: u64,
}

/// `SampleHead::user_unwind`: frame pointers (`bpf_get_stack`), or no user stack.
pub const UNWIND_FP: u32 = 0;
/// The user stack was copied from the sample's registers, for userspace to unwind (tables off,
/// or none for the leaf's code).
pub const UNWIND_COPY: u32 = 1;
/// Every user frame was found in the kernel with the unwind tables, up to the end of the stack.
pub const UNWIND_TABLES: u32 = 2;
/// Frames were found in the kernel until code without tables, and the stack copied from there.
pub const UNWIND_TABLES_COPY: u32 = 3;
/// Frames were found in the kernel until the depth limit or an unreadable stack: cut short.
pub const UNWIND_TABLES_TRUNCATED: u32 = 4;

/// Deepest user stack the in-kernel walk follows.
pub const MAX_USER_FRAMES: usize = 1024;

/// One row of a binary's compact unwind table (built by userspace from its `.eh_frame`): how
/// to find the caller's frame from any address at or after `pc`, up to the next row's `pc`.
/// x86-64 only: the return address is always at CFA - 8, and only the stack pointer and the
/// frame pointer (rbp) are tracked, which is all later frames' rules use.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    /// First address the row covers, in the binary's own (ELF virtual) addresses, minus the
    /// table's base: a mapping's `bias` turns a runtime address into this.
    pub pc: u32,
    /// The low 16 bits of the CFA offset's count (see [`UnwindRow::cfa_offset`]): its
    /// meaning depends on the CFA rule.
    pub cfa_offset_low: u16,
    /// A `CFA_*` rule in bits 0-2, a `RBP_*` rule in bits 3-4, `CFA_OFFSET_EIGHTHS` and the
    /// CFA offset count's bits 16-17 above.
    pub rule: u8,
    /// `RBP_AT_CFA`/`RBP_AT_RBP`: the caller's rbp is saved at that register + 8 × this.
    /// `CFA_PLT`: the threshold of the PLT rule.
    pub rbp_offset: i8,
}

impl UnwindRow {
    /// A row for code at `pc` with `rule` (a `CFA_*` and a `RBP_*` rule) and a CFA offset of
    /// `cfa_offset` bytes, if the format can hold that offset: up to 256 KiB - 1, or up to
    /// 2 MiB - 8 in multiples of 8. (Frames beyond 64 KiB are real: rustc has functions with
    /// half a megabyte of stack.)
    #[inline]
    pub fn new(pc: u32, rule: u8, cfa_offset: u64, rbp_offset: i8) -> Option<UnwindRow> {
        let (count, eighths) = if cfa_offset < 1 << 18 {
            (cfa_offset, 0)
        } else if cfa_offset % 8 == 0 && cfa_offset / 8 < 1 << 18 {
            (cfa_offset / 8, CFA_OFFSET_EIGHTHS)
        } else {
            return None;
        };
        Some(UnwindRow {
            pc,
            cfa_offset_low: count as u16,
            rule: (rule & (CFA_MASK | RBP_MASK)) | eighths | (((count >> 16) as u8) << 6),
            rbp_offset,
        })
    }

    /// The CFA offset in bytes.
    #[inline(always)]
    pub fn cfa_offset(&self) -> u64 {
        let count = u64::from(self.cfa_offset_low) | (u64::from(self.rule >> 6) << 16);
        if self.rule & CFA_OFFSET_EIGHTHS != 0 {
            count * 8
        } else {
            count
        }
    }
}

/// No unwind information for these addresses (a gap between functions, or rules the kernel
/// walk does not follow): the walk stops and the stack is copied from here.
pub const CFA_NONE: u8 = 0;
/// CFA = rsp + cfa_offset.
pub const CFA_RSP: u8 = 1;
/// CFA = rbp + cfa_offset.
pub const CFA_RBP: u8 = 2;
/// A PLT stub: CFA = rsp + cfa_offset, + 8 more when `(pc & 15) >= rbp_offset` (the stub's
/// second half, after its push).
pub const CFA_PLT: u8 = 3;
/// A realigned stack frame (gcc's DW_OP_breg6 -N; DW_OP_deref): CFA = *(rbp - cfa_offset).
pub const CFA_RBP_DEREF: u8 = 4;
/// The signal trampoline (`__restore_rt`): the interrupted registers are in the ucontext at rsp.
pub const CFA_SIGNAL: u8 = 5;
/// The outermost frame (its return address is undefined): the stack ends here.
pub const CFA_END: u8 = 6;
/// Mask of the CFA rule in `UnwindRow::rule`.
pub const CFA_MASK: u8 = 0x07;
/// The caller's rbp is this frame's rbp.
pub const RBP_UNCHANGED: u8 = 0;
/// The caller's rbp is saved at CFA + 8 × rbp_offset.
pub const RBP_AT_CFA: u8 = 1 << 3;
/// The caller's rbp is saved at rbp + 8 × rbp_offset (realigned frames).
pub const RBP_AT_RBP: u8 = 2 << 3;
/// Mask of the rbp rule in `UnwindRow::rule`.
pub const RBP_MASK: u8 = 0x18;
/// The CFA offset is counted in units of 8 bytes (large frames).
pub const CFA_OFFSET_EIGHTHS: u8 = 1 << 5;

/// Executable mappings with tables per process; beyond, code falls back to the stack copy.
pub const MAX_PROCESS_MAPPINGS: u32 = 256;

/// One executable mapping of a process whose binary has a table loaded (an entry of the
/// `MAPPINGS` pool).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecMapping {
    /// Runtime addresses `start..end`.
    pub start: u64,
    pub end: u64,
    /// Runtime address minus `bias` is the table-relative address rows are keyed by.
    pub bias: u64,
    /// The table: `rows` rows from `first_row` in `UNWIND_ROWS`, sorted by `pc`.
    pub first_row: u32,
    pub rows: u32,
}

/// The value of `PROCESSES`: a process's mappings with tables are `len` entries of the
/// `MAPPINGS` pool from `first`, sorted by `start` and disjoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessMappings {
    pub first: u32,
    pub len: u32,
}

/// Processes with tables at once (entries of `PROCESSES`).
pub const MAX_UNWIND_PROCESSES: u32 = 16384;
/// Rows of one binary's table: the in-kernel binary search takes at most log2 of it steps.
pub const MAX_TABLE_ROWS: u32 = 1 << 24;
/// The x86-64 kernel stack of a task (`THREAD_SIZE` without KASAN) and its alignment: the
/// task's user registers (`struct pt_regs`, `PT_REGS_BYTES`) sit at its top. Used only where
/// the kernel lacks `bpf_task_pt_regs` (before 5.15), and checked there by the user code and
/// stack segments the registers must hold (`USER_CS`, `USER_SS`).
pub const KERNEL_STACK_BYTES: u64 = 16 * 1024;
pub const PT_REGS_BYTES: u64 = 21 * 8;
pub const USER_CS: u64 = 0x33;
pub const USER_SS: u64 = 0x2b;
/// Where the x86-64 kernel puts the interrupted registers for a signal handler: at the signal
/// trampoline, rsp points at the `ucontext`, whose `uc_mcontext` (a `sigcontext`) is at this
/// offset (after `uc_flags`, `uc_link` and the 24-byte `uc_stack`).
pub const UCONTEXT_MCONTEXT: u64 = 40;
/// Offsets of rbp, rsp and rip in the x86-64 `sigcontext`.
pub const SIGCONTEXT_RBP: u64 = 80;
pub const SIGCONTEXT_RSP: u64 = 120;
pub const SIGCONTEXT_RIP: u64 = 128;

/// The scratch buffer the eBPF program builds a sample in before copying the used part to the
/// ring buffer (a BPF program's own stack is only 512 bytes). One per CPU, in an array map indexed
/// by CPU (per-CPU map values are limited to 32 KiB).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampleBuffer {
    pub head: SampleHead,
    /// Kernel frames, then user frames, then user stack bytes, packed: room for a full-depth
    /// kernel stack, the deepest in-kernel user walk and the largest stack copy.
    pub data: [u64; MAX_STACK_DEPTH + MAX_USER_FRAMES + MAX_USER_STACK_BYTES / 8],
}
