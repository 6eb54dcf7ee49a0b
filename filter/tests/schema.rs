//! The shipped JSON Schema (`policies/portcullis.schema.json`) is the one the configuration
//! types generate, and every shipped policy is a configuration the plugin accepts.
//!
//! After changing the configuration types, regenerate the file with
//! `UPDATE_SCHEMA=1 cargo test -p portcullis --test schema`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("policies")
}

#[test]
fn shipped_schema_is_up_to_date() {
    let generated = format!(
        "{}\n",
        serde_json::to_string_pretty(&portcullis::config::json_schema()).unwrap()
    );
    let path = policies_dir().join("portcullis.schema.json");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == generated,
        "{} is out of date with the configuration types in filter/src/config/raw.rs; \
         regenerate it with: UPDATE_SCHEMA=1 cargo test -p portcullis --test schema",
        path.display()
    );
}

#[test]
fn schema_describes_the_top_level_fields() {
    let schema = portcullis::config::json_schema();
    let props = schema["properties"].as_object().unwrap();
    for field in [
        "$schema",
        "mode",
        "providers",
        "rules",
        "claim_headers",
        "forward_token",
    ] {
        assert!(props.contains_key(field), "no {field} in {props:?}");
    }
    assert_eq!(schema["required"], serde_json::json!(["rules"]));
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn every_shipped_policy_is_accepted_by_the_configuration_parser() {
    let mut seen = 0;
    for entry in std::fs::read_dir(policies_dir()).unwrap() {
        let policy = entry.unwrap().path().join("policy.json");
        if !policy.is_file() {
            continue;
        }
        seen += 1;
        let bytes = std::fs::read(&policy).unwrap();
        if let Err(e) = portcullis::config::parse(&bytes) {
            panic!("{}: {e}", policy.display());
        }
    }
    assert!(seen >= 7, "found {seen} policies");
}
