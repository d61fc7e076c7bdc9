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
        EVENT_EXEC, EVENT_SAMPLE, EventHeader, MAX_STACK_BYTES, NEWTASK_FLAGS_OFFSET,
        NEWTASK_PID_OFFSET, SampleBuffer, SampleHead, WINDOW_SLOTS, config,
    };
    use aya_ebpf::{
        EbpfContext as _,
        bindings::BPF_F_USER_STACK,
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
            bpf_ktime_get_ns, generated::bpf_get_stack,
        },
        macros::{map, perf_event, tracepoint},
        maps::{Array, HashMap, PerCpuArray, RingBuf},
        programs::{PerfEventContext, TracePointContext},
    };

    /// Samples and exec events for userspace. Userspace sizes it at load time (`--buffer-size`).
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

    /// Where a sample is assembled before it is copied to `EVENTS`.
    #[map]
    static SCRATCH: PerCpuArray<SampleBuffer> = PerCpuArray::with_max_entries(1, 0);

    /// Settings written by userspace; indices in `amprof_abi::config`.
    #[map]
    static CONFIG: Array<u64> = Array::with_max_entries(config::LEN, 0);

    /// Thread-group ids to sample when `FILTER_BY_TARGETS` is set.
    #[map]
    static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

    /// Samples `EVENTS` had no room for, per window slot.
    #[map]
    static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(WINDOW_SLOTS, 0);

    /// Samples that found the CPU idle (pid 0), per window slot: not stacks anyone wants, but the
    /// count tells how busy the machine was.
    #[map]
    static IDLE: PerCpuArray<u64> = PerCpuArray::with_max_entries(WINDOW_SLOTS, 0);

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
        if !is_target((pid_tgid >> 32) as u32) {
            return 0;
        }
        let Some(buffer) = SCRATCH.get_ptr_mut(0) else {
            return 0;
        };
        unsafe {
            let frames = (&raw mut (*buffer).frames).cast::<u8>();
            let ret = bpf_get_stack(ctx.as_ptr(), frames.cast::<c_void>(), MAX_STACK_BYTES as u32, 0);
            let (kernel_bytes, kernel_error) = stack_bytes(ret);
            let ret = bpf_get_stack(
                ctx.as_ptr(),
                frames.add(kernel_bytes as usize).cast::<c_void>(),
                MAX_STACK_BYTES as u32,
                BPF_F_USER_STACK as u64,
            );
            let (user_bytes, user_error) = stack_bytes(ret);
            (*buffer).head = SampleHead {
                header: header(EVENT_SAMPLE, time_ns, pid_tgid),
                kernel_bytes,
                user_bytes,
                kernel_error,
                user_error,
            };
            let len = size_of::<SampleHead>() + kernel_bytes as usize + user_bytes as usize;
            let record = core::slice::from_raw_parts(buffer.cast::<u8>(), len);
            if EVENTS.output::<[u8]>(record, 0).is_err() {
                count_in_window(&LOST, time_ns);
            }
        }
        0
    }

    /// `sched/sched_process_exec`: the calling process has a new address space.
    #[tracepoint]
    pub fn process_exec(_ctx: TracePointContext) -> u32 {
        let pid_tgid = bpf_get_current_pid_tgid();
        if !is_target((pid_tgid >> 32) as u32) {
            return 0;
        }
        let time_ns = unsafe { bpf_ktime_get_ns() };
        let event = header(EVENT_EXEC, time_ns, pid_tgid);
        // A lost exec event only costs symbols, which userspace recovers from on its own (it
        // re-reads mappings when an address falls outside them): no need to count it.
        let _ = EVENTS.output::<EventHeader>(&event, 0);
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
        let (Ok(child), Ok(flags)) = (
            unsafe { ctx.read_at::<u32>(NEWTASK_PID_OFFSET) },
            unsafe { ctx.read_at::<u64>(NEWTASK_FLAGS_OFFSET) },
        ) else {
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
