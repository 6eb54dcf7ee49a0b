//! `examples/haproxy/` holds what `haproxy-config` generates for the example policy; this fails when
//! they drift apart (regenerate with `UPDATE_EXAMPLES=1 cargo test -p portcullis-spoa --test examples`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use portcullis_spoa::haproxy_config::{haproxy_cfg, spoe_file, Layout, Untagged};
use portcullis_spoa::plan::Plan;

#[test]
fn the_haproxy_example_is_what_haproxy_config_generates() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let policy = std::fs::read(repo.join("examples/envoy/policy.json")).unwrap();
    let plan = Plan::for_policy(&portcullis::config::parse(&policy).unwrap());
    let layout = Layout {
        bind: "127.0.0.1:10000".into(),
        upstream: "127.0.0.1:10001".into(),
        agents: vec!["127.0.0.1:12345".into()],
        spoe_path: "portcullis-spoe.conf".into(),
        threads: 1,
        processing_margin_ms: 500,
        routes: Vec::new(),
        untagged: Untagged::Refuse,
    };
    let dir = repo.join("examples/haproxy");
    for (name, text) in [
        ("haproxy.cfg", haproxy_cfg(&plan, &layout)),
        ("portcullis-spoe.conf", spoe_file(&plan, &layout)),
    ] {
        let path = dir.join(name);
        if std::env::var_os("UPDATE_EXAMPLES").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} is not what haproxy-config generates; run UPDATE_EXAMPLES=1 cargo test -p portcullis-spoa --test examples",
            path.display()
        );
    }
}
