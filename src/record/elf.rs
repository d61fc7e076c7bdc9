//! What amprof reads of ELF files, every one of them possibly hostile: the facts it decides
//! with ([`ElfFacts`]: GNU build-id, debug links, symbols), sections by checked ranges
//! ([`section_bytes`]), and where the file's bytes land in a process: the arithmetic between
//! file offsets (what `/proc/PID/maps` and symbolizers speak), the file's own virtual addresses
//! (what its unwind and debug info speak) and process addresses.
//!
//! Parsing goes through the `object` crate, which checks header offsets against the data it is
//! given; ranges amprof slices itself are checked here. A malformed file is "no such
//! information", never a panic.

use std::ops::Range;

use object::{Object as _, ObjectSection as _, ObjectSegment as _, SegmentFlags};

/// What amprof needs to know of an ELF file before it hands the file to blazesym.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfFacts {
    /// The GNU build-id: the descriptor of an `NT_GNU_BUILD_ID` note owned by `GNU` (other
    /// notes of type 3, such as `stapsdt` ones, are not build-ids).
    pub build_id: Option<Vec<u8>>,
    /// It has DWARF or a symbol table: its own file is the best source of symbols.
    pub has_symbols: bool,
    pub segments: Vec<LoadSegment>,
    pub links: DebugLinks,
}

/// The other files an ELF file names for its debug info, as symbolizers follow them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DebugLinks {
    /// `.gnu_debuglink`: a file name, looked up beside the file and in debug directories.
    pub debuglink: Option<Vec<u8>>,
    /// `.gnu_debugaltlink`: a path to a supplementary (dwz) debug file.
    pub altlink: Option<Vec<u8>>,
    /// `.debug_sup`: another path to a supplementary file (its bytes, unparsed).
    pub sup: bool,
}

/// Where Debian and Fedora install debug files, and where a well-formed supplementary link
/// points: the one directory amprof lets symbolizers follow absolute links into.
pub const DEBUG_DIR: &str = "/usr/lib/debug";

impl DebugLinks {
    pub fn any(&self) -> bool {
        self.debuglink.is_some() || self.altlink.is_some() || self.sup
    }

    /// Every link stays where amprof lets a symbolizer look: a debug link is a bare file name
    /// (no `/`, not `.` or `..`), a supplementary link is a bare name or an absolute path under
    /// [`DEBUG_DIR`] without `..`.
    pub fn confined(&self) -> bool {
        let bare = |name: &[u8]| {
            !name.is_empty() && !name.contains(&b'/') && name != b"." && name != b".."
        };
        let under_debug_dir = |path: &[u8]| {
            path.strip_prefix(DEBUG_DIR.as_bytes())
                .is_some_and(|rest| rest.starts_with(b"/"))
                && !path.split(|&b| b == b'/').any(|part| part == b"..")
        };
        self.debuglink.as_deref().is_none_or(bare)
            && self
                .altlink
                .as_deref()
                .is_none_or(|path| bare(path) || under_debug_dir(path))
            && !self.sup
    }
}

/// The facts of the ELF file in `data`, or `None` if it is not one `object` can parse.
pub fn facts(data: &[u8]) -> Option<ElfFacts> {
    let file = object::File::parse(data).ok()?;
    if file.format() != object::BinaryFormat::Elf {
        return None;
    }
    let has_symbols =
        file.section_by_name(".debug_info").is_some() || file.section_by_name(".symtab").is_some();
    Some(ElfFacts {
        // Malformed notes or links: as if absent (a build-id is never guessed).
        build_id: file.build_id().ok().flatten().map(<[u8]>::to_vec),
        has_symbols,
        segments: load_segments(&file),
        links: DebugLinks {
            debuglink: match file.gnu_debuglink() {
                Ok(link) => link.map(|(name, _crc)| name.to_vec()),
                // A section that cannot be read still says there is a link: treat it as one
                // that leads outside.
                Err(_) => Some(b"/".to_vec()),
            },
            altlink: match file.gnu_debugaltlink() {
                Ok(link) => link.map(|(path, _build_id)| path.to_vec()),
                Err(_) => Some(b"/".to_vec()),
            },
            sup: file.section_by_name(".debug_sup").is_some(),
        },
    })
}

/// The bytes of `section` within `data`, if its header's offset and size lie inside `data`.
pub fn section_bytes<'d>(data: &'d [u8], section: &object::Section<'_, '_>) -> Option<&'d [u8]> {
    let range = section_range(data.len(), section.file_range())?;
    data.get(range)
}

/// `offset..offset + size` as a range of a file of `len` bytes, if it fits.
pub fn section_range(len: usize, file_range: Option<(u64, u64)>) -> Option<Range<usize>> {
    let (offset, size) = file_range?;
    let end = offset.checked_add(size)?;
    (end <= len as u64).then_some(offset as usize..end as usize)
}

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
        (s.file_offset & !(PAGE - 1)..s.file_offset.saturating_add(s.file_size))
            .contains(&file_offset)
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
        .filter(|s| {
            (s.file_offset..s.file_offset.saturating_add(s.file_size)).contains(&file_offset)
        })
        .max_by_key(|s| s.executable)?;
    s.vaddr.checked_add(file_offset - s.file_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_ranges_must_fit_the_file() {
        assert_eq!(section_range(100, Some((10, 90))), Some(10..100));
        assert_eq!(section_range(100, Some((10, 91))), None);
        assert_eq!(section_range(100, Some((u64::MAX, 2))), None);
        assert_eq!(section_range(100, None), None);
    }

    #[test]
    fn debug_links_must_stay_in_chosen_directories() {
        let link = |debuglink: Option<&[u8]>, altlink: Option<&[u8]>| DebugLinks {
            debuglink: debuglink.map(<[u8]>::to_vec),
            altlink: altlink.map(<[u8]>::to_vec),
            sup: false,
        };
        assert!(link(None, None).confined());
        assert!(link(Some(b"libc.so.6.debug"), None).confined());
        assert!(
            link(
                None,
                Some(b"/usr/lib/debug/.dwz/x86_64-linux-gnu/python3.debug")
            )
            .confined()
        );
        for bad in [
            link(Some(b"/etc/shadow"), None),
            link(Some(b"../x.debug"), None),
            link(Some(b".."), None),
            link(Some(b"sub/x.debug"), None),
            link(Some(b""), None),
            link(None, Some(b"/tmp/evil")),
            link(None, Some(b"/usr/lib/debug/../../tmp/evil")),
            link(None, Some(b"/usr/lib/debugx/y")),
        ] {
            assert!(!bad.confined(), "{bad:?}");
        }
    }

    #[test]
    fn reads_facts_of_a_real_binary() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let facts = facts(&exe).expect("the test binary is ELF");
        assert!(facts.segments.iter().any(|s| s.executable));
        assert!(facts.has_symbols);
        assert!(facts.build_id.is_none_or(|id| !id.is_empty()));
        assert!(super::facts(b"not an ELF file").is_none());
    }

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
