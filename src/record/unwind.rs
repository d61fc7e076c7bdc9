//! DWARF (CFI) unwinding of the user stacks the eBPF program copies in `--call-graph dwarf` mode.
//!
//! Frame pointers are missing from nearly everything a distribution ships, so a frame-pointer
//! walk stops at the leaf. In DWARF mode the kernel side copies the user registers and the top of
//! the user stack with each sample, and this module unwinds it with framehop (the unwinder samply
//! uses) from the binaries' `.eh_frame`/`.debug_frame`.
//!
//! Costs stay small in steady state: each binary is memory-mapped and indexed once (shared by
//! every process that maps it), each process image gets one framehop unwinder built from its
//! mappings, and framehop caches unwind rules per address.

use std::{
    fs::File,
    ops::{Deref, Range},
    path::Path,
    sync::Arc,
};

use framehop::{
    ExplicitModuleSectionInfo, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use object::{Object as _, ObjectSection as _};
use rustc_hash::FxHashMap;

use super::{
    elf::{self, LoadSegment},
    procs::{FileKey, ImageId, MapEntry, ProcessImage},
};
use crate::capture::format::ModuleKind;

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
/// uses the binary.
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
    fn parse(backing: Backing) -> Option<Self> {
        let backing = Arc::new(backing);
        let file = object::File::parse(&**backing).ok()?;
        let section = |name: &str| -> (Option<Range<u64>>, Option<Section>) {
            let Some(section) = file.section_by_name(name) else {
                return (None, None);
            };
            let svma = section.address()..section.address() + section.size();
            let data = section.file_range().map(|(offset, size)| Section {
                backing: Arc::clone(&backing),
                range: offset as usize..(offset + size) as usize,
            });
            (Some(svma), data)
        };
        let (text_svma, text) = section(".text");
        let (eh_frame_svma, eh_frame) = section(".eh_frame");
        let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr");
        let (_, debug_frame) = section(".debug_frame");
        let (got_svma, _) = section(".got");
        if eh_frame.is_none() && debug_frame.is_none() {
            return None;
        }
        let segments = elf::load_segments(&file);
        Some(Self {
            sections: ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma,
                text,
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
}

/// Unwinds user stacks for every process being sampled.
pub struct DwarfUnwinder {
    binaries: FxHashMap<FileKey, Option<Arc<BinaryInfo>>>,
    processes: FxHashMap<ImageId, ProcessUnwinder>,
    cache: CacheX86_64,
    vdso: Option<Arc<BinaryInfo>>,
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
            processes: FxHashMap::default(),
            cache: CacheX86_64::new(),
            vdso: own_vdso()
                .and_then(|bytes| BinaryInfo::parse(Backing::Copied(bytes)).map(Arc::new)),
        }
    }

    /// Unwinds the stack of a sample of `image`: registers `[ip, sp, bp]` and `stack`, the bytes
    /// from `sp` up. Appends the frames, leaf first (instruction pointer, then return
    /// addresses), at most `max_frames` of them.
    pub fn unwind(
        &mut self,
        image: &Arc<ProcessImage>,
        regs: [u64; 3],
        stack: &[u8],
        max_frames: usize,
        frames: &mut Vec<u64>,
    ) -> Unwound {
        let [ip, sp, bp] = regs;
        let rebuild = self
            .processes
            .get(&image.id)
            .is_none_or(|p| !Arc::ptr_eq(&p.image, image));
        if rebuild {
            let unwinder = self.build(image);
            self.processes.insert(
                image.id,
                ProcessUnwinder {
                    image: Arc::clone(image),
                    unwinder,
                },
            );
        }
        let Some(process) = self.processes.get(&image.id) else {
            return Unwound::Truncated;
        };
        let mut read_stack = |address: u64| -> Result<u64, ()> {
            let offset = address.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack
                .get(offset..offset.checked_add(8).ok_or(())?)
                .ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut iter = process.unwinder.iter_frames(
            ip,
            UnwindRegsX86_64::new(ip, sp, bp),
            &mut self.cache,
            &mut read_stack,
        );
        let start = frames.len();
        loop {
            if frames.len() - start >= max_frames {
                return Unwound::Truncated;
            }
            match iter.next() {
                Ok(Some(frame)) => frames.push(frame.address()),
                Ok(None) => return Unwound::Complete,
                Err(_) => return Unwound::Truncated,
            }
        }
    }

    /// Forgets the unwinders of images for which `keep` is false.
    pub fn retain(&mut self, keep: impl Fn(ImageId) -> bool) {
        self.processes.retain(|&id, _| keep(id));
        if self.binaries.len() > 4096 {
            // Binaries of long-gone processes: drop them all, live ones are re-read on demand.
            self.binaries.clear();
        }
    }

    fn build(&mut self, image: &ProcessImage) -> UnwinderX86_64<Section> {
        let mut unwinder = UnwinderX86_64::new();
        for map in &image.maps {
            let binary = match map.kind {
                ModuleKind::File => self.binary(image, map),
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
        unwinder
    }

    /// The binary behind `map`, opened through the process (so that files in other mount
    /// namespaces, and deleted ones, are found) and cached per file.
    fn binary(&mut self, image: &ProcessImage, map: &MapEntry) -> Option<Arc<BinaryInfo>> {
        let key = (map.dev, map.inode, Arc::clone(&map.path));
        if let Some(binary) = self.binaries.get(&key) {
            return binary.clone();
        }
        let through_process = format!(
            "/proc/{}/map_files/{:x}-{:x}",
            image.pid, map.start, map.end
        );
        let file = File::open(map.open_path())
            .or_else(|_| File::open(&through_process))
            .or_else(|_| File::open(Path::new(&*map.path)));
        // SAFETY: the mapping is read-only; a binary replaced on disk while mapped could change
        // under us, which at worst yields wrong frames, as for any profiler reading binaries.
        let binary = file
            .ok()
            .and_then(|f| unsafe { memmap2::Mmap::map(&f) }.ok())
            .and_then(|m| BinaryInfo::parse(Backing::Mapped(m)))
            .map(Arc::new);
        // Only cache what was found: a process that had already exited may be followed by one
        // that can be read.
        if binary.is_some() {
            self.binaries.insert(key, binary.clone());
        }
        binary
    }
}

/// A copy of this process's vDSO, which is every process's vDSO: clock_gettime and friends run
/// there, and it has CFI like any library.
fn own_vdso() -> Option<Vec<u8>> {
    let maps = super::procs::read_maps(Path::new("/proc/self/maps"))?;
    let vdso = maps.into_iter().find(|m| m.kind == ModuleKind::Vdso)?;
    let len = (vdso.end - vdso.start) as usize;
    // SAFETY: the kernel maps the vDSO readable for the life of the process.
    let bytes = unsafe { std::slice::from_raw_parts(vdso.start as *const u8, len) };
    Some(bytes.to_vec())
}
