//! The ring buffer's records as userspace reads them: the eBPF program writes an
//! [`EventHeader`] (and, for a sample, a [`SampleHead`], its frames and its stack copy) and
//! [`parse_event`] turns those bytes into a [`RingEvent`], refusing any that do not add up.

use amprof_abi::{
    EVENT_EXEC, EVENT_OFF_CPU, EVENT_SAMPLE, EventHeader, MAX_STACK_DEPTH, MAX_USER_FRAMES,
    OFF_CPU_BLOCKED, OFF_CPU_RUNNABLE, SampleHead, UNWIND_COPY, UNWIND_FP, UNWIND_TABLES,
    UNWIND_TABLES_COPY, UNWIND_TABLES_TRUNCATED,
};

use crate::capture::{
    Detail,
    format::{OffCpu, OffCpuReason},
};

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
