//! `busbarctl chain ...` and `busbarctl nodes`: the cluster's adapter chains in etcd.
//!
//! Documents live at `<prefix>/chains/<scope>` (see [`busbar_chains::scoped`] for the
//! scopes and the merge rule agents apply); agents report what they run at
//! `<prefix>/status/<node>`. Writes are compare-and-swap on the mod revision the command
//! based itself on (`--revision`, else the one it read), so two operators cannot silently
//! overwrite each other; `--force` skips the check. History walks the key's previous
//! versions through etcd's MVCC (`get` at `mod_revision - 1`), so it reaches back only to
//! the last compaction.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

use busbar_chains::scoped::{ChainStatus, Scope, ScopeError};
use busbar_chains::ChainSet;
use busbar_etcd::client::{Client, Compare, CompareOp, GetOptions, KeyValue, Txn, TxnOp};
use busbar_etcd::conn::{connect, EtcdConfigError, EtcdConnArgs};
use busbar_etcd::error::call;
use busbar_etcd::keys::{chain_key, chains_prefix, check_prefix, nodes_prefix, status_prefix};
use busbar_etcd::registry::NodeEntry;
use busbar_etcd::EtcdError;
use clap::{Args, Subcommand};
use serde_json::json;

/// Where the cluster's etcd is (global `busbarctl` flags).
#[derive(Debug, Args)]
pub struct EtcdArgs {
    // --etcd URLS, TLS and the user: the same flags as the agent's and the gateway's.
    #[command(flatten)]
    pub conn: EtcdConnArgs,
    /// The cluster's etcd key prefix.
    #[arg(
        long,
        env = "BUSBAR_ETCD_PREFIX",
        default_value = "/busbar",
        global = true
    )]
    pub etcd_prefix: String,
    /// Print JSON instead of text (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

/// `busbarctl chain ...`
#[derive(Debug, Subcommand)]
pub enum ChainCmd {
    /// Check an adapters.yml document (locally; etcd is not needed).
    Validate {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Validate a document and store it for a scope (compare-and-swap).
    Apply {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// global, node:NAME or label:KEY=VALUE.
        #[arg(long, default_value = "global")]
        scope: String,
        /// The revision your edit is based on (from `chain get`); refused if the scope changed
        /// since. Default: the revision read just before writing. 0: the scope must be empty.
        #[arg(long)]
        revision: Option<i64>,
        /// Write even if the scope changed in between.
        #[arg(long)]
        force: bool,
    },
    /// Print a scope's document (without --scope: every scope's).
    Get {
        #[arg(long)]
        scope: Option<String>,
    },
    /// The previous versions of a scope's document, newest first (back to etcd's last compaction).
    History {
        #[arg(long, default_value = "global")]
        scope: String,
        /// At most this many versions.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Store again the document a scope had at revision REV (compare-and-swap).
    Rollback {
        /// An etcd revision, from `chain history`.
        rev: i64,
        #[arg(long, default_value = "global")]
        scope: String,
        #[arg(long)]
        force: bool,
    },
    /// Which revision each node runs, and why it refused a newer one.
    Status,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("{0}")]
    Etcd(#[from] EtcdError),
    #[error("{0}")]
    EtcdConfig(#[from] EtcdConfigError),
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}\nnothing was written")]
    Invalid(String),
    #[error(
        "refused: scope {scope} is at revision {current}, not {expected} as this change assumed (someone changed it since); \
         look at `busbarctl chain get --scope {scope}` and apply again, or use --force"
    )]
    Stale {
        scope: String,
        expected: i64,
        current: i64,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("cannot write to standard output: {0}")]
    Output(#[from] io::Error),
}

impl CtlError {
    /// Exit 64 (EX_USAGE): the command line can never work as given.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CtlError::Usage(_) | CtlError::Scope(_) | CtlError::EtcdConfig(_)
        )
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn client(etcd: &EtcdArgs) -> Result<Client, CtlError> {
    let Some(config) = etcd.conn.clone().into_config()? else {
        return Err(CtlError::Usage(
            "this command needs --etcd URLS (or BUSBAR_ETCD)".into(),
        ));
    };
    check_prefix(&etcd.etcd_prefix)?;
    Ok(connect(&config.connection()?).await?)
}

fn read_doc(file: &PathBuf) -> Result<(String, ChainSet), CtlError> {
    let text = std::fs::read_to_string(file).map_err(|source| CtlError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let set = ChainSet::load(file).map_err(|e| CtlError::Invalid(e.to_string()))?;
    Ok((text, set))
}

async fn get_kv(c: &Client, key: &str, at: Option<i64>) -> Result<Option<KeyValue>, CtlError> {
    let opts = at.map(|r| GetOptions::new().with_revision(r));
    let mut rsp = call("get", key, c.clone().get(key, opts)).await?;
    Ok(rsp.take_kvs().into_iter().next())
}

/// Every key under `prefix`, with its value.
async fn get_prefix(c: &Client, prefix: &str) -> Result<Vec<KeyValue>, CtlError> {
    let opts = GetOptions::new().with_prefix();
    let mut rsp = call("get", prefix, c.clone().get(prefix, Some(opts))).await?;
    Ok(rsp.take_kvs())
}

/// Writes `text` at `key` if its mod revision is still `expected` (None: unconditionally).
async fn cas_put(
    c: &Client,
    scope: &Scope,
    key: &str,
    text: &str,
    expected: Option<i64>,
) -> Result<(i64, i64), CtlError> {
    let txn = match expected {
        Some(rev) => Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::put(key, text, None)])
            .or_else([TxnOp::get(key, None)]),
        None => Txn::new().and_then([TxnOp::put(key, text, None)]),
    };
    let rsp = call("txn put", key, c.clone().txn(txn)).await?;
    let rev = rsp.header().map_or(0, |h| h.revision());
    if !rsp.succeeded() {
        let current = get_kv(c, key, None)
            .await?
            .map_or(0, |kv| kv.mod_revision());
        return Err(CtlError::Stale {
            scope: scope.to_string(),
            expected: expected.unwrap_or(0),
            current,
        });
    }
    Ok((rev, expected.unwrap_or(0)))
}

fn print_json(out: &mut dyn Write, v: &serde_json::Value) -> Result<(), CtlError> {
    writeln!(out, "{}", serde_json::to_string_pretty(v).expect("json"))?;
    Ok(())
}

/// Runs one `chain` command.
pub fn run_chain(etcd: &EtcdArgs, cmd: &ChainCmd, out: &mut dyn Write) -> Result<(), CtlError> {
    if let ChainCmd::Validate { file } = cmd {
        let (_, set) = read_doc(file)?;
        let warnings: Vec<String> = set.warnings().iter().map(|w| w.to_string()).collect();
        return if etcd.json {
            print_json(
                out,
                &json!({"file": file, "valid": true, "endpoints": set.endpoints().len(), "adapters": set.adapters().len(), "warnings": warnings}),
            )
        } else {
            writeln!(
                out,
                "{}: valid ({} endpoints, {} adapters{})",
                file.display(),
                set.endpoints().len(),
                set.adapters().len(),
                match warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".to_owned(),
                    n => format!(", {n} warnings"),
                }
            )?;
            for w in &warnings {
                writeln!(out, "warning: {}: {w}", file.display())?;
            }
            Ok(())
        };
    }
    runtime().block_on(run_async(etcd, cmd, out))
}

async fn run_async(etcd: &EtcdArgs, cmd: &ChainCmd, out: &mut dyn Write) -> Result<(), CtlError> {
    let prefix = &etcd.etcd_prefix;
    match cmd {
        ChainCmd::Validate { .. } => unreachable!("handled without etcd"),
        ChainCmd::Apply {
            file,
            scope,
            revision,
            force,
        } => {
            let scope: Scope = scope.parse()?;
            let (text, set) = read_doc(file)?;
            for w in set.warnings() {
                eprintln!("warning: {}: {w}", file.display());
            }
            let c = client(etcd).await?;
            let key = chain_key(prefix, &scope);
            let current = get_kv(&c, &key, None)
                .await?
                .map_or(0, |kv| kv.mod_revision());
            let expected = match (force, revision) {
                (true, _) => None,
                (false, Some(r)) if *r != current => {
                    return Err(CtlError::Stale {
                        scope: scope.to_string(),
                        expected: *r,
                        current,
                    })
                }
                (false, _) => Some(current),
            };
            let (rev, _) = cas_put(&c, &scope, &key, &text, expected).await?;
            if etcd.json {
                print_json(
                    out,
                    &json!({"scope": scope.to_string(), "revision": rev, "previous_revision": current}),
                )
            } else {
                writeln!(
                    out,
                    "applied scope {scope} at revision {rev} (previous revision {current})"
                )?;
                Ok(())
            }
        }
        ChainCmd::Get { scope } => {
            let c = client(etcd).await?;
            let kvs: Vec<KeyValue> = match scope {
                Some(s) => {
                    let scope: Scope = s.parse()?;
                    let key = chain_key(prefix, &scope);
                    let kv = get_kv(&c, &key, None).await?;
                    vec![kv.ok_or_else(|| {
                        CtlError::NotFound(format!("scope {scope} has no chain document"))
                    })?]
                }
                None => get_prefix(&c, &chains_prefix(prefix)).await?,
            };
            let docs: Vec<(String, i64, String)> = kvs
                .iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(kv.key());
                    let scope = key
                        .strip_prefix(&chains_prefix(prefix))
                        .unwrap_or(&key)
                        .to_owned();
                    (
                        scope,
                        kv.mod_revision(),
                        String::from_utf8_lossy(kv.value()).into_owned(),
                    )
                })
                .collect();
            if etcd.json {
                let v: Vec<_> = docs
                    .iter()
                    .map(|(s, r, d)| json!({"scope": s, "revision": r, "document": d}))
                    .collect();
                return print_json(out, &serde_json::Value::Array(v));
            }
            if docs.is_empty() {
                writeln!(out, "# no chain documents under {}", chains_prefix(prefix))?;
            }
            for (s, r, d) in docs {
                writeln!(out, "# scope: {s}  revision: {r}")?;
                write!(out, "{d}")?;
                if !d.ends_with('\n') {
                    writeln!(out)?;
                }
            }
            Ok(())
        }
        ChainCmd::History { scope, limit } => {
            let scope: Scope = scope.parse()?;
            let c = client(etcd).await?;
            let key = chain_key(prefix, &scope);
            let mut versions = vec![];
            let mut note = None;
            let mut kv = get_kv(&c, &key, None).await?;
            while let Some(k) = kv.take() {
                let (rev, version) = (k.mod_revision(), k.version());
                versions.push((rev, String::from_utf8_lossy(k.value()).into_owned()));
                if version <= 1 || versions.len() >= *limit {
                    break;
                }
                match get_kv(&c, &key, Some(rev - 1)).await {
                    Ok(prev) => kv = prev,
                    Err(CtlError::Etcd(e)) if e.to_string().contains("compacted") => {
                        note = Some("older versions were compacted away by etcd".to_owned());
                    }
                    Err(e) => return Err(e),
                }
            }
            if etcd.json {
                let v: Vec<_> = versions
                    .iter()
                    .map(|(r, d)| json!({"revision": r, "document": d}))
                    .collect();
                return print_json(
                    out,
                    &json!({"scope": scope.to_string(), "versions": v, "note": note}),
                );
            }
            if versions.is_empty() {
                writeln!(out, "scope {scope} has no chain document")?;
            }
            for (i, (r, d)) in versions.iter().enumerate() {
                let first = d
                    .lines()
                    .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .unwrap_or("");
                let current = if i == 0 { "  (current)" } else { "" };
                writeln!(
                    out,
                    "revision {r}{current}: {} lines, {} bytes, starts {first:?}",
                    d.lines().count(),
                    d.len()
                )?;
            }
            if let Some(n) = note {
                writeln!(out, "({n})")?;
            }
            Ok(())
        }
        ChainCmd::Rollback { rev, scope, force } => {
            let scope: Scope = scope.parse()?;
            let c = client(etcd).await?;
            let key = chain_key(prefix, &scope);
            let old = match get_kv(&c, &key, Some(*rev)).await {
                Ok(Some(kv)) => kv,
                Ok(None) => {
                    return Err(CtlError::NotFound(format!(
                        "scope {scope} had no document at revision {rev}"
                    )))
                }
                Err(CtlError::Etcd(e)) if e.to_string().contains("compacted") => {
                    return Err(CtlError::NotFound(format!(
                        "revision {rev} was compacted away by etcd: {e}"
                    )))
                }
                Err(e) => return Err(e),
            };
            let text = String::from_utf8_lossy(old.value()).into_owned();
            ChainSet::from_yaml(&text).map_err(|e| {
                CtlError::Invalid(format!("the document of revision {rev} is not valid: {e}"))
            })?;
            let current = get_kv(&c, &key, None)
                .await?
                .map_or(0, |kv| kv.mod_revision());
            let (new_rev, _) =
                cas_put(&c, &scope, &key, &text, (!force).then_some(current)).await?;
            if etcd.json {
                print_json(
                    out,
                    &json!({"scope": scope.to_string(), "revision": new_rev, "restored": old.mod_revision()}),
                )
            } else {
                writeln!(
                    out,
                    "rolled back scope {scope} to its document of revision {}: now revision {new_rev}",
                    old.mod_revision()
                )?;
                Ok(())
            }
        }
        ChainCmd::Status => {
            let c = client(etcd).await?;
            let statuses = list_statuses(&c, prefix).await?;
            if etcd.json {
                return print_json(out, &serde_json::to_value(&statuses).expect("json"));
            }
            if statuses.is_empty() {
                writeln!(out, "no node has reported a chain status yet")?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<16} {:>9}  {:<6}  ERROR",
                "NODE", "REVISION", "SOURCE"
            )?;
            for s in statuses.values() {
                let error = match (&s.error, s.rejected_revision) {
                    (Some(e), Some(r)) => {
                        format!("refused revision {r}: {}", e.replace('\n', " | "))
                    }
                    (Some(e), None) => e.replace('\n', " | "),
                    _ => "-".into(),
                };
                writeln!(
                    out,
                    "{:<16} {:>9}  {:<6}  {error}",
                    s.node, s.revision, s.source
                )?;
            }
            Ok(())
        }
    }
}

async fn list_statuses(
    c: &Client,
    prefix: &str,
) -> Result<BTreeMap<String, ChainStatus>, CtlError> {
    Ok(get_prefix(c, &status_prefix(prefix))
        .await?
        .iter()
        .filter_map(|kv| serde_json::from_slice::<ChainStatus>(kv.value()).ok())
        .map(|s| (s.node.clone(), s))
        .collect())
}

/// `busbarctl nodes`: the registered nodes, with the chain revision each runs.
pub fn run_nodes(etcd: &EtcdArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    runtime().block_on(async {
        let c = client(etcd).await?;
        let nodes: Vec<NodeEntry> = get_prefix(&c, &nodes_prefix(&etcd.etcd_prefix))
            .await?
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        let statuses = list_statuses(&c, &etcd.etcd_prefix).await?;
        if etcd.json {
            let v: Vec<_> = nodes
                .iter()
                .map(|n| json!({"node": n, "chains": statuses.get(&n.name)}))
                .collect();
            return print_json(out, &serde_json::Value::Array(v));
        }
        writeln!(
            out,
            "{:<16} {:<22} {:<10} {:>9}  LABELS",
            "NODE", "ADDRESS", "VERSION", "CHAINS"
        )?;
        for n in &nodes {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let chains = match statuses.get(&n.name) {
                Some(s) if s.error.is_some() => format!("{}!", s.revision),
                Some(s) => s.revision.to_string(),
                None => "-".into(),
            };
            writeln!(
                out,
                "{:<16} {:<22} {:<10} {:>9}  {}",
                n.name,
                n.advertise,
                n.agent_version,
                chains,
                labels.join(",")
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    fn validate(text: &str, json: bool) -> Result<String, CtlError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("adapters.yml");
        std::fs::write(&file, text).expect("write the file");
        let mut argv = vec!["busbarctl"];
        if json {
            argv.push("--json");
        }
        let args = Args::try_parse_from(argv).expect("flags");
        let mut out = Vec::new();
        run_chain(
            &args.etcd,
            &ChainCmd::Validate { file: file.clone() },
            &mut out,
        )?;
        Ok(String::from_utf8(out)
            .expect("UTF-8")
            .replace(&file.display().to_string(), "FILE"))
    }

    /// Issue 18: every key Powerstrip accepted validates; one that can never match is a
    /// warning with its line, not an error.
    #[test]
    fn validate_accepts_every_fnmatch_key_and_warns_about_dead_ones() {
        let text = "version: 1\nendpoints:\n  \"POST */containers/create\":\n    pre: [a]\n  \
                    \"* */containers/create\":\n    pre: [a]\n  /containers/create:\n    pre: [a]\n\
                    adapters:\n  a: http://a/hook\n";
        let out = validate(text, false).expect("valid");
        let mut lines = out.lines();
        assert_eq!(
            lines.next(),
            Some("FILE: valid (3 endpoints, 1 adapters, 1 warning)")
        );
        let warning = lines.next().expect("a warning");
        assert!(
            warning.starts_with("warning: FILE: line 7: endpoint \"/containers/create\": it can never match a request"),
            "{warning}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&validate(text, true).expect("valid")).expect("JSON");
        assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1));
        let clean = validate(
            "endpoints: {\"* *\": {pre: [a]}}\nadapters: {a: http://a/}\n",
            false,
        )
        .expect("valid");
        assert_eq!(clean, "FILE: valid (1 endpoints, 1 adapters)\n");
        let err = validate("endpoints: {\"* *\": {pre: [b]}}\nadapters: {}\n", false)
            .expect_err("b is not defined");
        assert!(
            err.to_string()
                .contains("adapter \"b\" is referenced but not defined"),
            "{err}"
        );
    }
}
