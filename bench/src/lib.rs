//! Benchmarks for Portcullis live in `benches/`; run them with `cargo bench -p portcullis-bench`.
