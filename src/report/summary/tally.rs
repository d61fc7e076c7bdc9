//! The tally: what the summary counts, window by window as the capture is read, and the
//! [`Summary`] made of it at the end; `report --diff` takes every function's weight out of it
//! instead ([`Tally::take_function_weights`]).

use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    model::{
        CaptureInfo, FunctionCount, FunctionTime, OffCpuSection, ProcessCount, ProcessTime,
        Summary, Totals, WindowInfo, WindowOffCpu,
    },
    ratio,
};
use crate::{
    capture::{
        Completeness, Event, Meta, SampleKind, Selection,
        format::{Stack, TargetKind, Window},
        off_cpu_samples,
    },
    encode::{Ending, frames},
};

/// `(key, weight)`, heaviest first.
type Ranked<K> = Vec<(K, u64)>;

/// The heaviest of a [`Ranking`]: functions (and their module) and processes.
struct Top {
    self_weights: Ranked<(String, String)>,
    total_weights: Ranked<(String, String)>,
    processes: Ranked<(u32, String)>,
}

/// Functions and processes by a weight: on-CPU samples, or off-CPU nanoseconds.
#[derive(Default)]
struct Ranking {
    self_weights: FxHashMap<(String, String), u64>,
    total_weights: FxHashMap<(String, String), u64>,
    processes: FxHashMap<(u32, String), u64>,
    /// Functions of the stack being added (a recursive one counts once in the total).
    seen: FxHashSet<(String, String)>,
}

impl Ranking {
    /// Adds `weight` to the frames of `stack` (self: the innermost frame of location
    /// `self_depth`) and to its process; true if every location has a symbol.
    fn add(&mut self, window: &Window, stack: &Stack, weight: u64, self_depth: usize) -> bool {
        // Off-CPU weights are a capture's nanoseconds: any u64, so every sum saturates.
        if let Some(process) = window.processes.get(stack.process as usize) {
            let total = self
                .processes
                .entry((process.pid, process.name.clone()))
                .or_default();
            *total = total.saturating_add(weight);
        }
        let mut all_named = true;
        self.seen.clear();
        for (depth, &id) in stack.locations.iter().enumerate() {
            let Some(location) = window.locations.get(id as usize) else {
                continue;
            };
            all_named &= !location.lines.is_empty();
            let module = frames::location_module(window, location)
                .map(|m| frames::basename(&m.path).to_string())
                .unwrap_or_default();
            let mut innermost = true;
            frames::for_each_frame(window, location, |frame| {
                let key = (frame.to_string(), module.clone());
                if depth == self_depth && innermost {
                    let total = self.self_weights.entry(key.clone()).or_default();
                    *total = total.saturating_add(weight);
                }
                innermost = false;
                if self.seen.insert(key.clone()) {
                    let total = self.total_weights.entry(key).or_default();
                    *total = total.saturating_add(weight);
                }
            });
        }
        all_named
    }

    /// The `top` functions by self and by total weight, and processes: `(name, weight)`
    /// heaviest first, ties by name.
    fn top(self, top: usize) -> Top {
        fn ranked<K: Ord>(weights: FxHashMap<K, u64>, top: usize) -> Ranked<K> {
            let mut list: Vec<_> = weights.into_iter().collect();
            list.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            list.truncate(top);
            list
        }
        Top {
            self_weights: ranked(self.self_weights, top),
            total_weights: ranked(self.total_weights, top),
            processes: ranked(self.processes, top),
        }
    }
}

/// Every function's weight of one event, from a [`Tally`] (for `report --diff`): keyed by
/// `(function, module)` as the summary's lists are.
#[derive(Debug, Default)]
pub struct FunctionWeights {
    /// Weight as the self frame (the innermost frame; for off-CPU weight, the innermost user
    /// frame: see [the summary's documentation](super)).
    pub self_weights: FxHashMap<(String, String), u64>,
    /// Weight anywhere in the stack (self + children; a recursive function once per stack).
    pub total_weights: FxHashMap<(String, String), u64>,
    /// The whole weight, what shares are of.
    pub total: u64,
    /// Samples of the event: on-CPU, off-CPU, or both (`wall`).
    pub samples: u64,
}

impl FunctionWeights {
    /// Adds `ranking`'s weights times `scale`.
    fn add(&mut self, ranking: Ranking, scale: u64) {
        for (into, from) in [
            (&mut self.self_weights, ranking.self_weights),
            (&mut self.total_weights, ranking.total_weights),
        ] {
            for (key, weight) in from {
                let total = into.entry(key).or_default();
                *total = total.saturating_add(weight.saturating_mul(scale));
            }
        }
    }
}

/// Off-CPU samples added (captures recorded with `--off-cpu`).
#[derive(Default)]
struct OffCpuTally {
    ranking: Ranking,
    samples: u64,
    lost: u64,
    /// By reason: blocked, runnable.
    ns: [u64; 2],
}

/// What [`Tally::take_kind`] takes of one kind of sample.
struct KindWeights {
    ranking: Ranking,
    samples: u64,
    /// The samples' weight, in the unit of the kind's ranking: samples (a periodic kind's, each
    /// one period), or nanoseconds.
    weight: u64,
}

/// What the summary counts, window by window as the capture is read.
#[derive(Default)]
pub struct Tally {
    on_cpu: Ranking,
    /// `None`: the capture has no off-CPU samples.
    off_cpu: Option<OffCpuTally>,
    totals: Totals,
    symbolized: u64,
    windows: Vec<WindowInfo>,
    /// End and `evicted_before` of the last window added.
    last: Option<(u64, u64)>,
    /// The event of the last window added.
    event: Event,
}

impl Tally {
    /// Counts the stacks of `window` that `selection` keeps (`meta` places the window).
    pub fn add(&mut self, meta: &Meta, window: &Window, selection: &Selection) {
        let mut samples = 0;
        let mut processes = FxHashSet::default();
        let on_cpu_lists = selection.event.includes_on_cpu();
        self.event = selection.event;
        for stack in &window.stacks {
            // A stack only off the CPU has no on-CPU sample to count.
            if !selection.includes_stack(window, stack)
                || (stack.count == 0 && stack.off_cpu_count > 0)
            {
                continue;
            }
            samples = stack.count.saturating_add(samples);
            if let Some(process) = window.processes.get(stack.process as usize) {
                processes.insert(process.pid);
            }
            let all_named = if on_cpu_lists {
                self.on_cpu.add(window, stack, stack.count, 0)
            } else {
                stack.locations.iter().all(|&id| {
                    window
                        .locations
                        .get(id as usize)
                        .is_none_or(|l| !l.lines.is_empty())
                })
            };
            if all_named {
                self.symbolized = self.symbolized.saturating_add(stack.count);
            }
        }
        let window_off_cpu = (meta.off_cpu_period_ns != 0).then(|| {
            let tally = self.off_cpu.get_or_insert_default();
            tally.add(window, selection)
        });
        let totals = &mut self.totals;
        totals.samples = totals.samples.saturating_add(samples);
        totals.lost = totals.lost.saturating_add(window.lost);
        totals.idle = totals.idle.saturating_add(window.idle);
        totals.truncated = totals.truncated.saturating_add(window.truncated);
        if let Some(problems) = &window.problems {
            totals.problems.add(problems);
        }
        if let Some(unwinding) = &window.unwinding {
            totals.unwinding.get_or_insert_default().add(unwinding);
        }
        self.windows.push(WindowInfo {
            index: window.index,
            start_offset_seconds: window.start_ns.saturating_sub(meta.start_ns) as f64 / 1e9,
            seconds: window.end_ns.saturating_sub(window.start_ns) as f64 / 1e9,
            samples,
            lost: window.lost,
            idle: window.idle,
            late: window.late,
            truncated: window.truncated,
            processes: processes.len(),
            problems: window.problems.clone(),
            off_cpu: window_off_cpu,
        });
        self.last = Some((window.end_ns, window.evicted_before));
    }

    /// Takes every function's weight of `event` out of the tally (not a top list), as the
    /// summary ranks them, kind by kind of the event: one kind alone in the unit of its ranking
    /// (on-CPU samples for `on-cpu`, off-CPU nanoseconds for `off-cpu`), several (`wall`) in
    /// nanoseconds, a sample of a periodic kind standing for `period_ns`. The tally's lists are
    /// empty afterwards; its windows and totals stay.
    pub fn take_function_weights(&mut self, event: Event, period_ns: u64) -> FunctionWeights {
        let kinds = event.kinds();
        let mut weights = FunctionWeights::default();
        for kind in kinds.iter() {
            let Some(taken) = self.take_kind(kind) else {
                continue;
            };
            let scale = if kind.descriptor().periodic && kinds.len() > 1 {
                period_ns
            } else {
                1
            };
            weights.add(taken.ranking, scale);
            weights.samples = weights.samples.saturating_add(taken.samples);
            weights.total = weights
                .total
                .saturating_add(taken.weight.saturating_mul(scale));
        }
        weights
    }

    /// `kind`'s ranking taken out of the tally, with its samples and their weight (`None`: the
    /// capture was not recording that kind). Which of the tally's fields count which kind.
    fn take_kind(&mut self, kind: SampleKind) -> Option<KindWeights> {
        match kind {
            SampleKind::OnCpu => Some(KindWeights {
                ranking: std::mem::take(&mut self.on_cpu),
                samples: self.totals.samples,
                weight: self.totals.samples,
            }),
            SampleKind::OffCpu => self.off_cpu.as_mut().map(|off| KindWeights {
                ranking: std::mem::take(&mut off.ranking),
                samples: off.samples,
                weight: off.total_ns(),
            }),
        }
    }

    /// The summary of what was added: `top` functions and processes of each list.
    pub fn summary(mut self, meta: &Meta, ending: &Ending<'_>, top: usize) -> Summary {
        self.totals.fully_symbolized = ratio(self.symbolized, self.totals.samples);
        let total_samples = self.totals.samples;
        let Top {
            self_weights: top_self,
            total_weights: top_total,
            processes: top_processes,
        } = self.on_cpu.top(top);
        let function_counts = |list: Vec<((String, String), u64)>| -> Vec<FunctionCount> {
            list.into_iter()
                .map(|((function, module), samples)| FunctionCount {
                    function,
                    module,
                    samples,
                    percent: 100.0 * ratio(samples, total_samples),
                })
                .collect()
        };
        let top_self = function_counts(top_self);
        let top_total = function_counts(top_total);
        let top_processes = top_processes
            .into_iter()
            .map(|((pid, name), samples)| ProcessCount {
                pid,
                name,
                samples,
                percent: 100.0 * ratio(samples, total_samples),
            })
            .collect();
        let off_cpu = if meta.off_cpu_period_ns == 0 {
            None
        } else {
            Some(
                self.off_cpu
                    .take()
                    .unwrap_or_default()
                    .section(meta.off_cpu_period_ns, top),
            )
        };

        let target = meta.target.clone().unwrap_or_default();
        let end = ending.end;
        let last_end = self
            .last
            .map(|(end_ns, _)| end_ns)
            .or(end.map(|e| e.end_ns))
            .unwrap_or(meta.start_ns);
        let start_unix_ns = meta.start_ns as i64 + meta.realtime_offset_ns;
        Summary {
            capture: CaptureInfo {
                amprof_version: meta.amprof_version.clone(),
                hostname: meta.hostname.clone(),
                kernel_release: meta.kernel_release.clone(),
                arch: meta.arch.clone(),
                cpus: meta.cpus,
                event: meta.event.clone(),
                frequency_hz: meta.frequency_hz,
                call_graph: meta.call_graph.clone(),
                kernel_limits: meta.kernel_limits.clone(),
                window_seconds: meta.window_ns as f64 / 1e9,
                keep: meta.keep,
                target: match TargetKind::try_from(target.kind) {
                    Ok(TargetKind::Pids) => "pids",
                    Ok(TargetKind::Command) => "command",
                    _ => "system",
                }
                .into(),
                target_pids: target.pids,
                target_command: target.command,
                command_line: meta.command_line.clone(),
                start: rfc3339(start_unix_ns),
                start_unix_ns,
                duration_seconds: last_end.saturating_sub(meta.start_ns) as f64 / 1e9,
                state: match ending.completeness {
                    Completeness::Finalized => "finalized",
                    Completeness::Truncated { .. } => "truncated",
                    Completeness::NotFinalized => "not-finalized",
                }
                .into(),
                stopped_by: end.map(|e| e.reason.clone()),
                windows_evicted: end.map_or_else(
                    || self.last.map_or(0, |(_, evicted)| evicted),
                    |e| e.windows_evicted,
                ),
            },
            windows: self.windows,
            totals: self.totals,
            top_self,
            top_total,
            top_processes,
            off_cpu,
            on_cpu_lists: self.event.includes_on_cpu(),
        }
    }
}

impl OffCpuTally {
    /// Adds the off-CPU samples of `window` whose process `selection` keeps; returns the
    /// window's counts.
    fn add(&mut self, window: &Window, selection: &Selection) -> WindowOffCpu {
        // Per stack, from the samples (the reasons are theirs).
        let mut by_stack = vec![0u64; window.stacks.len()];
        let (mut samples, mut ns) = (0, 0u64);
        for sample in off_cpu_samples(window) {
            let Some(off) = sample.off_cpu() else {
                continue;
            };
            if !selection.includes_stack(window, sample.stack) {
                continue;
            }
            samples += 1;
            ns = ns.saturating_add(off.ns);
            let reason = &mut self.ns[off.reason as usize];
            *reason = reason.saturating_add(off.ns);
            if let Some(total) = by_stack.get_mut(sample.stack_index as usize) {
                *total = total.saturating_add(off.ns);
            }
        }
        for (stack, &weight) in window.stacks.iter().zip(&by_stack) {
            if weight > 0 {
                let user = stack.kernel_frames as usize;
                let self_depth = if user < stack.locations.len() {
                    user
                } else {
                    0
                };
                self.ranking.add(window, stack, weight, self_depth);
            }
        }
        self.samples += samples;
        self.lost = self.lost.saturating_add(window.off_cpu_lost);
        WindowOffCpu {
            samples,
            ns,
            lost: window.off_cpu_lost,
        }
    }

    /// Time off the CPU, blocked and runnable.
    fn total_ns(&self) -> u64 {
        self.ns
            .iter()
            .fold(0, |total, &ns| total.saturating_add(ns))
    }

    /// The summary's off-CPU section of what was added: `top` functions and processes of each
    /// list.
    fn section(self, period_ns: u64, top: usize) -> OffCpuSection {
        let total_ns = self.total_ns();
        let [blocked_ns, runnable_ns] = self.ns;
        let Top {
            self_weights: top_self,
            total_weights: top_total,
            processes: top_processes,
        } = self.ranking.top(top);
        let function_times = |list: Vec<((String, String), u64)>| -> Vec<FunctionTime> {
            list.into_iter()
                .map(|((function, module), ns)| FunctionTime {
                    function,
                    module,
                    ns,
                    percent: 100.0 * ratio(ns, total_ns),
                })
                .collect()
        };
        OffCpuSection {
            period_ns,
            samples: self.samples,
            lost: self.lost,
            total_ns,
            blocked_ns,
            runnable_ns,
            top_self: function_times(top_self),
            top_total: function_times(top_total),
            top_processes: top_processes
                .into_iter()
                .map(|((pid, name), ns)| ProcessTime {
                    pid,
                    name,
                    ns,
                    percent: 100.0 * ratio(ns, total_ns),
                })
                .collect(),
        }
    }
}

/// Nanoseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(unix_ns: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Seconds a window lasts.
pub fn window_seconds(window: &Window) -> f64 {
    (window.end_ns - window.start_ns) as f64 / 1e9
}
