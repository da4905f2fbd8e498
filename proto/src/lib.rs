//! Wire definitions for the gateway <-> agent hop (gRPC over mutual TLS).
//!
//! # Layout
//! Empty until the gateway lands: the `.proto` files and their generated code go here.
