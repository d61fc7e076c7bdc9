//! Which service each program of a window goes under, and the tags of its profile: Datadog lists
//! profiles by service, one program each.

use std::{
    collections::BTreeSet,
    hash::{DefaultHasher, Hash as _, Hasher as _},
};

use anyhow::Result;
use libdd_common::tag::Tag;

use crate::{
    capture::{Meta, Window, format::Process},
    encode::frames::basename,
    error::usage,
};

/// The service of kernel threads when each program has its own.
const KERNEL_SERVICE: &str = "kernel";
/// At most this many `process_name:` tags on one profile.
const MAX_PROCESS_NAME_TAGS: usize = 10;

/// The service of each process of `window` (by index): `fixed`, or one per program.
pub fn process_services(window: &Window, fixed: Option<&str>) -> Vec<String> {
    if let Some(service) = fixed {
        return vec![service.to_string(); window.processes.len()];
    }
    let mut user_frames = vec![false; window.processes.len()];
    for stack in window.stacks.iter().filter(|s| s.count > 0) {
        if !stack.no_user_stack
            && let Some(u) = user_frames.get_mut(stack.process as usize)
        {
            *u = true;
        }
    }
    window
        .processes
        .iter()
        .zip(&user_frames)
        .map(|(process, &user)| program_service(process, user))
        .collect()
}

/// The service of a program: its executable's name, else its process name; kernel threads (no
/// executable, no user stack) share [`KERNEL_SERVICE`].
fn program_service(process: &Process, has_user_frames: bool) -> String {
    if process.exe.is_empty() && !has_user_frames {
        return KERNEL_SERVICE.into();
    }
    let exe = process.exe.trim_end_matches(" (deleted)");
    let name = if exe.is_empty() {
        process.name.as_str()
    } else {
        basename(exe)
    };
    service_name(name)
}

/// `name` as Datadog wants a service: lowercase letters, digits and `_-./:`, starting with a
/// letter, at most 100 characters.
fn service_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .skip_while(|c| !c.is_ascii_lowercase())
        .take(100)
        .collect();
    if cleaned.is_empty() {
        "unnamed".into()
    } else {
        cleaned
    }
}

/// Tags of one profile: service, host, runtime-id and the names of its processes.
pub fn profile_tags(
    meta: &Meta,
    service: &str,
    process_names: &BTreeSet<&str>,
) -> Result<Vec<Tag>> {
    let mut tags = vec![
        Tag::new("service", service).map_err(|e| usage(format!("service `{service}`: {e}")))?,
        Tag::new("runtime-id", runtime_id(meta, service))?,
    ];
    // A hostname Datadog cannot take as a tag (the capture's, from anywhere) is left out rather
    // than failing every upload.
    if !meta.hostname.is_empty()
        && let Ok(tag) = Tag::new("host", &meta.hostname)
    {
        tags.push(tag);
    }
    for name in process_names
        .iter()
        .filter(|n| !n.is_empty())
        .take(MAX_PROCESS_NAME_TAGS)
    {
        // A name Datadog cannot take as a tag is left out: the samples' labels still carry it.
        if let Ok(tag) = Tag::new("process_name", name) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// A UUID-shaped id for one service of one capture: the same on every push of that capture, so
/// that Datadog sees the windows of a program as one runtime over time.
fn runtime_id(meta: &Meta, service: &str) -> String {
    let half = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        (
            salt,
            &meta.hostname,
            meta.start_ns,
            meta.realtime_offset_ns,
            service,
        )
            .hash(&mut hasher);
        hasher.finish()
    };
    let id = (u128::from(half(1)) << 64) | u128::from(half(2));
    let hex = format!("{id:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_services_after_programs() {
        let process = |exe: &str, name: &str| Process {
            pid: 1,
            name: name.into(),
            exe: exe.into(),
            first_seen_ns: 0,
            maps_unavailable: false,
        };
        assert_eq!(
            program_service(&process("/usr/bin/python3.11", "python3"), true),
            "python3.11"
        );
        assert_eq!(
            program_service(&process("", "kworker/0:1-events"), false),
            "kernel"
        );
        assert_eq!(program_service(&process("", "My App"), true), "my_app");
        assert_eq!(
            program_service(&process("/memfd:x (deleted)", "x"), true),
            "memfd:x"
        );
        assert_eq!(service_name("0day"), "day");
        assert_eq!(service_name("123"), "unnamed");
    }

    #[test]
    fn runtime_ids_are_stable_uuids() {
        let meta = Meta {
            hostname: "h".into(),
            ..Meta::default()
        };
        let id = runtime_id(&meta, "svc");
        assert_eq!(id, runtime_id(&meta, "svc"));
        assert_ne!(id, runtime_id(&meta, "other"));
        assert_eq!(id.len(), 36);
    }
}
