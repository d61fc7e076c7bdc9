//! DWARF (CFI) unwinding of the user stacks the eBPF program copies in `--call-graph dwarf` mode.
//!
//! Frame pointers are missing from nearly everything a distribution ships, so a frame-pointer
//! walk stops at the leaf. In DWARF mode the kernel side copies the user registers and the top of
//! the user stack with each sample, and this module unwinds it with framehop (the unwinder samply
//! uses) from the binaries' `.eh_frame`/`.debug_frame`.
//!
//! Unwinding runs on the sampling thread, which must never wait on a sampled process's files.
//! So binaries are opened and indexed by a loader [`JobQueue`] on a thread of its own: the first
//! samples through a binary not loaded yet keep the frames found so far (counted truncated),
//! and the process's unwinder is rebuilt once the binary arrives. A load that overstays
//! [`LOAD_TIMEOUT`] (from when the loader starts it) marks the file unusable and the loader is
//! replaced. A binary whose unwind
//! sections lie outside the file, or that is not a regular file, is "no unwind information"
//! and counted ([`DwarfUnwinder::take_unusable`]), never a panic.
//!
//! Costs stay small in steady state: each binary is memory-mapped and indexed once (shared by
//! every process that maps it), each process image gets one framehop unwinder built from its
//! mappings, and framehop caches unwind rules per address.

use std::{
    ops::{Deref, Range},
    path::Path,
    sync::Arc,
    time::Duration,
};

use framehop::{
    ExplicitModuleSectionInfo, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use object::{Object as _, ObjectSection as _};
use rustc_hash::FxHashMap;

use super::{
    elf::{self, LoadSegment},
    files::Pinned,
    procs::{FileKey, ImageId, MapEntry, ProcessImage},
    worker::{self, Event, JobQueue},
};
use crate::capture::format::ModuleKind;

/// Longest a binary may take to open and index (from when the loader starts on it) before it
/// is given up as unusable.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Deepest user stack DWARF unwinding follows (frame pointers stop at the kernel's 127).
pub const MAX_DWARF_FRAMES: usize = 512;
/// Binaries kept indexed; beyond, the cache starts again (live ones are re-read on demand).
const MAX_BINARIES: usize = 4096;

/// Bytes of a binary: a read-only mapping of its file, or a copy (the vDSO).
enum Backing {
    Mapped(memmap2::Mmap),
    Copied(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mapped(map) => map,
            Backing::Copied(bytes) => bytes,
        }
    }
}

/// One section of a binary, as framehop wants it: cheap to clone, shared by every module that
/// uses the binary. Its range was checked against the file.
#[derive(Clone)]
pub struct Section {
    backing: Arc<Backing>,
    range: Range<usize>,
}

impl Deref for Section {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.backing[self.range.clone()]
    }
}

/// What unwinding needs from one binary.
struct BinaryInfo {
    sections: ExplicitModuleSectionInfo<Section>,
    segments: Vec<LoadSegment>,
}

impl BinaryInfo {
    /// The unwind sections of the ELF file in `backing`; `None` if it has none usable (not ELF,
    /// no CFI, or CFI sections whose headers point outside the file).
    fn parse(backing: Backing) -> Option<Self> {
        let backing = Arc::new(backing);
        let file = object::File::parse(&**backing).ok()?;
        let mut bad_range = false;
        let mut section = |name: &str| -> (Option<Range<u64>>, Option<Section>) {
            let Some(section) = file.section_by_name(name) else {
                return (None, None);
            };
            let svma = section.address()..section.address().saturating_add(section.size());
            let data = match section.file_range() {
                None => None, // no bytes in the file (e.g. .bss-like)
                Some(range) => match elf::section_range(backing.len(), Some(range)) {
                    Some(range) => Some(Section {
                        backing: Arc::clone(&backing),
                        range,
                    }),
                    None => {
                        bad_range = true;
                        None
                    }
                },
            };
            (Some(svma), data)
        };
        let (text_svma, _) = section(".text");
        let (eh_frame_svma, eh_frame) = section(".eh_frame");
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr");
        let (_, debug_frame) = section(".debug_frame");
        let (got_svma, _) = section(".got");
        // A section header that lies about the file is a hostile or broken file: none of its
        // unwind information is trusted.
        if bad_range || (eh_frame.is_none() && debug_frame.is_none()) {
            return None;
        }
        let segments = elf::load_segments(&file);
        Some(Self {
            sections: ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma,
                // framehop reads .text only for Mach-O and PE unwind info, never for ELF.
                text: None,
                got_svma,
                eh_frame_svma,
                eh_frame,
                eh_frame_hdr_svma,
                eh_frame_hdr,
                debug_frame,
                stubs_svma: None,
                stub_helper_svma: None,
                unwind_info: None,
                text_segment_svma: None,
                text_segment: None,
            },
            segments,
        })
    }

    /// Opens, maps and indexes the pinned file (on the loader thread).
    fn load(pinned: &Pinned) -> Option<Self> {
        let file = pinned.open().ok()?;
        Self::parse(Backing::Mapped(file.map().ok()?))
    }

    /// Where the binary's address 0 is in a process that maps file offset `file_offset` at
    /// `start`.
    fn base_avma(&self, start: u64, file_offset: u64) -> Option<u64> {
        elf::load_bias(&self.segments, start, file_offset)
    }
}

struct ProcessUnwinder {
    /// The image the unwinder was built for; rebuilt when the image's mappings are re-read.
    image: Arc<ProcessImage>,
    unwinder: UnwinderX86_64<Section>,
    /// Some of its binaries were still loading: rebuild once more have loaded.
    incomplete_at: Option<u64>,
}

/// A binary, as far as the loader got with it.
enum Binary {
    Loading,
    Ready(Arc<BinaryInfo>),
    /// No unwind information can be had from it.
    Unusable,
}

/// Unwinds user stacks for every process being sampled.
pub struct DwarfUnwinder {
    binaries: FxHashMap<FileKey, Binary>,
    /// Opens and indexes pinned files, each within [`LOAD_TIMEOUT`].
    loader: JobQueue<FileKey, Arc<Pinned>, Option<Arc<BinaryInfo>>>,
    /// Bumped each time a binary finishes loading.
    generation: u64,
    processes: FxHashMap<ImageId, ProcessUnwinder>,
    cache: CacheX86_64,
    vdso: Option<Arc<BinaryInfo>>,
    /// Files found unusable (unreadable, malformed or too slow) since the last take.
    unusable: u64,
}

impl Default for DwarfUnwinder {
    fn default() -> Self {
        Self::new()
    }
}

/// How far an unwind got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unwound {
    /// Reached the end of the stack (the process entry point or a thread's start routine).
    Complete,
    /// Stopped early: no unwind information, the copied stack ended, or the depth limit.
    Truncated,
}

impl DwarfUnwinder {
    pub fn new() -> Self {
        Self {
            binaries: FxHashMap::default(),
            loader: JobQueue::new(
                "amprof-unwind-load",
                LOAD_TIMEOUT,
                Arc::new(|| {
                    Box::new(|pinned: Arc<Pinned>| BinaryInfo::load(&pinned).map(Arc::new))
                }),
            ),
            generation: 0,
            processes: FxHashMap::default(),
            cache: CacheX86_64::new(),
            vdso: own_vdso()
                .and_then(|bytes| BinaryInfo::parse(Backing::Copied(bytes)).map(Arc::new)),
            unusable: 0,
        }
    }

    /// Unwinds the stack of a sample of `image`: registers `[ip, sp, bp]` and `stack`, the bytes
    /// from `sp` up. Appends the frames, leaf first (instruction pointer, then return
    /// addresses), at most `max_frames` of them. With `ip_is_return_address`, the registers
    /// are those of a caller the kernel's walk reached (`ip` returns into it), not of the
    /// interrupted code: its unwind rule is the one of the call instruction, before `ip`.
    pub fn unwind(
        &mut self,
        image: &Arc<ProcessImage>,
        regs: [u64; 3],
        ip_is_return_address: bool,
        stack: &[u8],
        max_frames: usize,
        frames: &mut Vec<u64>,
    ) -> Unwound {
        self.collect_loaded();
        let [return_or_ip, sp, bp] = regs;
        // framehop looks the first frame's rule up at its exact address; for a return address
        // that is the call's, one byte before (the call may be a function's last instruction).
        let ip = if ip_is_return_address {
            return_or_ip.saturating_sub(1)
        } else {
            return_or_ip
        };
        let generation = self.generation;
        let rebuild = self.processes.get(&image.id).is_none_or(|p| {
            !Arc::ptr_eq(&p.image, image) || p.incomplete_at.is_some_and(|g| g != generation)
        });
        if rebuild {
            let (unwinder, complete) = self.build(image);
            self.processes.insert(
                image.id,
                ProcessUnwinder {
                    image: Arc::clone(image),
                    unwinder,
                    incomplete_at: (!complete).then_some(generation),
                },
            );
        }
        let Some(process) = self.processes.get(&image.id) else {
            return Unwound::Truncated;
        };
        let mut read_stack = |address: u64| read_stack(stack, sp, address);
        let mut iter = process.unwinder.iter_frames(
            ip,
            UnwindRegsX86_64::new(ip, sp, bp),
            &mut self.cache,
            &mut read_stack,
        );
        let start = frames.len();
        // framehop and gimli meet a binary's hostile unwind tables here; a panic in them (an
        // arithmetic overflow on crafted pointers) is contained, and the binary of the frame
        // being unwound is given up.
        let walked = worker::contained(|| {
            loop {
                if frames.len() - start >= max_frames {
                    return Unwound::Truncated;
                }
                match iter.next() {
                    Ok(Some(_)) if frames.len() == start => frames.push(return_or_ip),
                    Ok(Some(frame)) => frames.push(frame.address()),
                    Ok(None) => return Unwound::Complete,
                    Err(_) => return Unwound::Truncated,
                }
            }
        });
        walked.unwrap_or_else(|| {
            let culprit = frames
                .get(start..)
                .and_then(|f| f.last())
                .copied()
                .unwrap_or(ip);
            if let Some(map) = image
                .find(culprit.saturating_sub(1))
                .or(image.find(culprit))
            {
                self.binaries.insert(map.file_key(), Binary::Unusable);
                self.unusable += 1;
                self.generation += 1;
            }
            Unwound::Truncated
        })
    }

    /// Forgets the unwinders of images for which `keep` is false.
    pub fn retain(&mut self, keep: impl Fn(ImageId) -> bool) {
        self.processes.retain(|&id, _| keep(id));
        if self.binaries.len() > MAX_BINARIES {
            // Binaries of long-gone processes: drop the loaded ones, live ones are re-read on
            // demand (those still loading stay: their answers are on the way).
            self.binaries.retain(|_, b| matches!(b, Binary::Loading));
        }
    }

    /// Files found unusable since the last call (for the window's problem counts).
    pub fn take_unusable(&mut self) -> u64 {
        std::mem::take(&mut self.unusable)
    }

    /// Takes in what the loader finished, and gives up on a load that overstays.
    fn collect_loaded(&mut self) {
        while let Some(event) = self.loader.next_event() {
            let (key, binary) = match event {
                Event::Done(key, Some(Some(info))) => (key, Binary::Ready(info)),
                // Not readable, not ELF, no usable CFI, its parser panicked, or it overstayed
                // (the loader was replaced).
                Event::Done(key, _) | Event::Overstayed(key) => {
                    self.unusable += 1;
                    (key, Binary::Unusable)
                }
                // Queued behind one that overstayed: asked for again when next needed, of the
                // fresh loader.
                Event::Untried(key) => {
                    self.binaries.remove(&key);
                    continue;
                }
            };
            self.binaries.insert(key, binary);
            self.generation += 1;
        }
    }

    /// A framehop unwinder for `image`, and whether every binary it maps was available.
    fn build(&mut self, image: &ProcessImage) -> (UnwinderX86_64<Section>, bool) {
        let mut unwinder = UnwinderX86_64::new();
        let mut complete = true;
        for map in &image.maps {
            let binary = match map.kind {
                ModuleKind::File => match self.binary(map) {
                    Ok(binary) => binary,
                    Err(Loading) => {
                        complete = false;
                        None
                    }
                },
                ModuleKind::Vdso => self.vdso.clone(),
                _ => None,
            };
            let Some(binary) = binary else { continue };
            let Some(base) = binary.base_avma(map.start, map.file_offset) else {
                continue;
            };
            unwinder.add_module(Module::new(
                map.path.to_string(),
                map.start..map.end,
                base,
                binary.sections.clone(),
            ));
        }
        (unwinder, complete)
    }

    /// The binary behind `map` if loaded (`Ok(None)`: it has no usable unwind information),
    /// or `Err(Loading)` after asking the loader for it.
    fn binary(&mut self, map: &MapEntry) -> Result<Option<Arc<BinaryInfo>>, Loading> {
        let key = map.file_key();
        match self.binaries.get(&key) {
            Some(Binary::Ready(info)) => return Ok(Some(Arc::clone(info))),
            Some(Binary::Unusable) => return Ok(None),
            Some(Binary::Loading) => return Err(Loading),
            None => {}
        }
        let Some(pinned) = map.pinned.clone() else {
            // Not pinned (over the cap, or the process was gone): nothing to read.
            return Ok(None);
        };
        self.binaries.insert(key.clone(), Binary::Loading);
        self.loader.submit(key, pinned);
        Err(Loading)
    }
}

/// A binary still being loaded.
struct Loading;

/// The word at `address` of a copied user stack whose first byte was at `sp`: what framehop
/// reads; an address outside the copy is an error (the unwind stops there).
fn read_stack(stack: &[u8], sp: u64, address: u64) -> Result<u64, ()> {
    let offset = usize::try_from(address.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
    let bytes = stack
        .get(offset..offset.checked_add(8).ok_or(())?)
        .ok_or(())?;
    Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
}

/// Indexes `data` as a binary mapped at 0x10000 and unwinds one stack through it, for fuzzing
/// and tests: whatever the bytes, this returns the frames found, never panics or runs away.
pub fn unwind_through(data: &[u8], ip: u64, stack: &[u8]) -> Vec<u64> {
    let Some(binary) = BinaryInfo::parse(Backing::Copied(data.to_vec())) else {
        return Vec::new();
    };
    let start = 0x10000;
    let mut unwinder = UnwinderX86_64::new();
    if let Some(base) = binary.base_avma(start, 0) {
        unwinder.add_module(Module::new(
            "fuzz".into(),
            start..start.saturating_add(data.len() as u64),
            base,
            binary.sections.clone(),
        ));
    }
    let sp = 0x7fff_0000u64;
    let mut read_stack = |address: u64| read_stack(stack, sp, address);
    let mut cache = CacheX86_64::new();
    let mut iter = unwinder.iter_frames(
        ip,
        UnwindRegsX86_64::new(ip, sp, sp),
        &mut cache,
        &mut read_stack,
    );
    let mut frames = Vec::new();
    // As on the sampling thread: a panic inside framehop or gimli is contained.
    worker::contained(|| {
        while let Ok(Some(frame)) = iter.next() {
            frames.push(frame.address());
            if frames.len() >= MAX_DWARF_FRAMES {
                break;
            }
        }
    });
    frames
}

/// A copy of this process's vDSO, which is every process's vDSO: clock_gettime and friends run
/// there, and it has CFI like any library.
pub(crate) fn own_vdso() -> Option<Vec<u8>> {
    let (maps, _) = super::procs::read_maps(Path::new("/proc/self/maps"), usize::MAX)?;
    let vdso = maps.into_iter().find(|m| m.kind == ModuleKind::Vdso)?;
    let len = (vdso.end - vdso.start) as usize;
    // SAFETY: the kernel maps the vDSO readable for the life of the process.
    let bytes = unsafe { std::slice::from_raw_parts(vdso.start as *const u8, len) };
    Some(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section header table of the ELF64 file in `bytes`: (offset of each header, name).
    fn section_headers(bytes: &[u8]) -> Vec<(usize, String)> {
        let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
        let (shoff, shentsize, shnum, shstrndx) =
            (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
        let strtab = u64_at(shoff + shstrndx * shentsize + 0x18);
        (0..shnum)
            .map(|i| {
                let header = shoff + i * shentsize;
                let name = strtab + u32_at(header);
                let end = bytes[name..].iter().position(|&b| b == 0).unwrap();
                (
                    header,
                    String::from_utf8_lossy(&bytes[name..name + end]).into(),
                )
            })
            .collect()
    }

    #[test]
    fn unwind_sections_outside_the_file_mean_no_unwind_info() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert!(BinaryInfo::parse(Backing::Copied(exe.clone())).is_some());
        for (section, field) in [
            (".eh_frame", 0x20),
            (".eh_frame_hdr", 0x20),
            (".eh_frame", 0x18),
        ] {
            let mut bad = exe.clone();
            let (header, _) = section_headers(&bad)
                .into_iter()
                .find(|(_, name)| name == section)
                .expect("the test binary has the section");
            // sh_size (0x20) or sh_offset (0x18) past the end of the file.
            let past = (bad.len() as u64 + 4096).to_le_bytes();
            bad[header + field..header + field + 8].copy_from_slice(&past);
            assert!(
                BinaryInfo::parse(Backing::Copied(bad)).is_none(),
                "{section} field {field:#x}"
            );
        }
    }
}
