//! The verifier's headroom on this kernel: every eBPF program loads, and needs at most 15% of the
//! verifier's 1M-instruction budget. A program near the limit passes or fails by kernel build
//! (the in-kernel walk once needed 81,574 instructions on Debian's 6.18.15 and more than 1M on a
//! 6.18.44 host), so the bound is far below it. The same check runs in every kernel of the QEMU
//! matrix (`.ci/kernel-matrix`), from the same `amprof check --json`.

use crate::util::{amprof, require_root};

/// Processed instructions a program may need: 15% of the verifier's budget.
const HEADROOM_BOUND: u64 = 150_000;

#[test]
fn every_program_loads_with_headroom() {
    let _root = require_root();
    let output = amprof().args(["check", "--json"]).output().unwrap();
    assert!(
        output.status.success(),
        "amprof check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let programs = report["programs"].as_array().unwrap();
    assert!(programs.len() >= 13, "{report}");
    for program in programs {
        let name = program["program"].as_str().unwrap();
        assert_eq!(
            program["loaded"], true,
            "{name} was refused on this kernel: {}",
            program["refusal"]
        );
        // This kernel reports the figure (5.16+: the root tier needs a kernel with bpf_loop).
        let insns = program["verified_insns"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: no verified_insns in {program}"));
        assert!(
            insns <= HEADROOM_BOUND,
            "{name} needed {insns} verified instructions, above {HEADROOM_BOUND} (15% of the budget)"
        );
    }
    for mode in report["modes"].as_array().unwrap() {
        assert!(mode["program"].is_string(), "a mode cannot run: {mode}");
    }
    assert_eq!(report["off_cpu"], true);
}

#[test]
fn check_prints_a_table_of_programs() {
    let _root = require_root();
    let output = amprof().arg("check").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("sample_dwarf"), "{text}");
    assert!(
        text.contains("-g dwarf works, -g dwarf-copy works, -g fp works; --off-cpu works"),
        "{text}"
    );
}
