//! `amprof check`: what this kernel takes of amprof's eBPF programs, and what recording can do
//! here as a result. Each program is loaded (none is attached: nothing is sampled) and the
//! verifier's figure read back: how much of its 1M-instruction budget the program needs on this
//! kernel, the headroom a kernel with a costlier verifier eats into.

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::{
    error::Exit,
    record::{
        CallGraph,
        sampler::{self, ProgramCheck, StackMode, VERIFIER_LIMIT},
    },
    text::printable,
};

/// Show which recording modes this kernel supports: load every eBPF program (attaching none) and
/// report, per program, whether the kernel took it and what its verifier needed.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  sudo amprof check           a table of programs and what works here
  sudo amprof check --json    the same as JSON, for scripts

Exit codes: 0 when at least one sampling program loads (see amprof --help).")]
pub struct CheckArgs {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What `check` found.
#[derive(Debug, Serialize)]
struct CheckReport {
    kernel_release: String,
    /// Each `-g` mode, with the program that would record it (none: the mode cannot run).
    modes: Vec<ModeReport>,
    /// Whether `--off-cpu` can record here.
    off_cpu: bool,
    programs: Vec<ProgramCheck>,
    /// The verifier's budget per program, in processed instructions.
    verifier_limit: u32,
}

#[derive(Debug, Serialize)]
struct ModeReport {
    call_graph: &'static str,
    program: Option<&'static str>,
}

pub fn run(args: CheckArgs) -> Result<u8> {
    sampler::check_privileges()?;
    let programs = sampler::check_programs()?;
    let loads = |name: &str| programs.iter().any(|p| p.program == name && p.loaded);
    let modes: Vec<ModeReport> = [CallGraph::Dwarf, CallGraph::DwarfCopy, CallGraph::Fp]
        .into_iter()
        .map(|call_graph| ModeReport {
            call_graph: call_graph.name(),
            program: StackMode::chain(call_graph)
                .iter()
                .filter(|mode| mode.call_graph() == call_graph)
                .map(|mode| mode.sample_program())
                .find(|&name| loads(name)),
        })
        .collect();
    let off_cpu = [StackMode::Dwarf, StackMode::Copy, StackMode::FramePointers]
        .iter()
        .any(|mode| {
            let (switch, exit) = mode.off_cpu_programs();
            loads(switch) && loads(exit)
        });
    let report = CheckReport {
        kernel_release: kernel_release(),
        modes,
        off_cpu,
        programs,
        verifier_limit: VERIFIER_LIMIT,
    };
    if args.json {
        crate::text::write_json(&mut std::io::stdout().lock(), &report)?;
        println!();
    } else {
        print_report(&report);
    }
    Ok(if report.modes.iter().any(|m| m.program.is_some()) {
        Exit::Success.code()
    } else {
        Exit::Failure.code()
    })
}

fn print_report(report: &CheckReport) {
    println!("Linux {}", printable(&report.kernel_release));
    println!(
        "{:<22} {:>14} {:>8}  refusal",
        "program", "verified insns", "budget"
    );
    for p in &report.programs {
        let (count, share) = match p.verified_insns {
            Some(n) => (
                n.to_string(),
                format!(
                    "{:.1}%",
                    f64::from(n) * 100.0 / f64::from(report.verifier_limit)
                ),
            ),
            None if p.loaded => ("not reported".into(), "-".into()),
            None => ("refused".into(), "-".into()),
        };
        println!(
            "{:<22} {:>14} {:>8}  {}",
            p.program,
            count,
            share,
            p.refusal.as_deref().map(printable).unwrap_or_default()
        );
    }
    let modes: Vec<String> = report
        .modes
        .iter()
        .map(|m| {
            format!(
                "-g {} {}",
                m.call_graph,
                if m.program.is_some() {
                    "works"
                } else {
                    "cannot run"
                }
            )
        })
        .collect();
    println!(
        "here: {}; --off-cpu {}",
        modes.join(", "),
        if report.off_cpu {
            "works"
        } else {
            "cannot run"
        }
    );
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
