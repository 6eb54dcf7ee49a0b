//! The `host-harness` command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("host-harness-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_reports_mismatch_with_line_number_and_fails() {
    let dir = tempdir("run");
    let wasm = common::wasm_path();
    std::fs::write(dir.join("cfg.txt"), "mode=test\n").unwrap();
    std::fs::write(
        dir.join("upstreams.json"),
        r#"{"auth": {"status": 200, "headers": {"x-user": "alice"}, "body": "ok"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("cases.jsonl"),
        concat!(
            r#"{"method":"GET","path":"/api","headers":{"x-action":"callout"},"expect":{"status":200,"upstream_headers":{"x-user":"alice"}}}"#,
            "\n\n",
            r#"{"method":"GET","path":"/admin","headers":{"x-action":"deny"},"expect":{"status":401}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--plugin"])
        .arg(&wasm)
        .arg("--config")
        .arg(dir.join("cfg.txt"))
        .arg("--upstreams")
        .arg(dir.join("upstreams.json"))
        .arg("--requests")
        .arg(dir.join("cases.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("line 1: GET /api -> forwarded (origin answered 200)  ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 3: expected local response 401, got local response 403"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");

    // JSON output, one object per request.
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--json", "--plugin"])
        .arg(&wasm)
        .arg("--upstreams")
        .arg(dir.join("upstreams.json"))
        .arg("--request")
        .arg(r#"{"path":"/x","headers":{"x-action":"callout"},"expect":{"status":200}}"#)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["forwarded"], true);
}

#[test]
fn parse_errors_name_the_line() {
    let dir = tempdir("parse");
    std::fs::write(dir.join("bad.jsonl"), "{\"path\":\"/ok\"}\n{not json\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["run", "--plugin"])
        .arg(common::wasm_path())
        .arg("--requests")
        .arg(dir.join("bad.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.jsonl: line 2: invalid JSON"),
        "{stderr}"
    );
}

#[test]
fn bench_reports_rate_and_latency() {
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["bench", "--json", "--count", "200", "--plugin"])
        .arg(common::wasm_path())
        .args(["--request", r#"{"path":"/api","headers":{"x-set":"a=b"}}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 200);
    assert!(v["req_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["p99_us"].as_f64().unwrap() >= v["p50_us"].as_f64().unwrap());
}
