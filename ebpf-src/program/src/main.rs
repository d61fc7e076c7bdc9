//! amprof's eBPF program: one perf-event program that samples stacks, and two tracepoint programs
//! that keep userspace's view of processes right (exec) and extend the target set to children.
//!
//! Design rules, each paid for (see ../shared notes in the repo history and ebpf-src/README.md):
//! - Stacks are copied whole with `bpf_get_stack` into a ring buffer record, never interned in a
//!   stack-id map: stack-id maps collide and would attribute one stack's samples to another.
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
        EVENT_EXEC, EVENT_SAMPLE, EventHeader, MAX_STACK_BYTES, MAX_USER_STACK_BYTES,
        MIN_USER_STACK_BYTES, NEWTASK_FLAGS_OFFSET, NEWTASK_PID_OFFSET, SampleBuffer, SampleHead,
        WINDOW_SLOTS, config,
    };
    use aya_ebpf::{
        EbpfContext as _,
        bindings::pt_regs,
        bindings::{BPF_F_USER_STACK, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
            bpf_ktime_get_ns, bpf_probe_read_kernel,
            generated::{
                bpf_get_current_task_btf, bpf_get_stack, bpf_probe_read_user, bpf_task_pt_regs,
            },
        },
        macros::{map, perf_event, tracepoint},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
        programs::{PerfEventContext, TracePointContext},
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

    /// Adds one to `counter`'s slot for the window `time_ns` falls in.
    #[inline(always)]
    fn count_in_window(counter: &PerCpuArray<u64>, time_ns: u64) {
        let start = setting(config::WINDOW_START_NS);
        let index = time_ns
            .saturating_sub(start)
            .checked_div(setting(config::WINDOW_LEN_NS))
            .unwrap_or(0);
        let slot = (index % WINDOW_SLOTS as u64) as u32;
        if let Some(value) = counter.get_ptr_mut(slot) {
            // Per-CPU slot, and perf-event programs do not nest on one CPU: a plain add is safe.
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
        let cpu = unsafe { bpf_get_smp_processor_id() };
        let Some(buffer) = SCRATCH.get_ptr_mut(cpu) else {
            return 0;
        };
        let stack_copy = setting(config::USER_STACK_BYTES);
        unsafe {
            let data = (&raw mut (*buffer).data).cast::<u8>();
            let ret = bpf_get_stack(
                ctx.as_ptr(),
                data.cast::<c_void>(),
                MAX_STACK_BYTES as u32,
                0,
            );
            let (kernel_bytes, kernel_error) = stack_bytes(ret);
            let rest = data.add(kernel_bytes as usize);
            let mut head = SampleHead {
                header: header(EVENT_SAMPLE, time_ns, pid_tgid),
                kernel_bytes,
                kernel_error,
                ..SampleHead::default()
            };
            if stack_copy == 0 {
                let ret = bpf_get_stack(
                    ctx.as_ptr(),
                    rest.cast::<c_void>(),
                    MAX_STACK_BYTES as u32,
                    BPF_F_USER_STACK as u64,
                );
                (head.user_bytes, head.user_error) = stack_bytes(ret);
            } else {
                (head.user_stack_bytes, head.user_error) =
                    copy_user_stack(rest, stack_copy, &mut head.user_regs);
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
            if EVENTS.output::<[u8]>(record, wakeup as u64).is_err() {
                count_in_window(&LOST, time_ns);
            }
        }
        0
    }

    /// DWARF mode: reads the task's user registers (from its saved user-mode context, right
    /// whether the sample interrupted user or kernel code) and copies up to `wanted` bytes of
    /// user stack from the stack pointer to `dst`. A copy that runs past the end of the stack
    /// faults as a whole, so smaller copies are tried, down to `MIN_USER_STACK_BYTES`.
    /// Returns the bytes copied and an error (non-zero when nothing could be read).
    #[inline(always)]
    unsafe fn copy_user_stack(dst: *mut u8, wanted: u64, regs_out: &mut [u64; 3]) -> (u32, i32) {
        const EFAULT: i32 = -14;
        let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
        let Ok(regs) = (unsafe { bpf_probe_read_kernel(regs) }) else {
            return (0, EFAULT);
        };
        // Kernel threads have no user context: their saved registers are zero.
        if regs.rip == 0 || regs.rsp == 0 {
            return (0, EFAULT);
        }
        *regs_out = [regs.rip, regs.rsp, regs.rbp];
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
                bpf_probe_read_user(
                    dst.cast::<c_void>(),
                    size_bounded,
                    regs.rsp as *const c_void,
                )
            };
            if ret == 0 {
                return (size_bounded, 0);
            }
            size /= 2;
        }
        (0, EFAULT)
    }

    /// `sched/sched_process_exec`: the calling process has a new address space.
    #[tracepoint]
    pub fn process_exec(_ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        let pid = (pid_tgid >> 32) as u32;
        if !is_target(pid) {
            return 0;
        }
        // The new image's first sample must wake userspace again.
        let _ = SEEN.remove(&pid);
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

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 4] = *b"GPL\0";
}
