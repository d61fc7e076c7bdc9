//! Where CPython keeps what a Python frame walk reads, per minor version: the chain from
//! `_PyRuntime` to each thread's innermost frame, a frame's code object, instruction and
//! caller, and a code object's name, file and line table (docs/design/python-frames.md,
//! section 3). Byte offsets, x86-64.
//!
//! Not guessed: every number is what `offsetof` gives against that version's own headers
//! (internal ones included), and the fast tier compiles tests/python/offsets/offsets.c against
//! each CPython build at hand and compares it with [`Layout::entries`], key by key.

/// How a thread state leads to its innermost frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurrentFrame {
    /// A pointer in the thread state (`frame` up to 3.10, `current_frame` from 3.13).
    InThreadState(u32),
    /// 3.11–3.12: the thread state's `cframe`, then its `current_frame`.
    ThroughCFrame { cframe: u32, current_frame: u32 },
}

/// Where a frame says which instruction it is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// 3.8–3.10: `f_lasti`, an int counting `unit` bytes (1 up to 3.9, 2 in 3.10).
    Lasti { offset: u32, unit: u32 },
    /// 3.11 on: a pointer into the code object's bytecode (`prev_instr`, then `instr_ptr`),
    /// which starts `code_start` bytes into the code object.
    Pointer { offset: u32, code_start: u32 },
}

/// Where a run of Python frames that one C call of the interpreter runs ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Up to 3.10 every frame is a run of its own (one `_PyEval_EvalFrameDefault` each).
    EveryFrame,
    /// 3.11: the frame's `is_entry` byte is set.
    IsEntry(u32),
    /// 3.12 on: the frame's `owner` byte is `FRAME_OWNED_BY_CSTACK` (a shim frame, not shown).
    CStackOwner { offset: u32, value: u8 },
}

/// The layout of one CPython minor version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub version: (u8, u8),
    /// `_PyRuntime.interpreters.head`.
    pub runtime_interpreters: u32,
    pub interp_next: u32,
    pub interp_threads: u32,
    pub tstate_next: u32,
    /// `pthread_self()` of the thread.
    pub tstate_thread_id: u32,
    /// The kernel's tid of the thread (3.11 on).
    pub tstate_native_thread_id: Option<u32>,
    pub current_frame: CurrentFrame,
    /// A frame's caller (`f_back`, then `previous`).
    pub frame_previous: u32,
    /// A frame's code object (`f_code`, then `f_executable`).
    pub frame_code: u32,
    pub instruction: Instruction,
    pub run_end: RunEnd,
    pub code_name: u32,
    /// `co_qualname` (3.11 on).
    pub code_qualname: Option<u32>,
    pub code_filename: u32,
    pub code_firstlineno: u32,
    /// `co_lnotab` up to 3.9, `co_linetable` after ([`super::lines::LineTable`] says which).
    pub code_line_table: u32,
    /// Where a compact ASCII string's characters start (`sizeof(PyASCIIObject)`).
    pub ascii_data: u32,
    /// Where a `bytes` object's bytes start (`ob_sval`), as the line table is one.
    pub bytes_data: u32,
}

const V3_8: Layout = Layout {
    version: (3, 8),
    runtime_interpreters: 32,
    interp_next: 0,
    interp_threads: 8,
    tstate_next: 8,
    tstate_thread_id: 176,
    tstate_native_thread_id: None,
    current_frame: CurrentFrame::InThreadState(24),
    frame_previous: 24,
    frame_code: 32,
    instruction: Instruction::Lasti {
        offset: 104,
        unit: 1,
    },
    run_end: RunEnd::EveryFrame,
    code_name: 112,
    code_qualname: None,
    code_filename: 104,
    code_firstlineno: 40,
    code_line_table: 120,
    ascii_data: 48,
    bytes_data: 32,
};

const V3_9: Layout = Layout {
    version: (3, 9),
    ..V3_8
};

const V3_10: Layout = Layout {
    version: (3, 10),
    instruction: Instruction::Lasti {
        offset: 96,
        unit: 2,
    },
    ..V3_8
};

const V3_11: Layout = Layout {
    version: (3, 11),
    runtime_interpreters: 40,
    interp_next: 0,
    interp_threads: 16,
    tstate_next: 8,
    tstate_thread_id: 152,
    tstate_native_thread_id: Some(160),
    current_frame: CurrentFrame::ThroughCFrame {
        cframe: 56,
        current_frame: 8,
    },
    frame_previous: 48,
    frame_code: 32,
    instruction: Instruction::Pointer {
        offset: 56,
        code_start: 184,
    },
    run_end: RunEnd::IsEntry(68),
    code_name: 120,
    code_qualname: Some(128),
    code_filename: 112,
    code_firstlineno: 72,
    code_line_table: 136,
    ascii_data: 48,
    bytes_data: 32,
};

const V3_12: Layout = Layout {
    version: (3, 12),
    interp_threads: 72,
    tstate_thread_id: 136,
    tstate_native_thread_id: Some(144),
    current_frame: CurrentFrame::ThroughCFrame {
        cframe: 56,
        current_frame: 0,
    },
    frame_previous: 8,
    frame_code: 0,
    instruction: Instruction::Pointer {
        offset: 56,
        code_start: 192,
    },
    run_end: RunEnd::CStackOwner {
        offset: 70,
        value: 3,
    },
    code_firstlineno: 68,
    ascii_data: 40,
    ..V3_11
};

const V3_13: Layout = Layout {
    version: (3, 13),
    runtime_interpreters: 632,
    interp_next: 7264,
    interp_threads: 7344,
    tstate_thread_id: 152,
    tstate_native_thread_id: Some(160),
    current_frame: CurrentFrame::InThreadState(72),
    instruction: Instruction::Pointer {
        offset: 56,
        code_start: 200,
    },
    ..V3_12
};

impl Layout {
    /// The layout of CPython `major.minor`, if amprof knows it.
    pub fn of_version(major: u8, minor: u8) -> Option<&'static Layout> {
        match (major, minor) {
            (3, 8) => Some(&V3_8),
            (3, 9) => Some(&V3_9),
            (3, 10) => Some(&V3_10),
            (3, 11) => Some(&V3_11),
            (3, 12) => Some(&V3_12),
            (3, 13) => Some(&V3_13),
            _ => None,
        }
    }

    /// Every number of this layout under the name tests/python/offsets/offsets.c prints it by.
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        let modern = self.version >= (3, 11);
        let mut entries = vec![
            ("runtime.interpreters.head", self.runtime_interpreters),
            ("interp.next", self.interp_next),
            ("interp.threads.head", self.interp_threads),
            ("tstate.next", self.tstate_next),
            ("tstate.thread_id", self.tstate_thread_id),
            (
                if modern {
                    "iframe.previous"
                } else {
                    "frame.f_back"
                },
                self.frame_previous,
            ),
            (
                match self.version {
                    (3, 13) => "iframe.f_executable",
                    _ if modern => "iframe.f_code",
                    _ => "frame.f_code",
                },
                self.frame_code,
            ),
            ("code.co_name", self.code_name),
            ("code.co_filename", self.code_filename),
            ("code.co_firstlineno", self.code_firstlineno),
            (
                if self.version < (3, 10) {
                    "code.co_lnotab"
                } else {
                    "code.co_linetable"
                },
                self.code_line_table,
            ),
            ("sizeof(PyASCIIObject)", self.ascii_data),
            ("bytes.ob_sval", self.bytes_data),
        ];
        let mut add = |key, value: u32| entries.push((key, value));
        if let Some(native) = self.tstate_native_thread_id {
            add("tstate.native_thread_id", native);
        }
        if let Some(qualname) = self.code_qualname {
            add("code.co_qualname", qualname);
        }
        match self.current_frame {
            CurrentFrame::InThreadState(offset) if modern => add("tstate.current_frame", offset),
            CurrentFrame::InThreadState(offset) => add("tstate.frame", offset),
            CurrentFrame::ThroughCFrame {
                cframe,
                current_frame,
            } => {
                add("tstate.cframe", cframe);
                add("cframe.current_frame", current_frame);
            }
        }
        match self.instruction {
            Instruction::Lasti { offset, .. } => add("frame.f_lasti", offset),
            Instruction::Pointer { offset, code_start } => {
                add(
                    if self.version >= (3, 13) {
                        "iframe.instr_ptr"
                    } else {
                        "iframe.prev_instr"
                    },
                    offset,
                );
                add("code.co_code_adaptive", code_start);
            }
        }
        match self.run_end {
            RunEnd::EveryFrame => {}
            RunEnd::IsEntry(offset) => add("iframe.is_entry", offset),
            RunEnd::CStackOwner { offset, value } => {
                add("iframe.owner", offset);
                add("FRAME_OWNED_BY_CSTACK", u32::from(value));
            }
        }
        entries
            .into_iter()
            .map(|(key, value)| (key, u64::from(value)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_amprof_decodes_lines_of_has_a_layout() {
        for minor in 8..=13 {
            let layout = Layout::of_version(3, minor).expect("a layout");
            assert_eq!(layout.version, (3, minor));
            assert!(super::super::lines::LineTable::of_version(3, minor).is_some());
            let keys: Vec<_> = layout.entries().iter().map(|(key, _)| *key).collect();
            let mut unique = keys.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), keys.len(), "3.{minor}: a key twice");
        }
        assert_eq!(Layout::of_version(3, 14), None);
        assert_eq!(Layout::of_version(3, 7), None);
    }
}
