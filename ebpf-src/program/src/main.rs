//! amprof's eBPF programs: a sampling program per call-graph mode, the off-CPU programs of each
//! mode, and three tracepoint programs that keep userspace's view of processes right (exec),
//! extend the target set to children, and forget a new process's unwind tables (its pid's old
//! entry). Userspace loads only the programs of the mode that runs (ebpf-src/README.md).
//!
//! Design rules, each paid for (ebpf-src/README.md says why):
//! - Kernel stacks are copied whole with `bpf_get_stack`, user stacks walked here with unwind
//!   tables (`-g dwarf`), by frame pointers, or copied for userspace to unwind, into a ring
//!   buffer record, never interned in a stack-id map: stack-id maps collide and would
//!   attribute one stack's samples to another.
//! - Every sample the ring buffer cannot take is counted, per window slot, so userspace can report
//!   exactly how many samples each window lost.
//! - Filtering by process happens here, before any copying, so a targeted recording costs nothing
//!   for the rest of the system.
//! - What the verifier checks is bounded by the code's shape, not by how well a kernel's verifier
//!   prunes: every loop whose steps branch is a `bpf_loop` callback.
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
        CFA_END, CFA_MASK, CFA_PLT, CFA_RBP, CFA_RBP_DEREF, CFA_RSP, CFA_SIGNAL, COMM_LEN,
        EVENT_EXEC, EVENT_OFF_CPU, EVENT_SAMPLE, EventHeader, KERNEL_STACK_BYTES,
        MAX_OFF_CPU_THREADS, MAX_STACK_BYTES, MAX_UNWIND_PROCESSES, MAX_USER_FRAMES,
        MAX_USER_STACK_BYTES, MIN_USER_STACK_BYTES, NEWTASK_FLAGS_OFFSET, NEWTASK_PID_OFFSET,
        OFF_CPU_BLOCKED, OFF_CPU_KERNEL_BYTES, OFF_CPU_KERNEL_BYTES_MASK, OFF_CPU_RUNNABLE,
        OffCpuBudget, OffCpuThread, PT_REGS_BYTES, ProcessMappings, RBP_AT_CFA, RBP_AT_RBP,
        RBP_MASK, SIGCONTEXT_RBP, SIGCONTEXT_RIP, SIGCONTEXT_RSP, SWITCH_NEXT_PID_OFFSET,
        SWITCH_PREV_STATE_OFFSET, SWITCH_STATE_MASK, SampleBuffer, SampleHead, UCONTEXT_MCONTEXT,
        UNWIND_COPY, UNWIND_FP, UNWIND_TABLES, UNWIND_TABLES_COPY, UNWIND_TABLES_TRUNCATED,
        USER_CS, USER_SS, UnwindRow, WINDOW_SLOTS, config,
    };
    use aya_ebpf::{
        EbpfContext as _,
        bindings::{
            BPF_F_MMAPABLE, BPF_F_USER_STACK, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
            bpf_perf_event_data, pt_regs,
        },
        helpers::{
            bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
            bpf_probe_read_kernel,
            generated::{
                self, bpf_get_current_comm, bpf_get_current_task_btf, bpf_get_prandom_u32,
                bpf_get_stack, bpf_loop, bpf_probe_read_user, bpf_task_pt_regs,
            },
        },
        macros::{map, perf_event, raw_tracepoint, tracepoint},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
        programs::{PerfEventContext, RawTracePointContext, TracePointContext},
    };

    // The call-graph modes, one program of each kind per mode (a const parameter, so that a
    // mode's program holds only its own code: an old kernel refuses what it does not know even
    // on a branch that never runs).
    /// `-g fp`: frame pointers, walked by `bpf_get_stack` (Linux 4.18).
    const FP: u32 = 0;
    /// `-g dwarf-copy`: registers from `bpf_task_pt_regs` (5.15) and a copy of the stack.
    const COPY: u32 = 1;
    /// `-g dwarf-copy` before 5.15: registers from the sample, or from the top of the task's
    /// kernel stack, checked.
    const COPY_COMPAT: u32 = 2;
    /// `-g dwarf`: walked here with unwind tables (`bpf_loop`, 5.17), copied from where they end.
    const DWARF: u32 = 3;

    /// Samples and exec events for userspace. Userspace sizes it at load time (`--buffer-size`).
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

    /// Where a sample is assembled before it is copied to `EVENTS`: per CPU, an entry for
    /// on-CPU samples and one (from `config::CPUS` on) for off-CPU samples, which a cpu-clock
    /// sample can interrupt (userspace sets the number of entries).
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

    use amprof_abi::ExecMapping;

    /// Per process (thread-group id): where its mappings with tables are in `MAPPINGS`.
    /// Userspace writes an entry once it has read the process's mappings; exec and process
    /// creation remove it here, so a table never unwinds an address space it was not made for.
    #[map]
    static PROCESSES: HashMap<u32, ProcessMappings> =
        HashMap::with_max_entries(MAX_UNWIND_PROCESSES, 0);

    /// The frames of an in-kernel walk, `MAX_USER_FRAMES` per scratch entry (userspace sets
    /// the size), copied into the sample once the walk ends. Frames go here rather than
    /// straight into `SCRATCH` because a map key is all the verifier needs to see, where a
    /// pointer offset would have to be proven for every frame count, once per count.
    #[map]
    static FRAMES: Array<u64> = Array::with_max_entries(MAX_USER_FRAMES as u32, 0);

    /// The state of each scratch entry's in-kernel walk (sized like `SCRATCH` by userspace).
    #[map]
    static WALKS: Array<Walk> = Array::with_max_entries(1, 0);

    /// `--off-cpu`: per thread, since when it is off the CPU and the kept waits not yet sent.
    /// An LRU map: threads that exit are forgotten as room is needed.
    #[map]
    static OFF_CPU_THREADS: LruHashMap<u32, OffCpuThread> =
        LruHashMap::with_max_entries(MAX_OFF_CPU_THREADS, 0);

    /// One zeroed entry, never written: what a thread's entry in `OFF_CPU_THREADS` starts as.
    #[map]
    static OFF_CPU_ZERO: Array<OffCpuThread> = Array::with_max_entries(1, 0);

    /// Off-CPU samples `EVENTS` (or the CPU's budget) had no room for, per window slot.
    #[map]
    static OFF_CPU_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(WINDOW_SLOTS, 0);

    /// Off-CPU samples sent per window slot, against `OFF_CPU_MAX_PER_WINDOW`: a process that
    /// switches a million times a second cannot flood the ring buffer.
    #[map]
    static OFF_CPU_SENT: PerCpuArray<OffCpuBudget> = PerCpuArray::with_max_entries(1, 0);

    /// Samples of a new process that wake userspace up at once.
    const EAGER_SAMPLES: u32 = 8;
    const EFAULT: i32 = -14;
    const ENOENT: i32 = -2;

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
    fn within_budget(time_ns: u64, max: u64) -> bool {
        let Some(budget) = OFF_CPU_SENT.get_ptr_mut(0) else {
            return false;
        };
        let window = window_index(time_ns);
        // Per-CPU, and these programs do not nest on one CPU: plain updates are safe.
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

    /// Fills `header` (in a map value: the comm is written in place).
    #[inline(always)]
    unsafe fn write_header(header: *mut EventHeader, kind: u32, time_ns: u64, pid_tgid: u64) {
        unsafe {
            (*header).kind = kind;
            (*header).cpu = bpf_get_smp_processor_id();
            (*header).time_ns = time_ns;
            (*header).pid = (pid_tgid >> 32) as u32;
            (*header).tid = pid_tgid as u32;
            if bpf_get_current_comm((&raw mut (*header).comm).cast(), COMM_LEN as u32) != 0 {
                (*header).comm = [0; COMM_LEN];
            }
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
    pub fn sample_fp(ctx: PerfEventContext) -> u32 {
        sample::<FP>(&ctx)
    }

    #[perf_event]
    pub fn sample_copy(ctx: PerfEventContext) -> u32 {
        sample::<COPY>(&ctx)
    }

    #[perf_event]
    pub fn sample_copy_compat(ctx: PerfEventContext) -> u32 {
        sample::<COPY_COMPAT>(&ctx)
    }

    #[perf_event]
    pub fn sample_dwarf(ctx: PerfEventContext) -> u32 {
        sample::<DWARF>(&ctx)
    }

    /// A cpu-clock sample: the current task's stacks, unless the CPU is idle or the task is not
    /// a target.
    #[inline(always)]
    fn sample<const MODE: u32>(ctx: &PerfEventContext) -> u32 {
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
        let sent = unsafe {
            send_stack::<MODE>(
                ctx.as_ptr(),
                time_ns,
                pid_tgid,
                None,
                core::ptr::null(),
                true,
            )
        };
        if !sent {
            count_in_window(&LOST, time_ns);
        }
        0
    }

    /// An off-CPU sample's weight and cause: `(ns it stands for, ns it lasted, reason)`.
    type OffCpu = (u64, u64, u32);

    /// Takes the current task's user stack (unless `user` is false) and its kernel stack (from
    /// `ctx`, a perf-event or tracepoint context, or the one stashed in `stashed` when that is
    /// not null) and sends them as a sample: on-CPU, or off-CPU. False when the ring buffer had
    /// no room.
    #[inline(always)]
    unsafe fn send_stack<const MODE: u32>(
        ctx: *mut c_void,
        time_ns: u64,
        pid_tgid: u64,
        off_cpu: Option<OffCpu>,
        stashed: *const OffCpuThread,
        user: bool,
    ) -> bool {
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
        unsafe {
            let head = &raw mut (*buffer).head;
            let data = (&raw mut (*buffer).data).cast::<u8>();
            let (kernel_bytes, kernel_error) = if stashed.is_null() {
                stack_bytes(bpf_get_stack(
                    ctx,
                    data.cast::<c_void>(),
                    MAX_STACK_BYTES as u32,
                    0,
                ))
            } else {
                let bytes = (*stashed).kernel_bytes & OFF_CPU_KERNEL_BYTES_MASK;
                let ret = bpf_probe_read_kernel_buf(
                    data.cast::<c_void>(),
                    bytes,
                    (&raw const (*stashed).kernel).cast(),
                );
                if ret == 0 {
                    (bytes, 0)
                } else {
                    (0, ret as i32)
                }
            };
            let (kind, (off_cpu_ns, off_cpu_wait_ns, off_cpu_reason)) = match off_cpu {
                Some(off_cpu) => (EVENT_OFF_CPU, off_cpu),
                None => (EVENT_SAMPLE, (0, 0, 0)),
            };
            write_header(&raw mut (*head).header, kind, time_ns, pid_tgid);
            (*head).kernel_bytes = kernel_bytes;
            (*head).kernel_error = kernel_error;
            (*head).off_cpu_ns = off_cpu_ns;
            (*head).off_cpu_wait_ns = off_cpu_wait_ns;
            (*head).off_cpu_reason = off_cpu_reason;
            (*head)._pad = 0;
            (*head).user_bytes = 0;
            (*head).user_stack_bytes = 0;
            (*head).user_error = 0;
            (*head).user_unwind = UNWIND_FP;
            (*head).user_regs = [0; 3];
            let user_data = data.add(kernel_bytes as usize);
            if !user {
                // The user stack is not the one the sample is about: none.
                (*head).user_error = ENOENT;
            } else if MODE == FP {
                let ret = bpf_get_stack(
                    ctx,
                    user_data.cast::<c_void>(),
                    MAX_STACK_BYTES as u32,
                    BPF_F_USER_STACK as u64,
                );
                ((*head).user_bytes, (*head).user_error) = stack_bytes(ret);
            } else if MODE == DWARF {
                unwind_user(head, pid, slot, user_data);
            } else {
                let regs = if MODE == COPY_COMPAT {
                    compat_user_regs(ctx.cast())
                } else {
                    task_user_regs()
                };
                match regs {
                    Some(regs) => {
                        (*head).user_unwind = UNWIND_COPY;
                        (*head).user_regs = regs;
                        ((*head).user_stack_bytes, (*head).user_error) =
                            copy_user_stack(user_data, regs[1]);
                    }
                    None => (*head).user_error = EFAULT,
                }
            }
            // Bounds the verifier can see (the values were read back from the map).
            let user_bytes = (*head).user_bytes;
            let user_bytes = if user_bytes > (MAX_USER_FRAMES * 8) as u32 {
                (MAX_USER_FRAMES * 8) as u32
            } else {
                user_bytes
            };
            let user_stack_bytes = (*head).user_stack_bytes;
            let user_stack_bytes = if user_stack_bytes > MAX_USER_STACK_BYTES as u32 {
                MAX_USER_STACK_BYTES as u32
            } else {
                user_stack_bytes
            };
            let len = size_of::<SampleHead>()
                + kernel_bytes as usize
                + user_bytes as usize
                + user_stack_bytes as usize;
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

    /// `bpf_probe_read_kernel` of `size` bytes (the aya wrapper reads one value of a type).
    #[inline(always)]
    unsafe fn bpf_probe_read_kernel_buf(dst: *mut c_void, size: u32, src: *const c_void) -> i64 {
        unsafe { generated::bpf_probe_read_kernel(dst, size, src) }
    }

    /// The task's user registers (rip, rsp, rbp) from its saved user-mode context: right
    /// whether the sample interrupted user or kernel code. `None` for kernel threads.
    #[inline(always)]
    unsafe fn task_user_regs() -> Option<[u64; 3]> {
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
        let regs = unsafe { bpf_probe_read_kernel(regs) }.ok()?;
        // Kernel threads have no user context: their saved registers are zero.
        if regs.rip == 0 || regs.rsp == 0 {
            return None;
        }
        Some([regs.rip, regs.rsp, regs.rbp])
    }

    /// [`task_user_regs`] for kernels without `bpf_task_pt_regs` (before 5.15), in a perf-event
    /// program: the sample's own registers if it interrupted user code; else the task's user
    /// registers at the top of its kernel stack (which the interrupted stack pointer is on,
    /// and is `KERNEL_STACK_BYTES` aligned), taken only if they hold the user code and stack
    /// segments (an interrupt on another stack, or another layout, gives no user stack).
    #[inline(always)]
    unsafe fn compat_user_regs(ctx: *const bpf_perf_event_data) -> Option<[u64; 3]> {
        let (cs, ip, sp, bp) = unsafe {
            (
                (*ctx).regs.cs,
                (*ctx).regs.rip,
                (*ctx).regs.rsp,
                (*ctx).regs.rbp,
            )
        };
        if cs & 3 == 3 {
            return Some([ip, sp, bp]);
        }
        let top = (sp | (KERNEL_STACK_BYTES - 1)).wrapping_add(1);
        let saved = top.wrapping_sub(PT_REGS_BYTES) as *const pt_regs;
        let regs = unsafe { bpf_probe_read_kernel(saved) }.ok()?;
        if regs.cs != USER_CS || regs.ss != USER_SS || regs.rip == 0 || regs.rsp == 0 {
            return None;
        }
        Some([regs.rip, regs.rsp, regs.rbp])
    }

    /// Copies up to `config::USER_STACK_BYTES` of user stack from `sp` to `dst`. A copy that
    /// runs past the end of the stack faults as a whole, so smaller copies are tried, down to
    /// `MIN_USER_STACK_BYTES`. Returns the bytes copied and an error (non-zero when nothing
    /// could be read).
    #[inline(always)]
    unsafe fn copy_user_stack(dst: *mut u8, sp: u64) -> (u32, i32) {
        let wanted = setting(config::USER_STACK_BYTES);
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

    /// DWARF mode: finds the user frames of the current task, into `data` after the kernel
    /// frames. With tables loaded for the process, the stack is walked here ([`walk_step`]) as
    /// far as they go; from where they end (code without tables: JIT code, a binary whose table
    /// is still being built, or the whole stack when the process has none yet) the user stack
    /// is copied for userspace to unwind, as perf does.
    #[inline(always)]
    unsafe fn unwind_user(head: *mut SampleHead, pid: u32, slot: u32, data: *mut u8) {
        let Some([pc, sp, bp]) = (unsafe { task_user_regs() }) else {
            unsafe { (*head).user_error = EFAULT };
            return;
        };
        // The walk's state lives in a map value, not on this stack: the verifier does not track
        // what a map value holds, so every step starts from the same verifier state and the
        // step is checked once (states on the stack differ step by step: a verifier that
        // follows `bpf_loop` callbacks until their state repeats multiplied them).
        let Some(walk) = WALKS.get_ptr_mut(slot) else {
            unsafe { (*head).user_error = EFAULT };
            return;
        };
        let walk = unsafe { &mut *walk };
        walk.pc = pc;
        walk.sp = sp;
        walk.bp = bp;
        walk.first = 0;
        walk.len = 0;
        walk.frames_base = slot.wrapping_mul(MAX_USER_FRAMES as u32);
        walk.frames = 0;
        walk.outcome = UNWIND_COPY;
        walk.exact = 1;
        walk.mapping = ExecMapping::default();
        if let Some(process) = unsafe { PROCESSES.get(&pid) } {
            walk.first = process.first;
            walk.len = process.len;
            let mut step_ctx = StepContext { slot };
            // One more step than frames, so that the depth limit is seen by walk_step.
            unsafe {
                bpf_loop(
                    MAX_USER_FRAMES as u32 + 1,
                    walk_step as *mut c_void,
                    (&raw mut step_ctx).cast::<c_void>(),
                    0,
                )
            };
        }
        let frames = if walk.frames > MAX_USER_FRAMES as u32 {
            MAX_USER_FRAMES as u32
        } else {
            walk.frames
        };
        let mut user = data;
        unsafe {
            if frames > 0 {
                let Some(found) = FRAMES.get_ptr(walk.frames_base) else {
                    (*head).user_error = EFAULT;
                    return;
                };
                // The walk's frames are consecutive entries of FRAMES (an array map's values
                // are contiguous), read as one block.
                if bpf_probe_read_kernel_buf(user.cast::<c_void>(), frames * 8, found.cast()) != 0 {
                    (*head).user_error = EFAULT;
                    return;
                }
                user = user.add(frames as usize * 8);
            }
            (*head).user_bytes = frames * 8;
            (*head).user_unwind = walk.outcome;
            if walk.outcome == UNWIND_COPY || walk.outcome == UNWIND_TABLES_COPY {
                (*head).user_regs = [walk.pc, walk.sp, walk.bp];
                let (bytes, error) = copy_user_stack(user, walk.sp);
                (*head).user_stack_bytes = bytes;
                if error != 0 && walk.outcome == UNWIND_TABLES_COPY {
                    // The frames found in the kernel stand; only the rest is missing.
                    (*head).user_unwind = UNWIND_TABLES_TRUNCATED;
                } else {
                    (*head).user_error = error;
                }
            }
        }
    }

    /// The state of an in-kernel stack walk, shared with each [`walk_step`] through `WALKS`.
    #[repr(C)]
    pub struct Walk {
        /// Registers of the frame to unwind next.
        pc: u64,
        sp: u64,
        bp: u64,
        /// The mapping the last frame was in (most callers are in the same binary): the
        /// mapping search is skipped while frames stay in it. Zeroed: none yet.
        mapping: ExecMapping,
        /// The process's mappings with tables: `len` entries of `MAPPINGS` from `first`.
        first: u32,
        len: u32,
        /// This scratch entry's first entry in `FRAMES`.
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

    /// One frame of the walk, as a `bpf_loop` callback: the verifier checks it once (or, on
    /// kernels that check callbacks as loops, until its state repeats), however many frames
    /// a stack has.
    #[inline(never)]
    unsafe extern "C" fn walk_step(index: u64, ctx: *mut c_void) -> i64 {
        let slot = unsafe { (*ctx.cast::<StepContext>()).slot };
        let Some(walk) = WALKS.get_ptr_mut(slot) else {
            return STOP;
        };
        unsafe { step(&mut *walk, index as u32) }
    }

    /// What [`walk_step`] is given: the scratch slot whose `WALKS` entry it advances.
    #[repr(C)]
    struct StepContext {
        slot: u32,
    }

    /// Unwinds frame `index` (its registers are in `walk`) to its caller.
    #[inline(always)]
    unsafe fn step(walk: &mut Walk, index: u32) -> i64 {
        if index >= MAX_USER_FRAMES as u32 {
            walk.outcome = UNWIND_TABLES_TRUNCATED;
            return STOP;
        }
        let lookup = if walk.exact != 0 {
            walk.pc
        } else {
            walk.pc.wrapping_sub(1)
        };
        let Some(row) = find_row(walk, lookup) else {
            walk.outcome = if index == 0 {
                UNWIND_COPY
            } else {
                UNWIND_TABLES_COPY
            };
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
                walk.outcome = if index == 0 {
                    UNWIND_COPY
                } else {
                    UNWIND_TABLES_COPY
                };
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

    /// The table row for `address`: the mapping that holds it (the last frame's, or found by
    /// [`find_mapping`]), then the last row of its table at or before the address, found by a
    /// binary search whose halvings are `bpf_loop` steps ([`row_step`]). A search unrolled in
    /// straight code has two outcomes per halving, which a verifier that cannot prune them
    /// follows apart (2^25 paths); as a callback, one halving is checked once.
    #[inline(always)]
    fn find_row(walk: &mut Walk, address: u64) -> Option<UnwindRow> {
        if address < walk.mapping.start || address >= walk.mapping.end {
            walk.mapping = find_mapping(walk, address)?;
        }
        let relative = address.wrapping_sub(walk.mapping.bias);
        if relative > u64::from(u32::MAX) {
            return None;
        }
        let mut search = RowSearch {
            low: 0,
            high: walk.mapping.rows,
            first_row: walk.mapping.first_row,
            relative: relative as u32,
        };
        // 25 halvings cover MAX_TABLE_ROWS, which userspace keeps tables under.
        unsafe {
            bpf_loop(
                25,
                row_step as *mut c_void,
                (&raw mut search).cast::<c_void>(),
                0,
            )
        };
        // Rows with pc <= relative are those before `low` once the search ends.
        if search.low == 0 {
            return None;
        }
        UNWIND_ROWS
            .get(search.first_row.wrapping_add(search.low - 1))
            .copied()
    }

    /// A binary search of one table's rows, shared with each [`row_step`].
    #[repr(C)]
    struct RowSearch {
        low: u32,
        high: u32,
        first_row: u32,
        /// The address sought, relative to the table's base.
        relative: u32,
    }

    /// One halving of a row search. Entries are read by key (array lookups), never by pointer
    /// offsets, so the verifier needs no bounds on the indices.
    #[inline(never)]
    unsafe extern "C" fn row_step(_index: u64, ctx: *mut c_void) -> i64 {
        let search = unsafe { &mut *ctx.cast::<RowSearch>() };
        if search.low >= search.high {
            return STOP;
        }
        let middle = search.low + (search.high - search.low) / 2;
        let Some(row) = UNWIND_ROWS.get(search.first_row.wrapping_add(middle)) else {
            // Cannot happen (userspace writes runs inside the map): no row, then.
            search.low = 0;
            search.high = 0;
            return STOP;
        };
        if row.pc <= search.relative {
            search.low = middle + 1;
        } else {
            search.high = middle;
        }
        CONTINUE
    }

    /// The mapping of the walk's process that contains `address` (its mappings are sorted
    /// and disjoint), by a binary search whose halvings are `bpf_loop` steps.
    #[inline(always)]
    fn find_mapping(walk: &Walk, address: u64) -> Option<ExecMapping> {
        let mut search = MappingSearch {
            address,
            low: 0,
            high: walk.len,
            first: walk.first,
            found: 0,
        };
        // 9 halvings cover MAX_PROCESS_MAPPINGS (256), which userspace keeps processes under.
        unsafe {
            bpf_loop(
                9,
                mapping_step as *mut c_void,
                (&raw mut search).cast::<c_void>(),
                0,
            )
        };
        if search.found == 0 {
            return None;
        }
        MAPPINGS.get(search.found - 1).copied()
    }

    /// A binary search of one process's mappings, shared with each [`mapping_step`].
    #[repr(C)]
    struct MappingSearch {
        address: u64,
        low: u32,
        high: u32,
        first: u32,
        /// 1 + the index in `MAPPINGS` of the mapping found; 0 while none is.
        found: u32,
    }

    /// One halving of a mapping search.
    #[inline(never)]
    unsafe extern "C" fn mapping_step(_index: u64, ctx: *mut c_void) -> i64 {
        let search = unsafe { &mut *ctx.cast::<MappingSearch>() };
        if search.low >= search.high {
            return STOP;
        }
        let middle = search.low + (search.high - search.low) / 2;
        let index = search.first.wrapping_add(middle);
        let Some(mapping) = MAPPINGS.get(index) else {
            return STOP;
        };
        if search.address < mapping.start {
            search.high = middle;
        } else if search.address >= mapping.end {
            search.low = middle + 1;
        } else {
            search.found = index.wrapping_add(1);
            return STOP;
        }
        CONTINUE
    }

    #[tracepoint]
    pub fn off_cpu_switch_fp(ctx: TracePointContext) -> u32 {
        off_cpu_switch::<FP>(&ctx)
    }

    #[tracepoint]
    pub fn off_cpu_switch_copy(ctx: TracePointContext) -> u32 {
        off_cpu_switch::<COPY>(&ctx)
    }

    #[tracepoint]
    pub fn off_cpu_switch_dwarf(ctx: TracePointContext) -> u32 {
        off_cpu_switch::<DWARF>(&ctx)
    }

    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn off_cpu_exit_fp(ctx: RawTracePointContext) -> i32 {
        off_cpu_exit::<FP>(&ctx)
    }

    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn off_cpu_exit_copy(ctx: RawTracePointContext) -> i32 {
        off_cpu_exit::<COPY>(&ctx)
    }

    #[raw_tracepoint(tracepoint = "sys_exit")]
    pub fn off_cpu_exit_dwarf(ctx: RawTracePointContext) -> i32 {
        off_cpu_exit::<DWARF>(&ctx)
    }

    /// `sched/sched_switch` (in the context of the task leaving the CPU), with `--off-cpu`:
    ///
    /// - the thread leaving, if a target, first sends a wait still due (below), then notes
    ///   when and why it leaves, and the kernel stack it leaves in;
    /// - the thread coming in has waited `w` ns: the wait is kept with probability
    ///   `min(1, w / period)` and then stands for `max(w, period)` ns (so every wait counts
    ///   `w` in expectation, whatever the waits around it); a kept wait is *due*, and is sent
    ///   from the thread's own context, where its user stack can be read: at its syscall exit
    ///   ([`off_cpu_exit`]) or, failing that, the next time it leaves the CPU.
    #[inline(always)]
    fn off_cpu_switch<const MODE: u32>(ctx: &TracePointContext) -> u32 {
        let time_ns = unsafe { bpf_ktime_get_ns() };
        let (Ok(prev_state), Ok(next_tid)) = (
            unsafe { ctx.read_at::<u64>(SWITCH_PREV_STATE_OFFSET) },
            unsafe { ctx.read_at::<u32>(SWITCH_NEXT_PID_OFFSET) },
        ) else {
            return 0;
        };
        leave_cpu::<MODE>(ctx, time_ns, prev_state);
        if let Some(thread) = OFF_CPU_THREADS.get_ptr_mut(&next_tid) {
            unsafe { end_wait(thread, time_ns) };
        }
        0
    }

    /// The wait of `thread` ends at `time_ns`: kept or not (see [`off_cpu_switch`]).
    #[inline(always)]
    unsafe fn end_wait(thread: *mut OffCpuThread, time_ns: u64) {
        unsafe {
            let since_ns = (*thread).since_ns;
            if since_ns == 0 || since_ns > time_ns {
                return;
            }
            (*thread).since_ns = 0;
            let wait_ns = time_ns - since_ns;
            let period_ns = setting(config::OFF_CPU_PERIOD_NS);
            // Kept with probability wait / period: a uniform 32-bit draw scaled to the period.
            let draw = (u64::from(bpf_get_prandom_u32()) * period_ns) >> 32;
            if wait_ns < period_ns && draw >= wait_ns {
                return;
            }
            let weight = if wait_ns < period_ns {
                period_ns
            } else {
                wait_ns
            };
            let reason = ((*thread).reason & 1) as usize;
            // A runnable wait can still be due when another one is kept (it waits for the
            // thread's next preemption): the two go in one sample.
            (*thread).due_ns[reason] = (*thread).due_ns[reason].saturating_add(weight);
            (*thread).due_wait_ns[reason] = (*thread).due_wait_ns[reason].saturating_add(wait_ns);
        }
    }

    /// Where the thread is in user space (instruction and stack pointers): the same until it
    /// returns there, so that a sample due later can tell whether the thread is still inside
    /// the kernel entry it waited in.
    #[inline(always)]
    fn user_entry() -> [u64; 2] {
        unsafe { task_user_regs() }.map_or([0, 0], |[ip, sp, _]| [ip, sp])
    }

    /// The current thread leaves the CPU: a wait still due is sent now, then the next wait
    /// starts.
    #[inline(always)]
    fn leave_cpu<const MODE: u32>(ctx: &TracePointContext, time_ns: u64, prev_state: u64) {
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
        let entry = user_entry();
        // The record's state is a bit per state letter (S, D, ...), 0 for R, and
        // TASK_REPORT_MAX (bit 8) for a preemption: R and R+ wait for a CPU.
        let runnable = prev_state & SWITCH_STATE_MASK == 0;
        unsafe {
            let same_entry = (*thread).user_entry == entry && entry != [0, 0];
            // One sample at most, so that the stack walk is in this program once:
            // - a blocked wait goes with the kernel stack it blocked in (stashed, and about to
            //   be replaced), and its user stack if the thread is still in that kernel entry
            //   (it left the CPU again in the same syscall); a wait outside a syscall (a page
            //   fault) that the thread has left has no user stack any more;
            // - a runnable wait goes with where the thread is preempted next (where it was
            //   preempted before cannot be read any more), never with a stack where it blocks;
            //   with the stashed stacks if it is still in the kernel entry it was preempted in.
            let send = if (*thread).due_ns[OFF_CPU_BLOCKED as usize] != 0 {
                Some((OFF_CPU_BLOCKED, true, same_entry))
            } else if (*thread).due_ns[OFF_CPU_RUNNABLE as usize] != 0 && (same_entry || runnable) {
                Some((OFF_CPU_RUNNABLE, same_entry, true))
            } else {
                None
            };
            if let Some((reason, stashed, user)) = send {
                send_due::<MODE>(
                    ctx.as_ptr(),
                    time_ns,
                    pid_tgid,
                    thread,
                    reason,
                    stashed,
                    user,
                );
            }
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

    /// `raw_syscalls/sys_exit`, with `--off-cpu`: a thread with a wait due in this syscall
    /// sends it now, with the user stack the syscall was made from and the kernel stack it
    /// waited in.
    #[inline(always)]
    fn off_cpu_exit<const MODE: u32>(ctx: &RawTracePointContext) -> i32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let Some(thread) = OFF_CPU_THREADS.get_ptr_mut(&(pid_tgid as u32)) else {
            return 0;
        };
        let reason = unsafe {
            if (*thread).due_ns[OFF_CPU_BLOCKED as usize] != 0 {
                OFF_CPU_BLOCKED
            } else if (*thread).due_ns[OFF_CPU_RUNNABLE as usize] != 0 {
                OFF_CPU_RUNNABLE
            } else {
                return 0;
            }
        };
        // Only the syscall it waited in: the same user registers as when it left the CPU.
        if unsafe { (*thread).user_entry } != user_entry() {
            return 0;
        }
        let time_ns = unsafe { bpf_ktime_get_ns() };
        unsafe { send_due::<MODE>(ctx.as_ptr(), time_ns, pid_tgid, thread, reason, true, true) };
        0
    }

    /// Sends the wait of `reason` due for `thread`, if this CPU's budget allows (else it is
    /// counted as lost), and clears it.
    #[inline(always)]
    unsafe fn send_due<const MODE: u32>(
        ctx: *mut c_void,
        time_ns: u64,
        pid_tgid: u64,
        thread: *mut OffCpuThread,
        reason: u32,
        stashed: bool,
        user: bool,
    ) {
        unsafe {
            let index = (reason & 1) as usize;
            let ns = (*thread).due_ns[index];
            let wait_ns = (*thread).due_wait_ns[index];
            (*thread).due_ns[index] = 0;
            (*thread).due_wait_ns[index] = 0;
            if !within_budget(time_ns, setting(config::OFF_CPU_MAX_PER_WINDOW)) {
                count_in_window(&OFF_CPU_LOST, time_ns);
                return;
            }
            let kernel = if stashed {
                thread.cast_const()
            } else {
                core::ptr::null()
            };
            let off_cpu = Some((ns, wait_ns, reason & 1));
            if !send_stack::<MODE>(ctx, time_ns, pid_tgid, off_cpu, kernel, user) {
                count_in_window(&OFF_CPU_LOST, time_ns);
            }
        }
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
        let mut event = EventHeader::default();
        unsafe { write_header(&raw mut event, EVENT_EXEC, time_ns, pid_tgid) };
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
