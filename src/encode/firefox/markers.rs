//! The marker types amprof registers in a Firefox profile (each one's schema: its labels and
//! fields), and [`AmprofMarker`], which every marker is written as: the profile's vocabulary,
//! apart from the encoder that uses it.

use fxprof_processed_profile::{
    CategoryHandle, Marker, MarkerFieldFlags, MarkerFieldFormat, MarkerLocations, MarkerTypeHandle,
    Profile, RuntimeSchemaMarkerField, RuntimeSchemaMarkerSchema, StringHandle,
};

/// One of the marker types amprof writes: its schema, every field an integer.
struct MarkerType {
    name: &'static str,
    description: &'static str,
    locations: MarkerLocations,
    chart_label: &'static str,
    tooltip_label: &'static str,
    table_label: &'static str,
    /// `(key, label)` of each field, in the order of [`AmprofMarker::values`].
    fields: &'static [(&'static str, &'static str)],
}

/// Marker chart and table, and the track's own timeline.
const IN_TIMELINE: MarkerLocations = MarkerLocations::MARKER_CHART
    .union(MarkerLocations::MARKER_TABLE)
    .union(MarkerLocations::TIMELINE_OVERVIEW);

/// `Window N`: a window's interval and counts.
const WINDOW: MarkerType = MarkerType {
    name: "AmprofWindow",
    description: "A window of the capture: amprof records and writes samples window by window.",
    locations: IN_TIMELINE,
    chart_label: "{marker.name}",
    tooltip_label: "{marker.name}: {marker.data.samples} samples, {marker.data.lost} lost",
    table_label: "{marker.name}: {marker.data.samples} samples, {marker.data.lost} lost, {marker.data.truncated} truncated",
    fields: &[
        ("index", "Window"),
        ("samples", "On-CPU samples (all processes)"),
        ("lost", "Samples lost (ring buffer full)"),
        ("idle", "Samples of an idle CPU"),
        ("late", "Samples that came after the window was written"),
        ("truncated", "Stacks cut short (DWARF unwinding)"),
        ("offCpuSamples", "Off-CPU samples (all processes)"),
        ("offCpuLost", "Off-CPU samples lost"),
    ],
};

/// `Lost samples`, `Truncated stacks`: a count over a window.
const COUNT: MarkerType = MarkerType {
    name: "AmprofCount",
    description: "Samples a window lost, or stacks it cut short.",
    locations: IN_TIMELINE,
    chart_label: "{marker.data.count}",
    tooltip_label: "{marker.name}: {marker.data.count}",
    table_label: "{marker.name}: {marker.data.count}",
    fields: &[("count", "Count")],
};

/// `CPU n`: a thread running on CPU n.
const CPU: MarkerType = MarkerType {
    name: "AmprofCpu",
    description: "The CPU the thread's consecutive on-CPU samples were taken on.",
    locations: MarkerLocations::MARKER_CHART.union(MarkerLocations::MARKER_TABLE),
    chart_label: "{marker.name}",
    tooltip_label: "on {marker.name}",
    table_label: "on {marker.name}",
    fields: &[("cpu", "CPU")],
};

/// `Blocked`, `Runnable`: a thread off the CPU, with the stack it waited in.
const OFF_CPU: MarkerType = MarkerType {
    name: "AmprofOffCpu",
    description: "Time the thread spent off the CPU: blocked (a sleep, a lock, I/O) or runnable (waiting for a CPU).",
    locations: IN_TIMELINE,
    chart_label: "{marker.name}",
    tooltip_label: "Off-CPU: {marker.name}",
    table_label: "off-CPU, {marker.name}",
    fields: &[("cpu", "Ran again on CPU")],
};

/// The profile's handles of [`WINDOW`], [`COUNT`], [`CPU`] and [`OFF_CPU`].
pub(super) struct MarkerTypes {
    pub(super) window: MarkerTypeHandle,
    pub(super) count: MarkerTypeHandle,
    pub(super) cpu: MarkerTypeHandle,
    pub(super) off_cpu: MarkerTypeHandle,
}

impl MarkerTypes {
    pub(super) fn register(profile: &mut Profile) -> Self {
        let mut register = |t: &MarkerType| {
            profile.register_marker_type(RuntimeSchemaMarkerSchema {
                type_name: t.name.into(),
                description: Some(t.description.into()),
                locations: t.locations,
                chart_label: Some(t.chart_label.into()),
                tooltip_label: Some(t.tooltip_label.into()),
                table_label: Some(t.table_label.into()),
                fields: t
                    .fields
                    .iter()
                    .map(|&(key, label)| RuntimeSchemaMarkerField {
                        key: key.into(),
                        label: label.into(),
                        format: MarkerFieldFormat::Integer,
                        flags: MarkerFieldFlags::empty(),
                    })
                    .collect(),
                graphs: Vec::new(),
            })
        };
        Self {
            window: register(&WINDOW),
            count: register(&COUNT),
            cpu: register(&CPU),
            off_cpu: register(&OFF_CPU),
        }
    }
}

/// A marker of one of amprof's types: its name, and a number for each of the type's fields.
pub(super) struct AmprofMarker<const N: usize> {
    pub(super) kind: MarkerTypeHandle,
    pub(super) name: StringHandle,
    pub(super) category: CategoryHandle,
    pub(super) values: [f64; N],
}

impl<const N: usize> Marker for AmprofMarker<N> {
    fn marker_type(&self, _: &mut Profile) -> MarkerTypeHandle {
        self.kind
    }

    fn name(&self, _: &mut Profile) -> StringHandle {
        self.name
    }

    fn category(&self, _: &mut Profile) -> CategoryHandle {
        self.category
    }

    /// amprof's types have no string fields: never called.
    fn string_field_value(&self, _: u32) -> StringHandle {
        self.name
    }

    fn number_field_value(&self, field_index: u32) -> f64 {
        self.values
            .get(field_index as usize)
            .copied()
            .unwrap_or_default()
    }
}
