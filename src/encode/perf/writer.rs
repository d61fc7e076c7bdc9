//! The record stream: each window's selected samples, in time order, each right after what it
//! needs perf to know (its process image, thread name and mappings, announced once); then the
//! features and the final header (see the [module documentation](super)).

use std::{
    collections::BTreeSet,
    io::{Seek, SeekFrom, Write},
};

use anyhow::{Context as _, Result};
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    abi::{self, known_build_id},
    bytes::{Record, SampleId},
    events::PerfEvent,
    header,
    kernel::Kernel,
};
use crate::capture::{
    Detail, Event, SampleKind, Selection,
    format::{Meta, Module, ModuleKind, Window},
};

/// A FINISHED_ROUND at least this often, so that perf's sorting queue stays small.
pub(super) const ROUND_SAMPLES: u64 = 16_384;

/// What a conversion wrote.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// Samples of every event.
    pub samples: u64,
    /// Samples of each kind the file has an event for, in the order of its events.
    pub per_kind: Vec<(SampleKind, u64)>,
}

impl Written {
    /// Samples of `kind` written (none when the file has no event for it).
    pub fn of(&self, kind: SampleKind) -> u64 {
        self.per_kind
            .iter()
            .find(|&&(k, _)| k == kind)
            .map_or(0, |&(_, samples)| samples)
    }
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
    /// Nanoseconds between samples of the capture's sampling event (see [`PerfEvent::period`]).
    sampling_period: u64,
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
    /// Samples written of each of [`Self::events`].
    samples: Vec<u64>,
    since_round: u64,
    first_time: Option<u64>,
    last_time: u64,
}

impl<W: Write + Seek> PerfWriter<W> {
    /// Starts a perf.data file of on-CPU samples for a capture described by `meta` at the
    /// current position of `out` (which must be 0: offsets are absolute), with the kernel map
    /// `kernel` plans.
    pub fn new(out: W, meta: &Meta, kernel: &Kernel) -> Result<Self> {
        Self::for_event(out, meta, kernel, Event::OnCpu)
    }

    /// As [`Self::new`], for the samples of `event`: one perf event per kind it takes
    /// ([`PerfEvent::of`]; on-CPU samples as `cpu-clock`, off-CPU ones as `offcpu-time`).
    /// On-CPU alone is exactly the file [`Self::new`] writes.
    pub fn for_event(mut out: W, meta: &Meta, kernel: &Kernel, event: Event) -> Result<Self> {
        let events = PerfEvent::of(event);
        let start = header::start(meta, &events);
        out.write_all(&start).context("cannot write perf.data")?;
        let mut writer = Self {
            out,
            meta: meta.clone(),
            // Non-sample records carry the first event's id, as perf's own carry their
            // tracking event's.
            record: Record::new(events[0].id),
            samples: vec![0; events.len()],
            events,
            sampling_period: 1_000_000_000 / meta.frequency_hz.max(1),
            data_bytes: 0,
            images: FxHashSet::default(),
            pids: FxHashSet::default(),
            threads: FxHashMap::default(),
            mappings: FxHashSet::default(),
            build_ids: BTreeSet::new(),
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
        for sample in selection.samples(window) {
            // Samples of a kind the file has no event for are left out (the selection that
            // started the file decided its events).
            let Some(event) = self.events.iter().position(|e| e.kind == sample.kind()) else {
                continue;
            };
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
            self.sample(window, stack_index, id, event, sample.detail)?;
        }
        // What the kernel side lost, counted against the event it was lost from.
        for event in self.events.clone() {
            let lost = event.lost(window);
            if lost == 0 {
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
                event.id,
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

    /// A sample of `stack` of `window` with `detail`, of the file's `event`th event.
    fn sample(
        &mut self,
        window: &Window,
        stack: usize,
        id: SampleId,
        event: usize,
        detail: Detail,
    ) -> Result<()> {
        let stack = &window.stacks[stack];
        let kernel_frames = stack.kernel_frames as usize;
        let address = |l: u32| window.locations[l as usize].address;
        let misc = if kernel_frames > 0 {
            abi::MISC_KERNEL
        } else {
            abi::MISC_USER
        };
        self.record.begin(abi::RECORD_SAMPLE, misc);
        self.record.u64(self.events[event].id);
        self.record
            .u64(stack.locations.first().map_or(0, |&l| address(l)));
        self.record.u32(id.pid);
        self.record.u32(id.tid);
        self.record.u64(id.time);
        self.record.u32(id.cpu);
        self.record.u32(0);
        self.record
            .u64(PerfEvent::period(detail, self.sampling_period));
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
        self.samples[event] += 1;
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
        let sections = header::features(
            &self.meta,
            &self.events,
            &self.build_ids,
            self.first_time.map(|first| (first, self.last_time)),
        );
        let data_end = header::data_offset(self.events.len()) + self.data_bytes;
        self.out
            .write_all(&header::feature_sections(&sections, data_end))
            .context("cannot write perf.data")?;
        let features: Vec<u32> = sections.iter().map(|(bit, _)| *bit).collect();
        self.out
            .seek(SeekFrom::Start(0))
            .and_then(|_| {
                self.out.write_all(&header::file_header(
                    self.events.len(),
                    self.data_bytes,
                    &features,
                ))
            })
            .and_then(|_| self.out.seek(SeekFrom::End(0)))
            .and_then(|_| self.out.flush())
            .context("cannot write perf.data")?;
        Ok(Written {
            samples: self.samples.iter().sum(),
            per_kind: self
                .events
                .iter()
                .map(|e| e.kind)
                .zip(self.samples)
                .collect(),
        })
    }
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
