//! Powerstrip protocol v1 hooks: wire types and endpoint matching.
