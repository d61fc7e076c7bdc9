//! What amprof reads of CPython, checked against every CPython at hand (Debian's python3 and
//! pyenv's 3.8–3.13 on the machines amprof is built on), each telling its own truth:
//! - the interpreter found in its ELF file: its version, and `_PyRuntime` and
//!   `_PyEval_EvalFrameDefault` where the running interpreter has them;
//! - line tables: every instruction of the code objects of a few standard modules gets the
//!   line the interpreter's own reading gives (`co_lines()` from 3.10, `dis.findlinestarts`
//!   before).

use std::{path::PathBuf, process::Command};

use amprof::record::{
    elf,
    python::{detect, layout::Layout, lines::LineTable},
};

/// Prints the interpreter's version, the file holding `_PyRuntime` (libpython, or the
/// executable of a static build), where that file's first page is mapped, and where the
/// process has `_PyRuntime` and `_PyEval_EvalFrameDefault`.
const WHERE: &str = r#"
import ctypes, json, os, sys
if sys.version_info < (3, 8):
    print(json.dumps({"version": list(sys.version_info[:2])}))
    sys.exit()
runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
evaluate = ctypes.cast(ctypes.pythonapi._PyEval_EvalFrameDefault, ctypes.c_void_p).value
for line in open("/proc/self/maps"):
    fields = line.split()
    if len(fields) < 6 or int(fields[2], 16) != 0:
        continue
    start, end = (int(x, 16) for x in fields[0].split("-"))
    path = fields[5]
    if "libpython" in os.path.basename(path) or path == os.path.realpath(sys.executable):
        libpython = "libpython" in os.path.basename(path)
        if libpython or not any("libpython" in l for l in open("/proc/self/maps")):
            print(json.dumps({"version": list(sys.version_info[:2]), "file": path,
                "start": start, "runtime": runtime, "eval": evaluate}))
            break
"#;

/// Prints, per code object, its version, line table, first line and every instruction's line
/// as the interpreter reads it.
const DUMP: &str = r#"
import dis, json, sys, types, argparse, textwrap, json.decoder, asyncio.base_events
def codes(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from codes(const)
def lines(code):
    if sys.version_info >= (3, 10):
        for start, end, line in code.co_lines():
            for offset in range(start, end, 2):
                yield offset, line
    else:
        starts = list(dis.findlinestarts(code))
        for offset in range(0, len(code.co_code), 2):
            before = [line for start, line in starts if start <= offset]
            yield offset, before[-1] if before else code.co_firstlineno
tables = 0
for module in (dis, argparse, textwrap, json.decoder, asyncio.base_events):
    top = compile(open(module.__file__).read(), module.__file__, "exec")
    for code in codes(top):
        table = code.co_lnotab if sys.version_info < (3, 10) else code.co_linetable
        print(json.dumps({"version": list(sys.version_info[:2]), "name": code.co_name,
            "table": table.hex(), "first": code.co_firstlineno, "lines": list(lines(code))}))
"#;

/// The CPythons of this machine: Debian's, and pyenv's (`$PYENV_ROOT` or `~/.pyenv`).
fn interpreters() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = ["/usr/bin/python3"].iter().map(PathBuf::from).collect();
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pyenv")));
    if let Some(versions) = root.map(|root| root.join("versions"))
        && let Ok(entries) = std::fs::read_dir(versions)
    {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut parts = name.split('.');
            if let (Some("3"), Some(minor)) = (parts.next(), parts.next()) {
                found.push(entry.path().join(format!("bin/python3.{minor}")));
            }
        }
    }
    found.retain(|path| path.exists());
    found
}

#[test]
fn the_interpreter_is_found_where_the_running_one_has_it() {
    let pythons = interpreters();
    assert!(
        !pythons.is_empty(),
        "no CPython found (Debian's python3 is in .ci/setup)"
    );
    let mut checked = Vec::new();
    for python in pythons {
        let output = Command::new(&python)
            .args(["-c", WHERE])
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&output.stdout);
        let facts: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|_| panic!("{}: {text:?}", python.display()));
        let major = facts["version"][0].as_u64().expect("major") as u8;
        let minor = facts["version"][1].as_u64().expect("minor") as u8;
        if (major, minor) < (3, 8) {
            continue; // older than amprof reads
        }
        let file = PathBuf::from(facts["file"].as_str().expect("file"));
        let data = std::fs::read(&file).expect("readable");
        let name = file.file_name().expect("name").to_string_lossy();
        let found = detect::interpreter(&data, &name)
            .unwrap_or_else(|| panic!("no interpreter found in {}", file.display()));
        assert_eq!(found.version, Some((major, minor)), "{}", file.display());
        // The load bias: where the file's first page is, less its lowest address.
        let object = object::File::parse(&*data).expect("ELF");
        let lowest = elf::load_segments(&object)
            .iter()
            .map(|s| s.vaddr & !0xfff)
            .min()
            .expect("segments");
        let bias = facts["start"].as_u64().expect("start") - lowest;
        assert_eq!(
            found.runtime + bias,
            facts["runtime"].as_u64().expect("runtime")
        );
        assert_eq!(
            found.eval.start + bias,
            facts["eval"].as_u64().expect("eval")
        );
        checked.push(format!("{major}.{minor} in {}", file.display()));
    }
    println!("interpreters found: {checked:?}");
}

/// Each layout amprof has is what `offsetof` says against that build's own headers.
#[test]
fn layouts_are_what_each_builds_headers_say() {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/offsets/offsets.c");
    let scratch = std::env::temp_dir().join(format!("amprof-py-layouts-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let mut checked = Vec::new();
    for python in interpreters() {
        // A build with its headers: pyenv's (prefix/bin/python3.X, prefix/include/python3.X).
        let (Some(bin), Some(name)) = (python.parent(), python.file_name()) else {
            continue;
        };
        let name = name.to_string_lossy().into_owned();
        let include = bin.with_file_name("include").join(&name);
        let Some((3, minor)) = detect::version_from_name(&name) else {
            continue;
        };
        let Some(layout) = Layout::of_version(3, minor) else {
            continue;
        };
        if !include.join("internal").is_dir() {
            continue;
        }
        let program = scratch.join(format!("offsets-3.{minor}"));
        let compiled = Command::new("cc")
            .arg("-w")
            .arg(format!("-I{}", include.display()))
            .arg(format!("-I{}", include.join("internal").display()))
            .arg(&source)
            .arg("-o")
            .arg(&program)
            .output()
            .expect("cc runs (gcc is in .ci/setup)");
        assert!(
            compiled.status.success(),
            "3.{minor}: {}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let output = Command::new(&program).output().expect("runs");
        let text = String::from_utf8_lossy(&output.stdout);
        let measured: std::collections::HashMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(key, value)| (key, value.trim()))
            .collect();
        for (key, value) in layout.entries() {
            assert_eq!(
                measured.get(key).copied(),
                Some(value.to_string().as_str()),
                "3.{minor}: {key}"
            );
        }
        checked.push(format!("3.{minor}"));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("layouts checked against the headers of {checked:?}");
    assert!(
        !checked.is_empty(),
        "no CPython build with its headers (pyenv's, ~/.pyenv) to check the layouts against"
    );
}

#[test]
fn every_instruction_gets_the_line_its_interpreter_gives() {
    let pythons = interpreters();
    assert!(
        !pythons.is_empty(),
        "no CPython found (Debian's python3 is in .ci/setup)"
    );
    let mut versions_checked = Vec::new();
    for python in pythons {
        let output = Command::new(&python)
            .args(["-c", DUMP])
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let (mut codes, mut instructions) = (0, 0);
        let mut version = (0, 0);
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let code: serde_json::Value = serde_json::from_str(line).expect("JSON");
            version = (
                code["version"][0].as_u64().expect("major") as u8,
                code["version"][1].as_u64().expect("minor") as u8,
            );
            let Some(format) = LineTable::of_version(version.0, version.1) else {
                break; // a version amprof does not decode (yet): nothing to compare
            };
            let table = hex(code["table"].as_str().expect("hex"));
            let first = code["first"].as_u64().expect("first line") as u32;
            for pair in code["lines"].as_array().expect("lines") {
                let offset = pair[0].as_u64().expect("offset") as u32;
                let expected = pair[1].as_u64().map(|line| line as u32);
                assert_eq!(
                    format.line_at(&table, first, offset),
                    expected,
                    "{} {:?}, {} at byte {offset}",
                    python.display(),
                    version,
                    code["name"]
                );
                instructions += 1;
            }
            codes += 1;
        }
        if LineTable::of_version(version.0, version.1).is_some() {
            assert!(codes > 100 && instructions > 10_000, "{codes} code objects");
            versions_checked.push(format!("{}.{}", version.0, version.1));
        }
    }
    println!("line tables decoded as CPython {versions_checked:?} decode them");
    assert!(!versions_checked.is_empty());
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
