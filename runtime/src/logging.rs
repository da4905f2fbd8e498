//! Log setup shared by busbar's binaries: `tracing` to stderr, filtered by the
//! `--log-level-file` when one is given, else by `RUST_LOG` when set, else by the `--log-level`
//! flag; as text (colours only on a terminal, never with `NO_COLOR`) or as one JSON object per
//! line (`--log-format json`, for journald and log shippers).
//!
//! The filter sits behind `tracing_subscriber`'s reload layer: [`reload`] (on SIGHUP) reads the
//! level file again and swaps the filter in, as dockerd and Nomad re-read their log level from
//! their config file on SIGHUP. A level from a flag or the environment cannot change without a
//! restart (a process cannot read its own environment again).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload as filter_reload, EnvFilter, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-12-07T14:00:00Z  INFO req{...}: target: message key=value`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields
    /// (`message` among them) and the request's span fields under `span`.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: text or json")),
        }
    }
}

/// Whether text logs get colours: only on a terminal, and never when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn colours(no_color: Option<std::ffi::OsString>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Why a log filter was refused: a level file that cannot be read, holds nothing, or holds
/// something that is not a filter.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    #[error("cannot read the log level file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the log level file {} holds no filter (write a level such as `debug`)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
}

/// Checks a filter as an operator writes it: `warn`, `debug`, `info,busbar::access=debug`. A
/// bare word that is not a level is refused: `tracing` would read `debg` as a target and
/// silence every other line.
pub fn parse_filter(text: &str) -> Result<EnvFilter, String> {
    for directive in text.split(',').map(str::trim) {
        if directive.is_empty() || directive.contains(['=', '[']) {
            continue;
        }
        if directive
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_err()
        {
            return Err(format!(
                "unknown log level {directive:?}: error, warn, info, debug, trace, off, or TARGET=LEVEL"
            ));
        }
    }
    EnvFilter::builder()
        .parse(text)
        .map_err(|e| format!("invalid log filter {text:?}: {e}"))
}

/// The filter a level file holds: its lines without `#` comments and blank lines, joined with
/// `,` (so `debug` alone, or one directive per line).
pub fn read_level_file(path: &Path) -> Result<String, LevelError> {
    let text = std::fs::read_to_string(path).map_err(|source| LevelError::Read {
        path: path.to_owned(),
        source,
    })?;
    let filter = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    if filter.is_empty() {
        return Err(LevelError::Empty {
            path: path.to_owned(),
        });
    }
    parse_filter(&filter).map_err(|why| LevelError::Invalid {
        path: path.to_owned(),
        why,
    })?;
    Ok(filter)
}

/// The filter in use and where it came from, kept for [`reload`].
struct Level {
    handle: filter_reload::Handle<EnvFilter, Registry>,
    /// The `--log-level-file`, if one was given.
    file: Option<PathBuf>,
    /// Where the filter in use came from (`RUST_LOG`, `--log-level`, the file).
    source: String,
    current: Mutex<String>,
}

static LEVEL: OnceLock<Level> = OnceLock::new();

/// Starts logging, filtered by `RUST_LOG` when set and valid, else by `level` (`info` if that
/// is not a filter).
pub fn init(level: &str, format: LogFormat) {
    init_reloadable(level, None, format).expect("without a level file nothing is read");
}

/// Starts logging. The filter is the content of `level_file` when given (an error here is the
/// caller's to report: the process has no log yet), else as [`init`]'s. [`reload`] reads the
/// file again.
pub fn init_reloadable(
    level: &str,
    level_file: Option<&Path>,
    format: LogFormat,
) -> Result<(), LevelError> {
    // Said once logging runs: a filter given that could not be used.
    let mut unusable = None;
    let (text, source) = match level_file {
        Some(path) => (read_level_file(path)?, path.display().to_string()),
        // RUST_LOG as `tracing` reads it (a bare word is a target there): developers' syntax.
        None => match std::env::var("RUST_LOG") {
            Ok(env) if EnvFilter::builder().parse(&env).is_ok() => (env, "RUST_LOG".to_owned()),
            env => {
                if let Ok(env) = env {
                    unusable = EnvFilter::builder()
                        .parse(&env)
                        .err()
                        .map(|e| ("RUST_LOG", e.to_string()));
                }
                match parse_filter(level) {
                    Ok(_) => (level.to_owned(), "--log-level".to_owned()),
                    Err(e) => {
                        unusable = unusable.or(Some(("--log-level", e)));
                        ("info".to_owned(), "the default".to_owned())
                    }
                }
            }
        },
    };
    let filter = EnvFilter::builder()
        .parse(&text)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = filter_reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_ansi(colours(
                std::env::var_os("NO_COLOR"),
                std::io::stderr().is_terminal(),
            )))
            .init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false)
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .init(),
    }
    if let Some((what, why)) = unusable {
        warn!(filter = %text, "{what} ignored: {why}");
    }
    let _ = LEVEL.set(Level {
        handle,
        file: level_file.map(Path::to_owned),
        source,
        current: Mutex::new(text),
    });
    Ok(())
}

/// What [`reload`] did with the log level.
#[derive(Debug)]
pub enum LevelReload {
    /// Logging was not started with [`init`].
    NotStarted,
    /// No `--log-level-file`: the filter came from `source` and stays.
    Fixed {
        source: String,
        filter: String,
    },
    Unchanged(String),
    Changed {
        from: String,
        to: String,
    },
    /// The file could not be used; `kept` stays in use.
    Refused {
        error: LevelError,
        kept: String,
    },
}

/// Reads the `--log-level-file` again and uses its filter from now on (SIGHUP). Logs what it
/// did: a change is logged before it applies, so a line announcing a quieter level is not
/// itself filtered out.
pub fn reload() -> LevelReload {
    let Some(level) = LEVEL.get() else {
        return LevelReload::NotStarted;
    };
    let mut current = level.current.lock().unwrap_or_else(|e| e.into_inner());
    let Some(file) = &level.file else {
        info!(source = %level.source, filter = %*current, "SIGHUP: log level unchanged: it is read from a file only with --log-level-file");
        return LevelReload::Fixed {
            source: level.source.clone(),
            filter: current.clone(),
        };
    };
    let read = read_level_file(file).and_then(|text| {
        let filter = parse_filter(&text).map_err(|why| LevelError::Invalid {
            path: file.clone(),
            why,
        })?;
        Ok((text, filter))
    });
    let (text, filter) = match read {
        Ok(read) => read,
        Err(error) => {
            warn!(error = %error, filter = %*current, "SIGHUP: log level refused; keeping the one in use");
            return LevelReload::Refused {
                error,
                kept: current.clone(),
            };
        }
    };
    if text == *current {
        info!(file = %file.display(), filter = %text, "SIGHUP: log level unchanged");
        return LevelReload::Unchanged(text);
    }
    info!(file = %file.display(), from = %*current, to = %text, "SIGHUP: log level changed");
    if let Err(e) = level.handle.reload(filter) {
        warn!(error = %e, "SIGHUP: the log level could not be swapped in");
        return LevelReload::Unchanged(current.clone());
    }
    let from = std::mem::replace(&mut *current, text.clone());
    LevelReload::Changed { from, to: text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(None, true));
        assert!(colours(Some("".into()), true));
        assert!(!colours(Some("1".into()), true));
        assert!(!colours(None, false));
    }

    #[test]
    fn a_level_file_holds_a_filter_and_a_typo_is_refused() {
        let dir = std::env::temp_dir().join(format!("busbar-level-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("level");
        std::fs::write(
            &file,
            "# busbar's log level\ndebug\n\nbusbar::access=warn # quiet\n",
        )
        .unwrap();
        assert_eq!(read_level_file(&file).unwrap(), "debug,busbar::access=warn");
        std::fs::write(&file, "debg\n").unwrap();
        let e = read_level_file(&file).unwrap_err().to_string();
        assert!(e.contains("unknown log level \"debg\""), "{e}");
        std::fs::write(&file, "# nothing\n\n").unwrap();
        assert!(matches!(
            read_level_file(&file),
            Err(LevelError::Empty { .. })
        ));
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            read_level_file(&file),
            Err(LevelError::Read { .. })
        ));
        assert!(parse_filter("info,hyper=warn").is_ok());
        assert!(parse_filter("INFO").is_ok());
        assert!(parse_filter("verbose").is_err());
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
