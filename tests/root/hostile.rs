//! Hostile processes (issue 12): real processes, run as `nobody`, each doing one hostile thing
//! to whoever profiles them, against real `amprof record` runs. Every recording must end on
//! time (a hard timeout kills amprof and fails the test as "hung"), exit 0, stay under a peak
//! RSS bound (`wait4`'s `ru_maxrss`), and leave a capture that `amprof report` reads, every
//! window of it. Scenarios about names also check the bytes of what reports print.
//!
//! The processes are built from tests/fixtures/hostile/ into a scratch directory under /tmp
//! that `nobody` can read (CI clones into a 0700 directory). The tests run one at a time: a
//! system-wide recording sees every hostile process alive, and a failure must point at its own
//! scenario. These tests load eBPF and need root.

use std::{
    collections::HashSet,
    ffi::{OsStr, OsString},
    io::{BufRead as _, BufReader, Read as _},
    os::unix::{
        ffi::OsStrExt as _,
        fs::{PermissionsExt as _, chown, symlink},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::util::*;

/// uid and gid of `nobody` / `nogroup`.
const NOBODY: u32 = 65534;
/// A recording or report still running after this long has hung.
const HUNG_AFTER: Duration = Duration::from_secs(30);
/// amprof is killed when its resident memory passes this, whatever the test's bound: a runaway
/// read (of /dev/zero, say) must not take the machine down with it.
const RSS_KILL_MIB: u64 = 1536;
/// How long each recording lasts.
const DURATION: &str = "1s";
/// Bounds on amprof's peak RSS in MiB: a system-wide recording symbolizes whatever the machine
/// runs (a busy CI runner's compilers included: 60 to 310 MiB seen for a debug build on a
/// machine shared with rustc); one or two hostile processes alone need little (30 to 40 MiB).
#[derive(Clone, Copy)]
struct RssBound {
    system: u64,
    pids: u64,
}

/// The bound of every scenario but the ones that say otherwise.
const RSS: RssBound = RssBound {
    system: 512,
    pids: 128,
};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A directory under /tmp for one test's hostile files, owned by `nobody` and readable by all;
/// removed (FIFOs, sockets, big files and all) when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        // /tmp itself, not $TMPDIR, which may be private to root.
        let dir = Path::new("/tmp").join(format!("amprof-hostile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
        Scratch(dir)
    }

    fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file of tests/fixtures/hostile/.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile")
        .join(name)
}

/// Runs `program` with `args`, failing the test unless it succeeds.
fn run_tool(program: &str, args: &[&OsStr]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compiles with `cc` into `output`, readable and executable by all.
fn cc(output: &Path, args: &[&OsStr]) -> PathBuf {
    let mut all: Vec<&OsStr> = args.to_vec();
    all.extend(["-o".as_ref(), output.as_os_str()]);
    run_tool("cc", &all);
    std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o755)).unwrap();
    output.to_path_buf()
}

/// tests/fixtures/hostile/hostile.c, built into `dir`.
fn build_hostile(dir: &Scratch) -> PathBuf {
    let source = fixture("hostile.c");
    cc(
        &dir.join("hostile"),
        &[
            "-O1".as_ref(),
            "-g".as_ref(),
            "-pthread".as_ref(),
            source.as_os_str(),
            "-ldl".as_ref(),
        ],
    )
}

/// tests/fixtures/hostile/spinlib.c as the shared library `dir/NAME`, with DWARF.
fn build_spinlib(dir: &Scratch, name: &str) -> PathBuf {
    let source = fixture("spinlib.c");
    cc(
        &dir.join(name),
        &[
            "-shared".as_ref(),
            "-fPIC".as_ref(),
            "-O1".as_ref(),
            "-g".as_ref(),
            source.as_os_str(),
        ],
    )
}

/// A process started as `nobody` in its own process group, killed with its whole group (and
/// its perf map removed) when dropped.
struct Hostile {
    child: Child,
    pid: u32,
    /// The words after `ready` on the line it printed once in place.
    ready: Vec<String>,
    killed: bool,
}

impl Hostile {
    /// Starts `program args...` as nobody in `dir` and waits for its `ready` line.
    fn spawn(dir: &Scratch, program: &Path, args: &[&OsStr]) -> Self {
        let mut child = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(program)
            .args(args)
            .current_dir(&dir.0)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("setpriv runs (util-linux)");
        let pid = child.id();
        let (lines, received) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            // Reads to the end, so that the process never blocks on a full pipe.
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let _ = lines.send(String::from_utf8_lossy(&line).into_owned());
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        let mut hostile = Hostile {
            child,
            pid,
            ready: Vec::new(),
            killed: false,
        };
        let line = received.recv_timeout(Duration::from_secs(20));
        match line {
            Ok(line) if line.starts_with("ready ") => {
                hostile.ready = line.split_whitespace().skip(1).map(String::from).collect();
            }
            other => {
                hostile.kill();
                let stderr = stderr.join().unwrap_or_default();
                panic!(
                    "hostile process {program:?} {args:?} did not get ready: {other:?}; stderr: {}",
                    String::from_utf8_lossy(&stderr)
                );
            }
        }
        hostile
    }

    /// Kills the process group (once: the group id may be reused once reaped).
    fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let map = perf_map(self.pid);
        match std::fs::symlink_metadata(&map) {
            Ok(meta) if meta.is_dir() => {
                let _ = std::fs::remove_dir(&map);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&map);
            }
            Err(_) => {}
        }
    }

    /// The `i`th word of the ready line, a hex number.
    fn hex(&self, i: usize) -> u64 {
        u64::from_str_radix(&self.ready[i], 16).unwrap()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.kill();
    }
}

fn perf_map(pid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{pid}.map"))
}

/// How a bounded run of amprof ended.
struct Finished {
    what: String,
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Peak resident set size, from `wait4`.
    max_rss_kib: u64,
    seconds: f64,
}

impl Finished {
    fn describe(&self) -> String {
        format!(
            "exit code {:?}, signal {:?}, after {:.1} s, peak RSS {} MiB; stderr: {}",
            self.code,
            self.signal,
            self.seconds,
            self.max_rss_kib / 1024,
            String::from_utf8_lossy(&self.stderr)
        )
    }

    fn assert_success(&self) {
        assert!(
            self.code == Some(0),
            "{} failed: {}",
            self.what,
            self.describe()
        );
    }
}

/// A running amprof.
struct Running {
    pid: i32,
    start: Instant,
    what: String,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    _child: Child,
}

fn read_all(mut from: impl std::io::Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

impl Running {
    fn start(mut command: Command, what: &str) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Running {
            pid: child.id() as i32,
            start: Instant::now(),
            what: what.to_string(),
            stdout: read_all(child.stdout.take().unwrap()),
            stderr: read_all(child.stderr.take().unwrap()),
            _child: child,
        }
    }

    fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.pid, signal) };
    }

    /// Waits for the exit, watching the peak RSS (`VmHWM`, polled: `wait4`'s `ru_maxrss`
    /// would also count the memory of this test process, which the child had before its exec).
    /// Past `timeout`, or past [`RSS_KILL_MIB`] of resident memory, kills amprof and fails
    /// the test.
    fn finish(self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let mut killed_for = None;
        let mut peak_kib = 0;
        loop {
            let reaped = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped == self.pid {
                break;
            }
            assert!(reaped == 0, "wait4: {}", std::io::Error::last_os_error());
            peak_kib = peak_kib.max(status_kib(self.pid, "VmHWM:"));
            let rss = status_kib(self.pid, "VmRSS:") / 1024;
            let reason = if Instant::now() > deadline {
                Some(format!("hung: still running after {} s", timeout.as_secs()))
            } else if rss > RSS_KILL_MIB {
                Some(format!(
                    "resident memory at {rss} MiB, over {RSS_KILL_MIB} MiB"
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                unsafe { libc::wait4(self.pid, &mut status, 0, &mut usage) };
                killed_for = Some(reason);
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let finished = Finished {
            what: self.what,
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
            max_rss_kib: peak_kib,
            seconds: self.start.elapsed().as_secs_f64(),
        };
        if let Some(reason) = killed_for {
            panic!(
                "{} {reason}; killed ({})",
                finished.what,
                finished.describe()
            );
        }
        finished
    }
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`), 0 once the process is gone.
fn status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
}

fn run_bounded(command: Command, what: &str) -> Finished {
    Running::start(command, what).finish(HUNG_AFTER)
}

/// What to record.
#[derive(Clone, Copy)]
enum Target<'a> {
    System,
    Pids(&'a [u32]),
}

/// One finished recording and what `report` made of it.
struct Recording {
    label: String,
    capture: PathBuf,
    /// `amprof report` (the summary for terminals).
    summary: Vec<u8>,
    json: serde_json::Value,
}

/// Records `target` with `-g call_graph` for [`DURATION`] and checks the recording ended on
/// time, exited 0, peaked under its bound of `rss` and left a capture `report` reads.
fn record(name: &str, call_graph: &str, target: Target, rss: RssBound) -> Recording {
    let rss_mib = match target {
        Target::System => rss.system,
        Target::Pids(_) => rss.pids,
    };
    let label = format!(
        "{name} (-g {call_graph}, {})",
        match target {
            Target::System => "system-wide".to_string(),
            Target::Pids(pids) => format!("-p {pids:?}"),
        }
    );
    let dir = scratch(&format!(
        "hostile-{name}-{call_graph}-{}",
        match target {
            Target::System => "system",
            Target::Pids(_) => "pid",
        }
    ));
    let capture = dir.join("capture.data");
    let mut command = amprof();
    command
        .args(["record", "-q", "-d", DURATION, "-g", call_graph, "-o"])
        .arg(&capture);
    if let Target::Pids(pids) = target {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        command.args(["-p", &pids.join(",")]);
    }
    let finished = run_bounded(command, &format!("amprof record of {label}"));
    finished.assert_success();
    let peak = finished.max_rss_kib / 1024;
    assert!(
        peak <= rss_mib,
        "{label}: peak RSS {peak} MiB, over the bound of {rss_mib} MiB"
    );
    eprintln!("{label}: {:.1} s, peak RSS {peak} MiB", finished.seconds);
    let (summary, json) = check_readable(&capture, &label);
    Recording {
        label,
        capture,
        summary,
        json,
    }
}

/// `report` and `report --json` read the capture, finalized, every window of it (as many as the
/// library's reader finds). Returns the summary and the JSON.
fn check_readable(capture: &Path, label: &str) -> (Vec<u8>, serde_json::Value) {
    let report = |args: &[&str]| {
        let mut command = amprof();
        command.arg("report").args(args).arg("-i").arg(capture);
        let finished = run_bounded(command, &format!("amprof report {args:?} of {label}"));
        finished.assert_success();
        finished.stdout
    };
    let summary = report(&[]);
    let json: serde_json::Value =
        serde_json::from_slice(&report(&["--json", "--top", "200"])).expect("JSON");
    assert_eq!(json["capture"]["state"], "finalized", "{label}");
    let mut reader = amprof::capture::CaptureReader::open(capture).unwrap();
    let mut windows = 0;
    while reader.next_window().unwrap().is_some() {
        windows += 1;
    }
    assert!(windows > 0, "{label}: no window");
    assert_eq!(
        json["windows"].as_array().unwrap().len(),
        windows,
        "{label}: report shows every window"
    );
    (summary, json)
}

/// The recordings of a scenario: system-wide and of `pids`, in both unwinding modes.
fn record_all(name: &str, pids: &[u32], rss: RssBound) -> Vec<Recording> {
    let mut recordings = Vec::new();
    for call_graph in ["dwarf", "fp"] {
        for target in [Target::System, Target::Pids(pids)] {
            recordings.push(record(name, call_graph, target, rss));
        }
    }
    recordings
}

/// Names of the functions with self samples in the processes `pids` of `recording`.
fn self_functions(recording: &Recording, pids: &[u32]) -> Vec<String> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut command = amprof();
    command
        .args([
            "report",
            "--json",
            "--top",
            "200",
            "-p",
            &pids.join(","),
            "-i",
        ])
        .arg(&recording.capture);
    let finished = run_bounded(command, &format!("report --json -p of {}", recording.label));
    finished.assert_success();
    let json: serde_json::Value = serde_json::from_slice(&finished.stdout).unwrap();
    json["top_self"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap().to_string())
        .collect()
}

/// Samples of the processes `pids` in `recording`.
fn samples_of(recording: &Recording, pids: &[u32]) -> u64 {
    recording.json["top_processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| pids.contains(&(p["pid"].as_u64().unwrap() as u32)))
        .map(|p| p["samples"].as_u64().unwrap())
        .sum()
}

/// Fails unless `pids` were sampled in `recording`: else the scenario proved nothing.
fn assert_sampled(recording: &Recording, pids: &[u32]) {
    assert!(
        samples_of(recording, pids) > 0,
        "{}: the hostile processes {pids:?} were never sampled",
        recording.label
    );
}

// ---------------------------------------------------------------------------------------------
// ELF surgery
// ---------------------------------------------------------------------------------------------

/// A field of an ELF64 section header.
#[derive(Clone, Copy, Debug)]
enum SectionField {
    Offset,
    Size,
}

/// Sets `field` of the section header named `section` in the little-endian ELF64 file `path`.
fn patch_section_header(path: &Path, section: &str, field: SectionField, value: u64) {
    let mut elf = std::fs::read(path).unwrap();
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "a little-endian ELF64 file");
    let shoff = u64_at(&elf, 0x28) as usize;
    let shentsize = u16_at(&elf, 0x3a) as usize;
    let shnum = u16_at(&elf, 0x3c) as usize;
    let shstrndx = u16_at(&elf, 0x3e) as usize;
    assert!(shentsize >= 64 && shoff + shnum * shentsize <= elf.len());
    let header = |i: usize| shoff + i * shentsize;
    let names = u64_at(&elf, header(shstrndx) + 24) as usize;
    let name_of = |elf: &[u8], i: usize| -> Vec<u8> {
        let start = names + u32_at(elf, header(i)) as usize;
        let len = elf[start..].iter().position(|&b| b == 0).unwrap();
        elf[start..start + len].to_vec()
    };
    let index = (0..shnum)
        .find(|&i| name_of(&elf, i) == section.as_bytes())
        .unwrap_or_else(|| panic!("no section {section} in {}", path.display()));
    let at = header(index)
        + match field {
            SectionField::Offset => 24,
            SectionField::Size => 32,
        };
    elf[at..at + 8].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, elf).unwrap();
}

/// Replaces `path`'s section `name` with `contents` (objcopy).
fn replace_section(dir: &Scratch, path: &Path, name: &str, contents: &[u8]) {
    let file = dir.join(format!("section{name}"));
    std::fs::write(&file, contents).unwrap();
    let remove = format!("--remove-section={name}");
    let add = format!("--add-section={name}={}", file.display());
    run_tool(
        "objcopy",
        &[remove.as_ref(), add.as_ref(), path.as_os_str()],
    );
    std::fs::remove_file(file).unwrap();
}

/// `.gnu_debuglink` contents: the NUL-terminated name, padded to 4 bytes, then the CRC32 (LE).
fn debuglink(name: &[u8], crc: u32) -> Vec<u8> {
    let mut section = name.to_vec();
    section.push(0);
    section.resize(section.len().next_multiple_of(4), 0);
    section.extend(crc.to_le_bytes());
    section
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
    chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 1. Unwind tables
// ---------------------------------------------------------------------------------------------

/// Section headers are the file's word, not the truth: libraries whose `.eh_frame` or
/// `.eh_frame_hdr` header puts the section (its size, or its offset) past the end of the file,
/// or so far that offset plus size overflows, loaded by one process that spins in each (the
/// dynamic loader reads program headers only), neither crash amprof nor stop it.
#[test]
fn unwind_table_section_headers_past_the_end_of_the_file() {
    let _alone = require_root_alone();
    let dir = Scratch::new("bad-headers");
    let hostile = build_hostile(&dir);
    let original = build_spinlib(&dir, "libspin.so");
    let len = std::fs::metadata(&original).unwrap().len();
    let mut libs: Vec<OsString> = Vec::new();
    for (section, field, value) in [
        (".eh_frame", SectionField::Size, len + (16 << 20)),
        (".eh_frame", SectionField::Offset, len + 4096),
        (".eh_frame_hdr", SectionField::Size, len + (16 << 20)),
        (".eh_frame_hdr", SectionField::Offset, len + 4096),
        // Offset plus size overflows.
        (".eh_frame", SectionField::Offset, u64::MAX - 16),
    ] {
        let lib = dir.join(format!("lib{}-{field:?}-{value:x}.so", &section[1..]));
        std::fs::copy(&original, &lib).unwrap();
        patch_section_header(&lib, section, field, value);
        libs.push(lib.into_os_string());
    }
    let mut args: Vec<&OsStr> = vec!["spin-lib".as_ref(), "hostile_spin".as_ref()];
    args.extend(libs.iter().map(OsString::as_os_str));
    let process = Hostile::spawn(&dir, &hostile, &args);
    for recording in record_all("bad-headers", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. FIFOs where files are expected
// ---------------------------------------------------------------------------------------------

/// `/tmp/perf-PID.map` is a FIFO nobody writes to: opening it for reading blocks forever. The
/// process runs code in anonymous memory, so amprof looks its addresses up in the perf map.
#[test]
fn a_perf_map_that_is_a_fifo() {
    let _alone = require_root_alone();
    let dir = Scratch::new("fifo-perf-map");
    let hostile = build_hostile(&dir);
    let process = Hostile::spawn(&dir, &hostile, &["jit".as_ref(), "fifo".as_ref()]);
    for recording in record_all("fifo-perf-map", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

/// A FIFO named `LIB.dwp` (where split DWARF packages live) beside a spinning library that has
/// DWARF.
#[test]
fn a_dwarf_package_that_is_a_fifo() {
    let _alone = require_root_alone();
    let dir = Scratch::new("fifo-dwp");
    let hostile = build_hostile(&dir);
    let lib = build_spinlib(&dir, "libspin.so");
    mkfifo(&dir.join("libspin.so.dwp"));
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &[
            "spin-lib".as_ref(),
            "hostile_spin".as_ref(),
            lib.as_os_str(),
        ],
    );
    for recording in record_all("fifo-dwp", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

/// Splits `lib`'s debug info into `lib.debug` and links it with `.gnu_debuglink` (objcopy
/// stores the basename and the CRC of the debug file), then strips `lib`.
fn link_debug_file(lib: &Path) -> PathBuf {
    let debug = PathBuf::from(format!("{}.debug", lib.display()));
    run_tool(
        "objcopy",
        &[
            "--only-keep-debug".as_ref(),
            lib.as_os_str(),
            debug.as_os_str(),
        ],
    );
    run_tool("strip", &["--strip-debug".as_ref(), lib.as_os_str()]);
    let link = format!("--add-gnu-debuglink={}", debug.display());
    run_tool("objcopy", &[link.as_ref(), lib.as_os_str()]);
    debug
}

/// A library whose `.gnu_debuglink` names a file in its own directory that is a FIFO (the
/// debug file was made, linked, then replaced by a FIFO).
#[test]
fn a_debug_link_to_a_fifo_beside_the_library() {
    let _alone = require_root_alone();
    let dir = Scratch::new("fifo-debuglink");
    let hostile = build_hostile(&dir);
    let lib = build_spinlib(&dir, "libspin.so");
    let debug = link_debug_file(&lib);
    std::fs::remove_file(&debug).unwrap();
    mkfifo(&debug);
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &[
            "spin-lib".as_ref(),
            "hostile_spin".as_ref(),
            lib.as_os_str(),
        ],
    );
    for recording in record_all("fifo-debuglink", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

/// A `.gnu_debuglink` holding an absolute path to a FIFO in another directory.
#[test]
fn an_absolute_debug_link_to_a_fifo_elsewhere() {
    let _alone = require_root_alone();
    let dir = Scratch::new("fifo-debuglink-abs");
    let elsewhere = Scratch::new("fifo-debuglink-abs-elsewhere");
    let hostile = build_hostile(&dir);
    let lib = build_spinlib(&dir, "libspin.so");
    let fifo = elsewhere.join("debug-fifo");
    mkfifo(&fifo);
    replace_section(
        &dir,
        &lib,
        ".gnu_debuglink",
        &debuglink(fifo.as_os_str().as_bytes(), crc32fast::hash(b"")),
    );
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &[
            "spin-lib".as_ref(),
            "hostile_spin".as_ref(),
            lib.as_os_str(),
        ],
    );
    for recording in record_all("fifo-debuglink-abs", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

/// A `.gnu_debugaltlink` (dwz's supplementary debug file) holding an absolute path to a FIFO.
#[test]
fn a_debug_altlink_to_a_fifo() {
    let _alone = require_root_alone();
    let dir = Scratch::new("fifo-altlink");
    let elsewhere = Scratch::new("fifo-altlink-elsewhere");
    let hostile = build_hostile(&dir);
    let lib = build_spinlib(&dir, "libspin.so");
    let fifo = elsewhere.join("dwz-fifo");
    mkfifo(&fifo);
    let mut section = fifo.as_os_str().as_bytes().to_vec();
    section.push(0);
    section.extend([0xab; 20]); // the supplementary file's build-id
    replace_section(&dir, &lib, ".gnu_debugaltlink", &section);
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &[
            "spin-lib".as_ref(),
            "hostile_spin".as_ref(),
            lib.as_os_str(),
        ],
    );
    for recording in record_all("fifo-altlink", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Other non-files
// ---------------------------------------------------------------------------------------------

/// `/tmp/perf-PID.map` is a directory for one process and a listening unix socket for another.
#[test]
fn perf_maps_that_are_a_directory_or_a_socket() {
    let _alone = require_root_alone();
    let dir = Scratch::new("perf-map-dir-socket");
    let hostile = build_hostile(&dir);
    let processes: Vec<Hostile> = ["dir", "socket"]
        .into_iter()
        .map(|mode| Hostile::spawn(&dir, &hostile, &["jit".as_ref(), mode.as_ref()]))
        .collect();
    let pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
    for recording in record_all("perf-map-dir-socket", &pids, RSS) {
        assert_sampled(&recording, &pids);
    }
}

/// `/tmp/perf-PID.map` is a symlink to `/dev/zero`: an endless file of valid (NUL) bytes.
#[test]
fn a_perf_map_symlinked_to_dev_zero() {
    let _alone = require_root_alone();
    let dir = Scratch::new("perf-map-dev-zero");
    let hostile = build_hostile(&dir);
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &["jit".as_ref(), "symlink".as_ref(), "/dev/zero".as_ref()],
    );
    for recording in record_all("perf-map-dev-zero", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

/// `/tmp/perf-PID.map` is the process's symlink to a file only root can read (mode 0600 in a
/// 0700 directory), whose lines name the process's own JIT code with a marker: amprof, running
/// as root, must not disclose it. The marker appears nowhere in the capture or any report.
/// (With `fs.protected_symlinks = 1` the kernel already refuses root to follow another user's
/// symlink in sticky /tmp, and this passes whatever amprof does.)
#[test]
fn a_perf_map_symlinked_to_a_root_only_file() {
    let _alone = require_root_alone();
    let dir = Scratch::new("perf-map-secret");
    let secret_dir = Scratch::new("perf-map-secret-root-only");
    chown(&secret_dir.0, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&secret_dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = secret_dir.join("secret.map");
    let hostile = build_hostile(&dir);
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &["jit".as_ref(), "symlink".as_ref(), secret.as_os_str()],
    );
    let marker = format!(
        "root_only_secret_{}_{}",
        process.pid,
        std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .unwrap()
            .as_nanos()
    );
    let size = process.hex(4);
    let lines: String = (1..=3)
        .map(|i| format!("{:x} {size:x} {marker}\n", process.hex(i)))
        .collect();
    std::fs::write(&secret, lines).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    for recording in record_all("perf-map-secret", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
        assert_not_disclosed(&recording, marker.as_bytes());
    }
}

/// Fails if `needle` is in the capture file of `recording` or in any of its reports.
fn assert_not_disclosed(recording: &Recording, needle: &[u8]) {
    let contains = |haystack: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    let capture = std::fs::read(&recording.capture).unwrap();
    let mut outputs = vec![
        ("the capture file", capture),
        ("the summary", recording.summary.clone()),
        ("the JSON summary", recording.json.to_string().into_bytes()),
    ];
    for format in ["folded", "pprof", "perf"] {
        let out = recording.capture.with_extension(format);
        let mut command = amprof();
        command
            .args(["report", "-q", "--format", format, "-o"])
            .arg(&out)
            .arg("-i")
            .arg(&recording.capture);
        run_bounded(command, &format!("report --format {format}")).assert_success();
        let mut bytes = std::fs::read(&out).unwrap();
        if format == "pprof" {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(bytes.as_slice())
                .read_to_end(&mut plain)
                .unwrap();
            bytes = plain;
        }
        outputs.push((format, bytes));
    }
    for (what, bytes) in outputs {
        assert!(
            !contains(&bytes),
            "{}: {what} holds {:?}",
            recording.label,
            String::from_utf8_lossy(needle)
        );
    }
}

/// Libraries whose `LIB.dwp` is a symlink to a device: `/dev/tty` for one, `/dev/null` for
/// the other. Their own symbols still name their frames.
#[test]
fn dwarf_packages_that_are_devices() {
    let _alone = require_root_alone();
    let dir = Scratch::new("dwp-devices");
    let hostile = build_hostile(&dir);
    let mut libs = Vec::new();
    for (name, device) in [("libtty.so", "/dev/tty"), ("libnull.so", "/dev/null")] {
        let lib = build_spinlib(&dir, name);
        let dwp = dir.join(format!("{name}.dwp"));
        symlink(device, &dwp).unwrap();
        std::os::unix::fs::lchown(&dwp, Some(NOBODY), Some(NOBODY)).unwrap();
        libs.push(lib.into_os_string());
    }
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &[
            "spin-lib".as_ref(),
            "hostile_spin".as_ref(),
            libs[0].as_os_str(),
            libs[1].as_os_str(),
        ],
    );
    for recording in record_all("dwp-devices", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
        assert_names_shown(&recording, &[process.pid], &["hostile_leaf"]);
    }
}

/// Fails unless every one of `names` has self samples in the processes `pids` of `recording`.
fn assert_names_shown(recording: &Recording, pids: &[u32], names: &[&str]) {
    let functions = self_functions(recording, pids);
    for name in names {
        assert!(
            functions.iter().any(|f| f == name),
            "{}: {name} is not among the functions with self samples: {functions:?}",
            recording.label
        );
    }
}

/// A library whose `.gnu_debuglink` names a unix socket (the debug file, replaced by one).
#[test]
fn a_debug_link_to_a_socket() {
    let _alone = require_root_alone();
    let dir = Scratch::new("debuglink-socket");
    let hostile = build_hostile(&dir);
    let lib = build_spinlib(&dir, "libspin.so");
    let debug = link_debug_file(&lib);
    std::fs::remove_file(&debug).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(&debug).unwrap();
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &[
            "spin-lib".as_ref(),
            "hostile_spin".as_ref(),
            lib.as_os_str(),
        ],
    );
    for recording in record_all("debuglink-socket", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Unbounded inputs
// ---------------------------------------------------------------------------------------------

/// A perf map of 1 GiB (three valid lines, then a hole): amprof's peak RSS stays far below the
/// file's size: under 96 MiB recording the process (the usual 512 MiB recording the whole
/// machine, whose own share varies too much for a tighter bound).
#[test]
fn a_sparse_gigabyte_perf_map() {
    let _alone = require_root_alone();
    let dir = Scratch::new("perf-map-sparse");
    let hostile = build_hostile(&dir);
    let process = Hostile::spawn(&dir, &hostile, &["jit".as_ref(), "sparse".as_ref()]);
    for recording in record_all(
        "perf-map-sparse",
        &[process.pid],
        RssBound {
            system: RSS.system,
            pids: 96,
        },
    ) {
        assert_sampled(&recording, &[process.pid]);
    }
}

/// One invalid UTF-8 byte in one line of a perf map loses that line's name at most: the JIT
/// functions of the other lines are still named.
#[test]
fn an_invalid_utf8_byte_in_one_perf_map_line() {
    let _alone = require_root_alone();
    let dir = Scratch::new("perf-map-utf8");
    let hostile = build_hostile(&dir);
    let process = Hostile::spawn(&dir, &hostile, &["jit".as_ref(), "utf8".as_ref()]);
    for recording in record_all("perf-map-utf8", &[process.pid], RSS) {
        assert_names_shown(&recording, &[process.pid], &["jit_alpha", "jit_gamma"]);
    }
}

/// A perf map that belongs to another user (uid 1, daemon; the process runs as nobody) is not
/// the process's word on its code: its names are not shown. (One of root's is accepted, as perf
/// accepts it: only root could have written it.)
#[test]
fn a_perf_map_owned_by_another_user() {
    let _alone = require_root_alone();
    let dir = Scratch::new("perf-map-owner");
    let hostile = build_hostile(&dir);
    let process = Hostile::spawn(&dir, &hostile, &["jit".as_ref(), "none".as_ref()]);
    let size = process.hex(4);
    let lines: String = (1..=3)
        .map(|i| format!("{:x} {size:x} not_the_owners_word_{i}\n", process.hex(i)))
        .collect();
    std::fs::write(perf_map(process.pid), lines).unwrap();
    std::os::unix::fs::chown(perf_map(process.pid), Some(1), Some(1)).unwrap();
    for recording in record_all("perf-map-owner", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
        assert_not_disclosed(&recording, b"not_the_owners_word");
    }
}

/// The process holds a write lease on its perf map: an open for reading without O_NONBLOCK
/// blocks until the lease is given up or `fs.lease-break-time` (45 s by default) passes.
#[test]
fn a_perf_map_under_a_write_lease() {
    let _alone = require_root_alone();
    let dir = Scratch::new("perf-map-lease");
    let hostile = build_hostile(&dir);
    let process = Hostile::spawn(&dir, &hostile, &["jit".as_ref(), "lease".as_ref()]);
    for recording in record_all("perf-map-lease", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Names with every byte value
// ---------------------------------------------------------------------------------------------

/// The children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// What in `text` a terminal would act on: invalid UTF-8, C0 controls but `\n`, DEL, and C1
/// controls (U+0080..U+009F). Empty when clean.
fn terminal_controls(text: &[u8]) -> Vec<String> {
    let text = match std::str::from_utf8(text) {
        Ok(text) => text,
        Err(e) => {
            let at = e.valid_up_to();
            return vec![format!(
                "invalid UTF-8 at byte {at}: {:?}",
                String::from_utf8_lossy(&text[at.saturating_sub(40)..(at + 10).min(text.len())])
            )];
        }
    };
    text.lines()
        .filter(|line| {
            line.chars()
                .any(|c| (c < ' ' && c != '\n') || ('\u{7f}'..='\u{9f}').contains(&c))
        })
        .map(|line| format!("{line:?}"))
        .collect()
}

/// Processes (as nobody) named, and with threads named, with terminal escapes (OSC 52
/// clipboard write, clear screen, cursor home, BEL, backspace, CR, C1 controls, DEL) and, across
/// 17 processes, every byte value 0x01..0xff; and a library whose function names hold such
/// bytes. After a system-wide recording, the summary and the folded stacks hold no terminal
/// control (nor invalid UTF-8), the folded stacks are one line per stack, and the flamegraph is
/// well-formed XML.
#[test]
fn names_with_every_byte_value_print_harmlessly() {
    let _alone = require_root_alone();
    let dir = Scratch::new("names");
    let hostile = build_hostile(&dir);
    // Without DWARF, whose names are the C ones: the symbol table's names are the renamed ones.
    let source = fixture("spinlib.c");
    let lib = cc(
        &dir.join("libevil.so"),
        &[
            "-shared".as_ref(),
            "-fPIC".as_ref(),
            "-O1".as_ref(),
            source.as_os_str(),
        ],
    );
    let renames = [
        (
            "evil_one",
            &b"evil\x1b[2J\x1b[H\x1b]52;c;aGk=\x07\x08\r"[..],
        ),
        ("evil_two", &b"evil\xc2\x9b31m\xc2\x85\x7f"[..]),
        ("evil_three", &b"evil;\n\x1b[0m\tthree"[..]),
    ];
    for (from, to) in renames {
        let mut rename = OsString::from(format!("--redefine-sym={from}="));
        rename.push(OsStr::from_bytes(to));
        run_tool("objcopy", &[&rename, lib.as_os_str()]);
    }
    let bytes = Hostile::spawn(&dir, &hostile, &["names-bytes".as_ref()]);
    let escapes = Hostile::spawn(&dir, &hostile, &["names-escape".as_ref()]);
    let evil = Hostile::spawn(
        &dir,
        &hostile,
        &[
            "spin-lib".as_ref(),
            "hostile_spin_evil".as_ref(),
            lib.as_os_str(),
        ],
    );
    let named: Vec<u32> = children(bytes.pid)
        .into_iter()
        .chain(children(escapes.pid))
        .collect();
    assert_eq!(named.len(), 17 + 7, "named processes: {named:?}");
    let recording = record("names", "dwarf", Target::System, RSS);
    let sampled = recording.json["top_processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| named.contains(&(p["pid"].as_u64().unwrap() as u32)))
        .count();
    assert!(
        sampled >= named.len() / 2,
        "only {sampled} of the {} named processes were sampled",
        named.len()
    );
    let evil_functions = self_functions(&recording, &[evil.pid]);
    assert!(
        evil_functions.iter().any(|f| f.starts_with("evil")),
        "the renamed functions were not sampled: {evil_functions:?}"
    );

    // Every process and function of the capture, not just the top 20.
    let mut command = amprof();
    command
        .args(["report", "--top", "100000", "-i"])
        .arg(&recording.capture);
    let summary = run_bounded(command, "report --top 100000");
    summary.assert_success();
    let controls = terminal_controls(&summary.stdout);
    assert!(
        controls.is_empty(),
        "the summary prints terminal controls: {controls:#?}"
    );

    let mut command = amprof();
    command
        .args(["report", "--format", "folded", "-i"])
        .arg(&recording.capture);
    let folded = run_bounded(command, "report --format folded");
    folded.assert_success();
    let controls = terminal_controls(&folded.stdout);
    assert!(
        controls.is_empty(),
        "the folded stacks hold terminal controls: {controls:#?}"
    );
    let mut stacks = HashSet::new();
    let mut samples = 0;
    for line in folded
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let line = String::from_utf8_lossy(line);
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a folded line without a count: {line:?}"));
        let count: u64 = count
            .parse()
            .unwrap_or_else(|_| panic!("a folded line without a count: {line:?}"));
        samples += count;
        assert!(
            stacks.insert(stack.to_string()),
            "a stack folded twice: {stack:?}"
        );
    }
    let total = recording.json["totals"]["samples"].as_u64().unwrap();
    assert_eq!(
        samples, total,
        "the folded lines count every sample once: one line per stack"
    );

    let svg = recording.capture.with_extension("svg");
    let mut command = amprof();
    command
        .args(["report", "-q", "--format", "flamegraph", "-o"])
        .arg(&svg)
        .arg("-i")
        .arg(&recording.capture);
    run_bounded(command, "report --format flamegraph").assert_success();
    let svg = std::fs::read_to_string(&svg).expect("the flamegraph is UTF-8");
    // inferno's SVG declares the SVG 1.1 DTD, which the parser must be allowed to skip.
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    if let Err(e) = roxmltree::Document::parse_with_options(&svg, options) {
        panic!("the flamegraph is not well-formed XML: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Wrong build-id
// ---------------------------------------------------------------------------------------------

/// An executable without a GNU build-id that carries a note of type 3 (NT_GNU_BUILD_ID's
/// number) owned by "stapsdt": the capture records no build-id for it.
#[test]
fn a_type_3_note_not_owned_by_gnu_is_no_build_id() {
    let _alone = require_root_alone();
    let dir = Scratch::new("fake-build-id");
    let source = fixture("stapsdt_note.c");
    let binary = cc(
        &dir.join("fake-note"),
        &[
            "-O1".as_ref(),
            "-g".as_ref(),
            "-Wl,--build-id=none".as_ref(),
            source.as_os_str(),
        ],
    );
    let process = Hostile::spawn(&dir, &binary, &[]);
    let path = binary.to_str().unwrap();
    for recording in record_all("fake-build-id", &[process.pid], RSS) {
        let mut reader = amprof::capture::CaptureReader::open(&recording.capture).unwrap();
        let mut seen = false;
        while let Some(window) = reader.next_window().unwrap() {
            for module in window.modules.iter().filter(|m| m.path == path) {
                seen = true;
                assert!(
                    module.build_id.is_empty(),
                    "{}: {path} recorded with build-id {:02x?} ({:?})",
                    recording.label,
                    module.build_id,
                    String::from_utf8_lossy(&module.build_id)
                );
            }
        }
        assert!(seen, "{}: no module {path} in the capture", recording.label);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Files that change while read
// ---------------------------------------------------------------------------------------------

/// A library of `functions` functions, each a loop of its own, which `hostile_spin` calls in
/// turn forever: thousands of distinct addresses, unwound and symbolized from all over the file.
/// All but `hostile_spin` are static, so that the code uses no relocated data (GOT, PLT):
/// truncating a file discards even the private copies of its pages, and pages read back from
/// the rewritten file are unrelocated.
fn wide_library_source(functions: usize) -> String {
    let mut source = String::from("static volatile unsigned long sink;\n");
    for i in 0..functions {
        source.push_str(&format!(
            "__attribute__((noinline)) static void wide_{i}(void) {{ for (int i = 0; i < 3000; i++) sink += {i}; }}\n"
        ));
    }
    source.push_str("void hostile_spin(void) {\n    for (;;) {\n");
    for i in 0..functions {
        source.push_str(&format!("        wide_{i}();\n"));
    }
    source.push_str("    }\n}\n");
    source
}

/// A process spins in its own copy of a library while truncating the file to 0 and writing it
/// back, over and over (it survives its own SIGBUS by retrying): amprof reads the file through
/// memory mappings, which fault with SIGBUS past the end of a truncated file. amprof must not
/// die of it.
#[test]
fn a_library_truncated_and_rewritten_while_read() {
    let _alone = require_root_alone();
    let dir = Scratch::new("rewrite");
    let hostile = build_hostile(&dir);
    let source = dir.join("wide.c");
    std::fs::write(&source, wide_library_source(1500)).unwrap();
    let lib = cc(
        &dir.join("libwide.so"),
        &[
            "-shared".as_ref(),
            "-fPIC".as_ref(),
            "-O1".as_ref(),
            "-g".as_ref(),
            source.as_os_str(),
        ],
    );
    chown(&lib, Some(NOBODY), Some(NOBODY)).unwrap();
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &["rewrite".as_ref(), "hostile_spin".as_ref(), lib.as_os_str()],
    );
    for recording in record_all("rewrite", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Many tiny mappings
// ---------------------------------------------------------------------------------------------

/// A process with 60,000 one-page executable mappings of an ELF file (vm.max_map_count is
/// 65,530 by default), spinning.
#[test]
fn sixty_thousand_tiny_executable_mappings() {
    let _alone = require_root_alone();
    let dir = Scratch::new("maps");
    let hostile = build_hostile(&dir);
    let lib = build_spinlib(&dir, "libspin.so");
    assert!(std::fs::metadata(&lib).unwrap().len() > 3 * 4096);
    let process = Hostile::spawn(
        &dir,
        &hostile,
        &["maps".as_ref(), lib.as_os_str(), "60000".as_ref()],
    );
    let lines: u64 = process.ready[1].parse().unwrap();
    assert!(lines >= 60_000, "only {lines} mappings");
    for recording in record_all("maps", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Churn
// ---------------------------------------------------------------------------------------------

/// A process forking and exec'ing short-lived children (which rename themselves and exit within
/// milliseconds), renaming itself all the while: processes exit while amprof reads them.
#[test]
fn forking_execing_renaming_churn() {
    let _alone = require_root_alone();
    let dir = Scratch::new("churn");
    let hostile = build_hostile(&dir);
    let process = Hostile::spawn(&dir, &hostile, &["churn".as_ref()]);
    for recording in record_all("churn", &[process.pid], RSS) {
        assert_sampled(&recording, &[process.pid]);
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Ctrl-C
// ---------------------------------------------------------------------------------------------

/// The hostile load of the Ctrl-C tests: churn, a FIFO perf map and a leased one.
fn ctrl_c_load(dir: &Scratch) -> Vec<Hostile> {
    let hostile = build_hostile(dir);
    vec![
        Hostile::spawn(dir, &hostile, &["churn".as_ref()]),
        Hostile::spawn(dir, &hostile, &["jit".as_ref(), "fifo".as_ref()]),
        Hostile::spawn(dir, &hostile, &["jit".as_ref(), "lease".as_ref()]),
    ]
}

/// Starts a system-wide recording until signalled, and sends SIGINT after 2 s (and again
/// `second` later, if given). Returns amprof's end, the seconds from the last signal to its
/// exit, and the capture.
fn interrupted_recording(name: &str, second: Option<Duration>) -> (Finished, f64, PathBuf) {
    let capture = scratch(&format!("hostile-{name}")).join("capture.data");
    let mut command = amprof();
    command.args(["record", "-q", "-o"]).arg(&capture);
    let running = Running::start(command, &format!("amprof record of {name}"));
    thread::sleep(Duration::from_secs(2));
    running.signal(libc::SIGINT);
    if let Some(after) = second {
        thread::sleep(after);
        running.signal(libc::SIGINT);
    }
    let signalled = Instant::now();
    let finished = running.finish(HUNG_AFTER);
    let seconds = signalled.elapsed().as_secs_f64();
    eprintln!(
        "{name}: exit {:?} {:.1} s after the last SIGINT, peak RSS {} MiB",
        finished.code,
        seconds,
        finished.max_rss_kib / 1024
    );
    (finished, seconds, capture)
}

/// Ctrl-C during a system-wide recording under hostile load: amprof exits within 2 s of the
/// signal, with a finalized capture.
#[test]
fn ctrl_c_under_hostile_load_finalizes_promptly() {
    let _alone = require_root_alone();
    let dir = Scratch::new("ctrl-c");
    let _load = ctrl_c_load(&dir);
    let (finished, seconds, capture) = interrupted_recording("ctrl-c", None);
    assert!(
        seconds <= 2.0,
        "amprof took {seconds:.1} s to exit after SIGINT: {}",
        finished.describe()
    );
    finished.assert_success();
    assert!(
        finished.max_rss_kib / 1024 <= RSS.system,
        "peak RSS over {} MiB: {}",
        RSS.system,
        finished.describe()
    );
    let (_, json) = check_readable(&capture, "ctrl-c");
    assert_eq!(json["capture"]["stopped_by"], "signal");
}

/// A second Ctrl-C right after the first, under hostile load: amprof exits at once (within a
/// second), and the capture is still readable.
#[test]
fn a_second_ctrl_c_exits_at_once() {
    let _alone = require_root_alone();
    let dir = Scratch::new("ctrl-c-twice");
    let _load = ctrl_c_load(&dir);
    let (finished, seconds, capture) =
        interrupted_recording("ctrl-c-twice", Some(Duration::from_millis(100)));
    assert!(
        seconds <= 1.0,
        "amprof took {seconds:.1} s to exit after the second SIGINT: {}",
        finished.describe()
    );
    let mut command = amprof();
    command.arg("report").arg("-i").arg(&capture);
    run_bounded(command, "report of an interrupted capture").assert_success();
}
