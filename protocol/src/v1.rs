//! Powerstrip protocol version 1: the JSON documents POSTed to adapters and the replies read
//! back.
//!
//! Existing adapters (Flocker, Weave, SocketPlane, Calico, …) were written against
//! Powerstrip's Python implementation, so the wire format is kept exactly:
//!
//! - keys are CamelCase and case-sensitive (`PowerstripProtocolVersion`, `Type`,
//!   `ClientRequest`, `ServerResponse`, `Method`, `Request`, `Body`, `ContentType`, `Code`);
//! - bodies are JSON *strings* (the Docker JSON document serialised inside a string), and
//!   `ClientRequest.Body` is `null` when the body is not given to hooks;
//!   `ServerResponse.Body` is always a string (`""` when empty), `ContentType` is `null`
//!   when Docker sent none (e.g. the 204 of `start`);
//! - `ClientRequest.Request` is the full request target including the query string.
//!
//! Replies are parsed tolerantly where Powerstrip was, and strictly where a mistake would
//! otherwise be silent: extra keys and a missing or odd `PowerstripProtocolVersion` are
//! ignored (Powerstrip never read it); a missing `ModifiedClientRequest` /
//! `ModifiedServerResponse` object, or a member of the wrong type (a `Body` that is a JSON
//! object rather than a string, a `Code` that is not a status), is a [`ReplyError`] naming
//! the field. Missing and `null` members are the same (`None`); what `None` means (keep,
//! empty, …) is the hook engine's decision, not the wire format's.
//!
//! Requests derive `Deserialize` too, so test fakes can read what busbar sends. Replies
//! deserialize through the checks above (`#[serde(try_from = "Value")]`), so
//! `serde_json::from_slice::<PreHookReply>` and [`PreHookReply::from_json`] are the same
//! parsing path; `from_json` returns the typed [`ReplyError`] without serde_json's position
//! suffix.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The only protocol version there is.
pub const PROTOCOL_VERSION: u32 = 1;

fn protocol_version() -> u32 {
    PROTOCOL_VERSION
}

/// The `Type` of a hook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookType {
    #[serde(rename = "pre-hook")]
    Pre,
    #[serde(rename = "post-hook")]
    Post,
}

/// The client's request as shown to hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// The method exactly as the client sent it, e.g. `POST`.
    #[serde(rename = "Method")]
    pub method: String,
    /// The full request target including the query, e.g. `/v1.16/containers/create?name=x`.
    #[serde(rename = "Request")]
    pub request: String,
    /// The body as a string, or `null` when it is not given to hooks.
    #[serde(rename = "Body")]
    pub body: Option<String>,
}

/// Docker's response as shown to post-hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerResponse {
    /// Docker's `Content-Type`, or `null` if it sent none.
    #[serde(rename = "ContentType")]
    pub content_type: Option<String>,
    /// The whole buffered body; `""` when empty.
    #[serde(rename = "Body")]
    pub body: String,
    #[serde(rename = "Code")]
    pub code: u16,
}

/// `{"PowerstripProtocolVersion": 1, "Type": "pre-hook", "ClientRequest": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreHookRequest {
    #[serde(rename = "PowerstripProtocolVersion", default = "protocol_version")]
    pub protocol_version: u32,
    /// Always [`HookType::Pre`] when built with [`PreHookRequest::new`].
    #[serde(rename = "Type")]
    pub hook_type: HookType,
    #[serde(rename = "ClientRequest")]
    pub client_request: ClientRequest,
}

/// `{"PowerstripProtocolVersion": 1, "Type": "post-hook", "ClientRequest": {...},
/// "ServerResponse": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostHookRequest {
    #[serde(rename = "PowerstripProtocolVersion", default = "protocol_version")]
    pub protocol_version: u32,
    /// Always [`HookType::Post`] when built with [`PostHookRequest::new`].
    #[serde(rename = "Type")]
    pub hook_type: HookType,
    #[serde(rename = "ClientRequest")]
    pub client_request: ClientRequest,
    #[serde(rename = "ServerResponse")]
    pub server_response: ServerResponse,
}

impl PreHookRequest {
    pub fn new(client_request: ClientRequest) -> PreHookRequest {
        PreHookRequest {
            protocol_version: PROTOCOL_VERSION,
            hook_type: HookType::Pre,
            client_request,
        }
    }

    /// The request body to POST to an adapter.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings and integers always serialize")
    }
}

impl PostHookRequest {
    pub fn new(client_request: ClientRequest, server_response: ServerResponse) -> PostHookRequest {
        PostHookRequest {
            protocol_version: PROTOCOL_VERSION,
            hook_type: HookType::Post,
            client_request,
            server_response,
        }
    }

    /// The request body to POST to an adapter.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("strings and integers always serialize")
    }
}

/// A pre-hook adapter's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct PreHookReply {
    /// As sent (never checked); `None` when absent or not a number.
    #[serde(
        rename = "PowerstripProtocolVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol_version: Option<u64>,
    #[serde(rename = "ModifiedClientRequest")]
    pub modified_client_request: ModifiedClientRequest,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModifiedClientRequest {
    #[serde(rename = "Body", default)]
    pub body: Option<String>,
    #[serde(rename = "Request", default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(rename = "Method", default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A post-hook adapter's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct PostHookReply {
    /// As sent (never checked); `None` when absent or not a number.
    #[serde(
        rename = "PowerstripProtocolVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol_version: Option<u64>,
    #[serde(rename = "ModifiedServerResponse")]
    pub modified_server_response: ModifiedServerResponse,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModifiedServerResponse {
    #[serde(rename = "ContentType")]
    pub content_type: Option<String>,
    #[serde(rename = "Body")]
    pub body: Option<String>,
    /// An HTTP status, 100-599.
    #[serde(rename = "Code")]
    pub code: Option<u16>,
}

/// Why an adapter's reply could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("reply is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("reply must be a JSON object, found {found}")]
    NotObject { found: String },
    #[error("reply has no {0:?} object")]
    Missing(&'static str),
    /// A v2 pre-hook reply with both `ModifiedClientRequest` and `Response`.
    #[error("reply has both \"ModifiedClientRequest\" (go on) and \"Response\" (answer the client): give one")]
    Ambiguous,
    #[error("{field} must be {expected}, found {found}{hint}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: String,
        hint: &'static str,
    },
}

/// Said when a body arrives as JSON rather than as a string holding JSON.
pub(crate) const STRING_BODY_HINT: &str =
    " (Powerstrip bodies are JSON text inside a string, e.g. json.dumps(body))";

impl PreHookReply {
    /// An echo adapter's reply: the request unchanged (what powerstrip-slowreq and
    /// powerstrip-debug send).
    pub fn echo(request: &PreHookRequest) -> PreHookReply {
        let c = &request.client_request;
        PreHookReply {
            protocol_version: Some(PROTOCOL_VERSION.into()),
            modified_client_request: ModifiedClientRequest {
                body: c.body.clone(),
                request: Some(c.request.clone()),
                method: Some(c.method.clone()),
            },
        }
    }

    pub fn from_json(reply: &[u8]) -> Result<PreHookReply, ReplyError> {
        PreHookReply::try_from(serde_json::from_slice::<Value>(reply).map_err(ReplyError::NotJson)?)
    }
}

impl TryFrom<Value> for PreHookReply {
    type Error = ReplyError;

    fn try_from(reply: Value) -> Result<PreHookReply, ReplyError> {
        let doc = object(reply)?;
        let m = member(&doc, "ModifiedClientRequest")?;
        Ok(PreHookReply {
            protocol_version: doc.get("PowerstripProtocolVersion").and_then(Value::as_u64),
            modified_client_request: ModifiedClientRequest {
                body: string(m, "Body", "ModifiedClientRequest.Body", STRING_BODY_HINT)?,
                request: string(m, "Request", "ModifiedClientRequest.Request", "")?,
                method: string(m, "Method", "ModifiedClientRequest.Method", "")?,
            },
        })
    }
}

impl PostHookReply {
    /// An echo adapter's reply: Docker's response unchanged.
    pub fn echo(request: &PostHookRequest) -> PostHookReply {
        let s = &request.server_response;
        PostHookReply {
            protocol_version: Some(PROTOCOL_VERSION.into()),
            modified_server_response: ModifiedServerResponse {
                content_type: s.content_type.clone(),
                body: Some(s.body.clone()),
                code: Some(s.code),
            },
        }
    }

    pub fn from_json(reply: &[u8]) -> Result<PostHookReply, ReplyError> {
        PostHookReply::try_from(
            serde_json::from_slice::<Value>(reply).map_err(ReplyError::NotJson)?,
        )
    }
}

impl TryFrom<Value> for PostHookReply {
    type Error = ReplyError;

    fn try_from(reply: Value) -> Result<PostHookReply, ReplyError> {
        let doc = object(reply)?;
        let m = member(&doc, "ModifiedServerResponse")?;
        Ok(PostHookReply {
            protocol_version: doc.get("PowerstripProtocolVersion").and_then(Value::as_u64),
            modified_server_response: ModifiedServerResponse {
                content_type: string(m, "ContentType", "ModifiedServerResponse.ContentType", "")?,
                body: string(m, "Body", "ModifiedServerResponse.Body", STRING_BODY_HINT)?,
                code: status(m)?,
            },
        })
    }
}

pub(crate) fn object(reply: Value) -> Result<Map<String, Value>, ReplyError> {
    match reply {
        Value::Object(doc) => Ok(doc),
        other => Err(ReplyError::NotObject {
            found: describe(&other),
        }),
    }
}

pub(crate) fn member<'a>(
    doc: &'a Map<String, Value>,
    key: &'static str,
) -> Result<&'a Map<String, Value>, ReplyError> {
    match doc.get(key) {
        None | Some(Value::Null) => Err(ReplyError::Missing(key)),
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(ReplyError::WrongType {
            field: key,
            expected: "an object",
            found: describe(other),
            hint: "",
        }),
    }
}

/// A string-or-null member; absent is null.
pub(crate) fn string(
    m: &Map<String, Value>,
    key: &str,
    field: &'static str,
    hint: &'static str,
) -> Result<Option<String>, ReplyError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => {
            let hint = if matches!(other, Value::Object(_) | Value::Array(_)) {
                hint
            } else {
                ""
            };
            Err(ReplyError::WrongType {
                field,
                expected: "a string or null",
                found: describe(other),
                hint,
            })
        }
    }
}

pub(crate) fn status(m: &Map<String, Value>) -> Result<Option<u16>, ReplyError> {
    match m.get("Code") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(code @ 100..=599) => Ok(Some(code as u16)),
            _ => Err(ReplyError::WrongType {
                field: "ModifiedServerResponse.Code",
                expected: "an HTTP status code (100-599) or null",
                found: describe(v),
                hint: "",
            }),
        },
    }
}

/// A JSON value for a message: `the string "200"`, `an object`, …
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() > 40 => "a string".to_string(),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A `docker create` as the Docker 1.6 CLI sent it, and the pre-hook request for it
    /// (shape of the powerstrip-flocker and powerstrip-weave fixtures).
    const CREATE_BODY: &str = r#"{"Hostname":"","Image":"busybox","Cmd":["sh"],"HostConfig":{"Binds":["/flocker/demo:/data"]}}"#;

    fn create_request() -> PreHookRequest {
        PreHookRequest::new(ClientRequest {
            method: "POST".into(),
            request: "/v1.16/containers/create".into(),
            body: Some(CREATE_BODY.into()),
        })
    }

    fn start_request() -> PostHookRequest {
        PostHookRequest::new(
            ClientRequest {
                method: "POST".into(),
                request: "/v1.16/containers/c1/start".into(),
                body: None,
            },
            ServerResponse {
                content_type: None,
                body: String::new(),
                code: 204,
            },
        )
    }

    fn to_value(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("we send JSON")
    }

    #[test]
    fn pre_hook_request_has_the_exact_wire_shape() {
        let expected = json!({
            "PowerstripProtocolVersion": 1,
            "Type": "pre-hook",
            "ClientRequest": {"Method": "POST", "Request": "/v1.16/containers/create", "Body": CREATE_BODY},
        });
        assert_eq!(to_value(&create_request().to_json()), expected);
    }

    #[test]
    fn post_hook_request_for_start_has_null_body_and_null_content_type() {
        let expected = json!({
            "PowerstripProtocolVersion": 1,
            "Type": "post-hook",
            "ClientRequest": {"Method": "POST", "Request": "/v1.16/containers/c1/start", "Body": null},
            "ServerResponse": {"ContentType": null, "Body": "", "Code": 204},
        });
        assert_eq!(to_value(&start_request().to_json()), expected);
    }

    #[test]
    fn requests_read_back_as_fakes_see_them_even_without_a_version() {
        let pre: PreHookRequest =
            serde_json::from_slice(&create_request().to_json()).expect("round trip");
        assert_eq!(pre, create_request());
        let post: PostHookRequest =
            serde_json::from_slice(&start_request().to_json()).expect("round trip");
        assert_eq!(post, start_request());
        let bare =
            br#"{"Type": "pre-hook", "ClientRequest": {"Method": "GET", "Request": "/info"}}"#;
        let pre: PreHookRequest =
            serde_json::from_slice(bare).expect("version and Body are optional");
        assert_eq!(pre.protocol_version, 1);
        assert_eq!(pre.client_request.body, None);
    }

    #[test]
    fn flocker_style_pre_reply_with_its_own_request_uri() {
        // powerstrip-flocker answers with Method, its *own* URI as Request, and a new Body.
        let reply = br#"{"PowerstripProtocolVersion": 1, "ModifiedClientRequest":
            {"Method": "POST", "Request": "/flocker-adapter", "Body": "{\"Image\":\"busybox\"}"}}"#;
        let reply = PreHookReply::from_json(reply).expect("valid reply");
        assert_eq!(
            reply.modified_client_request,
            ModifiedClientRequest {
                body: Some(r#"{"Image":"busybox"}"#.into()),
                request: Some("/flocker-adapter".into()),
                method: Some("POST".into()),
            }
        );
        assert_eq!(reply.protocol_version, Some(1));
    }

    #[test]
    fn reply_with_extra_keys_and_no_version_is_accepted() {
        let reply = br#"{"Extra": [1, 2], "ModifiedClientRequest": {"Body": null, "Note": "hi"}}"#;
        let reply = PreHookReply::from_json(reply).expect("extra keys are ignored");
        assert_eq!(reply.protocol_version, None);
        assert_eq!(
            reply.modified_client_request,
            ModifiedClientRequest::default()
        );
    }

    #[test]
    fn socketplane_style_post_reply() {
        // SocketPlane always answers ContentType "application/json", keeps Body and Code.
        let reply = br#"{"PowerstripProtocolVersion":1,"ModifiedServerResponse":
            {"ContentType":"application/json","Body":"","Code":204}}"#;
        let reply = PostHookReply::from_json(reply).expect("valid reply");
        assert_eq!(
            reply.modified_server_response,
            ModifiedServerResponse {
                content_type: Some("application/json".into()),
                body: Some(String::new()),
                code: Some(204)
            }
        );
    }

    #[test]
    fn echo_replies_parse_back_to_the_request() {
        let pre = PreHookReply::echo(&create_request());
        let parsed = PreHookReply::from_json(&serde_json::to_vec(&pre).expect("serializes"))
            .expect("parses");
        assert_eq!(parsed, pre);
        let post = PostHookReply::echo(&start_request());
        let bytes = serde_json::to_vec(&post).expect("serializes");
        assert_eq!(
            to_value(&bytes),
            json!({"PowerstripProtocolVersion": 1, "ModifiedServerResponse": {"ContentType": null, "Body": "", "Code": 204}})
        );
        assert_eq!(PostHookReply::from_json(&bytes).expect("parses"), post);
    }

    fn pre_error(reply: &str) -> String {
        PreHookReply::from_json(reply.as_bytes())
            .expect_err("must be rejected")
            .to_string()
    }

    fn post_error(reply: &str) -> String {
        PostHookReply::from_json(reply.as_bytes())
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn bad_replies_say_what_is_wrong() {
        assert!(pre_error("sadness for you, today.").starts_with("reply is not JSON: "));
        assert!(pre_error("").starts_with("reply is not JSON: "));
        assert_eq!(
            pre_error("[1]"),
            "reply must be a JSON object, found a list"
        );
        assert_eq!(
            pre_error(r#"{"ModifiedServerResponse": {}}"#),
            r#"reply has no "ModifiedClientRequest" object"#
        );
        assert_eq!(
            pre_error(r#"{"ModifiedClientRequest": null}"#),
            r#"reply has no "ModifiedClientRequest" object"#
        );
        assert_eq!(
            pre_error(r#"{"ModifiedClientRequest": "x"}"#),
            r#"ModifiedClientRequest must be an object, found the string "x""#
        );
        assert_eq!(
            pre_error(r#"{"ModifiedClientRequest": {"Body": {"Image": "busybox"}}}"#),
            "ModifiedClientRequest.Body must be a string or null, found an object \
             (Powerstrip bodies are JSON text inside a string, e.g. json.dumps(body))"
        );
        assert_eq!(
            pre_error(r#"{"ModifiedClientRequest": {"Body": "", "Request": 7}}"#),
            "ModifiedClientRequest.Request must be a string or null, found the number 7"
        );
        assert_eq!(
            post_error(r#"{"ModifiedClientRequest": {}}"#),
            r#"reply has no "ModifiedServerResponse" object"#
        );
        assert_eq!(
            post_error(r#"{"ModifiedServerResponse": {"Body": "", "Code": "200"}}"#),
            r#"ModifiedServerResponse.Code must be an HTTP status code (100-599) or null, found the string "200""#
        );
        assert_eq!(
            post_error(r#"{"ModifiedServerResponse": {"Body": "", "Code": 42}}"#),
            "ModifiedServerResponse.Code must be an HTTP status code (100-599) or null, found the number 42"
        );
        assert_eq!(
            post_error(r#"{"ModifiedServerResponse": {"Body": true}}"#),
            "ModifiedServerResponse.Body must be a string or null, found the boolean true"
        );
    }

    #[test]
    fn serde_json_deserializes_replies_through_the_same_checks() {
        let reply: PreHookReply =
            serde_json::from_slice(br#"{"ModifiedClientRequest": {"Body": "{}"}}"#)
                .expect("valid reply");
        assert_eq!(reply.modified_client_request.body.as_deref(), Some("{}"));
        let err =
            serde_json::from_slice::<PreHookReply>(br#"{"ModifiedClientRequest": {"Body": {}}}"#)
                .expect_err("Body is an object");
        assert!(
            err.to_string().starts_with(
                "ModifiedClientRequest.Body must be a string or null, found an object"
            ),
            "{err}"
        );
        let err = serde_json::from_slice::<PostHookReply>(br#"{"Body": ""}"#)
            .expect_err("no ModifiedServerResponse");
        assert!(
            err.to_string()
                .starts_with(r#"reply has no "ModifiedServerResponse" object"#),
            "{err}"
        );
    }

    #[test]
    fn missing_and_null_members_are_none() {
        let reply = PostHookReply::from_json(br#"{"ModifiedServerResponse": {"Body": "ok"}}"#)
            .expect("valid");
        assert_eq!(
            reply.modified_server_response,
            ModifiedServerResponse {
                content_type: None,
                body: Some("ok".into()),
                code: None
            }
        );
        let reply = PostHookReply::from_json(
            br#"{"ModifiedServerResponse": {"Body": null, "Code": null, "ContentType": null}}"#,
        )
        .expect("valid");
        assert_eq!(
            reply.modified_server_response,
            ModifiedServerResponse::default()
        );
    }
}
