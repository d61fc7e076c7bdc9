//! Constants of the perf ABI (`include/uapi/linux/perf_event.h`, perf's `util/header.h`), and
//! the one limit they put on what the capture gives ([`known_build_id`]).

use crate::capture::format::Module;

/// "PERFILE2", read as a native-endian u64: perf tells the file's byte order from it.
pub const MAGIC: u64 = u64::from_le_bytes(*b"PERFILE2");
pub const FILE_HEADER_SIZE: u64 = 104;
/// `struct perf_file_section`: offset, size.
pub const FILE_SECTION_SIZE: u64 = 16;
/// PERF_ATTR_SIZE_VER5: every field amprof sets (clockid is in VER4), and old enough that
/// every perf since Linux 4.1 reads it (perf refuses attrs larger than its own).
pub const ATTR_SIZE: u32 = 112;

pub const PERF_TYPE_SOFTWARE: u32 = 1;
pub const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
/// The software event perf's `--off-cpu` names `offcpu-time`.
pub const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;

pub const SAMPLE_IP: u64 = 1 << 0;
pub const SAMPLE_TID: u64 = 1 << 1;
pub const SAMPLE_TIME: u64 = 1 << 2;
pub const SAMPLE_CALLCHAIN: u64 = 1 << 5;
pub const SAMPLE_CPU: u64 = 1 << 7;
pub const SAMPLE_PERIOD: u64 = 1 << 8;
pub const SAMPLE_IDENTIFIER: u64 = 1 << 16;
pub const SAMPLE_TYPE: u64 = SAMPLE_IDENTIFIER
    | SAMPLE_IP
    | SAMPLE_TID
    | SAMPLE_TIME
    | SAMPLE_CPU
    | SAMPLE_PERIOD
    | SAMPLE_CALLCHAIN;

// perf_event_attr flag bits.
pub const ATTR_EXCLUDE_IDLE: u64 = 1 << 7;
pub const ATTR_MMAP: u64 = 1 << 8;
pub const ATTR_COMM: u64 = 1 << 9;
pub const ATTR_FREQ: u64 = 1 << 10;
pub const ATTR_SAMPLE_ID_ALL: u64 = 1 << 18;
pub const ATTR_MMAP2: u64 = 1 << 23;
pub const ATTR_COMM_EXEC: u64 = 1 << 24;
pub const ATTR_USE_CLOCKID: u64 = 1 << 25;

pub const CLOCK_MONOTONIC: u32 = 1;

pub const RECORD_COMM: u32 = 3;
pub const RECORD_SAMPLE: u32 = 9;
pub const RECORD_MMAP2: u32 = 10;
pub const RECORD_LOST_SAMPLES: u32 = 13;
pub const RECORD_FINISHED_ROUND: u32 = 68;
pub const RECORD_FINISHED_INIT: u32 = 82;

pub const MISC_KERNEL: u16 = 1;
pub const MISC_USER: u16 = 2;
pub const MISC_COMM_EXEC: u16 = 1 << 13;
pub const MISC_MMAP_BUILD_ID: u16 = 1 << 14;
/// In a BUILD_ID feature entry: the build-id's size is in byte 20.
pub const MISC_BUILD_ID_SIZE: u16 = 1 << 15;

pub const CONTEXT_KERNEL: u64 = -128i64 as u64;
pub const CONTEXT_USER: u64 = -512i64 as u64;

pub const PROT_READ_EXEC: u32 = 0x1 | 0x4;
pub const MAP_PRIVATE: u32 = 0x2;
/// perf's pid for the host kernel's records.
pub const HOST_KERNEL_PID: u32 = u32::MAX;
/// Longest build-id a record holds.
pub const BUILD_ID_MAX: usize = 20;
/// perf pads strings in feature sections to this.
pub const NAME_ALIGN: usize = 64;

// Feature bits, in the order their sections appear.
pub const FEAT_BUILD_ID: u32 = 2;
pub const FEAT_HOSTNAME: u32 = 3;
pub const FEAT_OSRELEASE: u32 = 4;
pub const FEAT_VERSION: u32 = 5;
pub const FEAT_ARCH: u32 = 6;
pub const FEAT_NRCPUS: u32 = 7;
pub const FEAT_CMDLINE: u32 = 11;
pub const FEAT_EVENT_DESC: u32 = 12;
pub const FEAT_SAMPLE_TIME: u32 = 21;
pub const FEAT_CLOCKID: u32 = 23;
pub const FEAT_CLOCK_DATA: u32 = 29;

/// The module's build-id if a record can hold it (GNU build-ids are 20 bytes or fewer).
pub fn known_build_id(module: &Module) -> &[u8] {
    if module.build_id.len() <= BUILD_ID_MAX {
        &module.build_id
    } else {
        &[]
    }
}
