//! Adapter chains: the `adapters.yml` model, its parser and validation, which requests a chain
//! matches, and the scopes chains have in etcd. Pure data: the
//! HTTP calls to adapters and the sources of live chains belong to the agent.
//!
//! # Layout
//! - this module: [`ChainSet`], built only by [`ChainSet::from_yaml`], and the file format.
//! - [`matcher`]: which endpoints (and so which adapters) a request matches.
//! - [`scoped`]: chain scopes (`global`, `label:K=V`, `node:N`), their merge, the status an
//!   agent reports and its last-known-good cache.
//!
//! A [`ChainSet`] is what Powerstrip called the adapter configuration: a list of endpoints
//! (`"POST /*/containers/create": {pre: [weave], post: [weave]}`) and the adapters they
//! name (`weave: http://weave/v1/extension`). It is built only by [`ChainSet::from_yaml`]
//! (or [`ChainSet::load`]), which validates everything before anything runs, so a
//! `ChainSet` always holds compiled patterns and resolvable adapter names. It is immutable;
//! a reload builds a new one (and the caller keeps the old one if the new file is invalid).
//! Matching requests against it lives in [`matcher`].
//!
//! # File format
//!
//! ```yaml
//! version: 1                        # optional; only 1 is supported
//! endpoints:                        # required; {} for none
//!   "POST /*/containers/create":    # "METHOD PATTERN", see crate::matcher
//!     pre: [flocker, weave]         # optional list of adapter names, run in order
//!     post: [weave]                 # optional; at least one of pre/post is required
//! adapters:                         # required; {} for none
//!   flocker: http://flocker/flocker-adapter   # v1: name -> URL
//!   weave:                          # busbar extension: a mapping
//!     url: http://weave/v1/extension
//!     timeout: 30s                  # or a number of seconds; default 10s
//!     on_error: fail                # fail (default) or skip
//!     ca_file: /etc/busbar/ca.pem   # extra CA for https:// adapters
//! max_buffer: 64MiB                 # busbar extension: largest response buffered for post-hooks
//! ```
//!
//! Every file Powerstrip accepted with meaningful content loads unchanged: `version` is
//! optional, `endpoints: {}` and `adapters: {}` are valid, unused adapters are allowed, and
//! a missing `pre` or `post` is `[]`. The extensions are all optional.
//!
//! # Validation, and where it is stricter than Powerstrip
//!
//! All problems are collected and reported together, sorted by line (see [`ConfigError`]).
//! Endpoint keys are never refused: every key is an fnmatch pattern, as it was to Powerstrip
//! (see [`matcher`]); a key that can never match a request (`/containers/create` with no
//! method, `post /x` in lowercase) loads with a warning ([`ChainSet::warnings`]).
//! Besides Powerstrip's checks (top level is a mapping; `endpoints` and `adapters` exist;
//! an endpoint has `pre` and/or `post` and no other keys; every referenced adapter is
//! defined), we also reject what Powerstrip either crashed on or silently ignored, because
//! a typo in this file must never quietly disable a hook:
//!
//! - **unknown top-level keys** (Powerstrip ignored them; `adpters:` would then be reported
//!   only as "adapters missing", but `max_bufer:` would silently do nothing);
//! - `null` or a scalar where a list or mapping belongs (`pre: weave` is an error; Powerstrip
//!   read it as the list `[w, e, a, v, e]`);
//! - adapter URLs that are not absolute `http://` or `https://` URLs with a host;
//! - a `version` other than 1, and bad extension values (durations, sizes, `on_error`).
//!
//! # Line numbers
//!
//! `serde_yaml` values carry no positions, so problem lines are found by scanning the source
//! text for the key (see `locate.rs`). This is exact for the usual block layout, falls back
//! to the enclosing key's line for flow style (`{pre: [a]}`), and gives no line when even
//! that is not found. YAML syntax errors use the parser's own position.

mod error;
mod locate;
pub mod matcher;
pub mod scoped;
mod units;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, Problem};

use crate::matcher::KeyPattern;
pub use crate::matcher::MatchedChain;

/// How long an adapter may take to answer when the file does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest Docker response buffered for post-hooks when the file does not say: 64 MiB.
pub const DEFAULT_MAX_BUFFER: u64 = 64 * 1024 * 1024;

/// A validated set of adapter chains.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainSet {
    endpoints: Vec<Endpoint>,
    adapters: BTreeMap<String, Arc<Adapter>>,
    max_buffer: u64,
    /// What loads but is probably a mistake (a key that can never match), with its line.
    warnings: Vec<Problem>,
}

/// One `"METHOD PATTERN": {pre: [...], post: [...]}` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The key as written, e.g. `POST /*/containers/create`.
    pub key: String,
    /// The key compiled: an fnmatch pattern over `"METHOD /path"` (see [`matcher`]).
    pub pattern: KeyPattern,
    /// Adapter names, in the order they run. Each is defined in the same [`ChainSet`].
    pub pre: Vec<String>,
    pub post: Vec<String>,
    /// The line of the key in the file, when known.
    pub line: Option<usize>,
}

/// An adapter: where hooks are POSTed, and how to treat it when it fails.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub name: String,
    /// Absolute `http://` or `https://` URL, POSTed to exactly as configured, without the
    /// `user:password@` it may have been written with (that is [`Adapter::basic_auth`]), so
    /// it can be shown in errors and logs.
    pub url: http::Uri,
    /// `user:password@` in the configured URL: sent as HTTP Basic authentication, never
    /// shown.
    pub basic_auth: Option<BasicAuth>,
    /// How long one hook call may take.
    pub timeout: Duration,
    pub on_error: OnError,
    /// An extra CA certificate (PEM) to trust for an `https://` adapter.
    pub ca_file: Option<PathBuf>,
}

/// The credentials of an adapter URL's `user:password@` (percent-decoded).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicAuth({:?}, <redacted>)", self.user)
    }
}

/// What a failing adapter (unreachable, timed out, bad reply) does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the chain and answer the client with an error (the README's intent).
    #[default]
    Fail,
    /// Log, skip this adapter and go on with the chain (the unmerged Go port's behaviour).
    Skip,
}

impl ChainSet {
    /// No endpoints and no adapters: every request passes straight through.
    pub fn empty() -> ChainSet {
        ChainSet {
            endpoints: Vec::new(),
            adapters: BTreeMap::new(),
            max_buffer: DEFAULT_MAX_BUFFER,
            warnings: Vec::new(),
        }
    }

    /// Parses and validates the text of an `adapters.yml` file.
    pub fn from_yaml(src: &str) -> Result<ChainSet, ConfigError> {
        Self::from_yaml_tree(src).map(|(_, set)| set)
    }

    /// [`ChainSet::from_yaml`], also returning the parsed document.
    pub(crate) fn from_yaml_tree(src: &str) -> Result<(serde_yaml::Value, ChainSet), ConfigError> {
        yaml::parse(src).map_err(|problems| ConfigError::Invalid {
            path: None,
            problems,
        })
    }

    /// [`ChainSet::from_yaml`] for a document with no text of its own (such as a merge).
    pub(crate) fn from_tree(root: &serde_yaml::Value) -> Result<ChainSet, ConfigError> {
        yaml::check(root, "").map_err(|problems| ConfigError::Invalid {
            path: None,
            problems,
        })
    }

    /// Reads a file, then [`ChainSet::from_yaml`]. Errors name the file. This blocks; from
    /// async code call it in `spawn_blocking`, or read the file yourself and use `from_yaml`.
    pub fn load(path: impl AsRef<Path>) -> Result<ChainSet, ConfigError> {
        let path = path.as_ref();
        Self::from_yaml(&Self::read(path)?).map_err(|e| e.in_file(path))
    }

    /// A config file's text, with the errors [`ChainSet::load`] gives.
    pub fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ConfigError::NotFound {
                path: path.to_path_buf(),
            },
            _ => ConfigError::Read {
                path: path.to_path_buf(),
                source,
            },
        })
    }

    /// All endpoints, in file order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoint with exactly this key.
    pub fn endpoint(&self, key: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.key == key)
    }

    /// All adapters by name, including unused ones.
    pub fn adapters(&self) -> &BTreeMap<String, Arc<Adapter>> {
        &self.adapters
    }

    pub fn adapter(&self, name: &str) -> Option<&Arc<Adapter>> {
        self.adapters.get(name)
    }

    /// What loaded but is probably a mistake, sorted by line: endpoint keys that can never
    /// match a request (their hooks never run), or that read differently than they look
    /// (see [`matcher::KeyPattern::warnings`]). The agent logs them when it loads the
    /// chains and `busbarctl chain validate` prints them.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// The largest Docker response body (bytes) buffered to run post-hooks on.
    pub fn max_buffer(&self) -> u64 {
        self.max_buffer
    }
}

impl Default for ChainSet {
    fn default() -> Self {
        ChainSet::empty()
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
