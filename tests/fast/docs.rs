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
