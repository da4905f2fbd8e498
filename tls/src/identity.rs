//! Who a certificate says its holder is: a name (the subject CN) and a [`Role`] (the subject OU).
//!
//! # Where the role lives, and why there
//! The role is the subject's **OrganizationalUnit**, `busbar-agent`, `busbar-gateway` or
//! `busbar-client`, exactly as SwarmKit puts `swarm-manager`/`swarm-worker` in the OU. That is the
//! one canonical place: nothing else in the certificate (CN, SANs, file names) is ever read to
//! decide a role, so a node called `gateway` is still an agent, and no name can be chosen that
//! grants a role. It is also where an operator looks first: `openssl x509 -noout -subject` shows it.
//!
//! Parsing is strict because only our own CA signs the certificates we accept, and it only ever
//! writes exactly one CN and exactly one OU: anything else (two OUs, an OU we do not know, a CN
//! that is not UTF-8) did not come from `busbarctl`, so it is refused rather than guessed at.
//!
//! x509-parser reads the subject because rustls and webpki deliberately expose nothing of a
//! certificate beyond what path validation needs. It is the parser rcgen itself uses to load the
//! CA back (one copy in the build), and it is a pure-Rust DER parser with no C code.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What a certificate's holder may do in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A node's agent: a TLS server toward the gateway, and a client when it renews.
    Agent,
    /// The gateway: calls agents.
    Gateway,
    /// An operator tool (busbarctl and the like): calls, never serves.
    Client,
    /// An adapter: a Docker client of the gateway that may also call any node's engine
    /// directly, without running the chains (the gateway's `/_busbar/v1/nodes/...` routes).
    Adapter,
}

impl Role {
    /// Every role, for help texts and exhaustive tests.
    pub const ALL: [Role; 4] = [Role::Agent, Role::Gateway, Role::Client, Role::Adapter];

    /// The short name used on command lines and in messages: `agent`, `gateway`, `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Gateway => "gateway",
            Role::Client => "client",
            Role::Adapter => "adapter",
        }
    }

    /// The subject OrganizationalUnit that carries this role in a certificate.
    pub fn organizational_unit(self) -> &'static str {
        match self {
            Role::Agent => "busbar-agent",
            Role::Gateway => "busbar-gateway",
            Role::Client => "busbar-client",
            Role::Adapter => "busbar-adapter",
        }
    }

    fn from_organizational_unit(ou: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.organizational_unit() == ou)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `--role` value was not one of the roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected agent, gateway, client or adapter")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A peer as its (already verified) certificate names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject CN: the node name for agents, a free-form name for gateways and clients.
    pub name: String,
    /// The subject OU, decoded.
    pub role: Role,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CN={} ({})", self.name, self.role)
    }
}

/// A certificate that does not carry a busbar identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a DER X.509 certificate: {0}")]
    NotX509(String),
    #[error("the subject has no CN (common name), so the certificate names no one")]
    NoCommonName,
    #[error("the subject has {0} CNs; a busbar certificate has exactly one")]
    ManyCommonNames(usize),
    #[error("the subject CN is not a UTF-8 string")]
    CommonNameNotText,
    #[error(
        "certificate CN={name} has no role: its subject has no OU (busbar-agent, busbar-gateway or busbar-client)"
    )]
    NoRole { name: String },
    #[error(
        "certificate CN={name} has {count} OUs; a busbar certificate has exactly one, its role"
    )]
    ManyRoles { name: String, count: usize },
    #[error("certificate CN={name} has OU {ou:?}, which is not a busbar role")]
    UnknownRole { name: String, ou: String },
}

/// Reads the [`Identity`] out of an end-entity certificate.
///
/// This does **not** verify anything: call it on certificates rustls has already validated
/// against the cluster CA (for example `ServerConnection::peer_certificates()[0]`), which is
/// how the gRPC service learns who is calling.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<Identity, IdentityError> {
    let (_, x509) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| IdentityError::NotX509(e.to_string()))?;
    let subject = x509.subject();

    let mut cns = subject.iter_common_name();
    let name = match (cns.next(), cns.next()) {
        (None, _) => return Err(IdentityError::NoCommonName),
        (Some(cn), None) => cn
            .as_str()
            .map_err(|_| IdentityError::CommonNameNotText)?
            .to_owned(),
        (Some(_), Some(_)) => return Err(IdentityError::ManyCommonNames(2 + cns.count())),
    };

    let ous: Vec<_> = subject.iter_organizational_unit().collect();
    let ou = match ous.as_slice() {
        [] => return Err(IdentityError::NoRole { name }),
        [one] => one.as_str().map_err(|_| IdentityError::UnknownRole {
            name: name.clone(),
            ou: "<not a string>".to_owned(),
        })?,
        many => {
            return Err(IdentityError::ManyRoles {
                name,
                count: many.len(),
            })
        }
    };
    match Role::from_organizational_unit(ou) {
        Some(role) => Ok(Identity { name, role }),
        None => Err(IdentityError::UnknownRole {
            name,
            ou: ou.to_owned(),
        }),
    }
}
