//! What `/info` and `/version` say about the gateway itself.
//!
//! [`GatewayFacts::of_this_host`] is the one function in `aggregate` that does IO: it reads the
//! host name, `/etc/os-release` and the kernel release, best effort. Build the facts once at
//! start and keep them; everything else here is pure ([`GatewayFacts::from_host_files`]).

/// The placement filters the scheduler applies (`schedule::filters::FILTERS`), in Swarm's words.
pub const DEFAULT_FILTERS: &str = "health, port, containerslots, dependency, affinity, constraint";

/// What the gateway knows about itself, for `/info` and `/version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayFacts {
    /// The gateway host's name: `Name` (and `ID`) in `docker info`.
    pub name: String,
    /// busbar's version (`CARGO_PKG_VERSION`), shown as `busbar/<version>`.
    pub version: String,
    /// The gateway host's OS as `docker info` words it: "Debian GNU/Linux 12 (bookworm)".
    pub operating_system: String,
    /// `linux`, `windows`, ... (Go's `GOOS` words, which match Rust's `std::env::consts::OS`).
    pub os_type: String,
    /// `uname -m` words (`x86_64`, `aarch64`): `Architecture` in `/info`; `/version` says the
    /// same in Go's words (`amd64`), see [`go_arch`](super::go_arch).
    pub architecture: String,
    /// The gateway host's kernel release (`uname -r`).
    pub kernel_version: String,
    /// The scheduling strategy's name, shown as `Strategy: spread`.
    pub strategy: String,
    /// The placement filters the scheduler applies, shown as `Filters: health, port, ...`.
    pub filters: String,
}

impl GatewayFacts {
    /// Facts known from the build alone; the caller fills in the rest (or see [`of_this_host`]).
    ///
    /// [`of_this_host`]: GatewayFacts::of_this_host
    pub fn new(name: &str, version: &str) -> GatewayFacts {
        GatewayFacts {
            name: name.to_owned(),
            version: version.to_owned(),
            operating_system: String::new(),
            os_type: std::env::consts::OS.to_owned(),
            architecture: std::env::consts::ARCH.to_owned(),
            kernel_version: String::new(),
            strategy: String::new(),
            filters: DEFAULT_FILTERS.to_owned(),
        }
    }

    /// The facts of the host this runs on: host name, OS (`PRETTY_NAME` of `/etc/os-release`)
    /// and kernel release (`/proc/sys/kernel/osrelease`). A file that cannot be read leaves its
    /// field empty (the CLI then skips the line); this never fails. Reads files: call it once.
    pub fn of_this_host(version: &str, strategy: &str) -> GatewayFacts {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let mut hostname = read("/proc/sys/kernel/hostname");
        if hostname.trim().is_empty() {
            hostname = read("/etc/hostname");
        }
        GatewayFacts::from_host_files(
            version,
            strategy,
            &hostname,
            &read("/etc/os-release"),
            &read("/proc/sys/kernel/osrelease"),
        )
    }

    /// [`of_this_host`](GatewayFacts::of_this_host) from the files' contents.
    pub fn from_host_files(
        version: &str,
        strategy: &str,
        hostname: &str,
        os_release: &str,
        kernel_release: &str,
    ) -> GatewayFacts {
        let mut facts = GatewayFacts::new(hostname.trim(), version);
        facts.operating_system = pretty_name(os_release);
        facts.kernel_version = kernel_release.trim().to_owned();
        facts.strategy = strategy.to_owned();
        facts
    }

    /// `busbar/<version>`: the gateway's `ServerVersion` and `Version`.
    pub fn server_version(&self) -> String {
        format!("busbar/{}", self.version)
    }
}

/// `PRETTY_NAME` of an os-release file (quotes removed), else `NAME`, else "".
fn pretty_name(os_release: &str) -> String {
    let field = |key: &str| {
        os_release.lines().find_map(|line| {
            let value = line.trim().strip_prefix(key)?.strip_prefix('=')?;
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some(unquoted.replace("\\\"", "\""))
        })
    };
    field("PRETTY_NAME")
        .or_else(|| field("NAME"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str =
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                          VERSION_ID=\"12\"\nID=debian\n";

    #[test]
    fn from_host_files_reads_what_docker_info_shows() {
        let facts =
            GatewayFacts::from_host_files("0.1.0", "spread", "gw1\n", DEBIAN, "6.1.0-18-amd64\n");
        assert_eq!(facts.name, "gw1");
        assert_eq!(facts.operating_system, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(facts.kernel_version, "6.1.0-18-amd64");
        assert_eq!(facts.strategy, "spread");
        assert_eq!(facts.filters, DEFAULT_FILTERS);
        assert_eq!(facts.server_version(), "busbar/0.1.0");
    }

    #[test]
    fn os_name_falls_back_and_never_fails() {
        assert_eq!(pretty_name("NAME=Alpine Linux\nID=alpine"), "Alpine Linux");
        assert_eq!(pretty_name("PRETTY_NAME='Fedora 40'"), "Fedora 40");
        assert_eq!(pretty_name(""), "");
        let facts = GatewayFacts::from_host_files("0.1.0", "spread", "", "", "");
        assert_eq!(
            (facts.name.as_str(), facts.operating_system.as_str()),
            ("", "")
        );
    }

    #[test]
    fn of_this_host_fills_what_it_can() {
        let facts = GatewayFacts::of_this_host("0.1.0", "binpack");
        assert_eq!(facts.strategy, "binpack");
        assert_eq!(facts.os_type, std::env::consts::OS);
    }
}
