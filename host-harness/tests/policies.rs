//! The repository's ready-made policies (`policies/*/`), each run through the `host-harness`
//! CLI against its request file, and checked with `host-harness validate`.
//!
//! The test lives in this crate because only its tests get the CLI binary from cargo
//! (`CARGO_BIN_EXE_host-harness`); the CLI knows nothing of the plugin: each directory is a
//! plugin configuration, request lines and an upstreams file, as a user's own policy would be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The plugin, built from the repository's sources once per test binary.
fn plugin_wasm() -> PathBuf {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        proxy_wasm_harness::build_wasm(&repo().join("filter/Cargo.toml"))
            .expect("the plugin builds for wasm32-wasip1")
    })
    .clone()
}

fn policy_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("policy.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn run_policy(dir: &Path, cases: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-harness"));
    cmd.args(["run", "--json", "--plugin"])
        .arg(plugin_wasm())
        .arg("--config")
        .arg(dir.join("policy.json"))
        .arg("--requests")
        .arg(cases);
    if dir.join("upstreams.json").is_file() {
        cmd.arg("--upstreams").arg(dir.join("upstreams.json"));
    }
    cmd.output().unwrap()
}

fn records(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn expected_statuses(cases: &Path) -> Vec<u64> {
    std::fs::read_to_string(cases)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('#'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["expect"]["status"]
                .as_u64()
                .expect("every case expects a status")
        })
        .collect()
}

#[test]
fn every_policy_gives_the_expected_verdicts() {
    let dirs = policy_dirs();
    assert!(dirs.len() >= 7, "policies found: {dirs:?}");
    for dir in dirs {
        let cases = dir.join("cases.jsonl");
        let statuses = expected_statuses(&cases);
        for wanted in [200, 401, 403] {
            assert!(
                statuses.contains(&wanted),
                "{}: no case expects {wanted}",
                dir.display()
            );
        }
        let out = run_policy(&dir, &cases);
        let recs = records(&out);
        let failures: Vec<&Value> = recs.iter().filter(|r| r["ok"] != true).collect();
        assert!(
            out.status.code() == Some(0) && failures.is_empty(),
            "{}: exit {:?}\nfailures: {failures:#?}\nstderr: {}",
            dir.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(recs.len(), statuses.len(), "{}", dir.display());
    }
}

#[test]
fn a_wrong_expectation_fails_the_run() {
    let dir = repo().join("policies/okta");
    let text = std::fs::read_to_string(dir.join("cases.jsonl")).unwrap();
    // The first allowed request with a token, now expected to be refused.
    let line = text
        .lines()
        .position(|l| l.contains("\"token\"") && l.contains("\"status\": 200"))
        .unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[line] = lines[line].replace("\"status\": 200", "\"status\": 403");
    let tmp = std::env::temp_dir().join(format!("policies-wrong-{}.jsonl", std::process::id()));
    std::fs::write(&tmp, lines.join("\n")).unwrap();
    let out = run_policy(&dir, &tmp);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failed: Vec<Value> = records(&out)
        .into_iter()
        .filter(|r| r["ok"] != true)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["line"], line + 1);
    assert!(
        failed[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("expected local response 403, got forwarded"),
        "{failed:#?}"
    );
}

fn validate(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .arg("validate")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn every_policy_validates_against_the_schema_and_the_plugin() {
    let schema = repo().join("policies/portcullis.schema.json");
    let wasm = plugin_wasm();
    let configs: Vec<PathBuf> = policy_dirs()
        .iter()
        .map(|d| d.join("policy.json"))
        .collect();
    let mut args = vec![
        "--schema".as_ref(),
        schema.as_os_str(),
        "--plugin".as_ref(),
        wasm.as_os_str(),
    ];
    args.extend(configs.iter().map(|c| c.as_os_str()));
    let (code, text) = validate(&args);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches(": valid").count(), configs.len(), "{text}");
}

#[test]
fn validate_names_the_field_of_an_invalid_policy() {
    let schema = repo().join("policies/portcullis.schema.json");
    let wasm = plugin_wasm();
    let mut policy: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("policies/okta/policy.json")).unwrap(),
    )
    .unwrap();
    policy["providers"]["okta"]["remote_jwks"]["timeout_ms"] = "5s".into();
    policy["rules"][1]["scopes"]["all_off"] = Value::Array(vec![]);
    let bad = std::env::temp_dir().join(format!("policies-invalid-{}.json", std::process::id()));
    std::fs::write(&bad, policy.to_string()).unwrap();
    // Both the schema and the plugin judge the same file.
    let validate_bad = || {
        validate(&[
            "--schema".as_ref(),
            schema.as_os_str(),
            "--plugin".as_ref(),
            wasm.as_os_str(),
            bad.as_os_str(),
        ])
    };
    let (code, text) = validate_bad();
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("invalid"), "{text}");
    assert!(
        text.contains("/providers/okta/remote_jwks/timeout_ms"),
        "{text}"
    );
    assert!(text.contains("/rules/1/scopes"), "{text}");
    // The plugin's own refusal names the field too.
    assert!(
        text.contains("plugin: plugin rejected its configuration")
            && text.contains("providers.okta.remote_jwks.timeout_ms"),
        "{text}"
    );

    // Valid for the schema, refused by the plugin: the issuer must be an https URL.
    policy = serde_json::from_str(
        &std::fs::read_to_string(repo().join("policies/okta/policy.json")).unwrap(),
    )
    .unwrap();
    policy["providers"]["okta"]["issuer"] = "example.okta.com".into();
    std::fs::write(&bad, policy.to_string()).unwrap();
    let (code, text) = validate_bad();
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("providers.okta.issuer: must be an absolute https URL"),
        "{text}"
    );
    let (code, _) = validate(&["--schema".as_ref(), schema.as_os_str(), bad.as_os_str()]);
    assert_eq!(code, Some(0), "the schema alone cannot see this");
}
