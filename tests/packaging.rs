//! The shell completions and the man page in `packaging/`, generated from the
//! CLI definition: the `.deb` ships them, and this test keeps them in step
//! with the binary. After a CLI change, regenerate them with
//! `JWKD_UPDATE_PACKAGING=1 cargo nextest run --test it packaging`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "jwkd.bash"),
        (Shell::Zsh, "_jwkd"),
        (Shell::Fish, "jwkd.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut jwkd::cli::Cli::command(), "jwkd", &mut text);
        files.push((PathBuf::from("packaging/completions").join(name), text));
    }
    // jwkd.1, and a page per verb (jwkd-serve.1, ...) that jwkd.1 refers to.
    let pages = tempfile::tempdir().expect("a scratch directory");
    clap_mangen::generate_to(jwkd::cli::Cli::command(), pages.path()).expect("render man pages");
    let mut names: Vec<_> = std::fs::read_dir(pages.path())
        .expect("the pages")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let page = std::fs::read(pages.path().join(&name)).expect("a page");
        files.push((PathBuf::from("packaging/man").join(name), page));
    }
    files
}

#[test]
fn completions_and_man_page_match_the_cli() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("JWKD_UPDATE_PACKAGING").is_some();
    let files = generated();
    let mut stale = Vec::new();
    // A page for a verb that no longer exists.
    for entry in std::fs::read_dir(root.join("packaging/man"))
        .into_iter()
        .flatten()
    {
        let path = entry.expect("an entry").path();
        let known = files
            .iter()
            .any(|(generated, _)| root.join(generated) == path);
        if !known {
            if update {
                std::fs::remove_file(&path).expect("remove a stale page");
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    for (path, text) in files {
        let path = root.join(path);
        if update {
            std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
            std::fs::write(&path, &text).expect("write");
        } else if std::fs::read(&path).ok().as_deref() != Some(text.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from what the CLI definition generates: run \
         `JWKD_UPDATE_PACKAGING=1 cargo nextest run --test it packaging` and commit them"
    );
}

#[test]
fn the_man_page_and_completions_know_every_verb() {
    let files = generated();
    let text = |name: &str| {
        let (_, bytes) = files
            .iter()
            .find(|(path, _)| path.ends_with(name))
            .expect("generated");
        String::from_utf8(bytes.clone()).expect("UTF-8")
    };
    for verb in jwkd::cli::Cli::command().get_subcommands() {
        let verb = verb.get_name();
        for name in ["jwkd.bash", "_jwkd", "jwkd.fish"] {
            assert!(text(name).contains(verb), "{name} does not mention {verb}");
        }
        let page = text(&format!("jwkd-{verb}.1"));
        assert!(
            page.contains(&format!("jwkd\\-{}", verb.replace('-', "\\-"))),
            "jwkd-{verb}.1 does not name its verb:\n{page}"
        );
    }
}
