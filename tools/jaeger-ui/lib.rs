//! Empty: this package exists only so `cargo fetch` resolves and locks otlp-embedded (see
//! Cargo.toml). Nothing is ever compiled.
