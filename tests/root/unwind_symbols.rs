//! Complete stacks without frame pointers (`--call-graph dwarf`), and symbols users trust:
//! separate debug files, debuginfod, inlined functions, other mount namespaces, short-lived
//! processes and JIT perf maps. These tests record with eBPF and need root.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use crate::util::*;

/// Records `command` (`-- command...`) with extra record `flags`, into `scratch(name)`.
fn record(name: &str, flags: &[&str], command: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let capture = scratch(name).join("capture.data");
    let output = amprof()
        .args(["record", "-q", "-F", "499", "-o"])
        .arg(&capture)
        .args(flags)
        .arg("--")
        .args(command)
        .envs(env.iter().copied())
        // Runtimes drop files in their working directory (node's isolate logs).
        .current_dir(capture.parent().unwrap())
        .output()
        .unwrap();
    assert_ok(&output);
    capture
}

/// Share of samples whose user stack holds `expected`, in that order (root first).
fn share_with_chain(stacks: &[(Vec<String>, u64)], expected: &[&str]) -> f64 {
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let matching: u64 = stacks
        .iter()
        .filter(|(frames, _)| {
            let mut want = expected.iter().peekable();
            for frame in frames {
                if want.peek().is_some_and(|w| *w == frame) {
                    want.next();
                }
            }
            want.peek().is_none()
        })
        .map(|(_, c)| c)
        .sum();
    assert!(total > 100, "too few samples to judge: {total}: {stacks:?}");
    matching as f64 / total as f64
}

/// Share of samples with a frame satisfying `test`.
fn share_with_frame(stacks: &[(Vec<String>, u64)], test: impl Fn(&str) -> bool) -> f64 {
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    let matching: u64 = stacks
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| test(f)))
        .map(|(_, c)| c)
        .sum();
    assert!(total > 0, "no samples: {stacks:?}");
    matching as f64 / total as f64
}

/// tests/fixtures/chain.c without frame pointers, as distributions build.
fn c_chain() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| compile_c("chain", &["-O2", "-fomit-frame-pointer"]))
}

const C_CHAIN: [&str; 4] = ["main", "level_one", "level_two", "level_three"];

#[test]
fn dwarf_unwinding_recovers_c_stacks_without_frame_pointers() {
    let _root = require_root();
    let dwarf = record(
        "dwarf-c",
        &["-g", "dwarf"],
        &[c_chain().to_str().unwrap(), "2"],
        &[],
    );
    let stacks = user_stacks(&dwarf, "chain");
    let share = share_with_chain(&stacks, &C_CHAIN);
    assert!(
        share >= 0.95,
        "dwarf: {:.1}% of samples have the whole chain",
        share * 100.0
    );
    // The stacks reach the process entry point through glibc.
    let from_start = share_with_chain(&stacks, &["_start", "__libc_start_main_impl", "main"]);
    assert!(
        from_start >= 0.95,
        "{:.1}% reach _start",
        from_start * 100.0
    );

    // The same binary with frame pointers unwinding loses the chain: the fixture is right.
    let fp = record(
        "fp-c",
        &["-g", "fp"],
        &[c_chain().to_str().unwrap(), "2"],
        &[],
    );
    let share = share_with_chain(&user_stacks(&fp, "chain"), &C_CHAIN);
    assert!(
        share < 0.5,
        "fp found the chain in {:.1}%: does the fixture have frame pointers?",
        share * 100.0
    );
}

#[test]
fn dwarf_unwinding_recovers_rust_stacks_without_frame_pointers() {
    let _root = require_root();
    let dir = scratch("rust-chain-build");
    let binary = dir.join("rust-chain");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chain.rs");
    let status = Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "-O",
            "-g",
            "-C",
            "force-frame-pointers=no",
            "-o",
        ])
        .arg(&binary)
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let capture = record(
        "dwarf-rust",
        &["-g", "dwarf"],
        &[binary.to_str().unwrap(), "2"],
        &[],
    );
    let stacks = user_stacks(&capture, "rust-chain");
    let chain = [
        "chain::main",
        "chain::level_one",
        "chain::level_two",
        "chain::level_three",
    ];
    let share = share_with_chain(&stacks, &chain);
    assert!(
        share >= 0.95,
        "{:.1}% of samples have the whole chain: {stacks:?}",
        share * 100.0
    );
}

/// A binary only visible inside its own mount namespace (a container's view) is read through
/// /proc/PID: symbols and DWARF unwinding both work.
#[test]
fn a_process_in_another_mount_namespace_is_symbolized() {
    let _root = require_root();
    let dir = scratch("mount-ns");
    let mount_point = dir.join("private");
    std::fs::create_dir_all(&mount_point).unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs {m} && cp {bin} {m}/chain-ns && exec {m}/chain-ns 2",
        m = mount_point.display(),
        bin = c_chain().display()
    );
    let capture = record(
        "mount-ns-record",
        &["-g", "dwarf"],
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
        &[],
    );
    assert!(
        !mount_point.join("chain-ns").exists(),
        "the binary must not be visible from the host namespace"
    );
    let stacks = user_stacks(&capture, "chain-ns");
    let share = share_with_chain(&stacks, &C_CHAIN);
    assert!(
        share >= 0.9,
        "{:.1}% of samples have the chain: {stacks:?}",
        share * 100.0
    );
}

/// Hundreds of processes that live a few milliseconds each (like a build) are symbolized:
/// mappings are read as soon as a process's first sample arrives.
#[test]
fn a_burst_of_short_lived_processes_is_symbolized() {
    let _root = require_root();
    let short = compile_c("short", &["-O0", "-fno-omit-frame-pointer"]);
    let script = format!("for i in $(seq 150); do {} 15; done", short.display());
    let capture = scratch("short-lived").join("capture.data");
    let output = amprof()
        .args(["record", "-q", "-F", "999", "-o"])
        .arg(&capture)
        .args(["--", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_ok(&output);
    let summary = summary(&capture, &["--comm", "short"]);
    let processes = summary["top_processes"].as_array().unwrap().len();
    assert!(
        processes >= 100,
        "only {processes} short-lived processes were sampled"
    );
    let stacks = user_stacks(&capture, "short");
    // Some samples fall in exec and the dynamic loader; most in the work function.
    let share = share_with_frame(&stacks, |f| f == "short_lived_work");
    assert!(
        share >= 0.8,
        "{:.1}% of their samples are in short_lived_work",
        share * 100.0
    );
    // Every frame from the work function up to the process entry is named.
    let named = share_with_chain(
        &stacks,
        &["__libc_start_call_main", "main", "short_lived_work"],
    );
    assert!(
        named >= 0.95 * share,
        "{:.1}% of samples have named frames down to short_lived_work, of {:.1}%",
        named * 100.0,
        share * 100.0
    );
}

/// A JIT's /tmp/perf-PID.map names its anonymous code.
#[test]
fn a_perf_map_names_jit_frames() {
    let _root = require_root();
    let jit = compile_c("jit", &["-O1"]);
    let capture = record("perf-map", &[], &[jit.to_str().unwrap(), "2"], &[]);
    for pid in pids(&summary(&capture, &[])) {
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    }
    let stacks = user_stacks(&capture, "jit");
    let share = share_with_frame(&stacks, |f| f == "jitted_hot_loop");
    assert!(
        share >= 0.8,
        "{:.1}% of samples name the JIT frame: {stacks:?}",
        share * 100.0
    );
}

/// `--inline` shows inlined functions as frames, under the function they were inlined into.
#[test]
fn inline_shows_inlined_functions() {
    let _root = require_root();
    let inlined = compile_c("inlined", &["-O2"]);
    let with = record(
        "inline-on",
        &["--inline"],
        &[inlined.to_str().unwrap(), "2"],
        &[],
    );
    let share = share_with_chain(
        &user_stacks(&with, "inlined"),
        &["outer_function", "inlined_square"],
    );
    assert!(
        share >= 0.5,
        "--inline: {:.1}% show inlined_square",
        share * 100.0
    );
    let without = record("inline-off", &[], &[inlined.to_str().unwrap(), "2"], &[]);
    let share = share_with_frame(&user_stacks(&without, "inlined"), |f| f == "inlined_square");
    assert_eq!(
        share, 0.0,
        "without --inline, inlined_square is folded into its caller"
    );
}

/// Splits `binary`'s debug info into `NAME.debug` next to the stripped copy `NAME`, with a
/// `.gnu_debuglink` if `link`. Returns the stripped binary.
fn split_debug_info(dir: &Path, name: &str, binary: &Path, link: bool) -> PathBuf {
    let stripped = dir.join(name);
    let debug = dir.join(format!("{name}.debug"));
    let run = |program: &str, args: &[&std::ffi::OsStr]| {
        let status = Command::new(program).args(args).status().unwrap();
        assert!(status.success(), "{program} {args:?}");
    };
    std::fs::copy(binary, &stripped).unwrap();
    run(
        "objcopy",
        &[
            "--only-keep-debug".as_ref(),
            stripped.as_os_str(),
            debug.as_os_str(),
        ],
    );
    run("strip", &["--strip-all".as_ref(), stripped.as_os_str()]);
    if link {
        let arg = format!("--add-gnu-debuglink={}", debug.display());
        run("objcopy", &[arg.as_ref(), stripped.as_os_str()]);
    }
    stripped
}

/// A stripped binary is named through its `.gnu_debuglink` debug file; without it, its frames
/// keep module and offset.
#[test]
fn separate_debug_files_are_found_through_gnu_debuglink() {
    let _root = require_root();
    let dir = scratch("debuglink-files");
    let linked = split_debug_info(&dir, "chain-linked", c_chain(), true);
    let capture = record(
        "debuglink",
        &["-g", "dwarf"],
        &[linked.to_str().unwrap(), "2"],
        &[],
    );
    let share = share_with_chain(&user_stacks(&capture, "chain-linked"), &C_CHAIN);
    assert!(
        share >= 0.9,
        "{:.1}% named through the debug link",
        share * 100.0
    );

    let bare_dir = scratch("stripped-files");
    let bare = split_debug_info(&bare_dir, "chain-bare", c_chain(), false);
    std::fs::remove_file(bare_dir.join("chain-bare.debug")).unwrap();
    let capture = record(
        "stripped",
        &["-g", "dwarf"],
        &[bare.to_str().unwrap(), "2"],
        &[],
    );
    let stacks = user_stacks(&capture, "chain-bare");
    let named = share_with_frame(&stacks, |f| f == "level_three");
    assert_eq!(named, 0.0, "a stripped binary has no names");
    let offsets = share_with_frame(&stacks, |f| f.starts_with("chain-bare+0x"));
    assert!(
        offsets >= 0.9,
        "unknown frames keep module and offset: {stacks:?}"
    );
}

/// A real debuginfod server (Debian's `debuginfod`) on 127.0.0.1 serving a directory of debug
/// files: with DEBUGINFOD_URLS set, a stripped binary's frames get their names.
#[test]
fn debuginfod_supplies_debug_info_for_stripped_binaries() {
    let _root = require_root();
    let dir = scratch("debuginfod-files");
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let stripped = split_debug_info(&dir, "chain-dbgd", c_chain(), false);
    std::fs::rename(
        dir.join("chain-dbgd.debug"),
        served.join("chain-dbgd.debug"),
    )
    .unwrap();
    let build_id = build_id_of(&stripped);
    let port = free_port();
    let server = Server(
        Command::new("debuginfod")
            .args(["-p", &port.to_string(), "-d"])
            .arg(dir.join("index.sqlite"))
            .arg("-F")
            .arg(&served)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("debuginfod is installed (apt-get install debuginfod; .ci/setup does)"),
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_for_debuginfo(&url, &build_id);
    let cache = dir.join("cache");
    let capture = record(
        "debuginfod",
        &["-g", "dwarf"],
        &[stripped.to_str().unwrap(), "2"],
        &[
            ("DEBUGINFOD_URLS", url.as_str()),
            ("DEBUGINFOD_CACHE_PATH", cache.to_str().unwrap()),
        ],
    );
    drop(server);
    let share = share_with_chain(&user_stacks(&capture, "chain-dbgd"), &C_CHAIN);
    assert!(
        share >= 0.9,
        "{:.1}% named through debuginfod",
        share * 100.0
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_id_of(binary: &Path) -> String {
    let output = Command::new("readelf")
        .arg("-n")
        .arg(binary)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build-id")
        .trim()
        .to_string()
}

/// Waits until the server has indexed the debug file (it scans its directory in the background).
fn wait_for_debuginfo(url: &str, build_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = url.trim_start_matches("http://");
    while Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            use std::io::{Read as _, Write as _};
            // debuginfod answers GET only.
            let request =
                format!("GET /buildid/{build_id}/debuginfo HTTP/1.0\r\nHost: {address}\r\n\r\n");
            let mut response = Vec::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_end(&mut response).is_ok()
                && response.starts_with(b"HTTP/1.")
                && response.get(9..12) == Some(b"200".as_slice())
            {
                return;
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!("debuginfod did not serve {build_id} within 60 s");
}

/// A real JIT runtime: node with --perf-basic-prof names its JIT-compiled JavaScript frames.
#[test]
fn node_jit_frames_are_named() {
    let _root = require_root();
    let script = "function hotLoop(n){let s=0;for(let i=0;i<n;i++){s+=i*i%7}return s}\n\
                  const t=Date.now();let x=0;while(Date.now()-t<2000){x+=hotLoop(100000)}";
    let capture = record(
        "node-jit",
        &["-g", "fp"],
        &["node", "--perf-basic-prof", "-e", script],
        &[],
    );
    let stacks = user_stacks(&capture, "node");
    let share = share_with_frame(&stacks, |f| f.contains("hotLoop"));
    assert!(
        share >= 0.8,
        "{:.1}% of samples name hotLoop: {stacks:?}",
        share * 100.0
    );
    for pid in pids(&summary(&capture, &[])) {
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    }
}

/// A debuginfod server that answers with the wrong file (a real ELF file of another build-id,
/// then 8 MiB of zeros): neither is used nor cached, and the binary's frames keep module and
/// offset. (A server is as untrusted as a sampled process: amprof checks the build-id.)
#[test]
fn debuginfod_answers_of_another_build_id_are_neither_used_nor_cached() {
    let _root = require_root();
    let dir = scratch("debuginfod-wrong");
    let stripped = split_debug_info(&dir, "chain-wrong", c_chain(), false);
    let build_id = build_id_of(&stripped);
    for (answer, name) in [
        (std::fs::read("/bin/true").unwrap(), "another ELF"),
        (vec![0u8; 8 << 20], "zeros"),
    ] {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.server_addr());
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let serving = {
            let asked = std::sync::Arc::clone(&asked);
            thread::spawn(move || {
                while let Ok(Some(request)) = server.recv_timeout(Duration::from_secs(4)) {
                    asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = request.respond(tiny_http::Response::from_data(answer.clone()));
                }
            })
        };
        let cache = dir.join(format!("cache-{}", name.replace(' ', "-")));
        let capture = record(
            &format!("debuginfod-wrong-{}", name.replace(' ', "-")),
            &["-g", "dwarf"],
            &[stripped.to_str().unwrap(), "2"],
            &[
                ("DEBUGINFOD_URLS", url.as_str()),
                ("DEBUGINFOD_CACHE_PATH", cache.to_str().unwrap()),
            ],
        );
        serving.join().unwrap();
        assert!(
            asked.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "{name}: the server was asked"
        );
        let stacks = user_stacks(&capture, "chain-wrong");
        let named = share_with_frame(&stacks, |f| f == "level_three");
        assert_eq!(named, 0.0, "{name}: a wrong debug file named frames");
        assert!(
            !cache.join(&build_id).join("debuginfo").exists(),
            "{name}: a wrong debug file was cached"
        );
        let summary = summary(&capture, &[]);
        assert!(
            summary["totals"]["problems"]["files_refused"].as_u64() > Some(0),
            "{name}: the refusal is counted: {}",
            summary["totals"]["problems"]
        );
    }
}
