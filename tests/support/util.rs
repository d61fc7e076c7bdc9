//! Helpers of both test tiers: the amprof binary, fixture programs, scratch directories, and
//! (root tier) the root check and the order of tests that need the machine alone.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

/// The amprof binary under test.
pub fn amprof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_amprof"))
}

/// Runs amprof with `args`, returning its output.
pub fn run(args: &[&str]) -> Output {
    amprof().args(args).output().expect("amprof runs")
}

/// Fails the test unless running as root: these tests load eBPF programs. CI runs them as root;
/// a test that skipped silently would prove nothing.
///
/// The guard it returns lets the test run beside other ordinary tests of the binary; a test
/// that loads the machine (or records it whole and judges what it sees) takes
/// [`require_root_alone`] instead.
#[must_use = "hold the guard for the whole test"]
pub fn require_root() -> RwLockReadGuard<'static, ()> {
    assert_root();
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
}

/// As [`require_root`], for a test that must have the machine to itself: one that loads every
/// CPU, or records the whole system and judges what it sees. It waits for the ordinary tests
/// running and keeps others from starting.
#[must_use = "hold the guard for the whole test"]
pub fn require_root_alone() -> RwLockWriteGuard<'static, ()> {
    assert_root();
    MACHINE.write().unwrap_or_else(|e| e.into_inner())
}

/// Tests of the root tier share one binary (and its threads): this orders the ones that need
/// the machine to themselves against the others.
static MACHINE: RwLock<()> = RwLock::new(());

fn assert_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test records with eBPF and needs root: run the suite as root (sudo -E cargo test)"
    );
}

/// A scratch directory for one test, under the target directory (kept for post-mortems).
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("amprof-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The `hotspot` fixture (tests/fixtures/hotspot.c), compiled once per test run with frame
/// pointers everywhere.
pub fn hotspot() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| compile_c("hotspot", &["-O0", "-fno-omit-frame-pointer", "-pthread"]))
}

/// Compiles `tests/fixtures/NAME.c` with `flags` into the target directory.
/// Records the hotspot fixture run with `arguments` into `capture`: `amprof record -q` with
/// `flags`; fails the test unless amprof succeeds.
pub fn record_hotspot(capture: &Path, flags: &[&str], arguments: &[&str]) {
    let output = amprof()
        .args(["record", "-q"])
        .args(flags)
        .arg("-o")
        .arg(capture)
        .arg("--")
        .arg(hotspot())
        .args(arguments)
        .output()
        .unwrap();
    assert_ok(&output);
}

pub fn compile_c(name: &str, flags: &[&str]) -> PathBuf {
    compile_c_as(name, name, flags)
}

/// Compiles `tests/fixtures/NAME.c` with `flags` into the binary `binary_name` in the target
/// directory (one source built two ways needs two names).
pub fn compile_c_as(name: &str, binary_name: &str, flags: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.c"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    std::fs::create_dir_all(&dir).expect("fixture dir");
    let binary = dir.join(binary_name);
    let status = Command::new("cc")
        .args(flags)
        .arg("-g")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("cc runs (install gcc)");
    assert!(status.success(), "compiling {}", source.display());
    binary
}

/// A TCP port on 127.0.0.1 nobody listens on (at the time of asking), for test servers.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asserts a successful exit, showing stderr otherwise.
pub fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "amprof failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The JSON summary of a capture (`amprof report --json`), with extra args.
pub fn summary(capture: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "report",
        "--json",
        "--top",
        "200",
        "-i",
        capture.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = run(&args);
    assert_ok(&output);
    serde_json::from_slice(&output.stdout).expect("report --json prints JSON")
}

/// Samples whose leaf (self) frame is `function`, from a JSON summary.
pub fn self_samples(summary: &serde_json::Value, function: &str) -> u64 {
    summary["top_self"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["function"] == function)
        .map(|f| f["samples"].as_u64().unwrap())
        .sum()
}

/// Pids of the processes in a JSON summary.
pub fn pids(summary: &serde_json::Value) -> Vec<u64> {
    summary["top_processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

/// Folded stacks of processes named `comm` in `capture`, as (frames root first, count); kernel
/// frames are left out.
pub fn user_stacks(capture: &Path, comm: &str) -> Vec<(Vec<String>, u64)> {
    let output = amprof()
        .args(["report", "--format", "folded", "--comm", comm, "-i"])
        .arg(capture)
        .output()
        .unwrap();
    assert_ok(&output);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (stack, count) = line.rsplit_once(' ').unwrap();
            let frames = stack
                .split(';')
                .skip(1)
                .filter(|f| !f.ends_with("_[k]"))
                .map(str::to_string)
                .collect();
            (frames, count.parse().unwrap())
        })
        .collect()
}

/// `text` parsed as XML the way flamegraphs need (inferno writes a DTD); fails the test unless
/// it is well-formed.
pub fn parse_svg(text: &str) -> roxmltree::Document<'_> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(text, options)
        .unwrap_or_else(|e| panic!("the SVG is not well-formed XML: {e}"))
}

/// `(title, fill)` of every frame of a flamegraph: each `<g>` with a title and a filled rect.
pub fn flamegraph_frames(text: &str) -> Vec<(String, String)> {
    parse_svg(text)
        .descendants()
        .filter(|n| n.has_tag_name("g"))
        .filter_map(|g| {
            let title = g.children().find(|c| c.has_tag_name("title"))?.text()?;
            let fill = g
                .children()
                .find(|c| c.has_tag_name("rect"))?
                .attribute("fill")?;
            Some((title.to_string(), fill.to_string()))
        })
        .collect()
}

/// `(r, g, b)` of an SVG `rgb(r,g,b)` fill.
pub fn rgb(fill: &str) -> (u8, u8, u8) {
    let inner = fill.trim_start_matches("rgb(").trim_end_matches(')');
    let parts: Vec<u8> = inner
        .split(',')
        .map(|p| p.trim().parse().unwrap())
        .collect();
    (parts[0], parts[1], parts[2])
}
