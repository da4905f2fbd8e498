//! Powerstrip protocol v1 hooks: wire types and endpoint matching.
//!
//! - [`matcher`]: which endpoints of a [`ChainSet`](crate::chains::ChainSet) a request
//!   matches (fnmatch patterns, unversioned paths, order), giving its [`MatchedChain`].
//! - [`powerstrip`]: the JSON documents exchanged with adapters, with the exact CamelCase
//!   keys existing adapters expect, and strict-but-tolerant parsing of their replies.
//!
//! - [`adapter`]: the HTTP calls to adapters: pooled, bounded in time and size.
//! - [`engine`]: the phases a request goes through (gate, pre-hooks, engine, post-hooks).
//!
//! `matcher` and `powerstrip` are pure (no IO); `adapter` and `engine` build on them.

pub mod adapter;
pub mod engine;
pub mod matcher;
pub mod powerstrip;

pub use matcher::MatchedChain;
