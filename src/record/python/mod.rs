//! Python frames from a running CPython (issue 24; the design, the layouts measured per
//! version and how they were checked: docs/design/python-frames.md).
//!
//! Built so far, each checked against every CPython at hand (tests/fast/python.rs): [`detect`],
//! the interpreter in an ELF file (its version, `_PyRuntime`, `_PyEval_EvalFrameDefault`);
//! [`layout`], where each version keeps what a frame walk reads; and [`lines`], a code
//! object's line table decoded for the instruction a frame was running. Not
//! yet wired into recording: the thread states, the in-kernel frame walk and the naming of code
//! objects come next, in this folder, one file per concern.

pub mod detect;
pub mod layout;
pub mod lines;
