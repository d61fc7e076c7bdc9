//! Reliability of `record`: kill -9 at any moment, a full disk, load, long flight recordings,
//! vanishing targets, and files created safely. These tests record with eBPF and need root.
//!
//! Long versions run from `benches/reliability.sh` (set AMPROF_LONG=1): 60 s under load at
//! 999 Hz, 10 minutes of flight recording, hundreds of kills.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::util::*;

fn long() -> bool {
    std::env::var_os("AMPROF_LONG").is_some()
}

/// A busy background load for the duration of a test.
struct Load(Vec<Child>);

impl Load {
    fn start(seconds: u64) -> Self {
        Load(vec![
            Command::new(hotspot())
                .args([seconds.to_string(), "2".into()])
                .spawn()
                .unwrap(),
        ])
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Peak resident memory of process `pid` so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// kill -9 at random moments: every time, the capture reads, with every window closed before
/// the kill.
#[test]
fn kill_9_at_any_moment_leaves_a_readable_capture() {
    // It judges how many windows closed by a moment: other tests' load would move that.
    let _alone = require_root_alone();
    let dir = scratch("kill-9");
    let _load = Load::start(if long() { 900 } else { 60 });
    let kills = if long() { 200 } else { 12 };
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut windows_seen = 0;
    // A first recording, not judged: the first window of a cold machine waits for the page
    // cache (every running binary and its debug info read from disk to be named), which is
    // not what this test is about. (The clean-clone CI run of 8f1ca96 failed kill 0 on it: 2
    // windows 2 s in, every later kill on time.)
    let warm = dir.join("warm.data");
    let warm_up = amprof()
        .args(["record", "-q", "-d", "1s", "--window", "300ms", "-o"])
        .arg(&warm)
        .output()
        .unwrap();
    assert_ok(&warm_up);
    for kill in 0..kills {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Anywhere from before the first window closes to a few windows in.
        let after = Duration::from_millis(50 + rng % 2500);
        let capture = dir.join(format!("kill-{kill}.data"));
        let mut record = amprof()
            .args(["record", "-q", "--window", "300ms", "-F", "999", "-o"])
            .arg(&capture)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // From the moment the capture exists, which is when its first window starts: loading
        // the eBPF program can take seconds on a busy machine, and is not what this test is
        // about.
        let spawned = Instant::now();
        while !capture.exists() && spawned.elapsed() < Duration::from_secs(30) {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(after);
        record.kill().unwrap();
        record.wait().unwrap();
        if !capture.exists() {
            // Killed before it created the file (still loading the eBPF program): nothing to read.
            continue;
        }
        let output = run(&["report", "--json", "-q", "-i", capture.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "kill {kill} after {after:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let windows = summary["windows"].as_array().unwrap().len();
        // Windows close 100 ms after their end: all those before the kill must be there (with
        // half a second for a busy machine's scheduling).
        let expected_at_least = (after.as_millis() as u64).saturating_sub(600) / 300;
        assert!(
            windows as u64 >= expected_at_least,
            "kill {kill} after {after:?}: {windows} windows, expected at least {expected_at_least}"
        );
        windows_seen += windows;
        std::fs::remove_file(&capture).unwrap();
    }
    assert!(windows_seen > 0, "no kill happened after a window closed");
    eprintln!("survived {kills} kills, {windows_seen} windows read back");
}

/// A full disk ends recording with a clear error, and the windows written before it stay
/// readable.
#[test]
fn a_full_disk_ends_recording_with_a_readable_capture() {
    let _root = require_root();
    let dir = scratch("full-disk");
    let mount = dir.join("tiny");
    std::fs::create_dir_all(&mount).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=200k", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let _load = Load::start(30);
    let capture = mount.join("full.data");
    let output = amprof()
        .args([
            "record", "-q", "-F", "999", "--window", "500ms", "-d", "60s", "-o",
        ])
        .arg(&capture)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("disk is full"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let summary = summary(&capture, &[]);
    assert!(
        !summary["windows"].as_array().unwrap().is_empty(),
        "some windows were written"
    );
}

/// System-wide at 999 Hz with hundreds of threads, deep recursion and fork/exec churn: amprof
/// keeps up, counts what it loses, bounds its memory, and writes a complete capture.
#[test]
fn heavy_load_is_recorded_completely_in_bounded_memory() {
    // Every CPU busy: no other test should share the machine with this one.
    let _alone = require_root_alone();
    let dir = scratch("heavy-load");
    let seconds = if long() { 60 } else { 10 };
    let recursion = compile_c("recursion", &["-O0", "-fno-omit-frame-pointer", "-pthread"]);
    // At most 8 threads spin: on this project's CI VMs (Firecracker, 2 vCPUs) the cpu-clock
    // event stops firing in busy tasks once a few dozen threads spin (perf record -a then sees
    // only the idle task, on one CPU), which would test the VM, not amprof. Hundreds of threads
    // come from python3, which runs one at a time (its GIL), each a few ms at a time.
    let mut load = Load(vec![
        Command::new(hotspot())
            .args([(seconds + 5).to_string(), "4".into()])
            .spawn()
            .unwrap(),
        // Stacks 200 frames deep (beyond the 127-frame limit).
        Command::new(&recursion)
            .args([(seconds + 5).to_string(), "200".into(), "4".into()])
            .spawn()
            .unwrap(),
        // 256 threads, each sampled now and then: the thread table grows.
        Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import threading, time\n\
                     end = time.time() + {}\n\
                     def work():\n    \
                         while time.time() < end:\n        \
                             sum(range(2000)); time.sleep(0.002)\n\
                     threads = [threading.Thread(target=work) for _ in range(256)]\n\
                     [t.start() for t in threads]\n\
                     [t.join() for t in threads]\n",
                    seconds + 5
                ),
            ])
            .spawn()
            .unwrap(),
        // Fork/exec churn, like a build.
        Command::new("sh")
            .args([
                "-c",
                &format!(
                    "end=$(($(date +%s)+{})); while [ $(date +%s) -lt $end ]; do /bin/true; done",
                    seconds + 5
                ),
            ])
            .spawn()
            .unwrap(),
    ]);
    let capture = dir.join("heavy.data");
    let mut record = amprof()
        .args([
            "record", "-q", "--json", "-F", "999", "--window", "2s", "-d",
        ])
        .arg(format!("{seconds}s"))
        .arg("-o")
        .arg(&capture)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = record.id();
    let mut peak = 0;
    while record.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
        thread::sleep(Duration::from_millis(200));
    }
    let output = record.wait_with_output().unwrap();
    drop(load.0.drain(..).collect::<Vec<_>>());
    assert!(output.status.success());
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let summary = summary(&capture, &[]);
    assert_eq!(summary["capture"]["state"], "finalized");
    let windows = summary["windows"].as_array().unwrap();
    assert_eq!(windows.len() as u64, seconds / 2);
    let samples = result["samples"].as_u64().unwrap();
    let lost = result["lost"].as_u64().unwrap();
    // 2 CPUs at 999 Hz, all busy: ~2000 samples a second reach amprof or are counted lost.
    assert!(
        samples + lost > 1500 * seconds,
        "{samples} samples + {lost} lost in {seconds} s"
    );
    // The bound (docs/guarantees.md): the process table and caches are bounded, the rest is
    // one window of samples. Here that is far below 256 MiB.
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
    eprintln!(
        "heavy load: {samples} samples, {lost} lost, peak RSS {} MiB",
        peak / 1024
    );
}

/// A flight recorder keeps memory and disk flat: the file never holds more than --keep windows
/// and RSS stops growing once the ring is full. It records the whole system, so it has the
/// machine to itself: other tests starting and stopping programs change what a window holds
/// (a CI run saw the file swing from 140 KB to 1.2 MB with them).
#[test]
fn a_flight_recorder_stays_flat() {
    let _root = require_root_alone();
    let dir = scratch("flat-ring");
    let seconds = if long() { 600 } else { 24 };
    let _load = Load::start(seconds + 10);
    let capture = dir.join("ring.data");
    let mut record = amprof()
        .args([
            "record", "-q", "-F", "999", "--window", "1s", "--keep", "6", "-o",
        ])
        .arg(&capture)
        .spawn()
        .unwrap();
    let pid = record.id();
    let started = Instant::now();
    let mut sizes = Vec::new();
    let mut rss = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_secs(1));
        sizes.push(std::fs::metadata(&capture).map_or(0, |m| m.len()));
        rss.push(rss_kib(pid).unwrap_or(0));
    }
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    assert!(record.wait().unwrap().success());
    let summary = summary(&capture, &[]);
    assert_eq!(summary["windows"].as_array().unwrap().len(), 6);
    // Once the ring is full, what the file and the process hold depends on what runs, not on
    // how long amprof has run: the largest values of the last quarter stay within a margin of
    // those of the second quarter. (Other tests run at the same time and change what runs, so
    // the margin is not zero; a leak would grow with every window.)
    let quarter = sizes.len() / 4;
    let max = |v: &[u64]| *v.iter().max().unwrap();
    let (early_sizes, late_sizes) = (&sizes[quarter..2 * quarter], &sizes[3 * quarter..]);
    assert!(
        max(late_sizes) <= max(early_sizes) * 3 / 2,
        "capture grows: {sizes:?}"
    );
    // RSS by the median of the last quarter: a leak moves it as it moves the largest value,
    // a process that starts near the end (its binary named once) does not. (A clean-clone run
    // read 45 MB flat, then 73 MB at the last reading only.)
    let (early, late) = (&rss[quarter..2 * quarter], &rss[3 * quarter..]);
    let mut late_sorted = late.to_vec();
    late_sorted.sort_unstable();
    let late_median = late_sorted[late_sorted.len() / 2];
    assert!(late_median <= max(early) * 5 / 4, "RSS grows: {rss:?} KiB");
    eprintln!(
        "flight recorder: {seconds} s, capture {}..{} KiB in the last quarter, peak RSS {} MiB",
        late_sizes.iter().min().unwrap() / 1024,
        max(late_sizes) / 1024,
        max(&rss) / 1024
    );
}

/// `-p` of a process that exits mid-recording: a clean finish, exit code 0.
#[test]
fn a_vanishing_pid_target_ends_recording_cleanly() {
    let _root = require_root();
    let dir = scratch("vanishing-pid");
    let capture = dir.join("gone.data");
    let mut target = Command::new(hotspot()).arg("1.5").spawn().unwrap();
    let record = amprof()
        .args([
            "record",
            "-q",
            "-d",
            "30s",
            "-p",
            &target.id().to_string(),
            "-o",
        ])
        .arg(&capture)
        .output()
        .unwrap();
    target.wait().unwrap();
    assert_ok(&record);
    let summary = summary(&capture, &[]);
    assert_eq!(summary["capture"]["stopped_by"], "targets-exited");
    assert!(summary["capture"]["duration_seconds"].as_f64().unwrap() < 10.0);
}

/// A command killed by a signal: amprof finalizes and exits 128 + the signal, as a shell would.
#[test]
fn a_killed_command_gives_its_signal_exit_code() {
    let _root = require_root();
    let dir = scratch("killed-command");
    let capture = dir.join("killed.data");
    let output = amprof()
        .args(["record", "-q", "-o"])
        .arg(&capture)
        .args(["--", "sh", "-c", "sleep 0.5; kill -9 $$"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(128 + 9));
    assert_eq!(
        summary(&capture, &[])["capture"]["stopped_by"],
        "command-exited"
    );
}

/// Captures never follow a symlink planted at the output path, nor one at the `.old` backup;
/// the file is created 0600.
#[test]
fn output_files_do_not_follow_symlinks() {
    let _root = require_root();
    let dir = scratch("symlinks");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let capture = dir.join("out.data");
    std::os::unix::fs::symlink(&victim, &capture).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("out.data.old")).unwrap();
    let output = amprof()
        .args(["record", "-q", "-d", "300ms", "-o"])
        .arg(&capture)
        .output()
        .unwrap();
    assert_ok(&output);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    let meta = std::fs::symlink_metadata(&capture).unwrap();
    assert!(meta.is_file(), "the capture replaced the symlink");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(Path::new(&victim).exists());
}
