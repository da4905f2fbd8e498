//! busbar protocol version 2: Powerstrip's v1 documents plus what adapter authors asked
//! Powerstrip for. Spoken only to an adapter whose chain entry says `protocol: 2`; every
//! other adapter gets exactly [`crate::v1`].
//!
//! What v2 adds (the exact JSON is in `docs/protocol.md`):
//!
//! - `PowerstripProtocolVersion: 2` on every call;
//! - the request's headers (`ClientRequest.Headers`) and, for post-hooks, the engine's
//!   response headers (`ServerResponse.Headers`), as `{"lower-case-name": ["value", ...]}`,
//!   with the credentials of [`crate::redact`] replaced by [`crate::redact::REDACTED`] unless
//!   the chain entry reveals them (`reveal_headers`);
//! - who is calling, `Caller`: the request id, the node, the client's verified identity;
//! - a pre-hook may end the chain with a response of its own (`Response` instead of
//!   `ModifiedClientRequest`): the client gets it, the engine is never called (Powerstrip's
//!   "Continue" wish);
//! - `unwind`: when a later pre-hook or the engine fails, every v2 pre-hook that already ran
//!   gets a call of `Type: "unwind"`, in reverse order, carrying the failure, so it can undo
//!   what it did.
//!
//! Replies are read as tolerantly as v1's: extra keys are ignored, a member of the wrong type
//! is a [`ReplyError`] naming it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::v1::{describe, member, object, string, STRING_BODY_HINT};
pub use crate::v1::{ModifiedClientRequest, ModifiedServerResponse, PostHookReply, ReplyError};

/// This protocol's version, as `PowerstripProtocolVersion` says it.
pub const PROTOCOL_VERSION: u32 = 2;

fn protocol_version() -> u32 {
    PROTOCOL_VERSION
}

/// HTTP headers: lower-case names, each with its values in order.
pub type Headers = BTreeMap<String, Vec<String>>;

/// The `Type` of a v2 call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookType {
    #[serde(rename = "pre-hook")]
    Pre,
    #[serde(rename = "post-hook")]
    Post,
    #[serde(rename = "unwind")]
    Unwind,
}

/// The client's request: v1's, with its headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    #[serde(rename = "Method")]
    pub method: String,
    #[serde(rename = "Request")]
    pub request: String,
    #[serde(rename = "Body")]
    pub body: Option<String>,
    #[serde(rename = "Headers", default)]
    pub headers: Headers,
}

/// The engine's response: v1's, with its headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerResponse {
    #[serde(rename = "ContentType")]
    pub content_type: Option<String>,
    #[serde(rename = "Body")]
    pub body: String,
    #[serde(rename = "Code")]
    pub code: u16,
    #[serde(rename = "Headers", default)]
    pub headers: Headers,
}

/// Who a call is made for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The request's id, as in busbar's logs (and `X-Request-Id`).
    #[serde(rename = "RequestId")]
    pub request_id: String,
    /// The node whose agent runs the hook; `null` on a standalone agent.
    #[serde(rename = "Node")]
    pub node: Option<Node>,
    /// The client, when it proved who it is with a verified certificate; else `null`.
    #[serde(rename = "Client")]
    pub client: Option<Client>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The certificate's subject CN (Docker's `User`), not percent-encoded here.
    #[serde(rename = "User")]
    pub user: String,
    /// `TLS` (Docker's `UserAuthNMethod`).
    #[serde(rename = "AuthMethod")]
    pub auth_method: String,
    /// The busbar role of the certificate (`client`, `adapter`), if it carries one.
    #[serde(rename = "Role")]
    pub role: Option<String>,
}

/// A v2 pre-hook call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreHookRequest {
    #[serde(rename = "PowerstripProtocolVersion", default = "protocol_version")]
    pub protocol_version: u32,
    #[serde(rename = "Type")]
    pub hook_type: HookType,
    #[serde(rename = "ClientRequest")]
    pub client_request: ClientRequest,
    #[serde(rename = "Caller", default)]
    pub caller: Caller,
}

/// A v2 post-hook call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostHookRequest {
    #[serde(rename = "PowerstripProtocolVersion", default = "protocol_version")]
    pub protocol_version: u32,
    #[serde(rename = "Type")]
    pub hook_type: HookType,
    #[serde(rename = "ClientRequest")]
    pub client_request: ClientRequest,
    #[serde(rename = "ServerResponse")]
    pub server_response: ServerResponse,
    #[serde(rename = "Caller", default)]
    pub caller: Caller,
}

/// Where a request failed after a pre-hook ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// A later pre-hook refused, or could not be called.
    #[serde(rename = "pre-hook")]
    PreHook,
    /// The engine answered an error (a status of 400 or more), or could not be reached.
    #[serde(rename = "engine")]
    Engine,
}

/// The failure an unwind call carries: what the client is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(rename = "Stage")]
    pub stage: Stage,
    /// The adapter that failed (its chain name), when the stage is `pre-hook`.
    #[serde(rename = "Adapter")]
    pub adapter: Option<String>,
    /// The status the client gets.
    #[serde(rename = "Code")]
    pub code: u16,
    #[serde(rename = "ContentType")]
    pub content_type: Option<String>,
    /// The body the client gets (Docker's `{"message": ...}` as text), `null` when it is not
    /// text.
    #[serde(rename = "Body")]
    pub body: Option<String>,
}

/// `Type: "unwind"`: a pre-hook that ran is told that the request failed after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwindRequest {
    #[serde(rename = "PowerstripProtocolVersion", default = "protocol_version")]
    pub protocol_version: u32,
    #[serde(rename = "Type")]
    pub hook_type: HookType,
    /// The request as this pre-hook was given it.
    #[serde(rename = "ClientRequest")]
    pub client_request: ClientRequest,
    /// What this pre-hook answered.
    #[serde(rename = "ModifiedClientRequest")]
    pub modified_client_request: ModifiedClientRequest,
    #[serde(rename = "Failure")]
    pub failure: Failure,
    #[serde(rename = "Caller", default)]
    pub caller: Caller,
}

impl PreHookRequest {
    pub fn new(client_request: ClientRequest, caller: Caller) -> PreHookRequest {
        PreHookRequest {
            protocol_version: PROTOCOL_VERSION,
            hook_type: HookType::Pre,
            client_request,
            caller,
        }
    }
}

impl PostHookRequest {
    pub fn new(
        client_request: ClientRequest,
        server_response: ServerResponse,
        caller: Caller,
    ) -> PostHookRequest {
        PostHookRequest {
            protocol_version: PROTOCOL_VERSION,
            hook_type: HookType::Post,
            client_request,
            server_response,
            caller,
        }
    }
}

impl UnwindRequest {
    pub fn new(
        client_request: ClientRequest,
        modified_client_request: ModifiedClientRequest,
        failure: Failure,
        caller: Caller,
    ) -> UnwindRequest {
        UnwindRequest {
            protocol_version: PROTOCOL_VERSION,
            hook_type: HookType::Unwind,
            client_request,
            modified_client_request,
            failure,
            caller,
        }
    }
}

/// A response a pre-hook answers the client with, instead of calling the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The status; 200 when left out.
    #[serde(rename = "Code")]
    pub code: Option<u16>,
    #[serde(rename = "ContentType")]
    pub content_type: Option<String>,
    /// The body as text (`null`: none).
    #[serde(rename = "Body")]
    pub body: Option<String>,
    /// Extra response headers. Framing and connection headers (`Content-Length`,
    /// `Transfer-Encoding`, `Connection`, ...) are busbar's and ignored.
    #[serde(rename = "Headers", default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
}

/// A v2 pre-hook's answer: go on with this request, or answer the client and stop.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Value")]
pub enum PreHookReply {
    /// `{"ModifiedClientRequest": {...}}`, as in v1.
    Continue(ModifiedClientRequest),
    /// `{"Response": {...}}`: the chain ends here, the engine is never called.
    Respond(Response),
}

impl Serialize for PreHookReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("PowerstripProtocolVersion", &PROTOCOL_VERSION)?;
        match self {
            PreHookReply::Continue(m) => map.serialize_entry("ModifiedClientRequest", m)?,
            PreHookReply::Respond(r) => map.serialize_entry("Response", r)?,
        }
        map.end()
    }
}

impl PreHookReply {
    pub fn from_json(reply: &[u8]) -> Result<PreHookReply, ReplyError> {
        PreHookReply::try_from(serde_json::from_slice::<Value>(reply).map_err(ReplyError::NotJson)?)
    }
}

impl TryFrom<Value> for PreHookReply {
    type Error = ReplyError;

    fn try_from(reply: Value) -> Result<PreHookReply, ReplyError> {
        let doc = object(reply)?;
        let respond = !matches!(doc.get("Response"), None | Some(Value::Null));
        let go_on = !matches!(doc.get("ModifiedClientRequest"), None | Some(Value::Null));
        if respond && go_on {
            return Err(ReplyError::Ambiguous);
        }
        if !respond {
            let v1 = crate::v1::PreHookReply::try_from(Value::Object(doc))?;
            return Ok(PreHookReply::Continue(v1.modified_client_request));
        }
        let m = member(&doc, "Response")?;
        Ok(PreHookReply::Respond(Response {
            code: code(m)?,
            content_type: string(m, "ContentType", "Response.ContentType", "")?,
            body: string(m, "Body", "Response.Body", STRING_BODY_HINT)?,
            headers: headers(m)?,
        }))
    }
}

fn code(m: &Map<String, Value>) -> Result<Option<u16>, ReplyError> {
    match m.get("Code") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(code @ 100..=599) => Ok(Some(code as u16)),
            _ => Err(ReplyError::WrongType {
                field: "Response.Code",
                expected: "an HTTP status code (100-599) or null",
                found: describe(v),
                hint: "",
            }),
        },
    }
}

fn headers(m: &Map<String, Value>) -> Result<Headers, ReplyError> {
    let wrong = |found: &Value| ReplyError::WrongType {
        field: "Response.Headers",
        expected: "an object of header names to lists of strings",
        found: describe(found),
        hint: "",
    };
    match m.get("Headers") {
        None | Some(Value::Null) => Ok(Headers::new()),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(name, values)| {
                let values = match values {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| wrong(v)))
                        .collect::<Result<_, _>>()?,
                    other => return Err(wrong(other)),
                };
                Ok((name.to_ascii_lowercase(), values))
            })
            .collect(),
        Some(other) => Err(wrong(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller() -> Caller {
        Caller {
            request_id: "r1".into(),
            node: Some(Node {
                name: "node1".into(),
                labels: [("zone".to_owned(), "a".to_owned())].into(),
            }),
            client: Some(Client {
                user: "alice".into(),
                auth_method: "TLS".into(),
                role: Some("client".into()),
            }),
        }
    }

    fn create() -> ClientRequest {
        ClientRequest {
            method: "POST".into(),
            request: "/v1.41/containers/create".into(),
            body: Some("{}".into()),
            headers: [(
                "content-type".to_owned(),
                vec!["application/json".to_owned()],
            )]
            .into(),
        }
    }

    #[test]
    fn a_pre_hook_call_has_the_documented_shape() {
        let doc = serde_json::to_value(PreHookRequest::new(create(), caller())).unwrap();
        assert_eq!(
            doc,
            json!({
                "PowerstripProtocolVersion": 2,
                "Type": "pre-hook",
                "ClientRequest": {
                    "Method": "POST", "Request": "/v1.41/containers/create", "Body": "{}",
                    "Headers": {"content-type": ["application/json"]}
                },
                "Caller": {
                    "RequestId": "r1",
                    "Node": {"Name": "node1", "Labels": {"zone": "a"}},
                    "Client": {"User": "alice", "AuthMethod": "TLS", "Role": "client"}
                }
            })
        );
    }

    #[test]
    fn an_unwind_call_has_the_documented_shape() {
        let failure = Failure {
            stage: Stage::Engine,
            adapter: None,
            code: 409,
            content_type: Some("application/json".into()),
            body: Some(r#"{"message":"conflict"}"#.into()),
        };
        let call = UnwindRequest::new(
            create(),
            ModifiedClientRequest::default(),
            failure,
            Caller::default(),
        );
        let doc = serde_json::to_value(&call).unwrap();
        assert_eq!(doc["Type"], "unwind");
        assert_eq!(
            doc["Failure"],
            json!({"Stage": "engine", "Adapter": null, "Code": 409,
                   "ContentType": "application/json", "Body": "{\"message\":\"conflict\"}"})
        );
        assert_eq!(doc["ModifiedClientRequest"], json!({"Body": null}));
        let back: UnwindRequest = serde_json::from_value(doc).unwrap();
        assert_eq!(back, call);
    }

    #[test]
    fn replies_go_on_or_answer() {
        let go_on = PreHookReply::from_json(
            br#"{"PowerstripProtocolVersion": 2, "ModifiedClientRequest": {"Body": "{}"}}"#,
        )
        .unwrap();
        assert!(matches!(go_on, PreHookReply::Continue(ref m) if m.body.as_deref() == Some("{}")));
        let answer = PreHookReply::from_json(
            br#"{"Response": {"Code": 201, "ContentType": "application/json",
                "Body": "{\"Id\":\"x\"}", "Headers": {"X-Cached": "1"}}}"#,
        )
        .unwrap();
        let PreHookReply::Respond(r) = answer else {
            panic!("not a response")
        };
        assert_eq!(r.code, Some(201));
        assert_eq!(r.headers["x-cached"], vec!["1".to_owned()]);
        // Round trip through the serializer.
        let again = PreHookReply::Respond(r.clone());
        assert_eq!(
            PreHookReply::from_json(&serde_json::to_vec(&again).unwrap()).unwrap(),
            again
        );
    }

    #[test]
    fn bad_replies_say_what_is_wrong() {
        let err = |s: &str| {
            PreHookReply::from_json(s.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"ModifiedClientRequest": {}, "Response": {}}"#).contains("both"));
        assert_eq!(
            err(r#"{"Response": {"Code": "201"}}"#),
            r#"Response.Code must be an HTTP status code (100-599) or null, found the string "201""#
        );
        assert!(err(r#"{"Response": {"Body": {"Id": 1}}}"#).starts_with("Response.Body must be"));
        assert!(err(r#"{"Response": {"Headers": {"a": 1}}}"#).starts_with("Response.Headers"));
        assert_eq!(err("{}"), r#"reply has no "ModifiedClientRequest" object"#);
    }
}
