//! `amprof report --format perf`: a `perf.data` file that Linux perf and the tools built on it
//! (`perf report`, `perf script`, hotspot, FlameGraph's stackcollapse-perf, `samply import`) read
//! as if `perf record` had written it.
//!
//! # What perf gets
//!
//! ```text
//! header (104 bytes; rewritten at the end, once the data size is known)
//! attrs  the cpu-clock sampling attr (PERF_ATTR_SIZE_VER5) + its ids section, and/or the
//!        offcpu-time attr + its ids section (`report --event off-cpu|wall`)
//! ids    each attr's one sample id
//! data   the kernel's MMAP2, FINISHED_INIT, then in time order: COMM, MMAP2, SAMPLE,
//!        LOST_SAMPLES, FINISHED_ROUND
//! features  HOSTNAME OSRELEASE VERSION ARCH NRCPUS CMDLINE EVENT_DESC BUILD_ID SAMPLE_TIME
//!           CLOCKID CLOCK_DATA
//! ```
//!
//! perf resolves symbols itself, from the MMAP2 records (path, file offset, build-id) and the
//! binaries on disk; the capture's own symbols cannot be handed to it. A build-id is only written
//! when the capture knows it: perf refuses a binary whose build-id differs from the one recorded,
//! so a binary rebuilt since recording shows `[unknown]` frames instead of wrong ones.
//!
//! # The record stream is in time order
//!
//! The capture's windows are self-contained, so a process appears in every window it ran in, and
//! an exec shows as a new process image with the same pid. Each process image, thread name and
//! mapping is announced once, right before the first selected sample that needs it and with that
//! sample's time. The stream is therefore sorted by time, as perf's own is: perf's ordered-event
//! queue never sees a record older than one it flushed, and an exec (a COMM with
//! `PERF_RECORD_MISC_COMM_EXEC`, then the new image's MMAP2s) lands between the old image's
//! samples and the new one's. A FINISHED_ROUND ends every window, and every [`writer::ROUND_SAMPLES`]
//! samples within one, which bounds perf's queue.
//!
//! Windows are read one at a time ([`crate::capture::CaptureReader::next_window`]) and written as they come:
//! memory grows with the number of distinct processes, threads and mappings, not with samples.
//!
//! # Off-CPU samples
//!
//! Off-CPU samples (`report --event off-cpu` or `wall`) are written as perf's own `--off-cpu`
//! writes them (`tools/perf/util/bpf_off_cpu.c`): samples of a second event named
//! `offcpu-time`, a software event (PERF_COUNT_SW_BPF_OUTPUT) whose sample period is the time
//! off the CPU in nanoseconds, with the stack the thread blocked in as its call chain. `perf
//! report` then shows it as a second event beside cpu-clock, its count in nanoseconds, and
//! `perf script` prints each sample with its period. The event id of each sample
//! (PERF_SAMPLE_IDENTIFIER) tells perf which event it belongs to: cpu-clock is 1, offcpu-time
//! 2, in every file (an off-CPU file alone has only offcpu-time).
//!
//! No kind is named for this: a file has one event per kind of sample its `--event` takes, in
//! [`Event::kinds`]' order, its id the kind's place in [`SampleKind::ALL`](crate::capture::SampleKind::ALL)
//! and its name the kind's descriptor's
//! [`perf_event`](crate::capture::KindDescriptor::perf_event) (none: the capture's sampling
//! event); see [`events`]. A kind with a perf event of its own is a BPF-output event beside
//! cpu-clock, as offcpu-time is.
//!
//! A sample's time is when the thread ran again, as in the capture: that keeps the stream in
//! time order with on-CPU samples (the blocking time, a whole block earlier, would land behind
//! records perf already flushed), and it is the time of perf's own off-CPU samples sent as they
//! happen (since Linux 6.16, `--off-cpu-thresh`); perf 5.19 to 6.15 put theirs, summed per
//! stack, after every other record. When the block began is the time less the period. The
//! samples are laid out plainly (perf since 6.16 also reads offcpu-time samples embedded in a
//! raw BPF-output payload, but only when the attr samples PERF_SAMPLE_RAW, which this one does
//! not), so every perf reads them. Whether the thread blocked or waited for a CPU has no place
//! in perf's sample and is left out.
//!
//! # The kernel map
//!
//! perf places kernel addresses with a `[kernel.kallsyms]_text` map whose file offset is the
//! address of `_text` at recording time; it then reads symbols from `/proc/kallsyms` (or a
//! vmlinux with the build-id) and relocates them by that address. The capture does not store
//! `_text`, and KASLR moves it at every boot, so the running kernel's `_text` is only right when
//! the running kernel lays out code as the recording one did. That is checked directly, before
//! anything is written (the kernel map comes first, as in perf's own files): the leaf kernel
//! addresses of the capture's first window with kernel frames must name the same functions in
//! this machine's `/proc/kallsyms` as in the capture. Otherwise (another machine, another boot,
//! kernel addresses hidden from non-root users) no kernel map is written, and perf shows kernel
//! frames as `[unknown]` rather than as wrong functions; amprof says so on stderr. A capture
//! without kernel frames gets the running kernel's map: it misplaces nothing, and spares perf's
//! warning about a missing one.
//!
//! # Why hand-written
//!
//! No crate writes the records perf needs (COMM, MMAP2, SAMPLE with callchains). The one that
//! frames perf.data files (`tracepoint_perf`) would only save the header and feature framing,
//! opens its own output path (truncating, following symlinks: not the safe [`crate::output::Output`]),
//! and documents its string helper for CMDLINE, which perf reads as a list of strings. The
//! format is small and stable; the code below follows
//! `tools/perf/Documentation/perf.data-file-format.txt` and `include/uapi/linux/perf_event.h`.

use std::io::{Seek, Write};

use anyhow::Result;

use super::{Encoder, Ending};
use crate::capture::{
    Event, Selection,
    format::{Meta, Window},
};

mod abi;
mod bytes;
mod events;
mod header;
mod kernel;
mod writer;

pub use kernel::{KALLSYMS, Kernel};
pub use writer::{PerfWriter, Written};

/// `report --format perf`: the selected windows as perf.data, written as they come into `W`
/// (a file: perf.data's header is rewritten at the end, so the output must seek).
pub struct PerfFile<W: Write + Seek> {
    /// The output until the first window (the file is started then, or at the end if no
    /// window is selected).
    file: Option<W>,
    meta: Meta,
    /// Which samples: the file's events (its attrs, at its start).
    event: Event,
    writer: Option<PerfWriter<W>>,
    kernel: Kernel,
}

impl<W: Write + Seek> PerfFile<W> {
    /// perf.data of `event`'s samples for a capture described by `meta`, into `out`, with the
    /// kernel map `kernel` plans (gathered by the caller in its pass over the capture, see
    /// [`Kernel::check`]).
    pub fn new(meta: &Meta, event: Event, kernel: Kernel, out: W) -> Self {
        Self {
            file: Some(out),
            meta: meta.clone(),
            event,
            writer: None,
            kernel,
        }
    }

    /// The writer, started if it was not yet.
    fn writer(&mut self) -> Result<&mut PerfWriter<W>> {
        if self.writer.is_none() {
            // Taken once: after a failed start the report has ended with that error.
            let file = self
                .file
                .take()
                .ok_or_else(|| anyhow::anyhow!("perf.data could not be started"))?;
            self.writer = Some(PerfWriter::for_event(
                file,
                &self.meta,
                &self.kernel,
                self.event,
            )?);
        }
        self.writer
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("perf.data could not be started"))
    }
}

impl<W: Write + Seek> Encoder for PerfFile<W> {
    fn add(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        self.writer()?.window(window, selection)
    }

    fn finish(mut self: Box<Self>, _: &Ending<'_>) -> Result<Vec<String>> {
        // No window selected (a capture without windows): a file without samples.
        self.writer()?;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| anyhow::anyhow!("perf.data could not be started"))?;
        writer.finish()?;
        Ok(match (self.kernel.has_frames, &self.kernel.map) {
            (true, Err(why)) => vec![format!(
                "note: perf will show kernel frames as [unknown]: {why}"
            )],
            _ => Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
