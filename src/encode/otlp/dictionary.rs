//! The `ProfilesDictionary` of one request, built as its profiles are: every string, function,
//! mapping, location, stack and attribute interned once, in insertion order, entry 0 of each
//! table the zero value the proto requires.
//!
//! Tables are interned by key (the message's content), so that the same frame in two
//! processes, or two windows of a request, is one entry. Each new entry counts its encoded
//! length into [`Dictionary::bytes`] as it is made, and [`Dictionary::mark`] /
//! [`Dictionary::truncate`] undo the entries made since a mark: what lets the batch roll back a
//! window that does not fit.

use std::hash::Hash;

use indexmap::IndexSet;
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, any_value},
    profiles::v1development as otlp,
};
use prost::Message as _;
use rustc_hash::FxHashMap;

use super::{MAX_PREFIX, field_len};
use crate::{
    capture::{
        Window,
        format::{Location, ModuleKind},
    },
    encode::frames,
};

/// What a dictionary attribute holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Value {
    Str(String),
    Int(i64),
}

impl Value {
    pub(super) fn any(&self) -> AnyValue {
        AnyValue {
            value: Some(match self {
                Value::Str(s) => any_value::Value::StringValue(s.clone()),
                Value::Int(i) => any_value::Value::IntValue(*i),
            }),
        }
    }
}

/// What identifies a dictionary mapping: its range, file and attributes (string and attribute
/// indices into the same dictionary).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MappingKey {
    start: u64,
    limit: u64,
    file_offset: u64,
    filename: i32,
    attributes: Vec<i32>,
}

/// What identifies a dictionary location: its mapping, address, lines and attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LocationKey {
    mapping: i32,
    address: u64,
    /// (function index, line) innermost first.
    lines: Vec<(i32, i64)>,
    attributes: Vec<i32>,
}

/// A table of the dictionary: distinct values in insertion order, entry 0 the zero value.
struct Table<K> {
    set: IndexSet<K>,
}

impl<K: Hash + Eq> Table<K> {
    fn new(zero: K) -> Self {
        let mut set = IndexSet::new();
        set.insert(zero);
        Self { set }
    }
}

/// The dictionary tables of one request, and an upper bound of their encoded size.
pub(super) struct Dictionary {
    strings: Table<String>,
    /// (name, file) string indices.
    functions: Table<(i32, i32)>,
    mappings: Table<MappingKey>,
    locations: Table<LocationKey>,
    /// Location indices, leaf first.
    stacks: Table<Vec<i32>>,
    /// (key string index, value).
    attributes: Table<(i32, Value)>,
    /// Upper bound of the encoded `dictionary` field, its own tag and length included.
    pub(super) bytes: usize,
}

/// Where a [`Dictionary`] was: the length of each table, and its size.
pub(super) struct Mark {
    lens: [usize; 6],
    bytes: usize,
}

impl Dictionary {
    pub(super) fn new() -> Self {
        Self {
            strings: Table::new(String::new()),
            functions: Table::new((0, 0)),
            mappings: Table::new(MappingKey {
                start: 0,
                limit: 0,
                file_offset: 0,
                filename: 0,
                attributes: vec![],
            }),
            locations: Table::new(LocationKey {
                mapping: 0,
                address: 0,
                lines: vec![],
                attributes: vec![],
            }),
            stacks: Table::new(vec![]),
            attributes: Table::new((0, Value::Str(String::new()))),
            // The dictionary field and its zero entries (the empty link table's included).
            bytes: 1 + MAX_PREFIX + 7 * field_len(0),
        }
    }

    pub(super) fn mark(&self) -> Mark {
        Mark {
            lens: [
                self.strings.set.len(),
                self.functions.set.len(),
                self.mappings.set.len(),
                self.locations.set.len(),
                self.stacks.set.len(),
                self.attributes.set.len(),
            ],
            bytes: self.bytes,
        }
    }

    /// Forgets every entry made since `to` was marked.
    pub(super) fn truncate(&mut self, to: &Mark) {
        self.strings.set.truncate(to.lens[0]);
        self.functions.set.truncate(to.lens[1]);
        self.mappings.set.truncate(to.lens[2]);
        self.locations.set.truncate(to.lens[3]);
        self.stacks.set.truncate(to.lens[4]);
        self.attributes.set.truncate(to.lens[5]);
        self.bytes = to.bytes;
    }

    pub(super) fn string(&mut self, s: &str) -> i32 {
        if let Some(index) = self.strings.set.get_index_of(s) {
            return index as i32;
        }
        self.bytes += field_len(s.len());
        self.strings.set.insert_full(s.to_owned()).0 as i32
    }

    /// Interns `key`, counting `len` (its encoded message length) when it is new.
    fn intern<K: Hash + Eq>(
        table: &mut Table<K>,
        bytes: &mut usize,
        key: K,
        len: impl FnOnce(&K) -> usize,
    ) -> i32 {
        if let Some(index) = table.set.get_index_of(&key) {
            return index as i32;
        }
        *bytes += field_len(len(&key));
        table.set.insert_full(key).0 as i32
    }

    pub(super) fn attribute(&mut self, key: &str, value: Value) -> i32 {
        let key = self.string(key);
        Self::intern(
            &mut self.attributes,
            &mut self.bytes,
            (key, value),
            |(k, v)| attribute_message(*k, v).encoded_len(),
        )
    }

    /// The dictionary stack of `window.stacks[stack]` (`location_cache`: the dictionary
    /// location of each (capture location, kernel frame or not) of `window` met so far).
    pub(super) fn stack(
        &mut self,
        window: &Window,
        stack: u32,
        location_cache: &mut FxHashMap<(u32, bool), i32>,
    ) -> i32 {
        let capture_stack = &window.stacks[stack as usize];
        let mut indices = Vec::with_capacity(capture_stack.locations.len());
        for (position, &location) in capture_stack.locations.iter().enumerate() {
            let kernel = position < capture_stack.kernel_frames as usize;
            let index = match location_cache.get(&(location, kernel)) {
                Some(&index) => index,
                None => {
                    let index = self.location(window, location, kernel);
                    location_cache.insert((location, kernel), index);
                    index
                }
            };
            indices.push(index);
        }
        Self::intern(&mut self.stacks, &mut self.bytes, indices, |l| {
            otlp::Stack {
                location_indices: l.clone(),
            }
            .encoded_len()
        })
    }

    /// The dictionary location of `window.locations[index]`, with its mapping, functions and
    /// frame type. The index is in range: the capture reader checked every stack of a window
    /// read from a file, the stream every stack of one a recording hands over.
    fn location(&mut self, window: &Window, index: u32, kernel: bool) -> i32 {
        let location = &window.locations[index as usize];
        let mapping = self.mapping(window, location);
        // The names `amprof report` gives, innermost first: one per line, or one for none.
        let mut names = Vec::with_capacity(location.lines.len().max(1));
        frames::for_each_frame(window, location, |frame| names.push(frame.to_string()));
        let mut lines = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let line = location.lines.get(i);
            let file = line
                .and_then(|l| window.functions.get(l.function as usize))
                .map_or("", |f| f.file.as_str());
            let key = (self.string(name), self.string(file));
            let function = Self::intern(&mut self.functions, &mut self.bytes, key, |&(n, f)| {
                function_message(n, f).encoded_len()
            });
            lines.push((function, line.map_or(0, |l| i64::from(l.line))));
        }
        let frame_type = if kernel { "kernel" } else { "native" };
        let attributes = vec![self.attribute("profile.frame.type", Value::Str(frame_type.into()))];
        let key = LocationKey {
            mapping,
            address: location.address,
            lines,
            attributes,
        };
        Self::intern(&mut self.locations, &mut self.bytes, key, |k| {
            location_message(k).encoded_len()
        })
    }

    /// The dictionary mapping of `location` (0: none known).
    fn mapping(&mut self, window: &Window, location: &Location) -> i32 {
        let Some(module) = frames::location_module(window, location) else {
            return 0;
        };
        let (start, limit, file_offset) = match (location.mapping as usize)
            .checked_sub(1)
            .and_then(|m| window.mappings.get(m))
        {
            Some(m) if module.kind != ModuleKind::Kernel as i32 => (m.start, m.end, m.file_offset),
            _ => (0, 0, 0),
        };
        let filename = self.string(&module.path);
        let mut attributes = Vec::new();
        if !module.build_id.is_empty() {
            let hex: String = module.build_id.iter().map(|b| format!("{b:02x}")).collect();
            attributes.push(self.attribute("process.executable.build_id.gnu", Value::Str(hex)));
        }
        let key = MappingKey {
            start,
            limit,
            file_offset,
            filename,
            attributes,
        };
        Self::intern(&mut self.mappings, &mut self.bytes, key, |k| {
            mapping_message(k).encoded_len()
        })
    }

    /// The dictionary message, its tables in the order their entries were made.
    pub(super) fn into_message(self) -> otlp::ProfilesDictionary {
        otlp::ProfilesDictionary {
            mapping_table: self.mappings.set.iter().map(mapping_message).collect(),
            location_table: self.locations.set.iter().map(location_message).collect(),
            function_table: self
                .functions
                .set
                .iter()
                .map(|&(n, f)| function_message(n, f))
                .collect(),
            link_table: vec![otlp::Link::default()],
            string_table: self.strings.set.into_iter().collect(),
            attribute_table: self
                .attributes
                .set
                .iter()
                .map(|(k, v)| attribute_message(*k, v))
                .collect(),
            stack_table: self
                .stacks
                .set
                .into_iter()
                .map(|location_indices| otlp::Stack { location_indices })
                .collect(),
        }
    }
}

fn attribute_message(key: i32, value: &Value) -> otlp::KeyValueAndUnit {
    // Entry 0 must be the zero value: no key, no value.
    let value = (key != 0).then(|| value.any());
    otlp::KeyValueAndUnit {
        key_strindex: key,
        value,
        unit_strindex: 0,
    }
}

fn function_message(name: i32, file: i32) -> otlp::Function {
    otlp::Function {
        name_strindex: name,
        system_name_strindex: 0,
        filename_strindex: file,
        start_line: 0,
    }
}

fn mapping_message(key: &MappingKey) -> otlp::Mapping {
    otlp::Mapping {
        memory_start: key.start,
        memory_limit: key.limit,
        file_offset: key.file_offset,
        filename_strindex: key.filename,
        attribute_indices: key.attributes.clone(),
    }
}

fn location_message(key: &LocationKey) -> otlp::Location {
    otlp::Location {
        mapping_index: key.mapping,
        address: key.address,
        lines: key
            .lines
            .iter()
            .map(|&(function_index, line)| otlp::Line {
                function_index,
                line,
                column: 0,
            })
            .collect(),
        attribute_indices: key.attributes.clone(),
    }
}
