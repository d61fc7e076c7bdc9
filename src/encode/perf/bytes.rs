//! Byte builders: perf's records (a `perf_event_header`, then fields), and the integers and
//! padded strings of records and feature sections, native-endian as perf writes them.

use anyhow::Result;

use super::abi;

/// The sample fields every non-sample record repeats (`sample_id_all`).
#[derive(Clone, Copy)]
pub(super) struct SampleId {
    pub pid: u32,
    pub tid: u32,
    pub time: u64,
    pub cpu: u32,
}

/// A record being built: `perf_event_header` then its fields, size patched by [`Self::finish`].
pub(super) struct Record {
    bytes: Vec<u8>,
    /// The event id non-sample records carry.
    id: u64,
}

impl Record {
    /// A record builder whose non-sample records carry event `id`.
    pub(super) fn new(id: u64) -> Self {
        Self {
            bytes: Vec::new(),
            id,
        }
    }

    pub(super) fn begin(&mut self, kind: u32, misc: u16) {
        self.bytes.clear();
        put_u32(&mut self.bytes, kind);
        self.bytes.extend_from_slice(&misc.to_ne_bytes());
        self.bytes.extend_from_slice(&0u16.to_ne_bytes()); // size, patched in finish
    }

    pub(super) fn u32(&mut self, v: u32) {
        put_u32(&mut self.bytes, v);
    }

    pub(super) fn u64(&mut self, v: u64) {
        put_u64(&mut self.bytes, v);
    }

    pub(super) fn zeros(&mut self, n: usize) {
        self.bytes.resize(self.bytes.len() + n, 0);
    }

    /// `bytes`, zero-padded to `len`.
    pub(super) fn bytes_padded(&mut self, bytes: &[u8], len: usize) {
        self.bytes.extend_from_slice(bytes);
        self.zeros(len - bytes.len());
    }

    /// A NUL-terminated string padded with NULs to a multiple of `align`; a NUL inside the
    /// string would end it early for perf, so it ends there.
    pub(super) fn c_string(&mut self, s: &str, align: usize) {
        put_c_string(&mut self.bytes, s, align);
    }

    pub(super) fn sample_id(&mut self, id: SampleId) {
        self.sample_id_of(id, self.id);
    }

    /// The sample_id block of a record of event `event`.
    pub(super) fn sample_id_of(&mut self, id: SampleId, event: u64) {
        self.u32(id.pid);
        self.u32(id.tid);
        self.u64(id.time);
        self.u32(id.cpu);
        self.u32(0);
        self.u64(event);
    }

    /// The finished record, its size set.
    pub(super) fn finish(&mut self) -> Result<&[u8]> {
        let size = u16::try_from(self.bytes.len()).map_err(|_| {
            anyhow::anyhow!(
                "a perf record would be {} bytes, more than perf.data allows (64 KiB): a stack too deep or a path too long",
                self.bytes.len()
            )
        })?;
        self.bytes[6..8].copy_from_slice(&size.to_ne_bytes());
        Ok(&self.bytes)
    }
}

pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

pub(super) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_ne_bytes());
}

pub(super) fn put_c_string(out: &mut Vec<u8>, s: &str, align: usize) {
    let s = s.split('\0').next().unwrap_or_default();
    out.extend_from_slice(s.as_bytes());
    let len = (s.len() + 1).next_multiple_of(align);
    out.resize(out.len() + len - s.len(), 0);
}

/// A `perf_header_string`: its padded length, then the NUL-padded string.
pub(super) fn put_header_string(out: &mut Vec<u8>, s: &str) {
    let s = s.split('\0').next().unwrap_or_default();
    put_u32(out, (s.len() + 1).next_multiple_of(abi::NAME_ALIGN) as u32);
    put_c_string(out, s, abi::NAME_ALIGN);
}

/// One entry of the BUILD_ID feature (`struct perf_record_header_build_id`), as perf writes it:
/// header, pid (-1: the host), the build-id in 24 bytes with its size in byte 20, the path.
pub(super) fn put_build_id_event(out: &mut Vec<u8>, path: &str, build_id: &[u8], kernel: bool) {
    let start = out.len();
    let misc = if kernel {
        abi::MISC_KERNEL
    } else {
        abi::MISC_USER
    } | abi::MISC_BUILD_ID_SIZE;
    put_u32(out, 0); // type: unused in the feature section
    out.extend_from_slice(&misc.to_ne_bytes());
    out.extend_from_slice(&0u16.to_ne_bytes()); // size, patched below
    put_u32(out, abi::HOST_KERNEL_PID);
    out.extend_from_slice(build_id);
    out.resize(start + 12 + abi::BUILD_ID_MAX, 0);
    out.push(build_id.len() as u8);
    out.extend_from_slice(&[0; 3]);
    put_c_string(out, path, abi::NAME_ALIGN);
    let size = (out.len() - start) as u16;
    out[start + 6..start + 8].copy_from_slice(&size.to_ne_bytes());
}
