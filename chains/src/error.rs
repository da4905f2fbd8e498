//! Why a chain file was not accepted.
//!
//! Callers branch on the variant: a missing file can mean "no chains" (start with
//! [`ChainSet::empty`](super::ChainSet::empty)), while an invalid file at reload time means
//! "keep the last good set and tell the operator". An invalid file carries every
//! [`Problem`] found, so one edit can fix them all.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("chain file {} not found", .path.display())]
    NotFound { path: PathBuf },
    #[error("cannot read chain file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One line per problem: `[<path>: ]line <n>: <message>`.
    #[error("{}", render(.path.as_deref(), .problems))]
    Invalid {
        path: Option<PathBuf>,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems of an invalid file (empty for the other variants).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }

    /// Records which file an invalid text came from.
    pub fn in_file(self, file: &Path) -> ConfigError {
        match self {
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: Some(file.to_path_buf()),
                problems,
            },
            other => other,
        }
    }
}

/// One thing wrong with a chain file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when it could be found.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn render(path: Option<&Path>, problems: &[Problem]) -> String {
    let prefix = path
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default();
    problems
        .iter()
        .map(|p| format!("{prefix}{p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
