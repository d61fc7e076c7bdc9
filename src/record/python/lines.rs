//! Source lines of CPython bytecode: the line table a code object carries, decoded for the
//! instruction a frame was running. Three formats, one per era (docs/design/python-frames.md,
//! section 4, with the CPython sources that define them):
//!
//! - 3.8–3.9, `co_lnotab`: pairs `(address delta, signed line delta)` from address 0 and
//!   `co_firstlineno`; the line of an address is what the pairs before it add up to.
//! - 3.10, `co_linetable`: pairs `(range length in bytes, signed line delta)`, consecutive
//!   ranges from address 0; a delta of -128 is a range without a line.
//! - 3.11 on, the location table: entries of one header byte (bit 7 set, a 4-bit code, a 3-bit
//!   length in code units) and the code's varints: line delta, end line, columns.
//!
//! A table comes from a profiled process's memory, so it is hostile input: every read is
//! bounded by the table, a varint by five chunks, the arithmetic checked; a table that does
//! not decode gives no line, never a panic.

/// Which line-table format a CPython version writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineTable {
    /// `co_lnotab`, 3.8 and 3.9.
    Lnotab,
    /// `co_linetable` of 3.10.
    Ranges,
    /// The location table, 3.11 on.
    Locations,
}

impl LineTable {
    /// The format of CPython `major.minor`, if amprof knows it.
    pub fn of_version(major: u8, minor: u8) -> Option<Self> {
        match (major, minor) {
            (3, 8..=9) => Some(Self::Lnotab),
            (3, 10) => Some(Self::Ranges),
            (3, 11..=13) => Some(Self::Locations),
            _ => None,
        }
    }

    /// The source line of the instruction at `offset` bytes into the code object's bytecode,
    /// with `first_line` its `co_firstlineno`; `None` where the table gives it no line or does
    /// not decode. Line 0 is what CPython itself gives code before the first line.
    pub fn line_at(self, table: &[u8], first_line: u32, offset: u32) -> Option<u32> {
        let first = i64::from(first_line);
        let offset = u64::from(offset);
        let line = match self {
            Self::Lnotab => lnotab_line(table, first, offset),
            Self::Ranges => ranges_line(table, first, offset)??,
            Self::Locations => locations_line(table, first, offset)??,
        };
        // Line 0 is CPython's own (a module's first RESUME); below it, the table lies.
        u32::try_from(line).ok()
    }
}

/// 3.8–3.9: the pairs before `offset` add up its line (`PyCode_Addr2Line`).
fn lnotab_line(table: &[u8], first: i64, offset: u64) -> i64 {
    let (mut line, mut address) = (first, 0u64);
    for pair in table.chunks_exact(2) {
        address += u64::from(pair[0]);
        if address > offset {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    line
}

/// 3.10: the range `offset` falls in, its line or none.
fn ranges_line(table: &[u8], first: i64, offset: u64) -> Option<Option<i64>> {
    let (mut line, mut start) = (first, 0u64);
    for pair in table.chunks_exact(2) {
        let end = start + u64::from(pair[0]);
        let delta = pair[1] as i8;
        if delta != -128 {
            line += i64::from(delta);
        }
        if (start..end).contains(&offset) {
            return Some((delta != -128).then_some(line));
        }
        start = end;
    }
    None
}

/// 3.11 on: the entry covering `offset` (entries count 2-byte code units), its line or none.
fn locations_line(table: &[u8], first: i64, offset: u64) -> Option<Option<i64>> {
    let unit = offset / 2;
    let mut reader = Varints { table, at: 0 };
    let (mut line, mut start) = (first, 0u64);
    while let Some(header) = reader.byte() {
        if header & 0x80 == 0 {
            return None; // not an entry's first byte: the table is not what it claims
        }
        let code = (header >> 3) & 0x0f;
        let length = u64::from(header & 0x07) + 1;
        let this = match code {
            15 => None,
            14 => {
                line += reader.signed()?;
                // End line, column and end column: read past.
                for _ in 0..3 {
                    reader.unsigned()?;
                }
                Some(line)
            }
            13 => {
                line += reader.signed()?;
                Some(line)
            }
            10..=12 => {
                line += i64::from(code) - 10;
                reader.skip(2)?;
                Some(line)
            }
            _ => {
                reader.skip(1)?;
                Some(line)
            }
        };
        if (start..start + length).contains(&unit) {
            return Some(this);
        }
        start += length;
    }
    None
}

/// The location table's varints: 6-bit chunks, least significant first, bit 6 set when
/// another follows.
struct Varints<'t> {
    table: &'t [u8],
    at: usize,
}

impl Varints<'_> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.table.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.at = self
            .at
            .checked_add(n)
            .filter(|&at| at <= self.table.len())?;
        Some(())
    }

    /// At most five chunks (30 bits): CPython writes no more for a line or a column.
    fn unsigned(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for chunk in 0..5 {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x3f) << (6 * chunk);
            if byte & 0x40 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// The low bit is the sign.
    fn signed(&mut self) -> Option<i64> {
        let value = self.unsigned()?;
        let magnitude = (value >> 1) as i64;
        Some(if value & 1 == 1 {
            -magnitude
        } else {
            magnitude
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab_adds_the_pairs_before_the_address() {
        // Lines 10, 11 from byte 4, 13 from byte 10, then back to 12 from byte 12.
        let table = [0, 0, 4, 1, 6, 2, 2, (-1i8) as u8];
        let line = |offset| LineTable::Lnotab.line_at(&table, 10, offset);
        assert_eq!(
            [
                line(0),
                line(2),
                line(4),
                line(8),
                line(10),
                line(12),
                line(40)
            ],
            [
                Some(10),
                Some(10),
                Some(11),
                Some(11),
                Some(13),
                Some(12),
                Some(12)
            ]
        );
    }

    #[test]
    fn ranges_of_3_10_give_a_line_or_none() {
        // [0,4) line 5, [4,6) no line, [6,10) line 7 (the -128 range does not move the line).
        let table = [4, 0, 2, 0x80, 4, 2];
        let line = |offset| LineTable::Ranges.line_at(&table, 5, offset);
        assert_eq!(
            [line(0), line(2), line(4), line(6), line(8), line(10)],
            [Some(5), Some(5), None, Some(7), Some(7), None]
        );
    }

    #[test]
    fn location_entries_of_each_code() {
        let table = [
            0x80 | (13 << 3), // no columns, 1 unit: line + 0
            0x00,
            0x80 | (11 << 3) | 1, // one-line form, 2 units: line + 1, two column bytes
            4,
            9,
            0x80 | (15 << 3), // no location, 1 unit
            0x80 | (14 << 3), // long form, 1 unit: line - 2 (svarint 5), end line, columns
            5,
            0,
            1,
            2,
            0x80 | (3 << 3), // short form, 1 unit: same line, one column byte
            7,
        ];
        let line = |unit: u32| LineTable::Locations.line_at(&table, 20, unit * 2);
        assert_eq!(
            (0..7).map(line).collect::<Vec<_>>(),
            [Some(20), Some(21), Some(21), None, Some(19), Some(19), None]
        );
    }

    #[test]
    fn hostile_tables_give_no_line_and_never_panic() {
        let endless_varint = [0x80 | (13 << 3), 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f];
        assert_eq!(LineTable::Locations.line_at(&endless_varint, 1, 0), None);
        let cut_short = [0x80 | (14 << 3), 0x40];
        assert_eq!(LineTable::Locations.line_at(&cut_short, 1, 0), None);
        let not_an_entry = [0x10, 0x00];
        assert_eq!(LineTable::Locations.line_at(&not_an_entry, 1, 0), None);
        // A line driven below 0 is no line.
        let down = [2, (-100i8) as u8];
        assert_eq!(LineTable::Ranges.line_at(&down, 5, 0), None);
        assert_eq!(LineTable::Lnotab.line_at(&[1], 5, 0), Some(5));
        for table in [&[][..], &[0xff; 64][..], &[0x80; 64][..]] {
            for kind in [LineTable::Lnotab, LineTable::Ranges, LineTable::Locations] {
                for offset in [0, 1, 2, 1000, u32::MAX] {
                    let _ = kind.line_at(table, u32::MAX, offset);
                }
            }
        }
    }

    #[test]
    fn versions_map_to_their_formats() {
        assert_eq!(LineTable::of_version(3, 8), Some(LineTable::Lnotab));
        assert_eq!(LineTable::of_version(3, 10), Some(LineTable::Ranges));
        assert_eq!(LineTable::of_version(3, 13), Some(LineTable::Locations));
        assert_eq!(LineTable::of_version(3, 15), None);
        assert_eq!(LineTable::of_version(2, 7), None);
    }
}
