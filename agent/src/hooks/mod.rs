//! Powerstrip protocol v1 hooks: wire types and endpoint matching.
//!
//! - [`matcher`]: which endpoints of a [`ChainSet`](crate::chains::ChainSet) a request
//!   matches (fnmatch patterns, unversioned paths, order), giving its [`MatchedChain`].
//! - [`powerstrip`]: the JSON documents exchanged with adapters, with the exact CamelCase
//!   keys existing adapters expect, and strict-but-tolerant parsing of their replies.

pub mod matcher;
pub mod powerstrip;

pub use matcher::MatchedChain;
