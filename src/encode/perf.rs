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
//! samples and the new one's. A FINISHED_ROUND ends every window, and every [`ROUND_SAMPLES`]
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

use std::{
    collections::BTreeSet,
    io::{Seek, SeekFrom, Write},
    path::Path,
};

use anyhow::{Context as _, Result};
use rustc_hash::{FxHashMap, FxHashSet};

use super::{Encoder, Ending};
use crate::capture::{
    Event, OffCpu, Selection,
    format::{Meta, Module, ModuleKind, Window},
};

/// Constants of the perf ABI (`perf_event.h`, perf's `header.h`).
mod abi {
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
}

/// The events a file carries: on-CPU samples as `cpu-clock`, off-CPU samples as perf's own
/// `--off-cpu` event (see the module documentation). A file has the ones its selection covers,
/// in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PerfEvent {
    OnCpu,
    OffCpu,
}

impl PerfEvent {
    /// The events of a selection of `event`.
    fn of(event: Event) -> Vec<Self> {
        let mut events = Vec::with_capacity(2);
        if event.includes_on_cpu() {
            events.push(Self::OnCpu);
        }
        if event.includes_off_cpu() {
            events.push(Self::OffCpu);
        }
        events
    }

    /// The event's id in every sample (PERF_SAMPLE_IDENTIFIER) and in the attrs section: fixed
    /// per event, so that a file of one event says the same as a file of both.
    fn id(self) -> u64 {
        match self {
            Self::OnCpu => EVENT_ID,
            Self::OffCpu => OFF_CPU_EVENT_ID,
        }
    }
}

/// The id of on-CPU samples (`cpu-clock`), the one event of a file of on-CPU samples.
const EVENT_ID: u64 = 1;
/// The id of off-CPU samples (`offcpu-time`).
const OFF_CPU_EVENT_ID: u64 = 2;
/// The name perf's `--off-cpu` gives its event (`OFFCPU_EVENT` in perf's `util/off_cpu.h`).
const OFF_CPU_EVENT_NAME: &str = "offcpu-time";
/// Where the data section starts with `events` events: after the header, the attrs, and their
/// one id each.
const fn data_offset(events: usize) -> u64 {
    abi::FILE_HEADER_SIZE
        + events as u64
            * (abi::ATTR_SIZE as u64 + abi::FILE_SECTION_SIZE + std::mem::size_of::<u64>() as u64)
}
/// A FINISHED_ROUND at least this often, so that perf's sorting queue stays small.
const ROUND_SAMPLES: u64 = 16_384;
/// The running kernel's symbols, to check whether its `_text` is the capture's.
pub const KALLSYMS: &str = "/proc/kallsyms";

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

/// How perf will place kernel addresses (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The capture has kernel frames.
    pub has_frames: bool,
    /// The capture's kernel build-id, when it has kernel frames and knows it.
    pub build_id: Vec<u8>,
    /// `_text` and `_etext` for the `[kernel.kallsyms]_text` map, or why there is no map.
    pub map: Result<(u64, u64), String>,
}

impl Kernel {
    /// The plan for a capture whose first window with kernel frames is `window` (`None`: it has
    /// none).
    pub fn check(window: Option<&Window>, kallsyms: &Path) -> Self {
        let build_id = window
            .and_then(|w| {
                w.modules
                    .iter()
                    .find(|m| m.kind == ModuleKind::Kernel as i32)
            })
            .map(|m| known_build_id(m).to_vec())
            .unwrap_or_default();
        Self {
            has_frames: window.is_some(),
            build_id,
            map: kernel_text(window, kallsyms),
        }
    }
}

/// What a conversion wrote.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// Samples of every event.
    pub samples: u64,
    /// Of which off-CPU (`offcpu-time`) samples.
    pub off_cpu_samples: u64,
}

/// A process image as the capture identifies it across windows: its pid and when amprof first
/// saw it (a new image after an exec is seen anew).
type ImageKey = (u32, u64);

/// A mapping, as announced to perf.
#[derive(Clone, PartialEq, Eq, Hash)]
struct MappingKey {
    image: ImageKey,
    start: u64,
    end: u64,
    file_offset: u64,
    path: String,
    build_id: Vec<u8>,
}

/// Streams windows into perf.data: announces what samples need, in time order, then writes the
/// features and the header in [`Self::finish`].
pub struct PerfWriter<W: Write + Seek> {
    out: W,
    meta: Meta,
    /// The file's events, in the order of its attrs.
    events: Vec<PerfEvent>,
    /// Nanoseconds between on-CPU samples: what perf sums as cpu-clock's count (an off-CPU
    /// sample's period is its time off the CPU).
    period: u64,
    data_bytes: u64,
    record: Record,
    /// Images whose COMM was written.
    images: FxHashSet<ImageKey>,
    /// Pids that had an image announced: a later image of theirs is an exec.
    pids: FxHashSet<u32>,
    /// The last COMM written for each tid: its image and name.
    threads: FxHashMap<u32, (ImageKey, String)>,
    mappings: FxHashSet<MappingKey>,
    /// BUILD_ID feature entries: path, build-id, kernel or not.
    build_ids: BTreeSet<(String, Vec<u8>, bool)>,
    samples: u64,
    off_cpu_samples: u64,
    since_round: u64,
    first_time: Option<u64>,
    last_time: u64,
}

/// The sample fields every non-sample record repeats (`sample_id_all`).
#[derive(Clone, Copy)]
struct SampleId {
    pid: u32,
    tid: u32,
    time: u64,
    cpu: u32,
}

impl<W: Write + Seek> PerfWriter<W> {
    /// Starts a perf.data file of on-CPU samples for a capture described by `meta` at the
    /// current position of `out` (which must be 0: offsets are absolute), with the kernel map
    /// `kernel` plans.
    pub fn new(out: W, meta: &Meta, kernel: &Kernel) -> Result<Self> {
        Self::for_event(out, meta, kernel, Event::OnCpu)
    }

    /// As [`Self::new`], for the samples of `event`: on-CPU ones as `cpu-clock`, off-CPU ones
    /// as `offcpu-time`. On-CPU alone is exactly the file [`Self::new`] writes.
    pub fn for_event(mut out: W, meta: &Meta, kernel: &Kernel, event: Event) -> Result<Self> {
        let events = PerfEvent::of(event);
        let data_offset = data_offset(events.len());
        let mut start = Vec::with_capacity(data_offset as usize);
        start.extend_from_slice(&file_header(events.len(), 0, &[]));
        // Each attr with its ids section, then the ids, one per event.
        let mut ids_offset = abi::FILE_HEADER_SIZE
            + events.len() as u64 * (abi::ATTR_SIZE as u64 + abi::FILE_SECTION_SIZE);
        for (i, &e) in events.iter().enumerate() {
            start.extend_from_slice(&attr(meta, e, i == 0));
            put_u64(&mut start, ids_offset);
            put_u64(&mut start, 8);
            ids_offset += 8;
        }
        for e in &events {
            put_u64(&mut start, e.id());
        }
        debug_assert_eq!(start.len() as u64, data_offset);
        out.write_all(&start).context("cannot write perf.data")?;
        let mut writer = Self {
            out,
            meta: meta.clone(),
            // Non-sample records carry the first event's id, as perf's own carry their
            // tracking event's.
            record: Record {
                id: events[0].id(),
                ..Record::default()
            },
            events,
            period: 1_000_000_000 / meta.frequency_hz.max(1),
            data_bytes: 0,
            images: FxHashSet::default(),
            pids: FxHashSet::default(),
            threads: FxHashMap::default(),
            mappings: FxHashSet::default(),
            build_ids: BTreeSet::new(),
            samples: 0,
            off_cpu_samples: 0,
            since_round: 0,
            first_time: None,
            last_time: 0,
        };
        if !kernel.build_id.is_empty() {
            writer
                .build_ids
                .insert(("[kernel.kallsyms]".into(), kernel.build_id.clone(), true));
        }
        if let Ok((text, etext)) = kernel.map {
            let id = SampleId {
                pid: abi::HOST_KERNEL_PID,
                tid: 0,
                time: meta.start_ns,
                cpu: 0,
            };
            writer.mmap2(
                abi::HOST_KERNEL_PID,
                0,
                (text, etext.saturating_sub(text).max(1), text),
                "[kernel.kallsyms]_text",
                &kernel.build_id,
                abi::MISC_KERNEL,
                id,
            )?;
        }
        // The initial state is the kernel: processes are announced as they appear.
        writer.record.begin(abi::RECORD_FINISHED_INIT, 0);
        writer.emit()?;
        Ok(writer)
    }

    /// Writes the samples of `window` that `selection` keeps, announcing what they need first.
    pub fn window(&mut self, window: &Window, selection: &Selection) -> Result<()> {
        // Stacks whose process and mappings were announced this window.
        let mut announced = vec![false; window.stacks.len()];
        let mut mappings_done = vec![false; window.mappings.len()];
        let mut threads_done: FxHashSet<(u32, u32)> = FxHashSet::default();
        // A thread's name in this window, and the image it was seen in (its first this window).
        let thread_names: FxHashMap<u32, (u32, &str)> = window
            .threads
            .iter()
            .map(|t| (t.tid, (t.process, t.name.as_str())))
            .collect();
        // Samples of an event the file has no attr for are left out (the selection that started
        // the file decided its events).
        let (on_cpu, off_cpu) = (
            self.events.contains(&PerfEvent::OnCpu),
            self.events.contains(&PerfEvent::OffCpu),
        );
        let wanted = selection.samples(window).filter(|s| {
            if s.off_cpu().is_some() {
                off_cpu
            } else {
                on_cpu
            }
        });
        for sample in wanted {
            let (stack, process, tid) = (sample.stack, sample.process, sample.tid);
            let stack_index = sample.stack_index as usize;
            let id = SampleId {
                pid: process.pid,
                tid,
                time: sample.time_ns,
                cpu: sample.cpu,
            };
            if !announced[stack_index] {
                announced[stack_index] = true;
                self.announce_image(window, stack.process, id)?;
                let user = stack
                    .locations
                    .get(stack.kernel_frames as usize..)
                    .unwrap_or_default();
                for &location in user {
                    let mapping = window
                        .locations
                        .get(location as usize)
                        .map_or(0, |l| l.mapping as usize);
                    if let Some(done) = mapping
                        .checked_sub(1)
                        .and_then(|m| mappings_done.get_mut(m))
                        && !*done
                    {
                        *done = true;
                        self.announce_mapping(window, mapping - 1, id)?;
                    }
                }
            }
            if threads_done.insert((tid, stack.process)) {
                // After an exec within the window, the thread goes by the new image's name.
                let name = match thread_names.get(&tid) {
                    Some(&(image, name)) if image == stack.process => name,
                    _ => process.name.as_str(),
                };
                self.announce_thread((process.pid, process.first_seen_ns), name, id)?;
            }
            self.sample(window, stack_index, id, sample.off_cpu())?;
        }
        // What the kernel side lost, counted against the event it was lost from.
        for (event, lost, included) in [
            (PerfEvent::OnCpu, window.lost, on_cpu),
            (PerfEvent::OffCpu, window.off_cpu_lost, off_cpu),
        ] {
            if lost == 0 || !included {
                continue;
            }
            let time = self.last_time.max(window.start_ns);
            self.record.begin(abi::RECORD_LOST_SAMPLES, abi::MISC_USER);
            self.record.u64(lost);
            self.record.sample_id_of(
                SampleId {
                    pid: 0,
                    tid: 0,
                    time,
                    cpu: 0,
                },
                event.id(),
            );
            self.emit()?;
        }
        self.finished_round()
    }

    /// A COMM for the process image `process` of `window` (an exec if its pid had an image
    /// before), once.
    fn announce_image(&mut self, window: &Window, process: u32, id: SampleId) -> Result<()> {
        let process = &window.processes[process as usize];
        let key = (process.pid, process.first_seen_ns);
        if !self.images.insert(key) {
            return Ok(());
        }
        let misc = if self.pids.insert(process.pid) {
            abi::MISC_USER
        } else {
            abi::MISC_USER | abi::MISC_COMM_EXEC
        };
        self.comm(process.pid, process.pid, &process.name, misc, id)?;
        self.threads
            .insert(process.pid, (key, process.name.clone()));
        Ok(())
    }

    /// A COMM for thread `id.tid` of `image` if perf does not know it by `name` yet.
    fn announce_thread(&mut self, image: ImageKey, name: &str, id: SampleId) -> Result<()> {
        if self
            .threads
            .get(&id.tid)
            .is_some_and(|(i, n)| *i == image && n == name)
        {
            return Ok(());
        }
        self.comm(image.0, id.tid, name, abi::MISC_USER, id)?;
        self.threads.insert(id.tid, (image, name.to_string()));
        Ok(())
    }

    fn comm(&mut self, pid: u32, tid: u32, name: &str, misc: u16, id: SampleId) -> Result<()> {
        self.record.begin(abi::RECORD_COMM, misc);
        self.record.u32(pid);
        self.record.u32(tid);
        self.record.c_string(name, 8);
        self.record.sample_id(SampleId { pid, tid, ..id });
        self.emit()
    }

    /// An MMAP2 for mapping `index` of `window`, once per image.
    fn announce_mapping(&mut self, window: &Window, index: usize, id: SampleId) -> Result<()> {
        let mapping = &window.mappings[index];
        let process = &window.processes[mapping.process as usize];
        let module = &window.modules[mapping.module as usize];
        let key = MappingKey {
            image: (process.pid, process.first_seen_ns),
            start: mapping.start,
            end: mapping.end,
            file_offset: mapping.file_offset,
            path: perf_path(module).to_string(),
            build_id: known_build_id(module).to_vec(),
        };
        if self.mappings.contains(&key) {
            return Ok(());
        }
        let build_id = known_build_id(module);
        self.mmap2(
            process.pid,
            process.pid,
            (
                mapping.start,
                mapping.end - mapping.start,
                mapping.file_offset,
            ),
            &key.path,
            build_id,
            abi::MISC_USER,
            id,
        )?;
        if !build_id.is_empty() {
            self.build_ids
                .insert((key.path.clone(), build_id.to_vec(), false));
        }
        self.mappings.insert(key);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn mmap2(
        &mut self,
        pid: u32,
        tid: u32,
        (start, len, pgoff): (u64, u64, u64),
        path: &str,
        build_id: &[u8],
        misc: u16,
        id: SampleId,
    ) -> Result<()> {
        let with_build_id = !build_id.is_empty();
        let misc = misc
            | if with_build_id {
                abi::MISC_MMAP_BUILD_ID
            } else {
                0
            };
        self.record.begin(abi::RECORD_MMAP2, misc);
        self.record.u32(pid);
        self.record.u32(tid);
        self.record.u64(start);
        self.record.u64(len);
        self.record.u64(pgoff);
        if with_build_id {
            // { u8 size, u8 reserved[3], u8 build_id[20] } in place of maj, min, ino, ino_generation.
            self.record.u32(build_id.len() as u32);
            self.record.bytes_padded(build_id, abi::BUILD_ID_MAX);
        } else {
            // Device and inode are not in the capture: zeros, as perf writes for pseudo-files.
            self.record.zeros(24);
        }
        self.record.u32(abi::PROT_READ_EXEC);
        self.record.u32(abi::MAP_PRIVATE);
        self.record.c_string(path, 8);
        self.record.sample_id(SampleId { pid, tid, ..id });
        self.emit()
    }

    /// A sample of `stack` of `window`: on-CPU, or off-CPU for `off_cpu`'s time.
    fn sample(
        &mut self,
        window: &Window,
        stack: usize,
        id: SampleId,
        off_cpu: Option<OffCpu>,
    ) -> Result<()> {
        let stack = &window.stacks[stack];
        let kernel_frames = stack.kernel_frames as usize;
        let address = |l: u32| window.locations[l as usize].address;
        let misc = if kernel_frames > 0 {
            abi::MISC_KERNEL
        } else {
            abi::MISC_USER
        };
        let (event, period) = match off_cpu {
            None => (PerfEvent::OnCpu, self.period),
            Some(off) => (PerfEvent::OffCpu, off.ns),
        };
        self.record.begin(abi::RECORD_SAMPLE, misc);
        self.record.u64(event.id());
        self.record
            .u64(stack.locations.first().map_or(0, |&l| address(l)));
        self.record.u32(id.pid);
        self.record.u32(id.tid);
        self.record.u64(id.time);
        self.record.u32(id.cpu);
        self.record.u32(0);
        self.record.u64(period);
        let (kernel, user) = stack.locations.split_at(kernel_frames);
        let contexts = usize::from(!kernel.is_empty()) + usize::from(!user.is_empty());
        self.record.u64((stack.locations.len() + contexts) as u64);
        for (context, frames) in [(abi::CONTEXT_KERNEL, kernel), (abi::CONTEXT_USER, user)] {
            if !frames.is_empty() {
                self.record.u64(context);
                for &location in frames {
                    self.record.u64(address(location));
                }
            }
        }
        self.emit()?;
        self.samples += 1;
        self.off_cpu_samples += u64::from(off_cpu.is_some());
        self.first_time.get_or_insert(id.time);
        self.last_time = id.time;
        self.since_round += 1;
        if self.since_round >= ROUND_SAMPLES {
            self.finished_round()?;
        }
        Ok(())
    }

    fn finished_round(&mut self) -> Result<()> {
        self.since_round = 0;
        self.record.begin(abi::RECORD_FINISHED_ROUND, 0);
        self.emit()
    }

    /// Appends the record being built to the data section.
    fn emit(&mut self) -> Result<()> {
        let bytes = self.record.finish()?;
        self.out
            .write_all(bytes)
            .context("cannot write perf.data")?;
        self.data_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Writes the feature sections after the data, then the final header.
    pub fn finish(mut self) -> Result<Written> {
        let sections = self.features();
        let table_len = sections.len() as u64 * abi::FILE_SECTION_SIZE;
        let data_offset = data_offset(self.events.len());
        let mut offset = data_offset + self.data_bytes + table_len;
        let mut table = Vec::with_capacity(table_len as usize);
        for (_, payload) in &sections {
            put_u64(&mut table, offset);
            put_u64(&mut table, payload.len() as u64);
            offset += payload.len() as u64;
        }
        let write = |out: &mut W, bytes: &[u8]| out.write_all(bytes);
        write(&mut self.out, &table).context("cannot write perf.data")?;
        for (_, payload) in &sections {
            write(&mut self.out, payload).context("cannot write perf.data")?;
        }
        let features: Vec<u32> = sections.iter().map(|(bit, _)| *bit).collect();
        self.out
            .seek(SeekFrom::Start(0))
            .and_then(|_| {
                self.out
                    .write_all(&file_header(self.events.len(), self.data_bytes, &features))
            })
            .and_then(|_| self.out.seek(SeekFrom::End(0)))
            .and_then(|_| self.out.flush())
            .context("cannot write perf.data")?;
        Ok(Written {
            samples: self.samples,
            off_cpu_samples: self.off_cpu_samples,
        })
    }

    /// The feature sections, by ascending feature bit (the order perf reads them in).
    fn features(&self) -> Vec<(u32, Vec<u8>)> {
        let meta = &self.meta;
        let string = |s: &str| {
            let mut b = Vec::new();
            put_header_string(&mut b, s);
            b
        };
        let mut sections = Vec::new();
        let mut build_ids = Vec::new();
        for (path, build_id, kernel) in &self.build_ids {
            put_build_id_event(&mut build_ids, path, build_id, *kernel);
        }
        sections.push((abi::FEAT_BUILD_ID, build_ids));
        sections.push((abi::FEAT_HOSTNAME, string(&meta.hostname)));
        sections.push((abi::FEAT_OSRELEASE, string(&meta.kernel_release)));
        sections.push((
            abi::FEAT_VERSION,
            string(&format!("amprof {}", meta.amprof_version)),
        ));
        sections.push((abi::FEAT_ARCH, string(&meta.arch)));
        let mut cpus = Vec::new();
        put_u32(&mut cpus, meta.cpus); // available
        put_u32(&mut cpus, meta.cpus); // online
        sections.push((abi::FEAT_NRCPUS, cpus));
        let mut cmdline = Vec::new();
        put_u32(&mut cmdline, meta.command_line.len() as u32);
        for arg in &meta.command_line {
            put_header_string(&mut cmdline, arg);
        }
        sections.push((abi::FEAT_CMDLINE, cmdline));
        // The events' names: without them perf would call offcpu-time `bpf-output`.
        let mut desc = Vec::new();
        put_u32(&mut desc, self.events.len() as u32);
        put_u32(&mut desc, abi::ATTR_SIZE);
        for (i, &event) in self.events.iter().enumerate() {
            desc.extend_from_slice(&attr(meta, event, i == 0));
            put_u32(&mut desc, 1); // ids
            put_header_string(&mut desc, event_name(meta, event));
            put_u64(&mut desc, event.id());
        }
        sections.push((abi::FEAT_EVENT_DESC, desc));
        if let Some(first) = self.first_time {
            let mut times = Vec::new();
            put_u64(&mut times, first);
            put_u64(&mut times, self.last_time);
            sections.push((abi::FEAT_SAMPLE_TIME, times));
        }
        let mut clockid = Vec::new();
        put_u64(&mut clockid, 1); // resolution of CLOCK_MONOTONIC in ns
        sections.push((abi::FEAT_CLOCKID, clockid));
        // The wall-clock time of one monotonic instant: `perf script -F+time --clock ...`.
        let mut clock = Vec::new();
        put_u32(&mut clock, 1); // version
        put_u32(&mut clock, abi::CLOCK_MONOTONIC);
        put_u64(
            &mut clock,
            meta.start_ns.saturating_add_signed(meta.realtime_offset_ns),
        );
        put_u64(&mut clock, meta.start_ns);
        sections.push((abi::FEAT_CLOCK_DATA, clock));
        sections
    }
}

/// The event's name as perf shows it.
fn event_name(meta: &Meta, event: PerfEvent) -> &str {
    match event {
        PerfEvent::OnCpu if meta.event.is_empty() => "cpu-clock",
        PerfEvent::OnCpu => &meta.event,
        PerfEvent::OffCpu => OFF_CPU_EVENT_NAME,
    }
}

/// The file header of a file of `events` events: `data_size` bytes of records, `features` set.
fn file_header(
    events: usize,
    data_size: u64,
    features: &[u32],
) -> [u8; abi::FILE_HEADER_SIZE as usize] {
    let attr_size = abi::ATTR_SIZE as u64 + abi::FILE_SECTION_SIZE;
    let mut h = Vec::with_capacity(abi::FILE_HEADER_SIZE as usize);
    put_u64(&mut h, abi::MAGIC);
    put_u64(&mut h, abi::FILE_HEADER_SIZE);
    put_u64(&mut h, attr_size);
    put_u64(&mut h, abi::FILE_HEADER_SIZE); // attrs.offset
    put_u64(&mut h, events as u64 * attr_size); // attrs.size
    put_u64(&mut h, data_offset(events));
    put_u64(&mut h, data_size);
    put_u64(&mut h, 0); // event_types (unused since perf 3.x)
    put_u64(&mut h, 0);
    let mut bitmap = [0u64; 4];
    for &feature in features {
        bitmap[feature as usize / 64] |= 1 << (feature % 64);
    }
    for word in bitmap {
        put_u64(&mut h, word);
    }
    let mut header = [0u8; abi::FILE_HEADER_SIZE as usize];
    header.copy_from_slice(&h);
    header
}

/// The `perf_event_attr` of `event`, times on CLOCK_MONOTONIC: amprof's sampling is cpu-clock
/// at the capture's frequency; off-CPU samples are perf's `--off-cpu` event, a BPF-output
/// software event of period 1 (one record per sample, its period the time off the CPU).
/// `tracking`: the event the process and mapping records belong to (the first), as the
/// tracking event of `perf record`.
///
/// Both events sample the same fields (the sample_type of cpu-clock, which perf's off-CPU
/// samples have too, less the cgroup): perf needs the id at the same place in every record of
/// a file (PERF_SAMPLE_IDENTIFIER, first in a sample, last in other records) to tell the events
/// apart, and parses the trailing sample_id of non-sample records with one layout.
fn attr(meta: &Meta, event: PerfEvent, tracking: bool) -> Vec<u8> {
    let (config, period, sampling) = match event {
        PerfEvent::OnCpu => (
            abi::PERF_COUNT_SW_CPU_CLOCK,
            meta.frequency_hz, // sample_freq (with `freq`)
            abi::ATTR_EXCLUDE_IDLE | abi::ATTR_FREQ,
        ),
        PerfEvent::OffCpu => (abi::PERF_COUNT_SW_BPF_OUTPUT, 1, 0),
    };
    let tracks = if tracking {
        abi::ATTR_MMAP | abi::ATTR_COMM | abi::ATTR_MMAP2 | abi::ATTR_COMM_EXEC
    } else {
        0
    };
    let mut a = Vec::with_capacity(abi::ATTR_SIZE as usize);
    put_u32(&mut a, abi::PERF_TYPE_SOFTWARE);
    put_u32(&mut a, abi::ATTR_SIZE);
    put_u64(&mut a, config);
    put_u64(&mut a, period);
    put_u64(&mut a, abi::SAMPLE_TYPE);
    put_u64(&mut a, 0); // read_format
    put_u64(
        &mut a,
        sampling | tracks | abi::ATTR_SAMPLE_ID_ALL | abi::ATTR_USE_CLOCKID,
    );
    put_u32(&mut a, 0); // wakeup_events
    put_u32(&mut a, 0); // bp_type
    put_u64(&mut a, 0); // config1
    put_u64(&mut a, 0); // config2
    put_u64(&mut a, 0); // branch_sample_type
    put_u64(&mut a, 0); // sample_regs_user
    put_u32(&mut a, 0); // sample_stack_user
    put_u32(&mut a, abi::CLOCK_MONOTONIC); // clockid
    put_u64(&mut a, 0); // sample_regs_intr
    put_u32(&mut a, 0); // aux_watermark
    put_u32(&mut a, 0); // sample_max_stack, reserved
    debug_assert_eq!(a.len(), abi::ATTR_SIZE as usize);
    a
}

/// The path perf gets for a module: anonymous executable memory is `//anon`, which makes perf
/// look for JIT symbols in `/tmp/perf-PID.map` as it does for its own recordings.
fn perf_path(module: &Module) -> &str {
    if module.kind == ModuleKind::Anonymous as i32 {
        "//anon"
    } else {
        &module.path
    }
}

/// The module's build-id if a record can hold it (GNU build-ids are 20 bytes or fewer).
fn known_build_id(module: &Module) -> &[u8] {
    if module.build_id.len() <= abi::BUILD_ID_MAX {
        &module.build_id
    } else {
        &[]
    }
}

/// `_text` and `_etext` of the running kernel, if its layout is the one the capture's kernel
/// addresses were taken in: the leaf kernel frames of `window` must name the same functions in
/// `kallsyms` as they do in the capture (`None`: no kernel frames to misplace). Otherwise, why
/// not.
fn kernel_text(window: Option<&Window>, kallsyms: &Path) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(kallsyms).map_err(|e| {
        format!(
            "cannot read {} ({e}) to place kernel addresses",
            kallsyms.display()
        )
    })?;
    let mut symbols: Vec<(u64, &str)> = Vec::new();
    let (mut start, mut end) = (None, None);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(address) = u64::from_str_radix(address, 16) else {
            continue;
        };
        match name {
            "_text" => start = Some(address),
            "_etext" => end = Some(address),
            _ => {}
        }
        if matches!(kind, "t" | "T" | "w" | "W") {
            symbols.push((address, name));
        }
    }
    let start = match start {
        Some(0) => {
            return Err(
                "kernel addresses are hidden from this user (kptr_restrict): convert as root"
                    .into(),
            );
        }
        Some(start) => start,
        None => return Err(format!("{} has no _text symbol", kallsyms.display())),
    };
    let end = end.filter(|&e| e > start).unwrap_or(u64::MAX);
    let Some(window) = window else {
        return Ok((start, end));
    };
    symbols.sort_unstable();
    let (mut same, mut different) = (0usize, 0usize);
    let mut checked = FxHashSet::default();
    for stack in window.stacks.iter().filter(|s| s.kernel_frames > 0) {
        let Some(location) = stack
            .locations
            .first()
            .and_then(|&l| window.locations.get(l as usize))
        else {
            continue;
        };
        // The outermost line of a kernel location is its kallsyms symbol.
        let Some(function) = location
            .lines
            .last()
            .and_then(|line| window.functions.get(line.function as usize))
        else {
            continue;
        };
        if !checked.insert(location.address) {
            continue;
        }
        let i = symbols.partition_point(|&(a, _)| a <= location.address);
        match i.checked_sub(1).map(|i| symbols[i].1) {
            Some(name) if name == function.name => same += 1,
            _ => different += 1,
        }
    }
    // A few names may differ (a module or BPF program loaded since); a different layout
    // differs everywhere.
    if same == 0 || different * 10 > same {
        return Err(format!(
            "the capture's kernel addresses do not match this machine's running kernel ({same} of {} checked frames agree): convert on the recording machine, before it reboots",
            same + different
        ));
    }
    Ok((start, end))
}

/// A record being built: `perf_event_header` then its fields, size patched by [`Self::finish`].
#[derive(Default)]
struct Record {
    bytes: Vec<u8>,
    /// The event id non-sample records carry.
    id: u64,
}

impl Record {
    fn begin(&mut self, kind: u32, misc: u16) {
        self.bytes.clear();
        put_u32(&mut self.bytes, kind);
        self.bytes.extend_from_slice(&misc.to_ne_bytes());
        self.bytes.extend_from_slice(&0u16.to_ne_bytes()); // size, patched in finish
    }

    fn u32(&mut self, v: u32) {
        put_u32(&mut self.bytes, v);
    }

    fn u64(&mut self, v: u64) {
        put_u64(&mut self.bytes, v);
    }

    fn zeros(&mut self, n: usize) {
        self.bytes.resize(self.bytes.len() + n, 0);
    }

    /// `bytes`, zero-padded to `len`.
    fn bytes_padded(&mut self, bytes: &[u8], len: usize) {
        self.bytes.extend_from_slice(bytes);
        self.zeros(len - bytes.len());
    }

    /// A NUL-terminated string padded with NULs to a multiple of `align`; a NUL inside the
    /// string would end it early for perf, so it ends there.
    fn c_string(&mut self, s: &str, align: usize) {
        put_c_string(&mut self.bytes, s, align);
    }

    fn sample_id(&mut self, id: SampleId) {
        self.sample_id_of(id, self.id);
    }

    /// The sample_id block of a record of event `event`.
    fn sample_id_of(&mut self, id: SampleId, event: u64) {
        self.u32(id.pid);
        self.u32(id.tid);
        self.u64(id.time);
        self.u32(id.cpu);
        self.u32(0);
        self.u64(event);
    }

    /// The finished record, its size set.
    fn finish(&mut self) -> Result<&[u8]> {
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

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn put_c_string(out: &mut Vec<u8>, s: &str, align: usize) {
    let s = s.split('\0').next().unwrap_or_default();
    out.extend_from_slice(s.as_bytes());
    let len = (s.len() + 1).next_multiple_of(align);
    out.resize(out.len() + len - s.len(), 0);
}

/// A `perf_header_string`: its padded length, then the NUL-padded string.
fn put_header_string(out: &mut Vec<u8>, s: &str) {
    let s = s.split('\0').next().unwrap_or_default();
    put_u32(out, (s.len() + 1).next_multiple_of(abi::NAME_ALIGN) as u32);
    put_c_string(out, s, abi::NAME_ALIGN);
}

/// One entry of the BUILD_ID feature (`struct perf_record_header_build_id`), as perf writes it:
/// header, pid (-1: the host), the build-id in 24 bytes with its size in byte 20, the path.
fn put_build_id_event(out: &mut Vec<u8>, path: &str, build_id: &[u8], kernel: bool) {
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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use linux_perf_data::{
        DsoKey, PerfFileReader, PerfFileRecord,
        linux_perf_event_reader::{
            AttrFlags, ClockId, CpuMode, EventRecord, Mmap2FileId, PerfClock,
        },
    };

    use super::*;
    use crate::capture::format::{OffCpuReason, Process};
    use crate::capture::testing::{self, WindowBuilder};

    const TEXT: u64 = 0xffff_ffff_8100_0000;
    const KFUNC: u64 = TEXT + 0x100;
    const APP_ID: [u8; 20] = [0xab; 20];
    const KERNEL_ID: [u8; 20] = [0xcd; 20];

    fn meta() -> Meta {
        Meta {
            amprof_version: "9.9.9".into(),
            hostname: "box".into(),
            kernel_release: "6.1.0-test".into(),
            cpus: 4,
            frequency_hz: 100,
            command_line: vec!["amprof".into(), "record".into(), "-d".into(), "2s".into()],
            start_ns: 1_000,
            realtime_offset_ns: 5_000,
            ..testing::meta()
        }
    }

    /// A window of process `pid` named `name`, first seen at `seen`: a kernel + user stack in
    /// `/usr/bin/app` (thread `pid`), a user stack through JIT code (thread `pid + 1`).
    fn window(index: u64, start_ns: u64, pid: u32, name: &str, seen: u64) -> Window {
        let mut w = WindowBuilder::at(index, start_ns, start_ns + 1_000_000_000);
        let process = w.process_with(Process {
            pid,
            name: name.into(),
            exe: "/usr/bin/app".into(),
            first_seen_ns: seen,
            maps_unavailable: false,
        });
        w.thread(pid, process, name);
        w.thread(pid + 1, process, "worker");
        let app = w.module_with("/usr/bin/app", ModuleKind::File, &APP_ID);
        let kernel = w.module_with("[kernel.kallsyms]", ModuleKind::Kernel, &KERNEL_ID);
        let anon = w.module_with("[anon]", ModuleKind::Anonymous, &[]);
        let text = w.mapping(process, app, 0x40_0000, 0x41_0000, 0x1000);
        let jit = w.mapping(process, anon, 0x7f00_0000, 0x7f01_0000, 0);
        let (kfunc, main) = (w.function("kfunc"), w.function("main"));
        let in_kernel = w.kernel_location(kernel, KFUNC + 0x10, &[kfunc]);
        let in_main = w.location_in(text, 0x40_0100, &[main]);
        w.lines(in_main, &[(main, 7)]);
        let in_jit = w.location_in(jit, 0x7f00_0010, &[]);
        let through_kernel = w.stack(process, &[in_kernel, in_main], 1);
        let through_jit = w.stack(process, &[in_jit, in_main], 0);
        w.sample(10, pid, 0, through_kernel);
        w.sample(30, pid + 1, 1, through_jit);
        w.sample(60, pid, 2, through_kernel);
        w.window_mut().lost = 3;
        w.build()
    }

    /// A kallsyms file of its own (tests run in parallel threads).
    fn kallsyms(name: &str, text: &str) -> std::path::PathBuf {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "amprof-perf-test-{}-{}-{name}.kallsyms",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn this_kernel() -> std::path::PathBuf {
        kallsyms(
            "same",
            &format!(
                "{TEXT:016x} T _text\n{TEXT:016x} T _stext\n{KFUNC:016x} T kfunc\n{:016x} t other\n{:016x} T _etext\n{:016x} d some_data\n",
                KFUNC + 0x80,
                TEXT + 0x10_0000,
                KFUNC + 0x8,
            ),
        )
    }

    /// Converts `windows` with `selection` and the running kernel `kallsyms`, returning the
    /// file, what was written and the kernel plan.
    fn convert(
        windows: &[Window],
        selection: &Selection,
        kallsyms: &Path,
    ) -> (Vec<u8>, Written, Kernel) {
        let meta = meta();
        let with_kernel = windows
            .iter()
            .find(|w| w.stacks.iter().any(|s| s.kernel_frames > 0));
        let kernel = Kernel::check(with_kernel, kallsyms);
        let _ = std::fs::remove_file(kallsyms); // read once, by the check
        let mut out = Cursor::new(Vec::new());
        let mut writer = PerfWriter::for_event(&mut out, &meta, &kernel, selection.event).unwrap();
        for window in windows {
            writer.window(window, selection).unwrap();
        }
        let written = writer.finish().unwrap();
        (out.into_inner(), written, kernel)
    }

    /// (type, misc, time from the sample_id or sample) of every record, in file order.
    fn raw_records(file: &[u8]) -> Vec<(u32, u16)> {
        let word = |at: usize| u64::from_ne_bytes(file[at..at + 8].try_into().unwrap());
        let (offset, size) = (word(40) as usize, word(48) as usize);
        let mut records = Vec::new();
        let mut at = offset;
        while at < offset + size {
            let kind = u32::from_ne_bytes(file[at..at + 4].try_into().unwrap());
            let misc = u16::from_ne_bytes(file[at + 4..at + 6].try_into().unwrap());
            let len = u16::from_ne_bytes(file[at + 6..at + 8].try_into().unwrap());
            assert!(len >= 8 && len % 8 == 0, "record size {len}");
            records.push((kind, misc));
            at += len as usize;
        }
        assert_eq!(at, offset + size, "records fill the data section exactly");
        records
    }

    #[test]
    fn every_record_kind_round_trips_through_linux_perf_data() {
        let kernel = this_kernel();
        let first = window(0, 1_000, 100, "app", 900);
        // The same image again, then an exec: same pid, new image, new name.
        let second = window(1, 1_000_001_000, 100, "app", 900);
        let exec = window(2, 2_000_001_000, 100, "app2", 2_000_000_500);
        let (file, written, kernel) =
            convert(&[first, second, exec], &Selection::default(), &kernel);
        assert_eq!(written.samples, 9);
        assert_eq!(kernel.map, Ok((TEXT, TEXT + 0x10_0000)));

        let PerfFileReader {
            mut perf_file,
            mut record_iter,
        } = PerfFileReader::parse_file(Cursor::new(&file[..])).unwrap();
        assert_eq!(perf_file.hostname().unwrap(), Some("box"));
        assert_eq!(perf_file.os_release().unwrap(), Some("6.1.0-test"));
        assert_eq!(perf_file.arch().unwrap(), Some("x86_64"));
        assert_eq!(perf_file.perf_version().unwrap(), Some("amprof 9.9.9"));
        let cpus = perf_file.nr_cpus().unwrap().unwrap();
        assert_eq!((cpus.nr_cpus_available, cpus.nr_cpus_online), (4, 4));
        assert_eq!(
            perf_file.cmdline().unwrap().unwrap(),
            ["amprof", "record", "-d", "2s"]
        );
        let range = perf_file.sample_time_range().unwrap().unwrap();
        assert_eq!(
            (range.first_sample_time, range.last_sample_time),
            (1_010, 2_000_001_060)
        );
        let clock = perf_file.clock_data().unwrap().unwrap();
        assert_eq!(
            (clock.clockid, clock.wall_clock_ns, clock.clockid_time_ns),
            (1, 6_000, 1_000)
        );
        let attrs = perf_file.event_attributes();
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].name(), Some("cpu-clock"));
        assert_eq!(attrs[0].ids(), [EVENT_ID]);
        let attr = attrs[0].attributes();
        assert!(matches!(attr.clock, PerfClock::ClockId(ClockId::Monotonic)));
        assert!(
            attr.flags
                .contains(AttrFlags::SAMPLE_ID_ALL | AttrFlags::USE_CLOCKID)
        );
        let build_ids = perf_file.build_ids().unwrap();
        assert_eq!(build_ids[&DsoKey::Kernel].build_id, KERNEL_ID);
        let app = DsoKey::detect(b"/usr/bin/app", CpuMode::User).unwrap();
        assert_eq!(build_ids[&app].build_id, APP_ID);
        assert_eq!(build_ids.len(), 2, "{build_ids:?}");

        let mut comms = Vec::new();
        let mut mmaps = Vec::new();
        let mut samples = Vec::new();
        let mut lost = Vec::new();
        let mut user_records = Vec::new();
        while let Some(record) = record_iter.next_record(&mut perf_file).unwrap() {
            match record {
                PerfFileRecord::EventRecord { record, .. } => {
                    let common = record.common_data().unwrap();
                    assert_eq!(common.id, Some(EVENT_ID));
                    let time = common.timestamp.unwrap();
                    match record.parse().unwrap() {
                        EventRecord::Comm(c) => comms.push((
                            c.pid,
                            c.tid,
                            String::from_utf8(c.name.as_slice().to_vec()).unwrap(),
                            c.is_execve,
                            time,
                        )),
                        EventRecord::Mmap2(m) => mmaps.push((
                            m.pid,
                            m.address,
                            m.length,
                            m.page_offset,
                            String::from_utf8(m.path.as_slice().to_vec()).unwrap(),
                            match m.file_id {
                                Mmap2FileId::BuildId(id) => id,
                                Mmap2FileId::InodeAndVersion(_) => vec![],
                            },
                            time,
                        )),
                        EventRecord::Sample(s) => {
                            let chain = s.callchain.unwrap();
                            let chain: Vec<u64> =
                                (0..chain.len()).map(|i| chain.get(i).unwrap()).collect();
                            samples.push((
                                s.pid.unwrap(),
                                s.tid.unwrap(),
                                s.timestamp.unwrap(),
                                s.cpu.unwrap(),
                                s.period.unwrap(),
                                s.ip.unwrap(),
                                chain,
                            ));
                        }
                        EventRecord::Raw(raw) if raw.record_type.0 == abi::RECORD_LOST_SAMPLES => {
                            let count =
                                u64::from_ne_bytes(raw.data.as_slice()[..8].try_into().unwrap());
                            lost.push((count, time));
                        }
                        other => panic!("unexpected record {other:?}"),
                    }
                }
                PerfFileRecord::UserRecord(user) => user_records.push(user.record_type),
            }
        }
        assert_eq!(user_records.len(), 1, "FINISHED_INIT: {user_records:?}");
        assert_eq!(user_records[0].record_type().0, abi::RECORD_FINISHED_INIT);

        let (t0, t1) = (1_000, 1_000_001_000);
        let t2 = 2_000_001_000;
        assert_eq!(
            comms,
            [
                (100, 100, "app".to_string(), false, t0 + 10),
                (100, 101, "worker".to_string(), false, t0 + 30),
                (100, 100, "app2".to_string(), true, t2 + 10),
                (100, 101, "worker".to_string(), false, t2 + 30),
            ],
            "one COMM per image and thread name, an exec for the new image"
        );
        let app = |time| {
            (
                100,
                0x40_0000,
                0x1_0000,
                0x1000,
                "/usr/bin/app".to_string(),
                APP_ID.to_vec(),
                time,
            )
        };
        let jit = |time| {
            (
                100,
                0x7f00_0000,
                0x1_0000,
                0,
                "//anon".to_string(),
                vec![],
                time,
            )
        };
        assert_eq!(
            mmaps,
            [
                (
                    -1,
                    TEXT,
                    0x10_0000,
                    TEXT,
                    "[kernel.kallsyms]_text".to_string(),
                    KERNEL_ID.to_vec(),
                    meta().start_ns
                ),
                app(t0 + 10),
                jit(t0 + 30),
                app(t2 + 10),
                jit(t2 + 30),
            ],
            "MMAP2s once per image, fresh ones after the exec"
        );
        let kernel_chain = vec![
            abi::CONTEXT_KERNEL,
            KFUNC + 0x10,
            abi::CONTEXT_USER,
            0x40_0100,
        ];
        let jit_chain = vec![abi::CONTEXT_USER, 0x7f00_0010, 0x40_0100];
        let mut expected = Vec::new();
        for start in [t0, t1, t2] {
            expected.push((
                100,
                100,
                start + 10,
                0,
                10_000_000,
                KFUNC + 0x10,
                kernel_chain.clone(),
            ));
            expected.push((
                100,
                101,
                start + 30,
                1,
                10_000_000,
                0x7f00_0010,
                jit_chain.clone(),
            ));
            expected.push((
                100,
                100,
                start + 60,
                2,
                10_000_000,
                KFUNC + 0x10,
                kernel_chain.clone(),
            ));
        }
        assert_eq!(samples, expected);
        assert_eq!(lost, [(3, t0 + 60), (3, t1 + 60), (3, t2 + 60)]);

        // In the file itself: the kernel map and FINISHED_INIT first, a FINISHED_ROUND closing
        // each window, and what a sample needs right before it.
        let records = raw_records(&file);
        assert_eq!(
            records[0],
            (
                abi::RECORD_MMAP2,
                abi::MISC_KERNEL | abi::MISC_MMAP_BUILD_ID
            )
        );
        assert_eq!(records[1].0, abi::RECORD_FINISHED_INIT);
        assert_eq!(
            records
                .iter()
                .filter(|r| r.0 == abi::RECORD_FINISHED_ROUND)
                .count(),
            3
        );
        assert_eq!(records.last().unwrap().0, abi::RECORD_FINISHED_ROUND);
        let kinds: Vec<u32> = records.iter().map(|r| r.0).collect();
        assert_eq!(
            &kinds[2..8],
            [
                abi::RECORD_COMM,
                abi::RECORD_MMAP2,
                abi::RECORD_SAMPLE,
                abi::RECORD_MMAP2,
                abi::RECORD_COMM,
                abi::RECORD_SAMPLE
            ],
            "what a sample needs comes right before it"
        );
    }

    /// [`window`] with off-CPU samples too: thread `pid + 1` blocked in the kernel stack at 20
    /// for 5 ms, thread `pid` in the JIT stack at 40 for 70 ms; 4 off-CPU samples lost.
    fn window_with_off_cpu(index: u64, start_ns: u64) -> Window {
        let mut w = window(index, start_ns, 100, "app", 900);
        // The builder's columns are filled in by build(): add the samples to the built window.
        let mut off = WindowBuilder::at(index, start_ns, start_ns + 1_000_000_000);
        off.off_cpu_sample(20, 101, 3, 0, 5_000_000, OffCpuReason::Blocked);
        off.off_cpu_sample(40, 100, 0, 1, 70_000_000, OffCpuReason::Runnable);
        let off = off.build();
        w.off_cpu_time_deltas = off.off_cpu_time_deltas;
        w.off_cpu_tids = off.off_cpu_tids;
        w.off_cpu_cpus = off.off_cpu_cpus;
        w.off_cpu_stacks = off.off_cpu_stacks;
        w.off_cpu_ns = off.off_cpu_ns;
        w.off_cpu_reasons = off.off_cpu_reasons;
        w.off_cpu_wait_ns = off.off_cpu_wait_ns;
        w.stacks[0].off_cpu_count = 1;
        w.stacks[0].off_cpu_ns = 5_000_000;
        w.stacks[1].off_cpu_count = 1;
        w.stacks[1].off_cpu_ns = 70_000_000;
        w.off_cpu_lost = 4;
        w
    }

    /// (event id, tid, time, period) of every sample, (record type, event id) of every other
    /// record, and the (name, ids) of every attr of `file`.
    #[allow(clippy::type_complexity)]
    fn events_of(
        file: &[u8],
    ) -> (
        Vec<(u64, i32, u64, u64)>,
        Vec<(u32, u64)>,
        Vec<(String, Vec<u64>)>,
    ) {
        let PerfFileReader {
            mut perf_file,
            mut record_iter,
        } = PerfFileReader::parse_file(Cursor::new(file)).unwrap();
        let attrs = perf_file
            .event_attributes()
            .iter()
            .map(|a| (a.name().unwrap().to_string(), a.ids().to_vec()))
            .collect();
        let (mut samples, mut others) = (Vec::new(), Vec::new());
        while let Some(record) = record_iter.next_record(&mut perf_file).unwrap() {
            let PerfFileRecord::EventRecord { record, .. } = record else {
                continue;
            };
            let id = record.common_data().unwrap().id.unwrap();
            match record.parse().unwrap() {
                EventRecord::Sample(s) => samples.push((
                    s.id.unwrap(),
                    s.tid.unwrap(),
                    s.timestamp.unwrap(),
                    s.period.unwrap(),
                )),
                _ => others.push((record.record_type.0, id)),
            }
        }
        (samples, others, attrs)
    }

    #[test]
    fn off_cpu_samples_are_perfs_offcpu_time_event() {
        let windows = [
            window_with_off_cpu(0, 1_000),
            window_with_off_cpu(1, 1_000_001_000),
        ];
        let wall = Selection {
            event: Event::Wall,
            ..Selection::default()
        };
        let (file, written, _) = convert(&windows, &wall, &this_kernel());
        assert_eq!((written.samples, written.off_cpu_samples), (10, 4));
        let (samples, others, attrs) = events_of(&file);
        assert_eq!(
            attrs,
            [
                ("cpu-clock".to_string(), vec![EVENT_ID]),
                ("offcpu-time".to_string(), vec![OFF_CPU_EVENT_ID])
            ]
        );
        let (on, off) = (EVENT_ID, OFF_CPU_EVENT_ID);
        let mut expected = Vec::new();
        for start in [1_000, 1_000_001_000] {
            expected.extend([
                (on, 100, start + 10, 10_000_000),
                (off, 101, start + 20, 5_000_000),
                (on, 101, start + 30, 10_000_000),
                (off, 100, start + 40, 70_000_000),
                (on, 100, start + 60, 10_000_000),
            ]);
        }
        assert_eq!(samples, expected, "one time order, each sample its event's");
        // Side records carry cpu-clock's id; what was lost, the id of the event it was lost from.
        let lost: Vec<(u32, u64)> = others
            .iter()
            .filter(|r| r.0 == abi::RECORD_LOST_SAMPLES)
            .copied()
            .collect();
        assert_eq!(
            lost,
            [
                (abi::RECORD_LOST_SAMPLES, on),
                (abi::RECORD_LOST_SAMPLES, off)
            ]
            .repeat(2)
        );
        assert!(
            others
                .iter()
                .all(|&(kind, id)| kind == abi::RECORD_LOST_SAMPLES || id == on),
            "{others:?}"
        );

        // Off-CPU alone: one event, offcpu-time, whose id every record carries.
        let off_cpu = Selection {
            event: Event::OffCpu,
            ..Selection::default()
        };
        let (file, written, _) = convert(&windows, &off_cpu, &this_kernel());
        assert_eq!((written.samples, written.off_cpu_samples), (4, 4));
        let (samples, others, attrs) = events_of(&file);
        assert_eq!(attrs, [("offcpu-time".to_string(), vec![OFF_CPU_EVENT_ID])]);
        let periods: Vec<(u64, u64)> = samples.iter().map(|s| (s.0, s.3)).collect();
        assert_eq!(periods, [(off, 5_000_000), (off, 70_000_000)].repeat(2));
        assert!(others.iter().all(|&(_, id)| id == off), "{others:?}");
        assert_eq!(
            others
                .iter()
                .filter(|r| r.0 == abi::RECORD_LOST_SAMPLES)
                .count(),
            2,
            "only the off-CPU losses"
        );

        // On-CPU (the default) leaves them out: the file of a capture without them.
        let (with, written, _) = convert(&windows, &Selection::default(), &this_kernel());
        assert_eq!((written.samples, written.off_cpu_samples), (6, 0));
        let plain = [
            window(0, 1_000, 100, "app", 900),
            window(1, 1_000_001_000, 100, "app", 900),
        ];
        let (without, _, _) = convert(&plain, &Selection::default(), &this_kernel());
        assert_eq!(with, without);
    }

    #[test]
    fn selection_drops_samples_and_everything_only_they_needed() {
        let w = window(0, 1_000, 100, "app", 900);
        let other = Selection {
            pids: vec![7],
            ..Selection::default()
        };
        let (file, written, _) = convert(std::slice::from_ref(&w), &other, &this_kernel());
        assert_eq!(written.samples, 0);
        let kinds: Vec<u32> = raw_records(&file).iter().map(|r| r.0).collect();
        assert_eq!(
            kinds,
            [
                abi::RECORD_MMAP2,
                abi::RECORD_FINISHED_INIT,
                abi::RECORD_LOST_SAMPLES,
                abi::RECORD_FINISHED_ROUND
            ]
        );
        let by_comm = Selection {
            comms: vec!["app".into()],
            ..Selection::default()
        };
        let (_, written, _) = convert(&[w], &by_comm, &this_kernel());
        assert_eq!(written.samples, 3);
    }

    #[test]
    fn a_kernel_laid_out_differently_gets_no_kernel_map() {
        let w = window(0, 1_000, 100, "app", 900);
        // Another boot: KASLR moved every function.
        let moved = kallsyms(
            "moved",
            &format!(
                "{:016x} T _text\n{:016x} T kfunc\n{:016x} T _etext\n",
                TEXT + 0x20_0000,
                KFUNC + 0x20_0000,
                TEXT + 0x30_0000
            ),
        );
        let hidden = kallsyms(
            "hidden",
            "0000000000000000 T _text\n0000000000000000 T kfunc\n",
        );
        for (kallsyms, why) in [
            (moved, "do not match"),
            (hidden, "kptr_restrict"),
            (
                Path::new("/nonexistent/kallsyms").to_path_buf(),
                "cannot read",
            ),
        ] {
            let (file, _, kernel) =
                convert(std::slice::from_ref(&w), &Selection::default(), &kallsyms);
            match &kernel.map {
                Err(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{other:?}"),
            }
            let PerfFileReader {
                mut perf_file,
                mut record_iter,
            } = PerfFileReader::parse_file(Cursor::new(&file[..])).unwrap();
            while let Some(record) = record_iter.next_record(&mut perf_file).unwrap() {
                if let PerfFileRecord::EventRecord { record, .. } = record
                    && let EventRecord::Mmap2(m) = record.parse().unwrap()
                {
                    assert_ne!(m.pid, -1, "no kernel map");
                }
            }
            // The kernel's build-id is still listed: it names the kernel that was profiled.
            assert!(perf_file.build_ids().unwrap().contains_key(&DsoKey::Kernel));
        }
    }

    #[test]
    fn a_capture_without_kernel_frames_gets_the_running_kernels_map() {
        let mut w = window(0, 1_000, 100, "app", 900);
        w.stacks[0].locations.remove(0);
        w.stacks[0].kernel_frames = 0;
        let (file, written, kernel) = convert(
            std::slice::from_ref(&w),
            &Selection::default(),
            &this_kernel(),
        );
        assert_eq!(written.samples, 3);
        assert!(!kernel.has_frames && kernel.build_id.is_empty());
        assert_eq!(kernel.map, Ok((TEXT, TEXT + 0x10_0000)));
        assert_eq!(raw_records(&file)[0], (abi::RECORD_MMAP2, abi::MISC_KERNEL));
    }

    #[test]
    fn strings_and_build_id_entries_are_padded_as_perf_writes_them() {
        let mut s = Vec::new();
        put_header_string(&mut s, "vm");
        assert_eq!(s.len(), 4 + 64);
        assert_eq!(u32::from_ne_bytes(s[..4].try_into().unwrap()), 64);
        assert_eq!(&s[4..7], b"vm\0");
        let mut c = Vec::new();
        put_c_string(&mut c, "12345678", 8);
        assert_eq!(c.len(), 16, "room for the NUL");
        let mut b = Vec::new();
        put_build_id_event(&mut b, "/bin/x", &[1, 2, 3], false);
        assert_eq!(b.len(), 36 + 64);
        assert_eq!(u16::from_ne_bytes(b[6..8].try_into().unwrap()), 100);
        assert_eq!(b[12 + 20], 3, "size byte");
        assert_eq!(&b[36..43], b"/bin/x\0");
    }
}
