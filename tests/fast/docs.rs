//! Docs that cannot drift: the man pages in man/ and the completions in completions/ are
//! generated from the clap definition, and the README's table of exit codes from
//! `amprof::error::Exit`; these tests fail when they are out of date. To regenerate them:
//!
//!     AMPROF_UPDATE=1 cargo test --test fast docs::

use std::path::Path;

use amprof::{cli::Cli, error::exit_codes_markdown};
use clap_complete::Shell;

/// Every generated file, with its expected contents.
fn generated() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let command = Cli::command_with_help();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .unwrap();
    files.push(("man/amprof.1".to_string(), page));
    // A page per command, and per subcommand of one (`amprof-push-datadog`).
    let mut commands: Vec<(String, clap::Command)> = command
        .get_subcommands()
        .map(|sub| (format!("amprof-{}", sub.get_name()), sub.clone()))
        .collect();
    while let Some((name, sub)) = commands.pop() {
        for inner in sub.get_subcommands() {
            commands.push((format!("{name}-{}", inner.get_name()), inner.clone()));
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(sub.name(&*name.clone().leak()))
            .render(&mut page)
            .unwrap();
        files.push((format!("man/{name}.1"), page));
    }
    for (shell, file) in [
        (Shell::Bash, "completions/amprof.bash"),
        (Shell::Zsh, "completions/_amprof"),
        (Shell::Fish, "completions/amprof.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command_with_help(), "amprof", &mut script);
        files.push((file.to_string(), script));
    }
    files
}

#[test]
fn man_pages_and_completions_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = updating();
    let mut stale = Vec::new();
    for (file, contents) in generated() {
        let path = root.join(&file);
        if std::fs::read(&path).ok().as_deref() != Some(contents.as_slice()) {
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &contents).unwrap();
            } else {
                stale.push(file);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}; run AMPROF_UPDATE=1 cargo test --test fast docs:: and commit"
    );
}

fn updating() -> bool {
    std::env::var_os("AMPROF_UPDATE").is_some()
}

/// The README's "Exit codes" section holds the table `Exit` makes.
#[test]
fn the_readme_lists_the_exit_codes_amprof_has() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let heading = "## Exit codes\n\n";
    let start = readme.find(heading).expect("a section ## Exit codes") + heading.len();
    let end = readme[start..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + i + 1);
    let table = exit_codes_markdown();
    if readme[start..end].trim_end() == table.trim_end() {
        return;
    }
    assert!(
        updating(),
        "README.md's exit codes differ from amprof::error::Exit; run AMPROF_UPDATE=1 cargo test --test fast docs:: and commit"
    );
    let updated = format!("{}{table}\n{}", &readme[..start], &readme[end..]);
    std::fs::write(&path, updated).unwrap();
}

/// The repository's files that name other files of it: every Markdown page, the manifest, the
/// CI scripts and benches, and every Rust source (doc comments included).
fn files_that_name_paths(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                // Build output, fetched sources and the fuzzer's corpora name no docs.
                if !matches!(
                    name.as_str(),
                    "target" | ".git" | "corpus" | "artifacts" | "data"
                ) {
                    dirs.push(path);
                }
            } else if name.ends_with(".md")
                || name.ends_with(".rs")
                || name.ends_with(".py")
                || name.ends_with(".sh")
                || name == "Cargo.toml"
                || path.parent().unwrap().file_name() == Some(std::ffi::OsStr::new(".ci"))
            {
                files.push(path);
            }
        }
    }
    files
}

/// A path of the repository named in prose or code (`src/...`, `tests/...`, `benches/...` and
/// the other top-level folders) exists: docs that move with the code, checked by the same run.
/// Placeholders (`tests/fixtures/NAME.c`, anything with `*`, `{`, `<` or `$`) and what a run
/// creates (`fuzz/artifacts`) are not paths to check.
#[test]
fn every_path_the_docs_name_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tops = [
        "src/",
        "tests/",
        "benches/",
        "ebpf-src/",
        "man/",
        "completions/",
        "docs/",
        ".ci/",
        "fuzz/",
    ];
    let created_by_runs = ["fuzz/artifacts"];
    let mut missing = Vec::new();
    for file in files_that_name_paths(root) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let bytes = text.as_bytes();
        for top in tops {
            for (at, _) in text.match_indices(top) {
                // Only where a path starts: not inside another path or word.
                if at > 0 {
                    let before = bytes[at - 1];
                    if before.is_ascii_alphanumeric() || b"/._-".contains(&before) {
                        continue;
                    }
                }
                let end = text[at..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "/._-*{}<>$".contains(c)))
                    .map_or(text.len(), |n| at + n);
                let path = text[at..end].trim_end_matches(['.', '/', '-']);
                let placeholder = path.contains(['*', '{', '}', '<', '>', '$'])
                    || path
                        .split(['/', '.'])
                        .any(|part| part.len() > 1 && part.chars().all(|c| c.is_ascii_uppercase()));
                if path.len() <= top.len()
                    || placeholder
                    || created_by_runs.contains(&path)
                    || root.join(path).exists()
                {
                    continue;
                }
                missing.push(format!(
                    "{}: {path}",
                    file.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "paths named that do not exist:\n{}",
        missing.join("\n")
    );
}
