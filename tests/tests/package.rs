//! The Debian package as an operator meets it (deploy/debian.md): built with the README's one
//! command, `bash deploy/debian/build.sh`, installed with `dpkg -i`, its four units checked by
//! `systemd-analyze verify`, the embedded gateway started as its unit starts it, used through
//! the `docker` CLI by a member of the `busbar` group (and refused to a non-member), its man
//! pages checked against `--help` and its completions against the shells' places, then
//! `dpkg --purge`d: no file, conffile or group left.
//!
//! Two departures from what an operator does, both because of the test machine:
//! - The package is made with `--profile dev --no-build --fast`: from the binaries tests/run.sh
//!   has already built (`cargo build --workspace --bins`; cargo-deb strips them as it packages
//!   them), compressed less. A release build and xz's best compression would add ten minutes
//!   to CI on 2 cores, and even a dev build of the three packages alone a minute (their
//!   dependencies' features differ from the workspace's). The release build is the script's
//!   default, with the same assets.
//! - systemd is not PID 1 here, so `systemctl start` cannot run: the test reads the unit, takes
//!   its `ExecStart` command line and the variables of its `EnvironmentFile`, and runs that
//!   command line with exactly that environment, as systemd does (the sandboxing directives
//!   are left to `systemd-analyze verify`).
//!
//! It installs into the machine itself (/usr/bin, /etc/default, /lib/systemd/system, the
//! `busbar` group, two test users): a guard purges the package and removes the users however
//! the test ends. A `busbar` package already installed (a killed run) is purged first.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::TempDir;
use testbed::{output_with_timeout, unique_name, wait_until, Testbed};

const PACKAGE: &str = "busbar";
const GROUP: &str = "busbar";
const BINARIES: [&str; 3] = ["busbar-agent", "busbar-gateway", "busbarctl"];
const UNITS: [&str; 4] = [
    "busbar-agent.service",
    "busbar-agent-cluster.service",
    "busbar-gateway.service",
    "busbar-gateway-cluster.service",
];
const UNIT_DIR: &str = "/lib/systemd/system";
/// The build may compile the three binaries and install cargo-deb on a fresh machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn debian_package_installs_serves_and_purges() {
    testbed::e2e!();
    let engine = Testbed::shared().hosts()[0].docker_url();
    let began = Instant::now();

    let deb = build_package();
    eprintln!(
        "package: built {} ({} bytes) in {:.0?}",
        deb.display(),
        std::fs::metadata(&deb).unwrap().len(),
        began.elapsed()
    );
    let mut installed = Installed::install(&deb);
    let files = installed.files();

    for bin in BINARIES {
        assert_stripped(&format!("/usr/bin/{bin}"));
    }
    for unit in UNITS {
        verify_unit(unit);
    }
    for bin in BINARIES {
        assert_manual_matches_help(bin);
        assert_completions(bin);
    }

    // The embedded gateway, on the test bed's engine and a private socket: what an operator
    // changes in /etc/default/busbar-gateway before starting the unit.
    let dir = TempDir::new();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("busbar.sock");
    set_variables(
        "/etc/default/busbar-gateway",
        &[
            ("BUSBAR_DOCKER", engine.as_str()),
            ("BUSBAR_LISTEN", &format!("unix://{}", socket.display())),
        ],
    );
    let mut gateway = start_unit("busbar-gateway.service", &dir);
    assert!(
        wait_until(Duration::from_secs(30), || socket.exists()),
        "the gateway made no socket at {} within 30 s\n{}",
        socket.display(),
        gateway.log()
    );
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        meta.gid(),
        group_id(GROUP).expect("the busbar group exists"),
        "the socket's group"
    );
    assert_eq!(meta.mode() & 0o777, 0o660, "the socket's mode");

    let host = format!("unix://{}", socket.display());
    let member = installed.add_user(true);
    let out = docker_as(
        &member,
        &dir,
        &host,
        &["run", "--rm", "busybox", "echo", "hello"],
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "hello",
        "a member of the busbar group ran `docker run --rm busybox echo hello`: {}\n{}",
        describe(&out),
        gateway.log()
    );
    let stranger = installed.add_user(false);
    let out = docker_as(&stranger, &dir, &host, &["version"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "a user outside the busbar group must be refused by the socket: {}",
        describe(&out)
    );
    gateway.stop();
    assert!(
        !socket.exists(),
        "the gateway left its socket behind on SIGTERM"
    );

    installed.purge();
    for f in &files {
        assert!(
            !f.exists() || f.is_dir(),
            "{} is left after dpkg --purge",
            f.display()
        );
    }
    for unit in UNITS {
        let env = environment_file(&unit_text(unit, Path::new("/nonexistent")));
        assert!(
            !env.exists(),
            "{} is left after dpkg --purge",
            env.display()
        );
    }
    assert!(
        group_id(GROUP).is_none(),
        "the busbar group is left after dpkg --purge"
    );
    assert!(
        !Path::new("/var/lib/busbar").exists(),
        "/var/lib/busbar is left after dpkg --purge"
    );
    eprintln!("package: whole test {:.0?}", began.elapsed());
}

/// The README's command, `bash deploy/debian/build.sh`, on this build's target directory.
fn build_package() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/package-HASH
    let target = exe
        .ancestors()
        .nth(3)
        .expect("tests run from target/<profile>/deps");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = run(
        Command::new("bash")
            .arg(root.join("deploy/debian/build.sh"))
            .args(["--profile", "dev", "--no-build", "--fast"])
            .env("CARGO_TARGET_DIR", target),
        BUILD_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "deploy/debian/build.sh did not end with the path of a .deb: {}",
        describe(&out)
    );
    deb
}

/// The installed package; purged, and its test users removed, when dropped.
struct Installed {
    purged: bool,
    users: Vec<String>,
}

impl Installed {
    fn install(deb: &Path) -> Installed {
        if dpkg_status().is_some() {
            eprintln!("package: a busbar package is installed (a killed run?): purging it first");
            run(
                Command::new("dpkg").args(["--purge", PACKAGE]),
                STEP_TIMEOUT,
            );
        }
        let installed = Installed {
            purged: false,
            users: vec![],
        };
        run(Command::new("dpkg").arg("-i").arg(deb), STEP_TIMEOUT);
        assert_eq!(dpkg_status().as_deref(), Some("install ok installed"));
        assert!(group_id(GROUP).is_some(), "dpkg -i made no busbar group");
        installed
    }

    /// The package's files, as dpkg lists them.
    fn files(&self) -> Vec<PathBuf> {
        let out = run(Command::new("dpkg").args(["-L", PACKAGE]), STEP_TIMEOUT);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .collect()
    }

    /// A system user with no home, in the busbar group or not.
    fn add_user(&mut self, in_group: bool) -> String {
        let name = unique_name("bbpkg").chars().take(30).collect::<String>();
        let mut cmd = Command::new("useradd");
        cmd.args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ]);
        if in_group {
            cmd.args(["--groups", GROUP]);
        }
        run(cmd.arg(&name), STEP_TIMEOUT);
        self.users.push(name.clone());
        name
    }

    fn remove_users(&mut self) {
        for user in self.users.drain(..) {
            let _ = output_with_timeout(Command::new("userdel").arg(&user), None, STEP_TIMEOUT);
        }
    }

    fn purge(&mut self) {
        self.remove_users();
        run(
            Command::new("dpkg").args(["--purge", PACKAGE]),
            STEP_TIMEOUT,
        );
        self.purged = true;
        assert_eq!(dpkg_status(), None, "dpkg still knows the package");
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        self.remove_users();
        if !self.purged {
            let _ = output_with_timeout(
                Command::new("dpkg").args(["--purge", PACKAGE]),
                None,
                STEP_TIMEOUT,
            );
        }
    }
}

/// dpkg's status of the package (`install ok installed`), `None` when dpkg has no trace of it.
fn dpkg_status() -> Option<String> {
    let out = output_with_timeout(
        Command::new("dpkg-query").args(["-W", "-f", "${Status}", PACKAGE]),
        None,
        STEP_TIMEOUT,
    )
    .unwrap();
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !status.is_empty() && !status.ends_with("not-installed"))
        .then_some(status)
}

fn group_id(name: &str) -> Option<u32> {
    let out = output_with_timeout(
        Command::new("getent").args(["group", name]),
        None,
        STEP_TIMEOUT,
    )
    .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2)?.trim().parse().ok()
}

/// No debug information and no symbol table: the package's binaries are stripped.
fn assert_stripped(bin: &str) {
    let out = run(
        Command::new("readelf").args(["-S", "-W", bin]),
        STEP_TIMEOUT,
    );
    let sections = String::from_utf8_lossy(&out.stdout);
    for s in [".debug_info", ".symtab"] {
        assert!(
            !sections.contains(&format!(" {s} ")),
            "{bin} is not stripped: it has {s}"
        );
    }
}

/// `systemd-analyze verify` accepts the unit, its settings file is a conffile of the package,
/// and every variable that file sets or shows is one of the binary's (a typo would be ignored
/// silently).
fn verify_unit(unit: &str) {
    let path = Path::new(UNIT_DIR).join(unit);
    let out = run(
        Command::new("systemd-analyze").arg("verify").arg(&path),
        STEP_TIMEOUT,
    );
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let about_ours: Vec<&str> = said.lines().filter(|l| l.contains("busbar")).collect();
    assert!(
        about_ours.is_empty(),
        "systemd-analyze verify {unit}:\n{}",
        about_ours.join("\n")
    );

    let text = unit_text(unit, Path::new(UNIT_DIR));
    let env_file = environment_file(&text);
    let conffiles = run(
        Command::new("dpkg-query").args(["-W", "-f", "${Conffiles}", PACKAGE]),
        STEP_TIMEOUT,
    );
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains(&format!(" {} ", env_file.display())),
        "{} is not a conffile of the package",
        env_file.display()
    );
    let command = exec_start(&text, &BTreeMap::new());
    let help = run(Command::new(&command[0]).arg("--help"), STEP_TIMEOUT);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let settings = std::fs::read_to_string(&env_file).unwrap();
    let mut named = 0;
    for line in settings.lines() {
        let line = line.trim_start_matches('#');
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if name.starts_with("BUSBAR_") && !name.contains(' ') {
            named += 1;
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{} names {name}, which `{} --help` does not know",
                env_file.display(),
                command[0]
            );
        }
    }
    assert!(named >= 4, "{} sets almost nothing", env_file.display());
}

/// The unit file's text, with its line continuations joined.
fn unit_text(unit: &str, dir: &Path) -> String {
    let path = dir.join(unit);
    // After a purge the unit is gone: read it from the source tree, the package's source.
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        std::fs::read_to_string(root.join("deploy").join(unit)).unwrap()
    });
    text.replace("\\\n", " ")
}

/// The unit's `EnvironmentFile=` (without the `-` that would make it optional).
fn environment_file(unit_text: &str) -> PathBuf {
    let value = directive(unit_text, "EnvironmentFile").expect("the unit has an EnvironmentFile");
    PathBuf::from(value.trim_start_matches('-'))
}

fn directive<'a>(unit_text: &'a str, key: &str) -> Option<&'a str> {
    unit_text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Variables of an EnvironmentFile, read as systemd reads them: `KEY=VALUE` lines, `#` and
/// `;` lines are comments, a value may be quoted.
fn read_environment(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut vars = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not KEY=VALUE: {line}", path.display()));
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        vars.insert(k.trim().to_string(), v.to_string());
    }
    vars
}

/// The unit's `ExecStart=` as words, `$VAR` and `${VAR}` expanded from `env` as systemd does
/// (`${VAR}` one word, `$VAR` split on whitespace). Prefixes such as `-` or `+` are dropped.
fn exec_start(unit_text: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let line = directive(unit_text, "ExecStart").expect("the unit has an ExecStart");
    let line = line.trim_start_matches(['-', '@', ':', '+', '!']);
    let mut words = vec![];
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            words.push(env.get(name).cloned().unwrap_or_default());
        } else if let Some(name) = word.strip_prefix('$') {
            if let Some(v) = env.get(name) {
                words.extend(v.split_whitespace().map(String::from));
            }
        } else {
            words.push(word.to_string());
        }
    }
    words
}

/// Sets `NAME=VALUE` in an EnvironmentFile, as an operator edits it.
fn set_variables(path: &str, vars: &[(&str, &str)]) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let replaced = vars
            .iter()
            .find(|(name, _)| line.starts_with(&format!("{name}=")));
        match replaced {
            Some((name, value)) => out.push_str(&format!("{name}={value}\n")),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    for (name, _) in vars {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name}="))),
            "{path} has no {name}= line"
        );
    }
    std::fs::write(path, out).unwrap();
}

/// A unit's process, started as systemd starts it; stopped when dropped.
struct UnitProcess {
    child: Child,
    log: PathBuf,
}

impl UnitProcess {
    fn log(&self) -> String {
        format!(
            "--- the unit's log ---\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if !wait_until(Duration::from_secs(15), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
            panic!("the unit's process did not stop on SIGTERM\n{}", self.log());
        }
    }
}

impl Drop for UnitProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `unit` as systemd would: its ExecStart command line, expanded, with only its
/// EnvironmentFile's variables (and systemd's PATH) in the environment.
fn start_unit(unit: &str, dir: &TempDir) -> UnitProcess {
    let text = unit_text(unit, Path::new(UNIT_DIR));
    let env = read_environment(&environment_file(&text));
    let command = exec_start(&text, &env);
    let log = dir.join(&format!("{unit}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    UnitProcess { child, log }
}

/// `docker -H HOST ARGS...` run as `user` (with its groups), as that user would run it.
fn docker_as(user: &str, dir: &TempDir, host: &str, args: &[&str]) -> Output {
    let home = dir.join(user);
    std::fs::create_dir_all(&home).unwrap();
    run(Command::new("chown").arg(user).arg(&home), STEP_TIMEOUT);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .arg(testbed::docker::docker_program())
        .args(["-H", host])
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", &home)
        .env("DOCKER_CLI_HINTS", "false");
    output_with_timeout(&mut cmd, None, testbed::DOCKER_TIMEOUT).unwrap()
}

/// `BIN --help` and `man BIN` name the same long options.
fn assert_manual_matches_help(bin: &str) {
    let help = run(
        Command::new(format!("/usr/bin/{bin}")).arg("--help"),
        STEP_TIMEOUT,
    );
    let help = long_options(&String::from_utf8_lossy(&help.stdout));
    let page = run(
        Command::new("man")
            .args(["-P", "cat", bin])
            .env("MANWIDTH", "2000")
            .env("LC_ALL", "C")
            .env_remove("MAN_KEEP_FORMATTING"),
        STEP_TIMEOUT,
    );
    let page = long_options(&String::from_utf8_lossy(&page.stdout));
    assert!(help.len() >= 3, "`{bin} --help` shows no options: {help:?}");
    assert_eq!(
        help, page,
        "`{bin} --help` and `man {bin}` disagree on the options"
    );
}

/// Every `--option` in a text (backspace overstrikes removed).
fn long_options(text: &str) -> BTreeSet<String> {
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    let mut options = BTreeSet::new();
    for (i, _) in plain.match_indices("--") {
        let before = plain[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '-') {
            continue;
        }
        let name: String = plain[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if name.len() > 1 {
            options.insert(format!("--{name}"));
        }
    }
    options
}

/// The bash, zsh and fish completions of `bin` are where each shell looks, and bash loads its.
fn assert_completions(bin: &str) {
    let paths = [
        format!("/usr/share/bash-completion/completions/{bin}"),
        format!("/usr/share/zsh/vendor-completions/_{bin}"),
        format!("/usr/share/fish/vendor_completions.d/{bin}.fish"),
    ];
    for path in &paths {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("the completion {path}: {e}"));
        assert!(text.contains("help"), "{path} does not complete --help");
    }
    let out = run(
        Command::new("bash").args(["-c", &format!("source {} && complete -p {bin}", paths[0])]),
        STEP_TIMEOUT,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(bin),
        "bash registered no completion for {bin}: {}",
        describe(&out)
    );
}

/// Runs a command to success within `timeout`, or fails the test with what it printed.
fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let out = output_with_timeout(cmd, None, timeout).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(out.status.success(), "{shown} failed: {}", describe(&out));
    out
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
