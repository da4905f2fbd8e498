//! The cluster's status as one document, and its renderings.
//!
//! The gateway fills a [`Status`] from what it knows (its nodes' last probe answers, their
//! chains and adapter figures, its own recent error answers; embedded, its one local node as
//! its own probes of the engine found it), adds the figures of a recent window
//! ([`window`]), and serves it on its metrics listener: as JSON (`/status.json`, the document `busbarctl status --json` prints), as a
//! page ([`html::page`], a full static render that a little JavaScript then refreshes in
//! place from [`html::fragment`]), and `busbarctl status` draws it on a terminal
//! ([`text::screen`]). Pure: nothing here touches the network.
//!
//! # Layout
//! - [`model`]: the document ([`Status`]), stable and documented field by field.
//! - [`html`]: the status page (HTML, its CSS and script built in with `include_str!`).
//! - [`text`]: one terminal screen.
//! - [`window`]: rates over a recent window, from samples of the totals.

pub mod html;
pub mod model;
pub mod text;
pub mod window;

pub use model::{
    Adapter, AdapterWindow, Chains, ErrorAnswer, GatewayInfo, Hooks, Node, RequestWindow, Status,
    FORMAT,
};
