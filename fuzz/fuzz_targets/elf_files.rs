//! Any bytes given as a sampled process's binary give facts or nothing, and unwinding through
//! them gives frames or stops: never a panic, a hang or an allocation sized by the file's own
//! claims. (A binary is mapped by a process amprof samples, so its headers are hostile.)
#![no_main]

use amprof::record::{elf, unwind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(facts) = elf::facts(data) {
        let _ = facts.links.confined();
        for offset in [0, 0x1000, u64::MAX] {
            let _ = elf::virtual_address(&facts.segments, offset);
            let _ = elf::load_bias(&facts.segments, 0x10000, offset);
        }
    }
    // The stack is the tail of the input: mutations steer both the tables and the walk.
    let split = data.len().saturating_sub(256);
    let (binary, stack) = data.split_at(split);
    for ip in [0x10000 + 0x1000, 0x10000 + (binary.len() as u64 / 2)] {
        let _ = unwind::unwind_through(binary, ip, stack);
    }
});
