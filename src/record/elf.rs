//! Where an ELF file's bytes land in a process: the arithmetic between file offsets (what
//! `/proc/PID/maps` and symbolizers speak), the file's own virtual addresses (what its unwind
//! and debug info speak) and process addresses.

use object::{Object as _, ObjectSegment as _, SegmentFlags};

/// A loadable segment (`PT_LOAD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub file_offset: u64,
    pub file_size: u64,
    pub vaddr: u64,
    pub executable: bool,
}

const PAGE: u64 = 4096;
const PF_X: u32 = 1;

/// The loadable segments of `file`.
pub fn load_segments(file: &object::File<'_>) -> Vec<LoadSegment> {
    file.segments()
        .map(|s| {
            let (file_offset, file_size) = s.file_range();
            LoadSegment {
                file_offset,
                file_size,
                vaddr: s.address(),
                executable: matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0),
            }
        })
        .filter(|s| s.file_size > 0)
        .collect()
}

/// The segment a mapping of file offset `file_offset` (page-aligned, from `/proc/PID/maps`)
/// belongs to: the kernel maps a segment from its offset rounded down to a page, so that
/// page may also hold the end of the previous segment; the executable one wins.
fn segment_of_mapping(segments: &[LoadSegment], file_offset: u64) -> Option<&LoadSegment> {
    let contains = |s: &&LoadSegment| {
        (s.file_offset & !(PAGE - 1)..s.file_offset + s.file_size).contains(&file_offset)
    };
    segments
        .iter()
        .filter(contains)
        .find(|s| s.executable)
        .or_else(|| segments.iter().find(contains))
}

/// The process address of the file's virtual address 0 (framehop's "base AVMA"), for a
/// mapping of `file_offset` at `start`.
pub fn load_bias(segments: &[LoadSegment], start: u64, file_offset: u64) -> Option<u64> {
    let s = segment_of_mapping(segments, file_offset)?;
    // start = bias + vaddr + (file_offset - segment offset), in wrapping arithmetic because
    // a mapping may start below its segment's offset (rounded down to a page).
    Some(
        start
            .wrapping_sub(s.vaddr)
            .wrapping_sub(file_offset)
            .wrapping_add(s.file_offset),
    )
}

/// The file's virtual address of the code at `file_offset`.
pub fn virtual_address(segments: &[LoadSegment], file_offset: u64) -> Option<u64> {
    let s = segments
        .iter()
        .filter(|s| (s.file_offset..s.file_offset + s.file_size).contains(&file_offset))
        .max_by_key(|s| s.executable)?;
    Some(s.vaddr + (file_offset - s.file_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout lld gives Rust binaries: code at a virtual address 0x1000 above its offset.
    fn lld_layout() -> Vec<LoadSegment> {
        vec![
            LoadSegment {
                file_offset: 0,
                file_size: 0x16950,
                vaddr: 0,
                executable: false,
            },
            LoadSegment {
                file_offset: 0x16950,
                file_size: 0x3e000,
                vaddr: 0x17950,
                executable: true,
            },
        ]
    }

    #[test]
    fn maps_offsets_of_a_shifted_text_segment() {
        let segments = lld_layout();
        // /proc/PID/maps shows the text mapping from offset 0x16000 at 0x5555_5556_b000.
        let bias = load_bias(&segments, 0x5555_5556_b000, 0x16000).unwrap();
        assert_eq!(bias, 0x5555_5555_4000);
        // level_two at vaddr 0x17f00 is then at bias + 0x17f00.
        assert_eq!(virtual_address(&segments, 0x16f00), Some(0x17f00));
    }

    #[test]
    fn maps_offsets_of_a_classic_layout() {
        let segments = vec![
            LoadSegment {
                file_offset: 0,
                file_size: 0x600,
                vaddr: 0,
                executable: false,
            },
            LoadSegment {
                file_offset: 0x1000,
                file_size: 0x200,
                vaddr: 0x1000,
                executable: true,
            },
        ];
        assert_eq!(load_bias(&segments, 0x7000_1000, 0x1000), Some(0x7000_0000));
        assert_eq!(virtual_address(&segments, 0x1010), Some(0x1010));
        assert_eq!(virtual_address(&segments, 0x900), None);
    }
}
