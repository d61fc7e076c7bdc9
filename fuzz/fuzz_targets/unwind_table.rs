//! Any bytes given as a sampled process's binary give an unwind table for the eBPF program or
//! nothing: never a panic, a hang or an allocation sized by the file's own claims, and every
//! table is one the kernel side can binary-search (rows strictly sorted, within the limit).
#![no_main]

use amprof::record::unwind_table;
use libfuzzer_sys::fuzz_target;

/// Small enough that the limit is reached now and then.
const MAX_ROWS: usize = 1 << 12;

fuzz_target!(|data: &[u8]| {
    if let Some(table) = unwind_table::build(data, MAX_ROWS) {
        assert!(!table.rows.is_empty() && table.rows.len() <= MAX_ROWS);
        assert!(table.rows.windows(2).all(|pair| pair[0].pc < pair[1].pc));
        for row in &table.rows {
            assert_eq!(table.lookup(u64::from(row.pc)), Some(*row));
        }
    }
});
