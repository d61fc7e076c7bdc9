//! Reading captures, defensively: files come from other machines, other versions, crashes and
//! disks that filled up, and may be made to attack the reader or what comes after it. Every
//! problem is an error naming it (exit code 3), never a panic, and no allocation is larger than
//! the bytes the file actually has.
//!
//! Stacks are stored compactly: a stack lists locations by index, a location lists functions
//! by index. Every output expands them (a folded line names every frame of its stack), so a few
//! bytes can stand for gigabytes of names. The reader refuses structures no recording makes
//! ([`MAX_STACK_LOCATIONS`], [`MAX_LINES_PER_LOCATION`], [`MAX_STRING_BYTES`]) and bounds what
//! the stacks read so far expand to by the bytes read so far ([`MAX_EXPANSION_FACTOR`],
//! [`EXPANSION_ALLOWANCE`]), so that what `report` and `push` build stays proportional to the
//! file.

use std::{
    fs::File,
    io::{BufReader, Read},
    path::Path,
};

use anyhow::{Context as _, Result};
use prost::Message as _;

use super::{
    FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_RECORD_LEN, RECORD_HEADER_LEN, RecordKind, SampleKind,
    format::{End, Meta, Window},
};
use crate::error::bad_input;

/// Most locations in one stack. A recording makes at most 127 kernel frames (the eBPF stack
/// limit) and 1,024 user frames (the in-kernel walk's limit; 512 from a stack copy).
pub const MAX_STACK_LOCATIONS: usize = 2048;

/// Most source lines (an address and the functions inlined there) of one location. Recordings
/// with `--inline` showed at most 20.
pub const MAX_LINES_PER_LOCATION: usize = 256;

/// Longest string (a name, a path, a command-line argument) or build-id. The longest recorded
/// names were C++ and Rust functions of about 10,000 bytes.
pub const MAX_STRING_BYTES: usize = 64 << 10;

/// How many times the bytes read so far the stacks read so far may expand to (see
/// [`window_expansion`]), beyond [`EXPANSION_ALLOWANCE`].
///
/// Measured on captures recorded here (2 CPUs, 25-30 s, system-wide during `cargo build
/// --release`, amprof's own reports, or a C++ program): 0.96 at 999 Hz with `-g fp`, 3.6 with
/// `-g dwarf`, 2.9 at 99 Hz with `-g dwarf --inline`, 6.3 to 9.4 at 999 Hz with `-g dwarf
/// --inline` (9.4 the highest running ratio, after a first 10 s window; 6.8 in one 60 s window;
/// 7.5 for a Rust program with `--inline`). Deep recursion through functions with long names
/// goes much further: a C++ template function of 1,870 bytes recursing 1 to 500 deep, 15 s at
/// 999 Hz, gave 304 with `-g fp` and 662 with `-g dwarf --inline`. 4096 leaves 6 times that.
pub const MAX_EXPANSION_FACTOR: u64 = 4096;

/// What stacks may expand to whatever the size of the capture, so that small captures are never
/// refused for their ratio.
pub const EXPANSION_ALLOWANCE: u64 = 64 << 20;

/// Most frames one stack expands to (its locations, each once per function inlined there).
/// Every sample of a stack carries them all into pprof and Datadog uploads, so this bounds what
/// one sample costs there. Recordings make at most 1,151 locations, with a few inlined frames
/// each on average (Rust code with `--inline`: up to about 8).
pub const MAX_STACK_FRAMES: u64 = 16384;

/// Most bytes of names one stack expands to (see [`MAX_STACK_FRAMES`]). The deepest recorded
/// case, 500 frames of a 1,870-byte C++ template function, expands to under 1 MiB.
pub const MAX_STACK_NAME_BYTES: u64 = 16 << 20;

/// How a capture ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completeness {
    /// It has its `End` record: the recording was finalized.
    Finalized,
    /// It stops cleanly after a window but has no `End` record: the recording was killed (or
    /// is still running).
    NotFinalized,
    /// Its last record is incomplete (the recording was killed while writing it); the record was
    /// dropped and every window before it read.
    Truncated { dropped_bytes: u64 },
}

impl Completeness {
    /// The note for standard error about a capture that was not finalized (`None` for one that
    /// was): every command that reads a capture says it the same way.
    pub fn note(self) -> Option<String> {
        match self {
            Completeness::Finalized => None,
            Completeness::NotFinalized => Some(
                "note: the capture was not finalized (recording killed, or still running); all its closed windows are read".into(),
            ),
            Completeness::Truncated { dropped_bytes } => Some(format!(
                "note: the capture ends in a partial record ({dropped_bytes} bytes, recording killed while writing); every complete window is read"
            )),
        }
    }
}

/// Reads a capture window by window, so that memory does not grow with its length.
pub struct CaptureReader<R = BufReader<File>> {
    input: R,
    /// Bytes of the input.
    len: u64,
    /// Bytes of the input not yet consumed.
    remaining: u64,
    /// What the stacks of the windows read so far expand to (see [`window_expansion`]).
    expansion: u64,
    meta: Meta,
    end: Option<End>,
    completeness: Option<Completeness>,
    windows_read: u64,
    last_index: Option<u64>,
}

impl CaptureReader {
    /// Opens the capture at `path` and reads its header and metadata.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| {
            let what = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            };
            bad_input(format!("cannot open capture {}: {what}", path.display()))
        })?;
        let metadata = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if metadata.is_dir() {
            return Err(bad_input(format!(
                "{} is a directory, not a capture",
                path.display()
            )));
        }
        Self::new(BufReader::new(file), metadata.len())
            .with_context(|| format!("reading capture {}", path.display()))
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads a capture of `len` bytes from `input`.
    pub fn new(mut input: R, len: u64) -> Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 {
            return Err(bad_input(if len == 0 {
                "the file is empty: not an amprof capture".to_string()
            } else {
                "the file is too short to be an amprof capture".to_string()
            }));
        }
        input
            .read_exact(&mut header)
            .map_err(|e| bad_input(format!("cannot read the header: {e}")))?;
        if &header[..8] != MAGIC {
            return Err(bad_input(if header.starts_with(b"PERFILE2") {
                "this is a perf.data file, not an amprof capture".to_string()
            } else {
                "not an amprof capture (wrong magic bytes)".to_string()
            }));
        }
        let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if version == 0 || version > FORMAT_VERSION {
            return Err(bad_input(format!(
                "capture format version {version} is not supported: this amprof reads versions up to {FORMAT_VERSION}; a newer amprof wrote it"
            )));
        }
        let mut reader = Self {
            input,
            len,
            remaining: len - HEADER_LEN as u64,
            expansion: 0,
            meta: Meta::default(),
            end: None,
            completeness: None,
            windows_read: 0,
            last_index: None,
        };
        match reader.next_record()? {
            Some((RecordKind::Meta, payload)) => {
                reader.meta = Meta::decode(payload.as_slice())
                    .map_err(|e| bad_input(format!("the metadata record is corrupt: {e}")))?;
            }
            Some((kind, _)) => {
                return Err(bad_input(format!(
                    "the first record is {kind:?}, not the metadata: the capture is corrupt"
                )));
            }
            None => {
                return Err(bad_input(
                    "the capture has no metadata: recording was killed before it started",
                ));
            }
        }
        if reader.meta.window_ns == 0 {
            return Err(bad_input(
                "the metadata says windows are 0 ns long: corrupt",
            ));
        }
        validate_meta(&reader.meta)?;
        Ok(reader)
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The `End` record, once [`Self::next_window`] has returned `None`.
    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    /// How the capture ends, once [`Self::next_window`] has returned `None`.
    pub fn completeness(&self) -> Option<Completeness> {
        self.completeness
    }

    /// The next window, or `None` after the last.
    pub fn next_window(&mut self) -> Result<Option<Window>> {
        if self.completeness.is_some() {
            return Ok(None);
        }
        match self.next_record()? {
            Some((RecordKind::Window, payload)) => {
                let window = Window::decode(payload.as_slice()).map_err(|e| {
                    bad_input(format!(
                        "window record {} is corrupt: {e}",
                        self.windows_read + 1
                    ))
                })?;
                let expansion = validate_window(&window)?;
                self.check_expansion(&window, expansion)?;
                if let Some(last) = self.last_index
                    && window.index <= last
                {
                    return Err(bad_input(format!(
                        "window {} follows window {last}: the capture is corrupt",
                        window.index
                    )));
                }
                self.last_index = Some(window.index);
                self.windows_read += 1;
                Ok(Some(window))
            }
            Some((RecordKind::End, payload)) => {
                let end = End::decode(payload.as_slice())
                    .map_err(|e| bad_input(format!("the end record is corrupt: {e}")))?;
                if end.reason.len() > MAX_STRING_BYTES {
                    return Err(bad_input(
                        "the end record is corrupt: its reason is longer than any recording writes",
                    ));
                }
                self.end = Some(end);
                if self.remaining != 0 {
                    return Err(bad_input(format!(
                        "{} bytes follow the end record: the capture is corrupt",
                        self.remaining
                    )));
                }
                self.completeness = Some(Completeness::Finalized);
                Ok(None)
            }
            Some((RecordKind::Meta, _)) => Err(bad_input(
                "a second metadata record: the capture is corrupt",
            )),
            None => Ok(None),
        }
    }

    /// Bytes of the input read so far.
    pub fn bytes_read(&self) -> u64 {
        self.len - self.remaining
    }

    /// Adds `expansion`, what `window`'s stacks expand to, to the running total, and refuses
    /// the capture once the total exceeds what its bytes read so far allow.
    fn check_expansion(&mut self, window: &Window, expansion: u64) -> Result<()> {
        self.expansion = self.expansion.saturating_add(expansion);
        let allowed = self
            .bytes_read()
            .saturating_mul(MAX_EXPANSION_FACTOR)
            .saturating_add(EXPANSION_ALLOWANCE);
        if self.expansion > allowed {
            return Err(bad_input(format!(
                "window {} is corrupt: its stacks and those before it expand to {} MiB of frame names, more than the {} MiB allowed for the {} KiB read so far",
                window.index,
                self.expansion >> 20,
                allowed >> 20,
                self.bytes_read().div_ceil(1024),
            )));
        }
        Ok(())
    }

    /// Reads every remaining window.
    pub fn read_all(&mut self) -> Result<Vec<Window>> {
        let mut windows = Vec::new();
        while let Some(window) = self.next_window()? {
            windows.push(window);
        }
        Ok(windows)
    }

    /// The next record, or `None` at the end of the input (setting `completeness`).
    fn next_record(&mut self) -> Result<Option<(RecordKind, Vec<u8>)>> {
        if self.remaining == 0 {
            self.completeness = Some(Completeness::NotFinalized);
            return Ok(None);
        }
        if self.remaining < RECORD_HEADER_LEN as u64 {
            return Ok(self.truncated(self.remaining));
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        self.input
            .read_exact(&mut header)
            .map_err(|e| bad_input(format!("cannot read a record: {e}")))?;
        self.remaining -= RECORD_HEADER_LEN as u64;
        let field = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (len, kind, crc) = (field(0), field(4), field(8));
        let Some(kind) = RecordKind::from_u32(kind) else {
            return Err(bad_input(format!(
                "unknown record kind {kind}: the capture is corrupt"
            )));
        };
        if len > MAX_RECORD_LEN {
            return Err(bad_input(format!(
                "a record claims {len} bytes, more than any capture holds: the capture is corrupt"
            )));
        }
        if u64::from(len) > self.remaining {
            // Only the last record can run past the end of the file: a cut-off write.
            return Ok(self.truncated(self.remaining + RECORD_HEADER_LEN as u64));
        }
        // `len` is at most the bytes left in the file, so this allocation is bounded by the file.
        let mut payload = vec![0u8; len as usize];
        self.input
            .read_exact(&mut payload)
            .map_err(|e| bad_input(format!("cannot read a record: {e}")))?;
        self.remaining -= u64::from(len);
        if crc32fast::hash(&payload) != crc {
            if self.remaining == 0 && kind != RecordKind::Meta {
                // A torn final write (power loss): treat like a cut-off record.
                return Ok(self.truncated(u64::from(len) + RECORD_HEADER_LEN as u64));
            }
            return Err(bad_input(format!(
                "a {kind:?} record fails its checksum: the capture is corrupt"
            )));
        }
        Ok(Some((kind, payload)))
    }

    fn truncated(&mut self, dropped_bytes: u64) -> Option<(RecordKind, Vec<u8>)> {
        self.remaining = 0;
        self.completeness = Some(Completeness::Truncated { dropped_bytes });
        None
    }
}

/// Checks the strings of the metadata against [`MAX_STRING_BYTES`].
fn validate_meta(meta: &Meta) -> Result<()> {
    let target = meta.target.as_ref();
    let too_long = [
        &meta.amprof_version,
        &meta.hostname,
        &meta.kernel_release,
        &meta.arch,
        &meta.event,
        &meta.call_graph,
    ]
    .into_iter()
    .chain(&meta.command_line)
    .chain(&meta.kernel_limits)
    .chain(target.into_iter().flat_map(|t| &t.command))
    .any(|s| s.len() > MAX_STRING_BYTES);
    if too_long {
        return Err(bad_input(
            "the metadata record is corrupt: a string longer than any recording writes",
        ));
    }
    Ok(())
}

/// Checks the cross-references of a window, so that code reading it may index without checks
/// failing at run time (every index in range, columns of equal length), and its sizes against
/// what recordings make. Returns what its stacks expand to ([`window_expansion`]).
fn validate_window(w: &Window) -> Result<u64> {
    let corrupt = |what: &str| Err(bad_input(format!("window {} is corrupt: {what}", w.index)));
    if w.end_ns < w.start_ns {
        return corrupt("it ends before it starts");
    }
    let strings = w
        .processes
        .iter()
        .flat_map(|p| [p.name.as_bytes(), p.exe.as_bytes()])
        .chain(w.threads.iter().map(|t| t.name.as_bytes()))
        .chain(
            w.modules
                .iter()
                .flat_map(|m| [m.path.as_bytes(), m.build_id.as_slice()]),
        )
        .chain(
            w.functions
                .iter()
                .flat_map(|f| [f.name.as_bytes(), f.file.as_bytes()]),
        );
    for string in strings {
        if string.len() > MAX_STRING_BYTES {
            return corrupt(&format!(
                "a name of {} bytes, more than any recording writes ({MAX_STRING_BYTES})",
                string.len()
            ));
        }
    }
    let (processes, modules, mappings, functions, locations, stacks) = (
        w.processes.len(),
        w.modules.len(),
        w.mappings.len(),
        w.functions.len(),
        w.locations.len(),
        w.stacks.len(),
    );
    if w.threads.iter().any(|t| t.process as usize >= processes) {
        return corrupt("a thread of an unknown process");
    }
    if w.mappings
        .iter()
        .any(|m| m.process as usize >= processes || m.module as usize >= modules || m.end < m.start)
    {
        return corrupt("a mapping of an unknown process or module");
    }
    for location in &w.locations {
        if location.mapping as usize > mappings || location.kernel_module as usize > modules {
            return corrupt("a location in an unknown mapping");
        }
        if location.lines.len() > MAX_LINES_PER_LOCATION {
            return corrupt(&format!(
                "a location of {} inlined frames, more than any recording makes ({MAX_LINES_PER_LOCATION})",
                location.lines.len()
            ));
        }
        if location
            .lines
            .iter()
            .any(|l| l.function as usize >= functions)
        {
            return corrupt("a location naming an unknown function");
        }
    }
    for stack in &w.stacks {
        if stack.process as usize >= processes
            || stack.kernel_frames as usize > stack.locations.len()
            || stack.locations.iter().any(|&l| l as usize >= locations)
        {
            return corrupt("a stack referring to unknown entries");
        }
        if stack.locations.len() > MAX_STACK_LOCATIONS {
            return corrupt(&format!(
                "a stack of {} frames, more than any recording makes ({MAX_STACK_LOCATIONS})",
                stack.locations.len()
            ));
        }
    }
    // Each kind's samples, through the kind's own adapter: columns that agree, samples of
    // known stacks inside the window, and stack totals that are what the samples add up to.
    for kind in SampleKind::ALL {
        let what = kind.descriptor().short_name;
        if !kind.is_consistent(w) {
            return corrupt(&format!(
                "{what} sample columns that disagree (lengths, stacks or details)"
            ));
        }
        let mut totals = vec![(0u64, 0u64); stacks];
        let mut last = w.start_ns;
        for sample in super::kind_samples(w, kind) {
            let (count, weight) = &mut totals[sample.stack_index as usize];
            *count += 1;
            *weight = weight.saturating_add(sample.detail.weight(1));
            last = sample.time_ns;
        }
        if w.stacks
            .iter()
            .zip(&totals)
            .any(|(stack, &totals)| kind.stack_totals(stack, 1) != totals)
        {
            return corrupt(&format!(
                "stack {what} totals that disagree with the samples"
            ));
        }
        let deltas = kind.rows(w).deltas;
        let sum = deltas.iter().try_fold(w.start_ns, |t, &d| t.checked_add(d));
        if sum.is_none_or(|_| last >= w.end_ns.max(w.start_ns + 1)) {
            return corrupt("a sample outside the window");
        }
    }
    window_expansion(w)
}

/// What the stacks of `w` expand to, in bytes, when every frame is named once per stack (as a
/// folded line does): for each stack, its process's name, then for each of its locations the
/// name of each function inlined there, or, for a location without any, its module's path and
/// an offset. Computed in one pass over the references (each location's share once), on a
/// window whose indices [`validate_window`] checked.
fn window_expansion(w: &Window) -> Result<u64> {
    let name_len = |s: &str| s.len() as u64 + 1;
    // Per location: (frames, bytes) it expands to.
    let per_location: Vec<(u64, u64)> = w
        .locations
        .iter()
        .map(|location| {
            if location.lines.is_empty() {
                // `module+0x0123456789abcdef`, or the address alone.
                let module = match (location.kernel_module, location.mapping) {
                    (0, 0) => None,
                    (0, m) => w
                        .mappings
                        .get(m as usize - 1)
                        .and_then(|m| w.modules.get(m.module as usize)),
                    (k, _) => w.modules.get(k as usize - 1),
                };
                return (1, module.map_or(0, |m| m.path.len() as u64) + 20);
            }
            let bytes = location
                .lines
                .iter()
                .map(|l| {
                    w.functions
                        .get(l.function as usize)
                        .map_or(1, |f| name_len(&f.name))
                })
                .sum();
            (location.lines.len() as u64, bytes)
        })
        .collect();
    let mut total = 0u64;
    for stack in &w.stacks {
        let process = w
            .processes
            .get(stack.process as usize)
            .map_or(1, |p| name_len(&p.name));
        let (frames, bytes) = stack
            .locations
            .iter()
            .map(|&l| per_location.get(l as usize).copied().unwrap_or((0, 0)))
            .fold((0u64, process), |(f, b), (lf, lb)| {
                (f.saturating_add(lf), b.saturating_add(lb))
            });
        if frames > MAX_STACK_FRAMES || bytes > MAX_STACK_NAME_BYTES {
            return Err(bad_input(format!(
                "window {} is corrupt: a stack expands to {frames} frames and {} KiB of names, more than any recording makes ({MAX_STACK_FRAMES} frames, {} KiB)",
                w.index,
                bytes >> 10,
                MAX_STACK_NAME_BYTES >> 10
            )));
        }
        total = total.saturating_add(bytes);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{
        encode_record, file_header,
        format::{Function, Line, Location, Mapping, Module, Process, Stack},
    };

    fn meta() -> Meta {
        Meta {
            window_ns: 1_000_000_000,
            frequency_hz: 99,
            hostname: "host".into(),
            ..Meta::default()
        }
    }

    /// A window with one process, one module and mapping, `functions` and `locations`, and a
    /// stack of `stack` (location indices) with one sample.
    fn window(functions: &[&str], locations: Vec<Location>, stack: Vec<u32>) -> Window {
        Window {
            index: 0,
            start_ns: 0,
            end_ns: 1_000_000_000,
            processes: vec![Process {
                pid: 1,
                name: "proc".into(),
                ..Process::default()
            }],
            modules: vec![Module {
                path: "/lib/libx.so".into(),
                ..Module::default()
            }],
            mappings: vec![Mapping {
                process: 0,
                start: 0,
                end: 0x1000,
                file_offset: 0,
                module: 0,
            }],
            functions: functions
                .iter()
                .map(|name| Function {
                    name: name.to_string(),
                    file: String::new(),
                })
                .collect(),
            locations,
            stacks: vec![Stack {
                process: 0,
                locations: stack,
                count: 1,
                ..Stack::default()
            }],
            sample_time_deltas: vec![1],
            sample_tids: vec![1],
            sample_cpus: vec![0],
            sample_stacks: vec![0],
            ..Window::default()
        }
    }

    fn location(functions: &[u32]) -> Location {
        Location {
            address: 0x10,
            mapping: 1,
            kernel_module: 0,
            lines: functions
                .iter()
                .map(|&function| Line { function, line: 1 })
                .collect(),
        }
    }

    fn capture(meta: &Meta, windows: &[Window]) -> Vec<u8> {
        let mut bytes = file_header().to_vec();
        bytes.extend(encode_record(RecordKind::Meta, meta));
        for w in windows {
            bytes.extend(encode_record(RecordKind::Window, w));
        }
        bytes
    }

    fn read(bytes: &[u8]) -> Result<Vec<Window>> {
        CaptureReader::new(bytes, bytes.len() as u64)?.read_all()
    }

    fn error(bytes: &[u8]) -> String {
        let error = read(bytes).expect_err("refused");
        assert_eq!(crate::error::exit_of(&error), crate::error::Exit::BadInput);
        error.to_string()
    }

    #[test]
    fn expansion_counts_every_frame_of_every_stack() {
        // proc (5) + [ab (3) + c (2)] + [unsymbolized: /lib/libx.so (12) + 20] + [ab (3)].
        let w = window(
            &["ab", "c"],
            vec![location(&[0, 1]), location(&[]), location(&[0])],
            vec![0, 1, 2],
        );
        assert_eq!(validate_window(&w).unwrap(), 5 + 5 + 32 + 3);
    }

    #[test]
    fn structures_no_recording_makes_are_refused() {
        let ok = window(&["f"], vec![location(&[0])], vec![0; MAX_STACK_LOCATIONS]);
        assert_eq!(read(&capture(&meta(), &[ok])).unwrap().len(), 1);

        let deep = window(
            &["f"],
            vec![location(&[0])],
            vec![0; MAX_STACK_LOCATIONS + 1],
        );
        assert!(error(&capture(&meta(), &[deep])).contains("a stack of 2049 frames"));

        let inlined = window(
            &["f"],
            vec![location(&[0; MAX_LINES_PER_LOCATION + 1])],
            vec![0],
        );
        assert!(error(&capture(&meta(), &[inlined])).contains("257 inlined frames"));

        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let named = window(&[&long], vec![location(&[0])], vec![0]);
        assert!(error(&capture(&meta(), &[named])).contains("a name of 65537 bytes"));
        let mut process = window(&["f"], vec![location(&[0])], vec![0]);
        process.processes[0].exe = long.clone();
        assert!(error(&capture(&meta(), &[process])).contains("a name of"));
        let host = Meta {
            hostname: long.clone(),
            ..meta()
        };
        assert!(error(&capture(&host, &[])).contains("metadata record is corrupt"));
        let command = Meta {
            command_line: vec!["amprof".into(), long.clone()],
            ..meta()
        };
        assert!(error(&capture(&command, &[])).contains("metadata record is corrupt"));
        let mut bytes = capture(&meta(), &[]);
        bytes.extend(encode_record(
            RecordKind::End,
            &End {
                reason: long,
                ..End::default()
            },
        ));
        assert!(error(&bytes).contains("end record is corrupt"));
    }

    /// Two windows, each within what its own bytes allow (and the allowance): together, not.
    #[test]
    fn expansion_is_bounded_by_the_bytes_read_so_far() {
        use crate::capture::{HEADER_LEN, RECORD_HEADER_LEN};
        let name = "n".repeat(60_000);
        // `stacks` stacks of 256 references to a 60 KB name: each within the per-stack bound
        // (15 MiB of names), together far beyond the allowance.
        let depth = 256;
        let big = |index: u64, stacks: u32| {
            let mut w = window(&[&name], vec![location(&[0])], vec![0; depth]);
            w.index = index;
            for n in 1..stacks {
                w.stacks.push(Stack {
                    locations: vec![0; depth],
                    ..w.stacks[0].clone()
                });
                w.sample_time_deltas.push(1);
                w.sample_tids.push(1);
                w.sample_cpus.push(0);
                w.sample_stacks.push(n);
            }
            w
        };
        let prefix = (HEADER_LEN + RECORD_HEADER_LEN + meta().encoded_len()) as u64;
        let allowed = |read: u64| read * MAX_EXPANSION_FACTOR + EXPANSION_ALLOWANCE;
        let fits = |w: &Window| {
            let record = (RECORD_HEADER_LEN + w.encoded_len()) as u64;
            validate_window(w).unwrap() <= allowed(prefix + record)
        };
        // The most stacks the window's own bytes allow.
        let stacks = (1..64).rev().find(|&n| fits(&big(0, n))).unwrap();
        assert!(stacks > 1 && stacks < 63, "{stacks}");
        let (first, second) = (big(0, stacks), big(1, stacks));
        assert!(validate_window(&first).unwrap() > EXPANSION_ALLOWANCE);
        assert_eq!(
            read(&capture(&meta(), std::slice::from_ref(&first)))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            read(&capture(&meta(), std::slice::from_ref(&second)))
                .unwrap()
                .len(),
            1
        );
        let message = error(&capture(&meta(), &[first, second]));
        assert!(
            message.starts_with("window 1 is corrupt: its stacks and those before it expand to"),
            "{message}"
        );
        assert!(!fits(&big(0, stacks + 1)));
    }

    /// A stack past the per-stack bounds is refused on its own, whatever the window's size.
    #[test]
    fn one_stack_cannot_expand_past_the_per_stack_bounds() {
        let long = "n".repeat(60_000);
        let deep = window(&["f"], vec![location(&[0; 16])], vec![0; 1025]);
        assert!(
            validate_window(&deep)
                .unwrap_err()
                .to_string()
                .contains("16400 frames")
        );
        // The deepest recording: 1,151 locations of 8 inlined frames each.
        let deepest = window(&["f"], vec![location(&[0; 8])], vec![0; 1151]);
        assert!(validate_window(&deepest).is_ok());
        let wide = window(&[&long], vec![location(&[0])], vec![0; 300]);
        assert!(
            validate_window(&wide)
                .unwrap_err()
                .to_string()
                .contains("KiB of names")
        );
        let fine = window(&[&long], vec![location(&[0])], vec![0; 256]);
        assert!(validate_window(&fine).is_ok());
    }
}
