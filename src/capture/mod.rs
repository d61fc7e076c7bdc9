//! The capture file: what `amprof record` writes and every other command reads.
//!
//! # Layout (format version 1)
//!
//! ```text
//! file    := header record*
//! header  := "AMPROF\r\n" (8 bytes) · version: u32 LE · reserved: u32 LE (0)
//! record  := length: u32 LE · kind: u32 LE · crc32: u32 LE · payload (length bytes)
//! ```
//!
//! `crc32` is the CRC-32 (IEEE) of the payload; the payload is a protobuf message from
//! [`mod@format`], chosen by `kind`: 1 [`Meta`] (always first, exactly once), 2 [`Window`] (one per
//! closed window, in order), 3 [`End`] (last, only when the recording was finalized).
//!
//! # Crash safety
//!
//! `record` appends each window as one record and syncs it to disk as it closes. A capture cut
//! short by a crash, `kill -9` or a full disk therefore ends in at most one partial record, which
//! readers drop: every window closed before the cut stays readable, and the missing `End` record
//! tells readers the capture was not finalized. A damaged record anywhere else is an error.
//!
//! In ring mode (`--keep N`) the file is rewritten, through a temporary file and an atomic rename,
//! each time a window is evicted, so that it never holds more than N windows.

pub mod format;
pub mod kind;
mod reader;
pub mod select;
pub mod testing;
mod writer;

pub use format::{End, Meta, Window};
pub use kind::{Detail, KindDescriptor, KindSet, KindTotals, SampleKind};
pub use reader::{
    CaptureReader, Completeness, EXPANSION_ALLOWANCE, MAX_EXPANSION_FACTOR, MAX_LINES_PER_LOCATION,
    MAX_STACK_LOCATIONS, MAX_STRING_BYTES,
};
pub use select::{Event, OffCpu, Sample, Selection, kind_samples, off_cpu_samples, samples};
pub use writer::CaptureWriter;

/// First bytes of every capture. The `\r\n` catches files mangled by text-mode transfers.
pub const MAGIC: &[u8; 8] = b"AMPROF\r\n";
/// The format version this amprof writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 16;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 12;
/// No record may be larger: a bound for readers, so that a hostile length cannot make them
/// allocate without limit. A window of 10 s at 999 Hz on 256 CPUs stays well below it.
pub const MAX_RECORD_LEN: u32 = 512 << 20;

/// Record kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RecordKind {
    Meta = 1,
    Window = 2,
    End = 3,
}

impl RecordKind {
    fn from_u32(kind: u32) -> Option<Self> {
        match kind {
            1 => Some(Self::Meta),
            2 => Some(Self::Window),
            3 => Some(Self::End),
            _ => None,
        }
    }
}

/// The 16-byte file header for [`FORMAT_VERSION`].
pub fn file_header() -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// Frames `payload` as a record of `kind`.
pub fn encode_record(kind: RecordKind, message: &impl prost::Message) -> Vec<u8> {
    let len = message.encoded_len();
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN + len);
    record.extend_from_slice(&(len as u32).to_le_bytes());
    record.extend_from_slice(&(kind as u32).to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    message
        .encode(&mut record)
        .expect("a Vec grows to fit any message");
    let crc = crc32fast::hash(&record[RECORD_HEADER_LEN..]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    record
}
