//! Loading amprof's eBPF object: its maps sized for this machine, then the programs of the first
//! `-g` mode the kernel takes, falling back mode by mode ([`StackMode::chain`]); and
//! `amprof check`'s loads of every program, which attach none.

use amprof_abi::MAX_USER_FRAMES;
use anyhow::{Context as _, Result, anyhow};
use aya::{Ebpf, EbpfLoader, programs::PerfEvent, util::nr_cpus};
use serde::Serialize;

use super::{PRIVILEGE_MESSAGE, SamplerConfig, TableSpace};
use crate::{
    error::{Exit, coded},
    record::{
        CallGraph,
        refusal::{Refusal, object_refusal, program_refusal},
    },
};

/// The compiled eBPF program (ebpf-src/build.sh rebuilds it; CI checks it matches its source).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/ebpf-src/amprof.bpf.o"
));

/// A way to take user stacks in the kernel: the programs of one `-g` mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackMode {
    /// The in-kernel walk with unwind tables (`bpf_loop`: 5.17).
    Dwarf,
    /// A stack copy from the registers `bpf_task_pt_regs` gives (5.15).
    Copy,
    /// A stack copy from registers found without `bpf_task_pt_regs` (older kernels).
    CopyCompat,
    /// Frame pointers, walked by `bpf_get_stack`.
    FramePointers,
}

impl StackMode {
    /// The modes that may record `call_graph`, in the order they are tried: the default walk
    /// falls back to the stack copy, then to frame pointers; a mode asked for explicitly only
    /// to other programs of its own (a stack copy is a stack copy, whatever gives the registers).
    pub fn chain(call_graph: CallGraph) -> &'static [StackMode] {
        match call_graph {
            CallGraph::Dwarf => &[
                StackMode::Dwarf,
                StackMode::Copy,
                StackMode::CopyCompat,
                StackMode::FramePointers,
            ],
            CallGraph::DwarfCopy => &[StackMode::Copy, StackMode::CopyCompat],
            CallGraph::Fp => &[StackMode::FramePointers],
        }
    }

    /// The `-g` mode this is.
    pub fn call_graph(self) -> CallGraph {
        match self {
            StackMode::Dwarf => CallGraph::Dwarf,
            StackMode::Copy | StackMode::CopyCompat => CallGraph::DwarfCopy,
            StackMode::FramePointers => CallGraph::Fp,
        }
    }

    /// The cpu-clock program.
    pub fn sample_program(self) -> &'static str {
        match self {
            StackMode::Dwarf => "sample_dwarf",
            StackMode::Copy => "sample_copy",
            StackMode::CopyCompat => "sample_copy_compat",
            StackMode::FramePointers => "sample_fp",
        }
    }

    /// The off-CPU programs: on `sched_switch`, and on `sys_exit`. The copy from registers
    /// found without `bpf_task_pt_regs` has none of its own (off-CPU time needs the helper to
    /// tell a thread's kernel entries apart): it tries the copy's.
    pub fn off_cpu_programs(self) -> (&'static str, &'static str) {
        match self {
            StackMode::Dwarf => ("off_cpu_switch_dwarf", "off_cpu_exit_dwarf"),
            StackMode::Copy | StackMode::CopyCompat => ("off_cpu_switch_copy", "off_cpu_exit_copy"),
            StackMode::FramePointers => ("off_cpu_switch_fp", "off_cpu_exit_fp"),
        }
    }

    /// What the mode is, for a sentence.
    fn what(self) -> String {
        match self {
            StackMode::Dwarf => "the in-kernel stack walk (sample_dwarf)".into(),
            mode => format!(
                "-g {} ({})",
                mode.call_graph().name(),
                mode.sample_program()
            ),
        }
    }

    /// What recording with this mode costs, against the in-kernel walk.
    pub(super) fn cost(self, user_stack_bytes: u32) -> String {
        match self {
            StackMode::Dwarf => "nothing".into(),
            StackMode::Copy | StackMode::CopyCompat => format!(
                "stacks deeper than the {} KiB copied are cut short",
                user_stack_bytes / 1024
            ),
            StackMode::FramePointers => {
                "code built without frame pointers shows only its leaf frame".into()
            }
        }
    }

    /// Every program of the object, with the kind of event it is loaded for.
    pub const ALL_PROGRAMS: &'static [&'static str] = &[
        "sample_dwarf",
        "sample_copy",
        "sample_copy_compat",
        "sample_fp",
        "off_cpu_switch_dwarf",
        "off_cpu_exit_dwarf",
        "off_cpu_switch_copy",
        "off_cpu_exit_copy",
        "off_cpu_switch_fp",
        "off_cpu_exit_fp",
        "process_exec",
        "follow_children",
        "forget_new_process",
    ];
}

/// Loads the object for each mode of [`StackMode::chain`] in turn until the kernel takes its
/// sampling program. Returns that mode and its object (that program loaded, nothing attached),
/// with a line when the mode is not the `-g` asked for: what was refused first, and what
/// recording with the mode taken instead costs.
pub(super) fn load_first_mode(
    cfg: &SamplerConfig,
    possible_cpus: usize,
) -> Result<(StackMode, Ebpf, Option<String>)> {
    let chain = StackMode::chain(cfg.call_graph);
    let mut refused: Vec<(StackMode, Refusal)> = Vec::new();
    let mut loaded = None;
    for &mode in chain {
        // The tables' maps are big: sized only while the walk may load.
        let space = (mode == StackMode::Dwarf).then_some(cfg.unwind_tables);
        let mut ebpf = load_object(cfg, possible_cpus, space)?;
        let program: &mut PerfEvent = program_of(&mut ebpf, mode.sample_program())?;
        match load_retrying(|| program.load()) {
            Ok(()) => {
                loaded = Some((mode, ebpf));
                break;
            }
            Err(error) => refused.push((mode, program_refusal(mode.sample_program(), &error))),
        }
    }
    let Some((mode, ebpf)) = loaded else {
        return Err(no_sampling_program(cfg.call_graph, &refused));
    };
    let fallback = if let Some((first, refusal)) = refused.first()
        && mode.call_graph() != cfg.call_graph
    {
        Some(format!(
            "{} was refused: {}; recording with -g {} instead: {}",
            first.what(),
            refusal.phrase(),
            mode.call_graph().name(),
            mode.cost(cfg.user_stack_bytes)
        ))
    } else {
        None
    };
    Ok((mode, ebpf, fallback))
}

/// Creates the object's maps (sized for this machine and `cfg`; the unwind tables' only when
/// `tables` is given) without loading any program.
pub(super) fn load_object(
    cfg: &SamplerConfig,
    possible_cpus: usize,
    tables: Option<TableSpace>,
) -> Result<Ebpf> {
    let space = tables.unwrap_or(TableSpace {
        rows: 1,
        mappings: 1,
    });
    let scratch_entries = 2 * possible_cpus as u32;
    EbpfLoader::new()
        .map_max_entries("EVENTS", cfg.ring_bytes)
        // Two entries per CPU: on-CPU samples, and off-CPU ones (which a cpu-clock sample can
        // interrupt).
        .map_max_entries("SCRATCH", scratch_entries)
        .map_max_entries("WALKS", scratch_entries)
        .map_max_entries("UNWIND_ROWS", space.rows.max(1))
        .map_max_entries("MAPPINGS", space.mappings.max(1))
        .map_max_entries(
            "FRAMES",
            (2 * possible_cpus * MAX_USER_FRAMES)
                .try_into()
                .unwrap_or(u32::MAX),
        )
        .load(OBJECT)
        .map_err(|error| {
            let refusal = object_refusal(&error);
            if refusal.privileges {
                coded(Exit::NoPermission, PRIVILEGE_MESSAGE)
            } else {
                anyhow!("cannot load amprof's eBPF object: {}", refusal.phrase())
            }
        })
}

/// Loads a program, again when the verifier was interrupted: it gives up with EAGAIN when a
/// signal is pending (or EINTR), which says nothing about the program, and a fallback to
/// another mode for it would cost the recording its stacks.
pub(super) fn load_retrying(
    mut load: impl FnMut() -> std::result::Result<(), aya::programs::ProgramError>,
) -> std::result::Result<(), aya::programs::ProgramError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if attempts < 3
                    && matches!(io_error.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {}
            result => return result,
        }
    }
}

/// The program `name` of the object, as its type.
pub(super) fn program_of<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("the eBPF object has no {name} program"))?;
    <&mut T>::try_from(program).with_context(|| format!("program {name} has an unexpected type"))
}

/// The error when the kernel took none of the modes `call_graph` may record with.
pub(super) fn no_sampling_program(
    call_graph: CallGraph,
    refused: &[(StackMode, Refusal)],
) -> anyhow::Error {
    if refused.iter().any(|(_, r)| r.privileges) {
        return coded(Exit::NoPermission, PRIVILEGE_MESSAGE);
    }
    let reasons: Vec<String> = refused
        .iter()
        .map(|(mode, refusal)| format!("{}: {}", mode.sample_program(), refusal.phrase()))
        .collect();
    anyhow!(
        "the kernel refused the sampling program{} for -g {}: {}",
        if refused.len() > 1 { "s" } else { "" },
        call_graph.name(),
        reasons.join("; ")
    )
}

/// Before 5.11, BPF maps and programs count against RLIMIT_MEMLOCK, whose default (64 KiB or
/// 8 MiB) is far below what the ring buffer needs: lift it, as perf and bpftool do. Later
/// kernels account the memory to the cgroup, and the call may fail there (it does in some
/// containers) without harm.
pub(super) fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain syscall on a value on the stack.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// What the kernel said to one of amprof's programs (`amprof check`).
#[derive(Clone, Debug, Serialize)]
pub struct ProgramCheck {
    pub program: &'static str,
    pub loaded: bool,
    /// Instructions the verifier processed to accept it (`bpf_prog_info.verified_insns`;
    /// kernels before 5.16 do not report it).
    pub verified_insns: Option<u32>,
    /// Why the kernel refused it.
    pub refusal: Option<String>,
}

/// The verifier's limit on instructions processed per program.
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// Loads every program of the object (attaching none) and reports what the kernel said to each.
pub fn check_programs() -> Result<Vec<ProgramCheck>> {
    let possible_cpus = nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
    raise_memlock_limit();
    let cfg = SamplerConfig {
        frequency_hz: 99,
        window_len_ns: 1_000_000_000,
        targets: None,
        follow_children: false,
        ring_bytes: 1 << 20,
        call_graph: CallGraph::Dwarf,
        user_stack_bytes: 16 * 1024,
        unwind_tables: TableSpace {
            rows: 1,
            mappings: 1,
        },
        off_cpu: None,
    };
    let mut ebpf = load_object(&cfg, possible_cpus, None)?;
    let mut checks = Vec::new();
    for &name in StackMode::ALL_PROGRAMS {
        let program = ebpf
            .program_mut(name)
            .with_context(|| format!("the eBPF object has no {name} program"))?;
        use aya::programs::Program;
        let loaded = match program {
            Program::PerfEvent(p) => p.load(),
            Program::TracePoint(p) => p.load(),
            Program::RawTracePoint(p) => p.load(),
            _ => return Err(anyhow!("program {name} has an unexpected type")),
        };
        let check = match loaded {
            Ok(()) => ProgramCheck {
                program: name,
                loaded: true,
                verified_insns: program
                    .info()
                    .ok()
                    .and_then(|info| info.verified_instruction_count())
                    .filter(|&count| count > 0),
                refusal: None,
            },
            Err(error) => {
                let refusal = program_refusal(name, &error);
                if refusal.privileges {
                    return Err(coded(Exit::NoPermission, PRIVILEGE_MESSAGE));
                }
                ProgramCheck {
                    program: name,
                    loaded: false,
                    verified_insns: None,
                    refusal: Some(refusal.phrase()),
                }
            }
        };
        checks.push(check);
    }
    Ok(checks)
}
