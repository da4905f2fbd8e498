//! Who the client is, and the headers that say it.
//!
//! A TLS listener with `--tlsverify` knows its client by the certificate it verified: the
//! subject CN, as Docker's authorization plugins receive it (`User`, with
//! `UserAuthNMethod: "TLS"`). That identity rides on the request's
//! [`RequestCtx`](crate::RequestCtx) and is given to adapters as HTTP headers on every hook
//! call, never inside the Powerstrip JSON (a v1 adapter sees exactly the v1 messages):
//!
//! ```text
//! X-Busbar-User: alice            the certificate's subject CN ("" when it has none)
//! X-Busbar-Auth-Method: TLS       how it was established
//! X-Busbar-Role: adapter          the busbar role its certificate carries, if it carries one
//! ```
//!
//! The user is written percent-encoded, as in a URL ([`busbar_protocol::headers::encode`]),
//! so `alice` arrives as is and `Zoë Doe` as `Zo%C3%AB%20Doe` (`urllib.parse.unquote` in
//! Python). A client with no verified
//! certificate (a unix socket, plain TCP, TLS without `--tlsverify`) has no identity, and the
//! hook call carries neither header.
//!
//! **`X-Busbar-*` request headers are busbar's.** Every listener removes them from what a
//! client sends ([`strip_reserved`]) before anything reads the request, so no client can name
//! itself. The one place they are read from a request ([`ClientIdentity::from_headers`]) is
//! the agent's gRPC service, whose every peer passed the mutual TLS handshake as a gateway:
//! the gateway writes them into the exchange head from its own client's certificate, and the
//! agent takes them out again before the engine sees the request.

use busbar_protocol::headers::{self, decode, encode};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The client's name (the certificate's subject CN), percent-encoded.
pub static USER: HeaderName = HeaderName::from_static(headers::USER);
/// How the client was authenticated: `TLS`.
pub static AUTH_METHOD: HeaderName = HeaderName::from_static(headers::AUTH_METHOD);
/// The busbar role of the client's certificate (`client`, `adapter`), when it has one.
pub static ROLE: HeaderName = HeaderName::from_static(headers::ROLE);
/// `off` on a call a gateway forwards for an adapter (its `/_busbar/v1/nodes/...` routes): the
/// agent runs no chain on it, so an adapter calling an engine never re-enters the chains.
pub static HOOKS: HeaderName = HeaderName::from_static("x-busbar-hooks");
/// Request headers with this prefix are busbar's: clients' copies are removed.
pub const RESERVED_PREFIX: &str = "x-busbar-";

/// A client that proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The verified certificate's subject CN (`""` when it has none), Docker's `User`.
    pub user: String,
    /// How: `TLS` (Docker's `UserAuthNMethod`).
    pub auth_method: String,
    /// The busbar role its certificate carries (`client`, `adapter`; a certificate from a CA
    /// that is not busbar's has none). Only `adapter` may call engines without the chains.
    pub role: Option<String>,
}

impl ClientIdentity {
    /// A client known by the certificate a TLS handshake verified, whose CN is `user`.
    pub fn tls(user: String) -> Self {
        ClientIdentity {
            user,
            auth_method: "TLS".to_owned(),
            role: None,
        }
    }

    /// The same, with the busbar `role` its certificate carries.
    pub fn with_role(mut self, role: Option<String>) -> Self {
        self.role = role;
        self
    }

    /// Whether the certificate carries busbar's adapter role.
    pub fn is_adapter(&self) -> bool {
        self.role.as_deref() == Some("adapter")
    }

    /// Writes the identity headers (replacing any).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let user = HeaderValue::from_str(&encode(&self.user))
            .expect("percent-encoding leaves visible ASCII only");
        headers.insert(USER.clone(), user);
        let method = HeaderValue::from_str(&encode(&self.auth_method))
            .expect("percent-encoding leaves visible ASCII only");
        headers.insert(AUTH_METHOD.clone(), method);
        match &self.role {
            Some(role) => {
                let role = HeaderValue::from_str(&encode(role))
                    .expect("percent-encoding leaves visible ASCII only");
                headers.insert(ROLE.clone(), role);
            }
            None => {
                headers.remove(&ROLE);
            }
        }
    }

    /// The identity the headers carry, if they carry one. Only for requests from a sender
    /// that is trusted to set them (a gateway, over the authenticated hop): anywhere else they
    /// were stripped on the way in.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(decode);
        Some(ClientIdentity {
            auth_method: text(&AUTH_METHOD)?,
            user: text(&USER).unwrap_or_default(),
            role: text(&ROLE),
        })
    }
}

/// Removes every `X-Busbar-*` header (a client's attempt to name itself, or leftovers); says
/// how many there were.
pub fn strip_reserved(headers: &mut HeaderMap) -> usize {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(RESERVED_PREFIX))
        .cloned()
        .collect();
    for name in &names {
        headers.remove(name);
    }
    names.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_headers_readable_as_urls() {
        for (user, wire) in [
            ("alice", "alice"),
            ("Zoë Doe", "Zo%C3%AB%20Doe"),
            ("100%", "100%25"),
            ("", ""),
            ("a\r\nX-Evil: 1", "a%0D%0AX-Evil:%201"),
        ] {
            let mut h = HeaderMap::new();
            ClientIdentity::tls(user.to_owned()).write_headers(&mut h);
            assert_eq!(h["x-busbar-user"], wire);
            assert_eq!(h["x-busbar-auth-method"], "TLS");
            assert_eq!(
                ClientIdentity::from_headers(&h),
                Some(ClientIdentity::tls(user.to_owned()))
            );
        }
        assert_eq!(ClientIdentity::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn every_reserved_header_is_stripped_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert("X-Busbar-User", HeaderValue::from_static("root"));
        h.append("x-busbar-user", HeaderValue::from_static("admin"));
        h.insert("X-Busbar-Auth-Method", HeaderValue::from_static("TLS"));
        h.insert("X-Busbar-Whatever", HeaderValue::from_static("x"));
        h.insert("X-Registry-Auth", HeaderValue::from_static("e30="));
        assert_eq!(strip_reserved(&mut h), 3);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-registry-auth"));
    }
}
