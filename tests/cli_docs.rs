//! The man pages in man/ and the completions in completions/ are generated from the clap
//! definition; this test fails when they are out of date. To regenerate them:
//!
//!     AMPROF_UPDATE_DOCS=1 cargo test --test cli_docs

use std::path::Path;

use amprof::cli::Cli;
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
    let update = std::env::var_os("AMPROF_UPDATE_DOCS").is_some();
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
        "out of date: {stale:?}; run AMPROF_UPDATE_DOCS=1 cargo test --test cli_docs and commit"
    );
}
