//! Test helpers: answers and node snapshots as the gateway would hand them over.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::model::{CallError, Health, NodeAnswer, NodeSnapshot};

pub fn ok(node: &str, body: Value) -> NodeAnswer<Value> {
    NodeAnswer {
        node: node.to_owned(),
        result: Ok(body),
    }
}

pub fn err(node: &str, error: &str) -> NodeAnswer<Value> {
    NodeAnswer {
        node: node.to_owned(),
        result: Err(CallError::Bad(error.to_owned())),
    }
}

/// A healthy node at `addr`, refreshed at 2024-03-01T12:00:00Z, with agent labels `labels`.
pub fn node(name: &str, addr: &str, labels: &[(&str, &str)]) -> NodeSnapshot {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut node = NodeSnapshot::new(name, addr, labels);
    node.health = Health::Healthy;
    node.last_error = None;
    node.updated_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_294_400));
    node
}
