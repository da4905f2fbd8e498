//! Adapter chains: the `adapters.yml` model, its parser and its validation.
