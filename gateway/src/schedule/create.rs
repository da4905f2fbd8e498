//! The body of `POST /containers/create` as the gateway reads it: typed views of exactly the
//! fields the scheduler and the create call read or edit, every other field kept as sent.
//!
//! The body comes from a client and goes on to an engine. The gateway reads `Image`, `Env`,
//! `Labels`, `ExposedPorts`, `HostConfig.{NetworkMode, PortBindings, Memory, NanoCpus,
//! CpuShares, Links, VolumesFrom}` and `NetworkingConfig.EndpointsConfig`, and edits `Env`,
//! `Labels` (Swarm's expressions, see [`super::Placement::from_create`]), `HostConfig.NetworkMode`
//! and `NetworkingConfig.EndpointsConfig` (a `node/network` mode). Each of them is a typed
//! field here; everything else lands in a `rest` map (`#[serde(flatten)]`) and is written back
//! unchanged, so the engine receives for a valid body exactly what the client sent, apart from
//! the gateway's deliberate edits (key order aside, which JSON does not give a meaning).
//!
//! # Types, as the engine has them
//!
//! Each typed field has the Go type dockerd decodes it into: strings, `[]string`,
//! `map[string]string`, `int64`, objects. A value of another type is refused here with a 400,
//! `invalid create request: HostConfig.Memory: invalid type: string "1g", expected i64`, which
//! is what dockerd answers such a body too (a 400 naming the field); before, the gateway read
//! such fields leniently, or indexed into them as objects and panicked (`"NetworkingConfig": 5`).
//! `null` is accepted wherever the engine accepts it (a Go nil) and written back as `null`; a
//! field that was absent stays absent ([`Field`]).
//!
//! Not mirrored: Go matches keys case-insensitively (`"image"` sets `Image`); the gateway reads
//! the keys as Docker clients write them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A field as sent: absent, `null`, or a value of its type. Written back the same way.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T> Field<T> {
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Set(v) => Some(v),
            Field::Absent | Field::Null => None,
        }
    }

    pub fn get_mut(&mut self) -> Option<&mut T> {
        match self {
            Field::Set(v) => Some(v),
            Field::Absent | Field::Null => None,
        }
    }

    /// The value, set to `T::default()` first if the field was absent or `null`.
    pub fn get_or_default(&mut self) -> &mut T
    where
        T: Default,
    {
        if !matches!(self, Field::Set(_)) {
            *self = Field::Set(T::default());
        }
        match self {
            Field::Set(v) => v,
            Field::Absent | Field::Null => unreachable!("set just above"),
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Field::Null,
            Some(v) => Field::Set(v),
        })
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Set(v) => v.serialize(s),
            // `Absent` is skipped by every field that holds a `Field`.
            Field::Absent | Field::Null => s.serialize_none(),
        }
    }
}

/// The create body (Docker's `ContainerConfig` with `HostConfig` and `NetworkingConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a create body (a JSON object)")]
pub struct CreateBody {
    #[serde(rename = "Image", default, skip_serializing_if = "Field::is_absent")]
    pub image: Field<String>,
    #[serde(rename = "Env", default, skip_serializing_if = "Field::is_absent")]
    pub env: Field<Vec<String>>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Field::is_absent")]
    pub labels: Field<BTreeMap<String, String>>,
    /// `{"80/tcp": {}}`: only the keys are read.
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Field::is_absent"
    )]
    pub exposed_ports: Field<Map<String, Value>>,
    #[serde(
        rename = "HostConfig",
        default,
        skip_serializing_if = "Field::is_absent"
    )]
    pub host_config: Field<HostConfig>,
    #[serde(
        rename = "NetworkingConfig",
        default,
        skip_serializing_if = "Field::is_absent"
    )]
    pub networking_config: Field<NetworkingConfig>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The `HostConfig` fields the gateway reads or edits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a HostConfig object")]
pub struct HostConfig {
    #[serde(
        rename = "NetworkMode",
        default,
        skip_serializing_if = "Field::is_absent"
    )]
    pub network_mode: Field<String>,
    /// `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`.
    #[serde(
        rename = "PortBindings",
        default,
        skip_serializing_if = "Field::is_absent"
    )]
    pub port_bindings: Field<BTreeMap<String, Field<Vec<PortBinding>>>>,
    #[serde(rename = "Memory", default, skip_serializing_if = "Field::is_absent")]
    pub memory: Field<i64>,
    #[serde(rename = "NanoCpus", default, skip_serializing_if = "Field::is_absent")]
    pub nano_cpus: Field<i64>,
    #[serde(
        rename = "CpuShares",
        default,
        skip_serializing_if = "Field::is_absent"
    )]
    pub cpu_shares: Field<i64>,
    #[serde(rename = "Links", default, skip_serializing_if = "Field::is_absent")]
    pub links: Field<Vec<String>>,
    #[serde(
        rename = "VolumesFrom",
        default,
        skip_serializing_if = "Field::is_absent"
    )]
    pub volumes_from: Field<Vec<String>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One entry of a `PortBindings` list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a port binding object")]
pub struct PortBinding {
    #[serde(rename = "HostIp", default, skip_serializing_if = "Field::is_absent")]
    pub host_ip: Field<String>,
    #[serde(rename = "HostPort", default, skip_serializing_if = "Field::is_absent")]
    pub host_port: Field<String>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The `NetworkingConfig` fields the gateway reads or edits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a NetworkingConfig object")]
pub struct NetworkingConfig {
    /// Network name -> endpoint settings; a `node/network` key is renamed with the mode.
    #[serde(
        rename = "EndpointsConfig",
        default,
        skip_serializing_if = "Field::is_absent"
    )]
    pub endpoints_config: Field<Map<String, Value>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// Why a create body cannot be read: the field and serde's reason (a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateError {
    /// Where: `HostConfig.PortBindings.80/tcp[0].HostPort`; empty for the body itself.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid create request: {}", self.reason)
        } else {
            write!(f, "invalid create request: {}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for CreateError {}

impl CreateError {
    fn of(e: serde_path_to_error::Error<serde_json::Error>) -> CreateError {
        // A syntax error is the body's, wherever the parser was (its position says where).
        let syntax = e.inner().is_syntax() || e.inner().is_eof();
        let field = match e.path().iter().next() {
            Some(_) if !syntax => e.path().to_string(),
            _ => String::new(),
        };
        CreateError {
            field,
            reason: e.into_inner().to_string(),
        }
    }
}

impl CreateBody {
    /// Reads a create body as sent.
    pub fn from_slice(bytes: &[u8]) -> Result<CreateBody, CreateError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let body = serde_path_to_error::deserialize(&mut de).map_err(CreateError::of)?;
        de.end().map_err(|e| CreateError {
            field: String::new(),
            reason: e.to_string(),
        })?;
        Ok(body)
    }

    /// Reads a create body already parsed.
    pub fn from_value(value: Value) -> Result<CreateBody, CreateError> {
        serde_path_to_error::deserialize(value).map_err(CreateError::of)
    }

    /// The body as the engine gets it.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings, integers, maps and JSON values serialize")
    }

    /// The body as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("strings, integers, maps and JSON values serialize")
    }

    /// `HostConfig`, when the body has one.
    pub fn host_config(&self) -> Option<&HostConfig> {
        self.host_config.get()
    }

    /// Swarm's `node/network` mode, once the node is chosen: `HostConfig.NetworkMode` becomes
    /// `network`, and the endpoint settings the client gave under `mode` move to `network`.
    pub fn strip_network_node(&mut self, mode: &str, network: &str) {
        if let Some(host_config) = self.host_config.get_mut() {
            host_config.network_mode = Field::Set(network.to_owned());
        }
        if let Some(endpoints) = self
            .networking_config
            .get_mut()
            .and_then(|n| n.endpoints_config.get_mut())
        {
            if let Some(e) = endpoints.remove(mode) {
                endpoints.insert(network.to_owned(), e);
            }
        }
    }
}

#[cfg(test)]
mod tests;
