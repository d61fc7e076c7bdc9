//! amprof's eBPF program: one perf-event program that samples stacks, and three tracepoint
//! programs that keep userspace's view of processes right (exec), extend the target set to
//! children, and forget a new process's unwind tables (its pid's old entry).
//!
//! Design rules, each paid for (see ../shared notes in the repo history and ebpf-src/README.md):
//! - Kernel stacks are copied whole with `bpf_get_stack`, user stacks walked here with unwind
//!   tables (`-g dwarf`), by frame pointers, or copied for userspace to unwind, into a ring
//!   buffer record, never interned in a stack-id map: stack-id maps collide and would
//!   attribute one stack's samples to another.
//! - Every sample the ring buffer cannot take is counted, per window slot, so userspace can report
//!   exactly how many samples each window lost.
//! - Filtering by process happens here, before any copying, so a targeted recording costs nothing
//!   for the rest of the system.
//!
//! Everything is gated on `target_arch = "bpf"` so that host tools (`cargo check`, clippy) can look at
//! this crate without a BPF target.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod program {
    use core::ffi::c_void;

    use amprof_abi::{
        CFA_END, CFA_MASK, CFA_PLT, CFA_RBP, CFA_RBP_DEREF, CFA_RSP, CFA_SIGNAL, EVENT_EXEC,
        EVENT_OFF_CPU, EVENT_SAMPLE, EventHeader, ExecMapping, MAX_OFF_CPU_THREADS,
        MAX_STACK_BYTES, MAX_UNWIND_PROCESSES, MAX_USER_FRAMES, MAX_USER_STACK_BYTES,
        MIN_USER_STACK_BYTES, NEWTASK_FLAGS_OFFSET, NEWTASK_PID_OFFSET, OFF_CPU_BLOCKED,
        OFF_CPU_KERNEL_BYTES, OFF_CPU_KERNEL_BYTES_MASK, OFF_CPU_RUNNABLE, OffCpuBudget,
        OffCpuThread, ProcessMappings, RBP_AT_CFA, RBP_AT_RBP, RBP_MASK, SIGCONTEXT_RBP,
        SIGCONTEXT_RIP, SIGCONTEXT_RSP, SWITCH_NEXT_PID_OFFSET, SWITCH_PREV_STATE_OFFSET,
        SWITCH_STATE_MASK, SampleBuffer, SampleHead, UCONTEXT_MCONTEXT, UNWIND_COPY, UNWIND_TABLES,
        UNWIND_TABLES_COPY, UNWIND_TABLES_TRUNCATED, UnwindRow, WINDOW_SLOTS, config,
    };
    use aya_ebpf::{
        EbpfContext as _,
        bindings::pt_regs,
        bindings::{BPF_F_MMAPABLE, BPF_F_USER_STACK, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
            bpf_ktime_get_ns, bpf_probe_read_kernel,
            generated::{
                self, bpf_get_current_task_btf, bpf_get_stack, bpf_loop, bpf_probe_read_user,
                bpf_task_pt_regs,
            },
        },
        macros::{map, perf_event, raw_tracepoint, tracepoint},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
        programs::{PerfEventContext, RawTracePointContext, TracePointContext},
    };

    /// Samples and exec events for userspace. Userspace sizes it at load time (`--buffer-size`).
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

    /// Where a sample is assembled before it is copied to `EVENTS`, one entry per CPU (userspace
    /// sets the number of entries to the number of possible CPUs). Perf-event programs do not
    /// nest on a CPU, so a CPU's entry is never used twice at once.
    #[map]
    static SCRATCH: Array<SampleBuffer> = Array::with_max_entries(1, 0);

    /// Settings written by userspace; indices in `amprof_abi::config`.
    #[map]
    static CONFIG: Array<u64> = Array::with_max_entries(config::LEN, 0);

    /// Thread-group ids to sample when `FILTER_BY_TARGETS` is set.
    #[map]
    static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

    /// Samples of each process (thread-group id) that woke userspace up. Steady-state samples do
    /// not wake it (it drains the ring buffer every 50 ms: cheap), but the first few samples of
    /// a new process (or of a process after an exec) do, so that userspace reads the process's
    /// mappings at once and again as its loader maps libraries, before a short-lived process
    /// is gone.
    #[map]
    static SEEN: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

    /// Samples `EVENTS` had no room for, per window slot.
    #[map]
    static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(WINDOW_SLOTS, 0);

    /// Samples that found the CPU idle (pid 0), per window slot: not stacks anyone wants, but the
    /// count tells how busy the machine was.
    #[map]
    static IDLE: PerCpuArray<u64> = PerCpuArray::with_max_entries(WINDOW_SLOTS, 0);

    /// The rows of every binary's unwind table, one table after another. Userspace sizes it at
    /// load time and writes tables through a shared mapping of the map (no syscall per row).
    #[map]
    static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);

    /// Executable mappings of the processes in `PROCESSES`, each process's a run of entries.
    /// Userspace sizes it and writes it through a shared mapping, like `UNWIND_ROWS`.
    #[map]
    static MAPPINGS: Array<ExecMapping> = Array::with_max_entries(1, BPF_F_MMAPABLE);

    /// Per process (thread-group id): where its mappings with tables are in `MAPPINGS`.
    /// Userspace writes an entry once it has read the process's mappings; exec and process
    /// creation remove it here, so a table never unwinds an address space it was not made for.
    #[map]
    static PROCESSES: HashMap<u32, ProcessMappings> =
        HashMap::with_max_entries(MAX_UNWIND_PROCESSES, 0);

    /// The frames of an in-kernel walk, `MAX_USER_FRAMES` per CPU (userspace sets the size),
    /// copied into the sample once the walk ends. Frames go here rather than straight into
    /// `SCRATCH` because a map key is all the verifier needs to see, where a pointer offset
    /// would have to be proven for every frame count, once per count.
    #[map]
    static FRAMES: Array<u64> = Array::with_max_entries(MAX_USER_FRAMES as u32, 0);

    /// `--off-cpu`: per thread, since when it is off the CPU and the off-CPU time not yet
    /// sent. An LRU map: threads that exit are forgotten as room is needed.
    #[map]
    static OFF_CPU_THREADS: LruHashMap<u32, OffCpuThread> =
        LruHashMap::with_max_entries(MAX_OFF_CPU_THREADS, 0);

    /// One zeroed entry, never written: what a thread's entry in `OFF_CPU_THREADS` starts as.
    #[map]
    static OFF_CPU_ZERO: Array<OffCpuThread> = Array::with_max_entries(1, 0);

    /// Off-CPU samples `EVENTS` had no room for, per window slot.
    #[map]
    static OFF_CPU_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(WINDOW_SLOTS, 0);

    /// Off-CPU samples sent per window slot, against `OFF_CPU_MAX_PER_WINDOW`: a process that
    /// switches a million times a second cannot flood the ring buffer.
    #[map]
    static OFF_CPU_SENT: PerCpuArray<OffCpuBudget> = PerCpuArray::with_max_entries(1, 0);

    /// Samples of a new process that wake userspace up at once.
    const EAGER_SAMPLES: u32 = 8;

    #[inline(always)]
    fn setting(index: u32) -> u64 {
        CONFIG.get(index).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn is_target(pid: u32) -> bool {
        setting(config::FILTER_BY_TARGETS) == 0 || unsafe { TARGETS.get(&pid) }.is_some()
    }

    /// The window `time_ns` falls in.
    #[inline(always)]
    fn window_index(time_ns: u64) -> u64 {
        time_ns
            .saturating_sub(setting(config::WINDOW_START_NS))
            .checked_div(setting(config::WINDOW_LEN_NS))
            .unwrap_or(0)
    }

    /// True, and counted, if this CPU has sent fewer than `max` off-CPU samples in the window
    /// `time_ns` falls in.
    #[inline(always)]
    fn within_budget(budget: &PerCpuArray<OffCpuBudget>, time_ns: u64, max: u64) -> bool {
        let Some(budget) = budget.get_ptr_mut(0) else {
            return false;
        };
        let window = window_index(time_ns);
        // Per-CPU, and the kprobe does not nest on one CPU: plain updates are safe.
        unsafe {
            if (*budget).window != window {
                (*budget).window = window;
                (*budget).sent = 0;
            }
            if (*budget).sent >= max {
                return false;
            }
            (*budget).sent += 1;
        }
        true
    }

    /// Adds one to `counter`'s slot for the window `time_ns` falls in.
    #[inline(always)]
    fn count_in_window(counter: &PerCpuArray<u64>, time_ns: u64) {
        let index = window_index(time_ns);
        let slot = (index % WINDOW_SLOTS as u64) as u32;
        if let Some(value) = counter.get_ptr_mut(slot) {
            // Per-CPU slot, and the programs do not nest on one CPU: a plain add is safe.
            unsafe { *value += 1 };
        }
    }

    #[inline(always)]
    fn header(kind: u32, time_ns: u64, pid_tgid: u64) -> EventHeader {
        EventHeader {
            kind,
            cpu: unsafe { bpf_get_smp_processor_id() },
            time_ns,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            comm: bpf_get_current_comm().unwrap_or_default(),
        }
    }

    /// Clamps `bpf_get_stack`'s return value to a byte count the verifier can bound: a multiple
    /// of 8 in `0..=MAX_STACK_BYTES`, or 0 with the error kept apart.
    #[inline(always)]
    fn stack_bytes(ret: i64) -> (u32, i32) {
        if ret < 0 {
            (0, ret as i32)
        } else {
            // MAX_STACK_BYTES is 1016 = 0x3f8: the mask keeps any multiple of 8 up to it.
            ((ret as u64 & MAX_STACK_BYTES as u64) as u32, 0)
        }
    }

    #[perf_event]
    pub fn sample_stack(ctx: PerfEventContext) -> u32 {
        let time_ns = unsafe { bpf_ktime_get_ns() };
        let pid_tgid = bpf_get_current_pid_tgid();
        if pid_tgid as u32 == 0 {
            count_in_window(&IDLE, time_ns);
            return 0;
        }
        let pid = (pid_tgid >> 32) as u32;
        if !is_target(pid) || u64::from(pid) == setting(config::EXCLUDE_PID) {
            return 0;
        }
        if !unsafe {
            send_stack(
                ctx.as_ptr(),
                time_ns,
                pid_tgid,
                None,
                KernelFrames::Current,
                true,
            )
        } {
            count_in_window(&LOST, time_ns);
        }
        0
    }

    /// Where a sample's kernel frames come from.
    #[derive(Clone, Copy)]
    enum KernelFrames {
        /// The current kernel stack, from the program's context.
        Current,
        /// Frames taken earlier (an off-CPU thread's, as it left the CPU).
        Stashed(*const OffCpuThread),
    }

    /// Takes the current task's user stack (unless `user` is false), and its kernel stack
    /// (from `ctx`, a perf-event or tracepoint context) or one stashed before, and sends them
    /// as a sample: on-CPU, or off-CPU with `(ns, reason)`. False when the ring buffer had no
    /// room.
    ///
    /// Off-CPU samples are built in scratch space of their own (entries from `config::CPUS`
    /// on): a cpu-clock sample can interrupt a syscall-exit program on the same CPU and must
    /// not overwrite the sample it is building.
    #[inline(always)]
    unsafe fn send_stack(
        ctx: *mut c_void,
        time_ns: u64,
        pid_tgid: u64,
        off_cpu: Option<(u64, u32)>,
        kernel: KernelFrames,
        user: bool,
    ) -> bool {
        const ENOENT: i32 = -2;
        let pid = (pid_tgid >> 32) as u32;
        let cpu = unsafe { bpf_get_smp_processor_id() };
        let slot = if off_cpu.is_some() {
            cpu.wrapping_add(setting(config::CPUS) as u32)
        } else {
            cpu
        };
        let Some(buffer) = SCRATCH.get_ptr_mut(slot) else {
            return true;
        };
        let stack_copy = setting(config::USER_STACK_BYTES);
        unsafe {
            let data = (&raw mut (*buffer).data).cast::<u8>();
            let (kernel_bytes, kernel_error) = match kernel {
                KernelFrames::Current => stack_bytes(bpf_get_stack(
                    ctx,
                    data.cast::<c_void>(),
                    MAX_STACK_BYTES as u32,
                    0,
                )),
                KernelFrames::Stashed(thread) => {
                    let bytes = (*thread).kernel_bytes & OFF_CPU_KERNEL_BYTES_MASK;
                    let ret = bpf_probe_read_kernel_buf(
                        data.cast::<c_void>(),
                        bytes,
                        (&raw const (*thread).kernel).cast(),
                    );
                    if ret == 0 {
                        (bytes, 0)
                    } else {
                        (0, ret as i32)
                    }
                }
            };
            let rest = data.add(kernel_bytes as usize);
            let (kind, off_cpu_ns, off_cpu_reason) = match off_cpu {
                Some((ns, reason)) => (EVENT_OFF_CPU, ns, reason),
                None => (EVENT_SAMPLE, 0, 0),
            };
            let mut head = SampleHead {
                header: header(kind, time_ns, pid_tgid),
                kernel_bytes,
                kernel_error,
                off_cpu_ns,
                off_cpu_reason,
                ..SampleHead::default()
            };
            if !user {
                // The user stack is not the one the sample is about: none.
                head.user_error = ENOENT;
            } else if stack_copy == 0 {
                let ret = bpf_get_stack(
                    ctx,
                    rest.cast::<c_void>(),
                    MAX_STACK_BYTES as u32,
                    BPF_F_USER_STACK as u64,
                );
                (head.user_bytes, head.user_error) = stack_bytes(ret);
            } else {
                unwind_user(&mut head, pid, slot, data, stack_copy);
            }
            (*buffer).head = head;
            let len = size_of::<SampleHead>()
                + kernel_bytes as usize
                + head.user_bytes as usize
                + head.user_stack_bytes as usize;
            let record = core::slice::from_raw_parts(buffer.cast::<u8>(), len);
            let wakeup = match SEEN.get_ptr_mut(&pid) {
                Some(woken) if *woken >= EAGER_SAMPLES => BPF_RB_NO_WAKEUP,
                Some(woken) => {
                    *woken += 1;
                    BPF_RB_FORCE_WAKEUP
                }
                None => {
                    let _ = SEEN.insert(&pid, &1, 0);
                    BPF_RB_FORCE_WAKEUP
                }
            };
            EVENTS.output::<[u8]>(record, wakeup as u64).is_ok()
        }
    }

    /// `sched/sched_switch` (in the context of the task leaving the CPU), with `--off-cpu`:
    ///
    /// - the thread leaving, if a target, notes when and why, and the kernel stack it
    ///   blocks in (its user stack is taken later, only if a sample is due: it does not
    ///   change while the thread is off the CPU and inside the kernel);
    /// - the thread coming in adds the time it was off to its pending sum; once the sum
    ///   reaches the period, a sample is due, sent from the thread's own context at its
    ///   next syscall exit ([`off_cpu_syscall_exit`]) or, failing that, the next time it
    ///   leaves the CPU (here).
    ///
    /// Short blocks thus cost two map updates and a kernel stack; the samples stand for every
    /// nanosecond off the CPU (the sums' remainders aside).
    #[tracepoint]
    pub fn off_cpu_switch(ctx: TracePointContext) -> u32 {
        let time_ns = unsafe { bpf_ktime_get_ns() };
        let (Ok(prev_state), Ok(next_tid)) = (
            unsafe { ctx.read_at::<u64>(SWITCH_PREV_STATE_OFFSET) },
            unsafe { ctx.read_at::<u32>(SWITCH_NEXT_PID_OFFSET) },
        ) else {
            return 0;
        };
        leave_cpu(&ctx, time_ns, prev_state);
        if let Some(thread) = OFF_CPU_THREADS.get_ptr_mut(&next_tid) {
            unsafe {
                let since_ns = (*thread).since_ns;
                if since_ns != 0 && since_ns <= time_ns {
                    (*thread).since_ns = 0;
                    let reason = (*thread).reason & 1;
                    let pending = &mut (*thread).pending_ns[reason as usize];
                    *pending += time_ns - since_ns;
                    if *pending >= setting(config::OFF_CPU_PERIOD_NS) {
                        (*thread).due = reason + 1;
                    }
                }
            }
        }
        0
    }

    /// The current thread leaves the CPU: a sample still due is sent now (with the current
    /// stacks), then the block starts.
    #[inline(always)]
    fn leave_cpu(ctx: &TracePointContext, time_ns: u64, prev_state: u64) {
        let pid_tgid = bpf_get_current_pid_tgid();
        let tid = pid_tgid as u32;
        let pid = (pid_tgid >> 32) as u32;
        if tid == 0 || !is_target(pid) || u64::from(pid) == setting(config::EXCLUDE_PID) {
            return;
        }
        let thread = match OFF_CPU_THREADS.get_ptr_mut(&tid) {
            Some(thread) => thread,
            None => {
                // The new entry is copied from a map (it is too big for the BPF stack).
                let Some(zero) = OFF_CPU_ZERO.get(0) else {
                    return;
                };
                let _ = OFF_CPU_THREADS.insert(&tid, zero, 0);
                match OFF_CPU_THREADS.get_ptr_mut(&tid) {
                    Some(thread) => thread,
                    None => return,
                }
            }
        };
        // Where the thread is in user space: the same until it returns there, so that a
        // sample due later can tell whether the thread is still inside this kernel entry.
        let entry = unsafe { user_regs() }.map_or([0, 0], |[ip, sp, _]| [ip, sp]);
        let runnable = prev_state & SWITCH_STATE_MASK == 0;
        unsafe {
            let due = (*thread).due;
            if due != 0 {
                let same_entry = (*thread).user_entry == entry && entry != [0, 0];
                if same_entry {
                    // Woken and leaving again in the same syscall (or fault): its stacks now
                    // are the ones it waited in.
                    send_due(
                        ctx.as_ptr(),
                        time_ns,
                        pid_tgid,
                        thread,
                        KernelFrames::Current,
                        true,
                    );
                } else if due - 1 == OFF_CPU_RUNNABLE {
                    // Time spent waiting for a CPU goes with where the thread is next
                    // preempted (where it was preempted before cannot be read any more), and
                    // never with a stack where it blocks.
                    if runnable {
                        send_due(
                            ctx.as_ptr(),
                            time_ns,
                            pid_tgid,
                            thread,
                            KernelFrames::Current,
                            true,
                        );
                    }
                } else {
                    // It blocked outside a syscall (a page fault) and has moved on: the kernel
                    // stack it blocked in, without a user stack it no longer has.
                    send_due(
                        ctx.as_ptr(),
                        time_ns,
                        pid_tgid,
                        thread,
                        KernelFrames::Stashed(thread),
                        false,
                    );
                }
            }
            // The record's state is a bit per state letter (S, D, ...), 0 for R, and
            // TASK_REPORT_MAX (bit 8) for a preemption: R and R+ wait for a CPU.
            (*thread).reason = if runnable {
                OFF_CPU_RUNNABLE
            } else {
                OFF_CPU_BLOCKED
            };
            let ret = bpf_get_stack(
                ctx.as_ptr(),
                (&raw mut (*thread).kernel).cast::<c_void>(),
                OFF_CPU_KERNEL_BYTES,
                0,
            );
            (*thread).kernel_bytes = if ret > 0 { ret as u32 } else { 0 };
            (*thread).user_entry = entry;
            (*thread).since_ns = time_ns;
        }
    }

    /// `raw_syscalls/sys_exit`, with `--off-cpu`: a thread that blocked in this syscall and
    /// has a sample due sends it now, with the user stack the syscall was made from and the
    /// kernel stack it blocked in.
    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn off_cpu_syscall_exit(ctx: RawTracePointContext) -> i32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let Some(thread) = OFF_CPU_THREADS.get_ptr_mut(&(pid_tgid as u32)) else {
            return 0;
        };
        if unsafe { (*thread).due } == 0 {
            return 0;
        }
        // Only the syscall it waited in: the same user registers as when it left the CPU.
        let entry = unsafe { user_regs() }.map_or([0, 0], |[ip, sp, _]| [ip, sp]);
        if unsafe { (*thread).user_entry } != entry {
            return 0;
        }
        let time_ns = unsafe { bpf_ktime_get_ns() };
        unsafe {
            send_due(
                ctx.as_ptr(),
                time_ns,
                pid_tgid,
                thread,
                KernelFrames::Stashed(thread),
                true,
            )
        };
        0
    }

    /// Sends the off-CPU sample due for `thread`, if this CPU's budget allows; the sum is
    /// cleared when sent, and kept (for a later block) when the budget is spent.
    #[inline(always)]
    unsafe fn send_due(
        ctx: *mut c_void,
        time_ns: u64,
        pid_tgid: u64,
        thread: *mut OffCpuThread,
        kernel: KernelFrames,
        user: bool,
    ) {
        unsafe {
            let reason = ((*thread).due - 1) & 1;
            (*thread).due = 0;
            if !within_budget(
                &OFF_CPU_SENT,
                time_ns,
                setting(config::OFF_CPU_MAX_PER_WINDOW),
            ) {
                return;
            }
            let ns = (*thread).pending_ns[reason as usize];
            (*thread).pending_ns[reason as usize] = 0;
            if !send_stack(ctx, time_ns, pid_tgid, Some((ns, reason)), kernel, user) {
                count_in_window(&OFF_CPU_LOST, time_ns);
            }
        }
    }

    /// DWARF mode: finds the user frames of the current task, into `data` after the kernel
    /// frames. With tables loaded for the process, the stack is walked here ([`walk_step`]) as
    /// far as they go; from where they end (code without tables: JIT code, a binary whose table
    /// is still being built, or the whole stack when the process has none yet) the user stack
    /// is copied for userspace to unwind, as perf does.
    #[inline(always)]
    unsafe fn unwind_user(head: &mut SampleHead, pid: u32, slot: u32, data: *mut u8, wanted: u64) {
        const EFAULT: i32 = -14;
        let Some([pc, sp, bp]) = (unsafe { user_regs() }) else {
            head.user_error = EFAULT;
            return;
        };
        let mut walk = Walk {
            pc,
            sp,
            bp,
            pid,
            frames_base: slot.wrapping_mul(MAX_USER_FRAMES as u32),
            frames: 0,
            outcome: UNWIND_COPY,
            exact: 1,
        };
        if setting(config::UNWIND_TABLES) != 0 && unsafe { PROCESSES.get(&pid) }.is_some() {
            // One more step than frames, so that the depth limit is seen by walk_step.
            unsafe {
                bpf_loop(
                    MAX_USER_FRAMES as u32 + 1,
                    walk_step as *mut c_void,
                    (&raw mut walk).cast::<c_void>(),
                    0,
                )
            };
        }
        let frames = if walk.frames > MAX_USER_FRAMES as u32 {
            MAX_USER_FRAMES as u32
        } else {
            walk.frames
        };
        let kernel_bytes = head.kernel_bytes & MAX_STACK_BYTES as u32;
        let mut user = unsafe { data.add(kernel_bytes as usize) };
        if frames > 0 {
            let Some(found) = FRAMES.get_ptr(walk.frames_base) else {
                head.user_error = EFAULT;
                return;
            };
            // The walk's frames are consecutive entries of FRAMES (an array map's values are
            // contiguous), read as one block.
            let ret = unsafe {
                bpf_probe_read_kernel_buf(user.cast::<c_void>(), frames * 8, found.cast())
            };
            if ret != 0 {
                head.user_error = EFAULT;
                return;
            }
            user = unsafe { user.add(frames as usize * 8) };
        }
        head.user_bytes = frames * 8;
        head.user_unwind = walk.outcome;
        if walk.outcome == UNWIND_COPY || walk.outcome == UNWIND_TABLES_COPY {
            head.user_regs = [walk.pc, walk.sp, walk.bp];
            (head.user_stack_bytes, head.user_error) =
                unsafe { copy_user_stack(user, walk.sp, wanted) };
            if head.user_error != 0 && walk.outcome == UNWIND_TABLES_COPY {
                // The frames found in the kernel stand; only the rest is missing.
                head.user_error = 0;
                head.user_unwind = UNWIND_TABLES_TRUNCATED;
            }
        }
    }

    /// `bpf_probe_read_kernel` of `size` bytes (the aya wrapper reads one value of a type).
    #[inline(always)]
    unsafe fn bpf_probe_read_kernel_buf(dst: *mut c_void, size: u32, src: *const c_void) -> i64 {
        unsafe { generated::bpf_probe_read_kernel(dst, size, src) }
    }

    /// The task's user registers (rip, rsp, rbp) from its saved user-mode context: right
    /// whether the sample interrupted user or kernel code. `None` for kernel threads.
    #[inline(always)]
    unsafe fn user_regs() -> Option<[u64; 3]> {
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
        let regs = unsafe { bpf_probe_read_kernel(regs) }.ok()?;
        // Kernel threads have no user context: their saved registers are zero.
        if regs.rip == 0 || regs.rsp == 0 {
            return None;
        }
        Some([regs.rip, regs.rsp, regs.rbp])
    }

    /// Copies up to `wanted` bytes of user stack from `sp` to `dst`. A copy that runs past the
    /// end of the stack faults as a whole, so smaller copies are tried, down to
    /// `MIN_USER_STACK_BYTES`. Returns the bytes copied and an error (non-zero when nothing
    /// could be read).
    #[inline(always)]
    unsafe fn copy_user_stack(dst: *mut u8, sp: u64, wanted: u64) -> (u32, i32) {
        const EFAULT: i32 = -14;
        let mut size = if wanted > MAX_USER_STACK_BYTES as u64 {
            MAX_USER_STACK_BYTES as u32
        } else {
            wanted as u32
        };
        // At most 8 halvings: 64 KiB down to 512 bytes. A constant bound the verifier accepts.
        for _ in 0..8 {
            if size < MIN_USER_STACK_BYTES as u32 {
                break;
            }
            let size_bounded = size & (2 * MAX_USER_STACK_BYTES as u32 - 1);
            let ret = unsafe {
                bpf_probe_read_user(dst.cast::<c_void>(), size_bounded, sp as *const c_void)
            };
            if ret == 0 {
                return (size_bounded, 0);
            }
            size /= 2;
        }
        (0, EFAULT)
    }

    /// The state of an in-kernel stack walk, shared with each [`walk_step`].
    #[repr(C)]
    struct Walk {
        /// Registers of the frame to unwind next.
        pc: u64,
        sp: u64,
        bp: u64,
        pid: u32,
        /// This CPU's first entry in `FRAMES`.
        frames_base: u32,
        /// User frames found so far. Written by the steps, never read by them: each step finds
        /// at most one frame, so step `i` is at frame `i` (`bpf_loop`'s index), and a count the
        /// verifier never sees as a constant lets it check a step once for all.
        frames: u32,
        /// One of the `UNWIND_*` outcomes, once the walk stops.
        outcome: u32,
        /// `pc` is the exact instruction (the leaf, or the frame a signal interrupted), not a
        /// return address (whose call instruction is at `pc - 1`).
        exact: u32,
    }

    const CONTINUE: i64 = 0;
    const STOP: i64 = 1;

    /// One frame of the walk, as a `bpf_loop` callback: the verifier checks it once, however
    /// many frames a stack has.
    #[inline(never)]
    unsafe extern "C" fn walk_step(index: u64, ctx: *mut c_void) -> i64 {
        let walk = unsafe { &mut *ctx.cast::<Walk>() };
        unsafe { step(walk, index as u32) }
    }

    /// Unwinds frame `index` (its registers are in `walk`) to its caller.
    #[inline(always)]
    unsafe fn step(walk: &mut Walk, index: u32) -> i64 {
        if index >= MAX_USER_FRAMES as u32 {
            walk.outcome = UNWIND_TABLES_TRUNCATED;
            return STOP;
        }
        let no_table = if index == 0 {
            UNWIND_COPY
        } else {
            UNWIND_TABLES_COPY
        };
        let lookup = if walk.exact != 0 {
            walk.pc
        } else {
            walk.pc.wrapping_sub(1)
        };
        let Some(row) = find_row(walk.pid, lookup) else {
            walk.outcome = no_table;
            return STOP;
        };
        let offset = row.cfa_offset();
        let cfa = match row.rule & CFA_MASK {
            CFA_RSP => walk.sp.wrapping_add(offset),
            CFA_RBP => walk.bp.wrapping_add(offset),
            CFA_PLT => {
                let second_half = (walk.pc & 15) >= u64::from(row.rbp_offset as u8);
                walk.sp
                    .wrapping_add(offset + if second_half { 8 } else { 0 })
            }
            CFA_RBP_DEREF => match read_user(walk.bp.wrapping_sub(offset)) {
                Some(cfa) => cfa,
                None => return truncated(walk),
            },
            CFA_SIGNAL => return signal_frame(walk, index),
            CFA_END => {
                push_frame(walk, index);
                walk.outcome = UNWIND_TABLES;
                return STOP;
            }
            _ => {
                walk.outcome = no_table;
                return STOP;
            }
        };
        push_frame(walk, index);
        // A caller's frame is above its callee's: anything else is a corrupt stack (or a
        // wrong table), and following it could loop.
        if cfa <= walk.sp {
            return truncated(walk);
        }
        let Some(return_address) = read_user(cfa.wrapping_sub(8)) else {
            return truncated(walk);
        };
        let saved_bp = i64::from(row.rbp_offset) * 8;
        let bp = match row.rule & RBP_MASK {
            RBP_AT_CFA => read_user(cfa.wrapping_add_signed(saved_bp)),
            RBP_AT_RBP => read_user(walk.bp.wrapping_add_signed(saved_bp)),
            _ => Some(walk.bp),
        };
        let Some(bp) = bp else {
            return truncated(walk);
        };
        walk.pc = return_address;
        walk.sp = cfa;
        walk.bp = bp;
        walk.exact = 0;
        if return_address == 0 {
            // Some thread start routines end the chain with a null return address.
            walk.outcome = UNWIND_TABLES;
            return STOP;
        }
        CONTINUE
    }

    /// The walk cannot go on (an unreadable or corrupt stack): the frames so far stand.
    #[inline(always)]
    fn truncated(walk: &mut Walk) -> i64 {
        walk.outcome = UNWIND_TABLES_TRUNCATED;
        STOP
    }

    /// The signal trampoline: the frame the signal interrupted has its registers in the
    /// ucontext the kernel pushed, and its `pc` is exact (it was interrupted, not calling).
    #[inline(always)]
    fn signal_frame(walk: &mut Walk, index: u32) -> i64 {
        push_frame(walk, index);
        let context = walk.sp.wrapping_add(UCONTEXT_MCONTEXT);
        let (Some(bp), Some(sp), Some(pc)) = (
            read_user(context.wrapping_add(SIGCONTEXT_RBP)),
            read_user(context.wrapping_add(SIGCONTEXT_RSP)),
            read_user(context.wrapping_add(SIGCONTEXT_RIP)),
        ) else {
            return truncated(walk);
        };
        walk.pc = pc;
        walk.sp = sp;
        walk.bp = bp;
        walk.exact = 1;
        CONTINUE
    }

    /// Records `walk.pc` as user frame `index`.
    #[inline(always)]
    fn push_frame(walk: &mut Walk, index: u32) {
        if let Some(slot) = FRAMES.get_ptr_mut(walk.frames_base.wrapping_add(index)) {
            unsafe { *slot = walk.pc };
            walk.frames = index + 1;
        }
    }

    /// Reads a word of user memory.
    #[inline(always)]
    fn read_user(address: u64) -> Option<u64> {
        let mut value = 0u64;
        let ret = unsafe {
            bpf_probe_read_user(
                (&raw mut value).cast::<c_void>(),
                8,
                address as *const c_void,
            )
        };
        (ret == 0).then_some(value)
    }

    /// The table row for `address` in process `pid`: a binary search of its mappings, then of
    /// the mapping's table for the last row at or before the address. Entries are read by
    /// key (array lookups), never by pointer offsets, so the verifier needs no bounds on the
    /// search's indices and checks each search once.
    #[inline(always)]
    fn find_row(pid: u32, address: u64) -> Option<UnwindRow> {
        let process = *unsafe { PROCESSES.get(&pid) }?;
        let mapping = find_mapping(process, address)?;
        let relative = address.wrapping_sub(mapping.bias);
        if relative > u64::from(u32::MAX) {
            return None;
        }
        let relative = relative as u32;
        // Rows with pc <= relative are those before `low` once the search ends; 25 halvings
        // cover MAX_TABLE_ROWS, which userspace keeps tables under. (No clamp to a constant
        // here: a constant bound would make the verifier follow each halving's two outcomes
        // separately, 2^25 paths.)
        let (mut low, mut high) = (0u32, mapping.rows);
        for _ in 0..25 {
            if low >= high {
                break;
            }
            let middle = low + (high - low) / 2;
            let row = UNWIND_ROWS.get(mapping.first_row.wrapping_add(middle))?;
            if row.pc <= relative {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        if low == 0 {
            return None;
        }
        UNWIND_ROWS
            .get(mapping.first_row.wrapping_add(low - 1))
            .copied()
    }

    /// The mapping of `process` that contains `address` (its mappings are sorted and disjoint).
    #[inline(always)]
    fn find_mapping(process: ProcessMappings, address: u64) -> Option<ExecMapping> {
        // 9 halvings cover MAX_PROCESS_MAPPINGS (256), which userspace keeps processes under.
        let (mut low, mut high) = (0u32, process.len);
        for _ in 0..9 {
            if low >= high {
                break;
            }
            let middle = low + (high - low) / 2;
            let mapping = MAPPINGS.get(process.first.wrapping_add(middle))?;
            if address < mapping.start {
                high = middle;
            } else if address >= mapping.end {
                low = middle + 1;
            } else {
                return Some(*mapping);
            }
        }
        None
    }

    /// `sched/sched_process_exec`: the calling process has a new address space.
    #[tracepoint]
    pub fn process_exec(_ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let pid = (pid_tgid >> 32) as u32;
        if !is_target(pid) {
            return 0;
        }
        // The new image's first sample must wake userspace again, and the old image's tables
        // must not unwind the new one.
        let _ = SEEN.remove(&pid);
        let _ = PROCESSES.remove(&pid);
        let time_ns = unsafe { bpf_ktime_get_ns() };
        let event = header(EVENT_EXEC, time_ns, pid_tgid);
        // A lost exec event only costs symbols, which userspace recovers from on its own (it
        // re-reads mappings when an address falls outside them): no need to count it.
        let _ = EVENTS.output::<EventHeader>(&event, BPF_RB_NO_WAKEUP as u64);
        0
    }

    /// `task/task_newtask`: a target that starts a new process (not a thread: threads share the
    /// thread-group id, which is already a target) makes the child a target too.
    #[tracepoint]
    pub fn follow_children(ctx: TracePointContext) -> u32 {
        const CLONE_THREAD: u64 = 0x0001_0000;
        let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
        if unsafe { TARGETS.get(&parent) }.is_none() {
            return 0;
        }
        let (Ok(child), Ok(flags)) = (unsafe { ctx.read_at::<u32>(NEWTASK_PID_OFFSET) }, unsafe {
            ctx.read_at::<u64>(NEWTASK_FLAGS_OFFSET)
        }) else {
            return 0;
        };
        if flags & CLONE_THREAD == 0 {
            let _ = TARGETS.insert(&child, &1, 0);
        }
        0
    }

    /// `task/task_newtask`: a new process (not a thread) has no tables until userspace has read
    /// its mappings; an entry left by an earlier process with the same id is removed.
    #[tracepoint]
    pub fn forget_new_process(ctx: TracePointContext) -> u32 {
        const CLONE_THREAD: u64 = 0x0001_0000;
        let (Ok(child), Ok(flags)) = (unsafe { ctx.read_at::<u32>(NEWTASK_PID_OFFSET) }, unsafe {
            ctx.read_at::<u64>(NEWTASK_FLAGS_OFFSET)
        }) else {
            return 0;
        };
        if flags & CLONE_THREAD == 0 {
            let _ = PROCESSES.remove(&child);
        }
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}
