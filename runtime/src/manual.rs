//! A binary's man pages and shell completions, generated from its clap definition by the
//! binary itself (`busbar-agent --generate-manual DIR`, the same for `busbar-gateway` and
//! `busbarctl`), so that what is installed describes exactly the flags of the binary
//! installed beside it.
//!
//! The flag is for packaging (deploy/debian/build.sh), not for users: it is not part of the
//! binaries' clap definitions but added for a first, lenient parse ([`generate_if_asked`]),
//! so it appears in no `--help`, man page or completion (clap_complete's bash script would
//! offer a hidden flag or subcommand).
//!
//! `DIR/man/` gets `NAME.1` and, for a command with subcommands, one `NAME-SUB.1` per
//! subcommand (clap_mangen); `DIR/completions/` gets `NAME.bash`, `_NAME` (zsh) and
//! `NAME.fish` (clap_complete). deploy/debian/build.sh puts them where Debian looks for them.

use std::path::{Path, PathBuf};
use std::{fs, io};

use clap::{value_parser, Arg, CommandFactory};
use clap_complete::Shell;

/// The packaging flag: `--generate-manual DIR`.
pub const FLAG: &str = "generate-manual";

/// When the command line is `--generate-manual DIR` (alone or among other flags), writes the
/// manual of `C` under DIR and returns the exit code; otherwise `None`, and the binary parses
/// its command line as usual (which then never sees the flag).
pub fn generate_if_asked<C: CommandFactory>() -> Option<std::process::ExitCode> {
    generate_if_asked_from::<C>(std::env::args_os())
}

fn generate_if_asked_from<C: CommandFactory>(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Option<std::process::ExitCode> {
    let probe = C::command()
        .arg(
            Arg::new(FLAG)
                .long(FLAG)
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf)),
        )
        .ignore_errors(true)
        .subcommand_required(false)
        .arg_required_else_help(false)
        .disable_help_flag(true)
        .disable_version_flag(true);
    let matches = probe.try_get_matches_from(args).ok()?;
    let dir = matches.get_one::<PathBuf>(FLAG)?;
    Some(generate_and_exit(C::command(), dir))
}

/// Writes the man pages and the bash, zsh and fish completions of `cmd` under `dir`, and
/// returns the files written.
pub fn generate(mut cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    // clap fills in `version`, `--help` and `--version` when the command is built.
    cmd.build();
    let mut written = vec![];
    man_pages(&cmd, &man, &mut written)?;
    let name = cmd.get_name().to_string();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            &name,
            &completions,
        )?);
    }
    written.sort();
    Ok(written)
}

/// `NAME.1` for `cmd`, then `NAME-SUB.1` for each of its subcommands, recursively, as
/// `clap_mangen::generate_to` writes them but without pages for clap's `help` subcommands
/// (`busbarctl help chain` has nothing `busbarctl-chain.1` does not say).
fn man_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> io::Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut page = vec![];
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    fs::write(&path, page)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            man_pages(sub, dir, written)?;
        }
    }
    Ok(())
}

/// [`generate`] for a binary's `main`: prints the files written, or the error, and returns
/// the process's exit code.
pub fn generate_and_exit(cmd: clap::Command, dir: &Path) -> std::process::ExitCode {
    let name = cmd.get_name().to_string();
    match generate(cmd, dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: --{FLAG} {}: {e}", dir.display());
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "demo", version, about = "A demo")]
    struct Demo {
        /// The engine.
        #[arg(long)]
        docker: Option<String>,
        #[command(subcommand)]
        cmd: Option<Sub>,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        /// Does one thing.
        One,
    }

    #[test]
    fn only_the_flag_generates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let args = |a: &[&str]| -> Vec<std::ffi::OsString> {
            std::iter::once("demo")
                .chain(a.iter().copied())
                .map(Into::into)
                .collect()
        };
        assert!(generate_if_asked_from::<Demo>(args(&["--docker", "x"])).is_none());
        assert!(generate_if_asked_from::<Demo>(args(&["--help"])).is_none());
        assert!(generate_if_asked_from::<Demo>(args(&["one"])).is_none());
        assert!(!dir.exists());
        let dir_arg = dir.to_str().unwrap();
        assert!(generate_if_asked_from::<Demo>(args(&["--generate-manual", dir_arg])).is_some());
        assert!(dir.join("man/demo.1").is_file());
    }

    #[test]
    fn man_pages_and_completions_for_every_shell() {
        use clap::CommandFactory;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let files = generate(Demo::command(), dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["demo.1", "demo-one.1", "demo.bash", "_demo", "demo.fish"] {
            assert!(names.contains(&want.to_string()), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let page = fs::read_to_string(dir.join("man/demo.1")).unwrap();
        assert!(page.contains("\\-\\-docker"), "{page}");
        let bash = fs::read_to_string(dir.join("completions/demo.bash")).unwrap();
        assert!(bash.contains("--docker"), "{bash}");
        assert!(!bash.contains(FLAG), "{bash}");
    }
}
