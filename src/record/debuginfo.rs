//! Separate debug files, for binaries that ship without symbols: from the distribution's debug
//! directory by build-id, or from debuginfod servers (`DEBUGINFOD_URLS`).
//!
//! Both are checked the same way: a debug file is used only if it is an ELF file whose GNU
//! build-id is the one asked for. A server's answer is read at most [`MAX_DEBUG_FILE_BYTES`],
//! into a temporary file, and only a file that passes the check is kept in the cache
//! (`DEBUGINFOD_CACHE_PATH`, else `~/.cache/debuginfod_client`, shared with other debuginfod
//! clients); a cached file that fails it is deleted and fetched again. Redirects are followed
//! (debuginfod servers use them) but never from https to http, and amprof sends no credentials
//! or custom headers to debuginfod servers.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    time::Duration,
};

use rustc_hash::FxHashMap;

use super::{
    elf::{self, DEBUG_DIR},
    files::{Pinned, SafeFile},
};

/// Largest debug file read from a server (the debug info of the largest libraries, such as
/// libLLVM, is about a gigabyte).
pub const MAX_DEBUG_FILE_BYTES: u64 = 2 << 30;
/// Longest wait for one debuginfod request.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A debug file found for a build-id, open.
pub struct DebugFile {
    pub file: SafeFile,
    pub facts: elf::ElfFacts,
}

/// The debug file of the binary with `build_id` in [`DEBUG_DIR`]`/.build-id/` (where
/// distributions' debug packages put them; symlinks followed only within that directory).
pub fn from_debug_dir(build_id: &[u8]) -> Option<DebugFile> {
    let (first, rest) = build_id.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let relative = format!(".build-id/{first:02x}/{}.debug", hex(rest));
    let pinned = Pinned::beneath(Path::new(DEBUG_DIR), Path::new(&relative)).ok()?;
    checked(pinned.open().ok()?, build_id)
}

/// `file` if it is an ELF file with GNU build-id `build_id`.
fn checked(file: SafeFile, build_id: &[u8]) -> Option<DebugFile> {
    let map = file.map().ok()?;
    let facts = elf::facts(&map)?;
    (facts.build_id.as_deref() == Some(build_id)).then_some(DebugFile { file, facts })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A debuginfod client, if `DEBUGINFOD_URLS` names servers.
pub struct Debuginfod {
    client: Option<debuginfod::Client>,
    cache_dir: Option<PathBuf>,
    /// Build-ids asked already (failures included: a server that does not have one is not
    /// asked again), with the cached file's path.
    fetched: FxHashMap<Vec<u8>, Option<PathBuf>>,
    /// Answers refused (too large, not the file asked for) since the last take.
    refused: u64,
}

impl Debuginfod {
    /// The client `DEBUGINFOD_URLS` configures, or none.
    pub fn from_env() -> Self {
        let configured = std::env::var_os("DEBUGINFOD_URLS").is_some_and(|urls| !urls.is_empty());
        let client = configured.then(http_client).flatten().and_then(|http| {
            debuginfod::Client::builder()
                .http_client(http)
                .build_from_env()
                .ok()
                .flatten()
        });
        let cache_dir = std::env::var_os("DEBUGINFOD_CACHE_PATH")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(|dir| PathBuf::from(dir).join("debuginfod_client"))
            })
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".cache/debuginfod_client"))
            });
        Self {
            client,
            cache_dir,
            fetched: FxHashMap::default(),
            refused: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.client.is_some() && self.cache_dir.is_some()
    }

    /// Answers refused since the last call.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// The debug file of the binary with `build_id`, from the cache or a server.
    pub fn debug_file(&mut self, build_id: &[u8]) -> Option<DebugFile> {
        if build_id.is_empty() || !self.enabled() {
            return None;
        }
        if let Some(known) = self.fetched.get(build_id) {
            return known
                .as_deref()
                .and_then(|path| Self::cached(path, build_id));
        }
        let path = self.fetch(build_id);
        self.fetched.insert(build_id.to_vec(), path.clone());
        path.and_then(|path| Self::cached(&path, build_id))
    }

    fn cached(path: &Path, build_id: &[u8]) -> Option<DebugFile> {
        checked(Pinned::path(path).ok()?.open().ok()?, build_id)
    }

    /// Fetches the debug file into the cache unless a good one is there; its path.
    fn fetch(&mut self, build_id: &[u8]) -> Option<PathBuf> {
        let (client, cache_dir) = (self.client.as_ref()?, self.cache_dir.as_ref()?);
        let dir = cache_dir.join(hex(build_id));
        let path = dir.join("debuginfo");
        if Pinned::path(&path).is_ok() {
            if Self::cached(&path, build_id).is_some() {
                return Some(path);
            }
            // Not the file asked for (another client's bad download, or tampering): replace it.
            let _ = std::fs::remove_file(&path);
        }
        let response = client
            .fetch_debug_info(&debuginfod::BuildId::raw(build_id))
            .ok()
            .flatten()?;
        std::fs::create_dir_all(&dir).ok()?;
        let mut temp = tempfile::Builder::new()
            .prefix(".amprof-")
            .tempfile_in(&dir)
            .ok()?;
        let copied =
            std::io::copy(&mut response.data.take(MAX_DEBUG_FILE_BYTES + 1), &mut temp).ok()?;
        let good = copied <= MAX_DEBUG_FILE_BYTES
            && Pinned::path(temp.path())
                .ok()
                .and_then(|p| p.open().ok())
                .and_then(|file| checked(file, build_id))
                .is_some();
        if !good {
            self.refused += 1;
            return None; // the temporary file is deleted with `temp`
        }
        temp.persist(&path).ok()?;
        Some(path)
    }
}

/// The HTTP client of debuginfod requests: a timeout, and redirects followed at most 5 times,
/// never from https to http.
fn http_client() -> Option<debuginfod::reqwest::blocking::Client> {
    use debuginfod::reqwest::redirect::Policy;
    let policy = Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() != "https"
            && attempt.previous().iter().any(|url| url.scheme() == "https");
        if attempt.previous().len() >= 5 || downgrade {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    debuginfod::reqwest::blocking::Client::builder()
        .timeout(TIMEOUT)
        .redirect(policy)
        .build()
        .ok()
}
