//! Debug info from debuginfod servers (`DEBUGINFOD_URLS`), for binaries that ship without it.
//!
//! Distribution binaries are stripped; their symbols and line tables live in separate debug
//! files. blazesym finds those on disk (`.gnu_debuglink`, `/usr/lib/debug/.build-id/`); this
//! module fetches them by build-id from debuginfod (through the `debuginfod` crate and its
//! standard cache, `DEBUGINFOD_CACHE_PATH` or `~/.cache/debuginfod_client`) when a binary has
//! no DWARF and no symbol table of its own.

use std::path::{Path, PathBuf};

use object::Object as _;
use rustc_hash::FxHashMap;

use super::elf::{self, LoadSegment};

/// A debuginfod client, if `DEBUGINFOD_URLS` names servers.
pub struct Debuginfod {
    client: Option<debuginfod::CachingClient>,
    fetched: FxHashMap<Vec<u8>, Option<PathBuf>>,
}

impl Debuginfod {
    /// The client `DEBUGINFOD_URLS` configures, or none.
    pub fn from_env() -> Self {
        // Only build an HTTP client (and its thread) when servers are configured.
        let client = std::env::var_os("DEBUGINFOD_URLS")
            .filter(|urls| !urls.is_empty())
            .and_then(|_| {
                debuginfod::Client::builder()
                    .http_client(debuginfod::reqwest::blocking::Client::new())
                    .build_from_env()
                    .ok()
                    .flatten()
            })
            .and_then(|client| debuginfod::CachingClient::from_env(client).ok());
        Self {
            client,
            fetched: FxHashMap::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.client.is_some()
    }

    /// The debug file of the binary with `build_id`, fetched once (failures included: a server
    /// that does not have it is not asked again).
    pub fn debug_file(&mut self, build_id: &[u8]) -> Option<PathBuf> {
        let client = self.client.as_ref()?;
        if build_id.is_empty() {
            return None;
        }
        self.fetched
            .entry(build_id.to_vec())
            .or_insert_with(|| {
                client
                    .fetch_debug_info(&debuginfod::BuildId::raw(build_id))
                    .ok()
                    .flatten()
            })
            .clone()
    }
}

/// What symbolization needs to know of a binary before choosing where to read symbols.
pub struct BinaryLayout {
    /// It has DWARF or a symbol table: its own file is the best source.
    pub has_symbols: bool,
    segments: Vec<LoadSegment>,
}

impl BinaryLayout {
    pub fn read(path: &Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: read-only mapping of a binary, as any symbolizer does.
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let file = object::File::parse(&*data).ok()?;
        let has_symbols = file.section_by_name(".debug_info").is_some()
            || file.section_by_name(".symtab").is_some();
        Some(Self {
            has_symbols,
            segments: elf::load_segments(&file),
        })
    }

    /// The virtual address (as in the binary and its debug file) of a file offset.
    pub fn virtual_address(&self, file_offset: u64) -> Option<u64> {
        elf::virtual_address(&self.segments, file_offset)
    }
}
