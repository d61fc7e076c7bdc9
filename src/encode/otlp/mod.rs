//! Capture windows as OTLP `ExportProfilesServiceRequest`s (opentelemetry-proto v1.10.0).
//!
//! # Shape
//!
//! One `Profile` per window and process, under one `ResourceProfiles` per process (its
//! resource attributes say which process it is), all of a request sharing one
//! `ProfilesDictionary`. The conventions are those of the OpenTelemetry eBPF profiler, which is
//! what backends (Pyroscope, Elastic, the Collector's pprof and debug exporters) are tested with:
//!
//! - sample type `samples`/`count`, period type `cpu`/`nanoseconds`, period 1e9 / frequency;
//! - one `Sample` per distinct (stack, thread, CPU), carrying the time of every sample it stands
//!   for in `timestamps_unix_nano` and no `values` (each timestamp counts one);
//! - off-CPU samples (`record --off-cpu`) in a profile of their own beside it (never values of
//!   the same profile: a count of samples and nanoseconds off the CPU do not add up), as the eBPF
//!   profiler sends its off-CPU profiles and as the proto's own comment names them: sample type
//!   `off_cpu`/`nanoseconds`, no period type, one `Sample` per distinct (stack, thread, CPU,
//!   reason) with one value per event (the nanoseconds that thread spent off the CPU) beside its
//!   timestamp (when the thread ran again). Why it was off the CPU is the sample attribute
//!   `amprof.off_cpu.reason`, `blocked` (it waited: a sleep, a lock, I/O) or `runnable`
//!   (preempted, waiting for a CPU): no semantic convention names this yet, hence amprof's own
//!   namespace rather than a name a future convention could mean otherwise;
//! - sample attributes `thread.id`, `thread.name`, `cpu.logical_number`; location attribute
//!   `profile.frame.type` (`kernel` or `native`); mapping attribute
//!   `process.executable.build_id.gnu` (hex); resource attributes `service.name`, `host.name`,
//!   `process.pid`, `process.executable.name` and `process.executable.path`.
//!
//! Frames are named as `amprof report` names them ([`frames`](crate::encode::frames)): a frame
//! without a symbol still gets a `Line` whose function is called `libfoo.so+0x1234`, so that
//! every backend shows the same stacks as the flamegraph.
//!
//! # Size
//!
//! Requests hold as many consecutive windows as fit under a size limit. [`Batch`] keeps an upper
//! bound of its encoded size as it grows, and can roll back the last window (or process) it
//! took when that one does not fit; a window too large on its own is split by process.
//!
//! # Modules
//!
//! Data flows one way: [`RequestEncoder`] (here) hands each window to the [`Batch`] it fills
//! ([`batch`]), which builds a profile per process and kind ([`profiles`]) out of entries of
//! the request's dictionary ([`dictionary`]).
//!
//! Windows come in checked: the capture reader checks every window it reads, and the stream of
//! `record --push-to` every window the recording hands over (`crate::push::stream`); nothing
//! here checks them again.

mod batch;
mod dictionary;
mod profiles;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;

use crate::capture::{Meta, Window};
use batch::{Batch, ProcessSamples, group_samples};

/// Settings that shape every request.
#[derive(Clone, Debug, Default)]
pub struct EncodeSettings {
    /// `OTEL_SERVICE_NAME`; `None`: `unknown_service:<executable>` per process.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`, added to (and overriding the host attributes of) every resource.
    pub resource_attributes: Vec<(String, String)>,
    /// Upper bound for a request's encoded (uncompressed) size, when a window allows it.
    pub max_request_bytes: usize,
}

/// One finished request: the windows it carries (a window split by process appears in several)
/// and its encoded protobuf.
#[derive(Debug)]
pub struct Encoded {
    pub windows: Vec<u64>,
    pub message: ExportProfilesServiceRequest,
}

/// Encodes windows into OTLP requests, batching consecutive windows into one request under the
/// size limit: what `push otlp` and `record --push-to` send. Not an [`crate::encode::Encoder`]
/// (the trait of `report`'s formats, which write one file at [`crate::encode::Encoder::finish`]):
/// this one hands out finished requests as they fill, hence its name.
pub struct RequestEncoder {
    settings: EncodeSettings,
    batch: Batch,
}

impl RequestEncoder {
    pub fn new(settings: EncodeSettings) -> Self {
        Self {
            settings,
            batch: Batch::new(),
        }
    }

    /// Adds `window`; returns the requests that are full.
    pub fn push(&mut self, meta: &Meta, window: &Window) -> Vec<Encoded> {
        let groups = group_samples(meta, window);
        let mut full = Vec::new();
        let everything: Vec<usize> = (0..groups.len()).collect();
        // The whole window, in the current request or else in a new one.
        if self.try_add(meta, window, &groups, &everything) {
            self.batch.note_window(window.index);
            return full;
        }
        if !self.batch.is_empty() {
            full.push(self.take());
            if self.try_add(meta, window, &groups, &everything) {
                self.batch.note_window(window.index);
                return full;
            }
        }
        // Too large on its own: one process at a time (a process too large alone goes alone).
        for group in 0..groups.len() {
            if !self.try_add(meta, window, &groups, &[group]) {
                if self.batch.profiles > 0 {
                    self.batch.note_window(window.index);
                    full.push(self.take());
                }
                self.batch
                    .add(&self.settings, meta, window, &groups, &[group]);
            }
        }
        self.batch.note_window(window.index);
        full
    }

    /// Adds `groups[which]` of `window` if the request stays under the limit.
    fn try_add(
        &mut self,
        meta: &Meta,
        window: &Window,
        groups: &[ProcessSamples],
        which: &[usize],
    ) -> bool {
        let checkpoint = self.batch.checkpoint();
        self.batch.add(&self.settings, meta, window, groups, which);
        if self.batch.bytes() <= self.settings.max_request_bytes {
            return true;
        }
        self.batch.rollback(checkpoint);
        false
    }

    /// The request still being filled, if any.
    pub fn finish(&mut self) -> Option<Encoded> {
        (!self.batch.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Encoded {
        std::mem::replace(&mut self.batch, Batch::new()).into_request()
    }
}

/// Bytes a length-delimited field of `len` bytes takes, tag included (tags here are < 16).
fn field_len(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Length prefixes of nested messages are counted at their largest, so that growing contents
/// never make the estimate too small.
const MAX_PREFIX: usize = 5;

#[cfg(test)]
mod tests;
