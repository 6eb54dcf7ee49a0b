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

#[test]
fn validate_checks_files_against_a_schema_with_exit_codes() {
    let dir = tempdir("validate");
    std::fs::write(
        dir.join("schema.json"),
        r#"{"type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {"name": {"type": "string"},
                           "limits": {"type": "object", "properties": {"rps": {"type": "integer", "minimum": 1}}}}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("good.json"),
        r#"{"name": "a", "limits": {"rps": 5}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.json"),
        r#"{"name": "a", "limits": {"rps": 0}, "nmae": 1}"#,
    )
    .unwrap();
    std::fs::write(dir.join("broken.json"), "{").unwrap();
    let validate = |files: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
            .args(["validate", "--schema"])
            .arg(dir.join("schema.json"))
            .args(files.iter().map(|f| dir.join(f)))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = validate(&["good.json"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("good.json: valid"), "{stdout}");

    let (code, stdout, _) = validate(&["good.json", "bad.json", "broken.json"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("bad.json: invalid"), "{stdout}");
    assert!(
        stdout.contains("  /limits/rps: 0 is less than the minimum of 1"),
        "{stdout}"
    );
    assert!(stdout.contains("nmae"), "{stdout}");
    assert!(
        stdout.contains("broken.json: invalid\n  file: invalid JSON"),
        "{stdout}"
    );

    let (code, _, stderr) = validate(&["missing.json"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("missing.json"), "{stderr}");

    // Neither a schema nor a plugin: a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .arg("validate")
        .arg(dir.join("good.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_reports_a_plugin_that_rejects_its_configuration() {
    let dir = tempdir("validate-plugin");
    std::fs::write(dir.join("ok.txt"), "mode=test\n").unwrap();
    std::fs::write(dir.join("refused.txt"), "fail_configure=1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_host-harness"))
        .args(["validate", "--plugin"])
        .arg(common::wasm_path())
        .arg(dir.join("ok.txt"))
        .arg(dir.join("refused.txt"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok.txt: valid"), "{stdout}");
    assert!(
        stdout.contains("refused.txt: invalid\n  plugin: plugin rejected its configuration"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid configuration: fail_configure is set"),
        "{stdout}"
    );
}

#[test]
fn run_reports_and_checks_route_cache_clears() {
    let dir = tempdir("route-cache");
    std::fs::write(
        dir.join("cases.jsonl"),
        concat!(
            r#"{"path":"/db/1","headers":{"x-action":"clear-route-cache","x-route":"spoofed","x-remove":"x-route"},"expect":{"status":200,"route_cache_cleared":true,"upstream_headers":{"x-route":null,"x-clear-route-cache":"Ok(None)"}}}"#,
            "\n",
            r#"{"path":"/db/2","expect":{"route_cache_cleared":1}}"#,
            "\n",
            r#"{"path":"/db/3","headers":{"x-action":"clear-route-cache"},"expect":{"route_cache_cleared":false}}"#,
            "\n"
        ),
    )
    .unwrap();
    let run = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host-harness"));
        cmd.arg("run");
        if json {
            cmd.arg("--json");
        }
        let out = cmd
            .arg("--plugin")
            .arg(common::wasm_path())
            .arg("--requests")
            .arg(dir.join("cases.jsonl"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = run(false);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("line 1: GET /db/1 -> forwarded (origin answered 200)  ok\n    route cache cleared: 1\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 2: route cache cleared: expected 1, got 0 time(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 3: route cache cleared: expected false, got 1 time(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 2 failed"), "{stdout}");

    let (_, stdout) = run(true);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cleared: Vec<_> = records
        .iter()
        .map(|r| r["route_cache_cleared"].clone())
        .collect();
    assert_eq!(cleared, [1, 0, 1]);
    assert_eq!(records[0]["ok"], true);
}
