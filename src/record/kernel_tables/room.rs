//! Where unwind tables and processes' mappings go in the kernel's fixed-size arrays, and which
//! table gives its rows up when a new one needs them: bookkeeping over plain data, writing no
//! map, so that the policy is tested without root (the writes are [`super::KernelTables`]'s).
//!
//! The policy:
//!
//! - A table goes in the first run of free rows it fits ([`Space`]: first fit, adjacent free
//!   runs merged). When none is long enough, tables are evicted one at a time until one is:
//!   least recently used first (by the publication that last used it), among the tables no
//!   published process uses and none has for [`REUSE_AFTER`]. A table in use is never evicted;
//!   when nothing is left to evict the new table goes without.
//! - A process's run of mappings, given back (the process gone or changed), is reused only
//!   after [`REUSE_AFTER`], so that a sample being unwound while userspace updates a process
//!   never reads a run handed to another.
//! - Processes themselves are never evicted: one whose mappings find no room is unwound from
//!   stack copies, and processes leave when they are no longer sampled.

use std::{collections::BTreeMap, hash::Hash, ops::Range, time::Duration, time::Instant};

use rustc_hash::FxHashMap;

/// Space given back (a process gone or changed, a table evicted) is reused after this: longer
/// than any in-flight sample takes to unwind.
pub const REUSE_AFTER: Duration = Duration::from_millis(100);

/// The rows and mappings arrays' bookkeeping, tables known by keys `K` (files).
pub struct Room<K> {
    rows: Space,
    mappings: Space,
    tables: FxHashMap<K, Claim>,
    /// Rows of tables kept for good (the vDSO's), never evicted.
    kept_rows: u32,
    /// Counts publications, as a clock for least-recently-used eviction.
    clock: u64,
    /// Runs of mappings given back, reusable once old enough.
    returned: Vec<(Instant, Range<u32>)>,
}

/// A loaded table's claim on the rows.
struct Claim {
    rows: Range<u32>,
    /// Published processes whose mappings use it...
    users: u32,
    /// ...and since when none has (eviction waits for samples in flight to be done with it).
    unused_since: Option<Instant>,
    /// The publication that last used it (or the one under way when it was placed).
    last_used: u64,
}

/// Where a table went, and what made room for it.
#[derive(Debug, PartialEq, Eq)]
pub struct Placed<K> {
    /// Its rows; `None` if there was no room even after evicting every table that could be.
    pub rows: Option<Range<u32>>,
    /// Tables evicted for it (whether or not it then fitted): their rows are free now.
    pub evicted: Vec<K>,
}

impl<K: Eq + Hash + Clone> Room<K> {
    /// Room for `rows` table rows and `mappings` process mappings.
    pub fn new(rows: u32, mappings: u32) -> Self {
        Self {
            rows: Space::new(rows),
            mappings: Space::new(mappings),
            tables: FxHashMap::default(),
            kept_rows: 0,
            clock: 0,
            returned: Vec::new(),
        }
    }

    /// Rows for a table that stays for good (nothing is evicted for it).
    pub fn keep(&mut self, len: u32) -> Option<Range<u32>> {
        let run = self.rows.take(len)?;
        self.kept_rows += len;
        Some(run)
    }

    /// Rows for the table of `key`, `len` of them, evicting what the policy allows if they are
    /// needed. The table starts unused as of `now`.
    pub fn place(&mut self, key: K, len: u32, now: Instant) -> Placed<K> {
        let mut evicted = Vec::new();
        let rows = loop {
            if let Some(run) = self.rows.take(len) {
                break Some(run);
            }
            let Some(victim) = self.victim(now) else {
                break None;
            };
            if let Some(claim) = self.tables.remove(&victim) {
                // Unused for longer than any sample takes to unwind: its rows are free at once.
                self.rows.give(claim.rows);
            }
            evicted.push(victim);
        };
        if let Some(run) = &rows {
            let claim = Claim {
                rows: run.clone(),
                users: 0,
                unused_since: Some(now),
                last_used: self.clock,
            };
            if let Some(old) = self.tables.insert(key, claim) {
                self.rows.give(old.rows);
            }
        }
        Placed { rows, evicted }
    }

    /// The least recently used table that may be evicted at `now`: ties go to the lowest rows.
    fn victim(&self, now: Instant) -> Option<K> {
        self.tables
            .iter()
            .filter(|(_, claim)| {
                claim
                    .unused_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= REUSE_AFTER)
            })
            .min_by_key(|(_, claim)| (claim.last_used, claim.rows.start))
            .map(|(key, _)| key.clone())
    }

    /// A process is being published: the tables it uses from now on are the most recently used.
    pub fn start_publication(&mut self) {
        self.clock += 1;
    }

    /// The process being published uses the table of `key`: its rows, if it has a place.
    pub fn use_table(&mut self, key: &K) -> Option<Range<u32>> {
        let claim = self.tables.get_mut(key)?;
        claim.users += 1;
        claim.unused_since = None;
        claim.last_used = self.clock;
        Some(claim.rows.clone())
    }

    /// A process that used the table of `key` is gone from the kernel (as of `now`).
    pub fn release_table(&mut self, key: &K, now: Instant) {
        if let Some(claim) = self.tables.get_mut(key) {
            claim.users = claim.users.saturating_sub(1);
            if claim.users == 0 {
                claim.unused_since = Some(now);
            }
        }
    }

    /// A run of `len` mappings, if there is room at `now`.
    pub fn take_mappings(&mut self, len: u32, now: Instant) -> Option<Range<u32>> {
        self.reuse_returned(now);
        self.mappings.take(len)
    }

    /// Gives a run of mappings back (as of `now`), for reuse once samples in flight are done
    /// with it.
    pub fn give_back_mappings(&mut self, run: Range<u32>, now: Instant) {
        if !run.is_empty() {
            self.returned.push((now, run));
        }
    }

    fn reuse_returned(&mut self, now: Instant) {
        if self.returned.is_empty() {
            return;
        }
        let (old, young): (Vec<_>, Vec<_>) = std::mem::take(&mut self.returned)
            .into_iter()
            .partition(|(at, _)| now.saturating_duration_since(*at) >= REUSE_AFTER);
        self.returned = young;
        for (_, run) in old {
            self.mappings.give(run);
        }
    }

    /// Tables placed (not counting those kept for good).
    pub fn tables(&self) -> usize {
        self.tables.len()
    }

    /// Rows of every table placed or kept.
    pub fn rows_used(&self) -> u64 {
        let placed: u64 = self
            .tables
            .values()
            .map(|claim| u64::from(claim.rows.end - claim.rows.start))
            .sum();
        placed + u64::from(self.kept_rows)
    }

    /// Room for rows in all (fixed at start).
    pub fn row_capacity(&self) -> u32 {
        self.rows.capacity
    }
}

/// Runs of a fixed-size array handed out and given back: first fit, adjacent free runs merged.
#[derive(Debug)]
pub struct Space {
    capacity: u32,
    /// Free runs, by start: start -> end.
    free: BTreeMap<u32, u32>,
}

impl Space {
    pub fn new(capacity: u32) -> Self {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Self { capacity, free }
    }

    /// A run of `len` entries, if there is room.
    pub fn take(&mut self, len: u32) -> Option<Range<u32>> {
        let (&start, &end) = self.free.iter().find(|&(&s, &e)| e - s >= len)?;
        self.free.remove(&start);
        if end - start > len {
            self.free.insert(start + len, end);
        }
        Some(start..start + len)
    }

    /// Gives `run` back.
    pub fn give(&mut self, run: Range<u32>) {
        if run.is_empty() {
            return;
        }
        let (mut start, mut end) = (run.start, run.end);
        if let Some((&s, &e)) = self.free.range(..start).next_back()
            && e == start
        {
            self.free.remove(&s);
            start = s;
        }
        if let Some(&e) = self.free.get(&end) {
            self.free.remove(&end);
            end = e;
        }
        self.free.insert(start, end);
    }

    /// Entries free.
    pub fn free(&self) -> u32 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_hands_out_runs_and_merges_what_comes_back() {
        let mut space = Space::new(100);
        let a = space.take(30).unwrap();
        let b = space.take(30).unwrap();
        let c = space.take(40).unwrap();
        assert_eq!((a.clone(), b.clone(), c.clone()), (0..30, 30..60, 60..100));
        assert_eq!(space.take(1), None);
        space.give(b);
        assert_eq!(space.take(31), None, "only 30 free in one run");
        space.give(a);
        assert_eq!(space.free(), 60);
        assert_eq!(space.take(60), Some(0..60), "merged with its neighbour");
        space.give(0..60);
        space.give(c);
        assert_eq!(space.free(), 100);
        assert_eq!(
            space.take(100),
            Some(0..100),
            "all merged back into one run"
        );
    }

    /// A moment well after `t`: anything unused since `t` may be evicted.
    fn later(t: Instant) -> Instant {
        t + REUSE_AFTER * 2
    }

    /// A room of 100 rows holding tables "a" (0..40) and "b" (40..80), each used by one
    /// process published in turn ("a" first), both released at `t0`.
    fn two_released_tables(t0: Instant) -> Room<&'static str> {
        let mut room = Room::new(100, 10);
        assert_eq!(room.place("a", 40, t0).rows, Some(0..40));
        assert_eq!(room.place("b", 40, t0).rows, Some(40..80));
        for key in ["a", "b"] {
            room.start_publication();
            assert!(room.use_table(&key).is_some());
        }
        for key in ["a", "b"] {
            room.release_table(&key, t0);
        }
        room
    }

    #[test]
    fn a_table_that_fits_evicts_nothing() {
        let t0 = Instant::now();
        let mut room = two_released_tables(t0);
        let placed = room.place("c", 20, later(t0));
        assert_eq!(
            placed,
            Placed {
                rows: Some(80..100),
                evicted: vec![]
            }
        );
        assert_eq!((room.tables(), room.rows_used()), (3, 100));
    }

    #[test]
    fn the_least_recently_used_unused_table_is_evicted_first() {
        let t0 = Instant::now();
        let mut room = two_released_tables(t0);
        // "b" is used again, later than "a", and released again.
        room.start_publication();
        room.use_table(&"b");
        room.release_table(&"b", t0);
        let placed = room.place("c", 30, later(t0));
        assert_eq!(
            placed,
            Placed {
                rows: Some(0..30),
                evicted: vec!["a"]
            }
        );
        assert_eq!(room.use_table(&"a"), None, "evicted: no rows any more");
        assert_eq!(room.use_table(&"b"), Some(40..80));
    }

    #[test]
    fn tables_are_evicted_until_the_new_one_fits() {
        let t0 = Instant::now();
        let mut room = two_released_tables(t0);
        // Free: 80..100 (20). 60 rows need "a" and "b" both gone (merged back into 0..100).
        let placed = room.place("big", 60, later(t0));
        assert_eq!(
            placed,
            Placed {
                rows: Some(0..60),
                evicted: vec!["a", "b"]
            }
        );
        assert_eq!((room.tables(), room.rows_used()), (1, 60));
    }

    #[test]
    fn a_table_in_use_is_never_evicted() {
        let t0 = Instant::now();
        let mut room = two_released_tables(t0);
        room.start_publication();
        room.use_table(&"a");
        let placed = room.place("c", 50, later(t0));
        assert_eq!(
            placed,
            Placed {
                rows: Some(40..90),
                evicted: vec!["b"]
            },
            "only the table no process uses"
        );
        // A second process uses "a"; one of the two going leaves it in use.
        assert_eq!(room.use_table(&"a"), Some(0..40));
        room.release_table(&"a", t0);
        let placed = room.place("d", 50, later(t0));
        assert_eq!(
            placed,
            Placed {
                rows: None,
                evicted: vec![]
            }
        );
    }

    #[test]
    fn a_table_released_a_moment_ago_is_not_evicted_yet() {
        let t0 = Instant::now();
        let mut room = two_released_tables(t0);
        let soon = t0 + REUSE_AFTER / 2;
        assert_eq!(
            room.place("c", 30, soon),
            Placed {
                rows: None,
                evicted: vec![]
            },
            "a sample in flight may still be unwinding with it"
        );
        let placed = room.place("c", 30, t0 + REUSE_AFTER);
        assert_eq!(placed.evicted, vec!["a"]);
    }

    #[test]
    fn a_table_that_cannot_fit_goes_without_after_evicting_what_it_may() {
        let t0 = Instant::now();
        let mut room = two_released_tables(t0);
        room.start_publication();
        room.use_table(&"b");
        let placed = room.place("huge", 70, later(t0));
        assert_eq!(
            placed,
            Placed {
                rows: None,
                evicted: vec!["a"]
            }
        );
        assert_eq!(room.use_table(&"b"), Some(40..80), "in use, kept");
    }

    #[test]
    fn kept_rows_are_never_evicted_and_count_as_used() {
        let t0 = Instant::now();
        let mut room = Room::new(100, 10);
        assert_eq!(room.keep(30), Some(0..30));
        assert_eq!(room.place("a", 70, t0).rows, Some(30..100));
        let placed = room.place("b", 80, later(t0));
        assert_eq!(
            placed,
            Placed {
                rows: None,
                evicted: vec!["a"]
            }
        );
        assert_eq!(
            (room.tables(), room.rows_used(), room.row_capacity()),
            (0, 30, 100)
        );
    }

    #[test]
    fn mappings_given_back_are_reused_only_after_samples_in_flight_are_done() {
        let t0 = Instant::now();
        let mut room: Room<&str> = Room::new(0, 10);
        let run = room.take_mappings(10, t0).unwrap();
        assert_eq!(run, 0..10);
        room.give_back_mappings(run, t0);
        assert_eq!(room.take_mappings(4, t0 + REUSE_AFTER / 2), None);
        assert_eq!(room.take_mappings(4, t0 + REUSE_AFTER), Some(0..4));
        assert_eq!(room.take_mappings(6, t0 + REUSE_AFTER), Some(4..10));
    }
}
