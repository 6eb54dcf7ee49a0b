//! `host-harness`: run HTTP requests through a proxy-wasm plugin without a proxy.
//!
//! ```text
//! host-harness run --plugin filter.wasm --config policy.json --upstreams upstreams.json --requests cases.jsonl
//! host-harness bench --plugin filter.wasm --config policy.json --request '{"path":"/api"}' --duration 5
//! ```
//!
//! A request line is JSON: `{"method":"GET","path":"/api","headers":{"authorization":"Bearer …"},
//! "body":"…","expect":{"status":200,"upstream_headers":{"x-user":"alice"}}}`. `status` 200 in `expect` means
//! "forwarded to the origin"; any other status means a local response with that status. An upstream header
//! expected as `null` must be absent; `"route_cache_cleared": true` (or a count) expects the plugin to have
//! asked the host to match the route again (`clear_route_cache`).
//!
//! An upstreams file maps cluster names to behaviours: `{"idp":{"status":200,"headers":{…},"body":"…",
//! "body_file":"jwks.json","delay_ms":0}, "down":{"reset":true}, "slow":{"hang":true}}`.
//!
//! Test tokens: a request line with `"token":{"claims":{"sub":"alice","exp":"+600"},"header":{"alg":"ES256"}}`
//! is sent with a JWT minted at that moment of the virtual clock by keys generated for the run; an upstream
//! `{"jwks":true}` (or `--jwks-upstream NAME`) answers with their public JWKS.
//!
//! ```text
//! host-harness validate --schema plugin.schema.json [--plugin filter.wasm] policy.json...
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use proxy_wasm_harness::tokens::{TestKeys, TokenSpec};
use proxy_wasm_harness::{
    CalloutRequest, Harness, HarnessError, Headers, Outcome, Plugin, Recording, Request, Response,
    Upstream,
};
use serde_json::{json, Map, Value};

#[derive(Parser)]
#[command(
    name = "host-harness",
    version,
    about = "Run HTTP requests through a proxy-wasm plugin (proxy-wasm ABI 0.2.1 on wasmtime)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run requests through the plugin and check their expected verdicts.
    Run {
        #[command(flatten)]
        common: Common,
        /// Print one JSON object per request instead of text.
        #[arg(long)]
        json: bool,
        /// Print the plugin's log lines (to stderr).
        #[arg(long)]
        logs: bool,
    },
    /// Measure requests per second and latency through the plugin.
    Bench {
        #[command(flatten)]
        common: Common,
        /// Seconds to run (wall clock).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Stop after this many requests instead.
        #[arg(long)]
        count: Option<u64>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check plugin configurations before deploying them: against a JSON Schema and, with
    /// --plugin, by configuring the plugin with each. Exit 0 valid, 1 invalid, 2 usage or I/O.
    Validate {
        /// The JSON Schema the configurations must follow.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Also load this plugin (.wasm) and configure it with each file.
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// Print one JSON object per file.
        #[arg(long)]
        json: bool,
        /// The configuration files.
        #[arg(required = true)]
        configs: Vec<PathBuf>,
    },
}

#[derive(Args)]
struct Common {
    /// The plugin (.wasm).
    #[arg(long)]
    plugin: PathBuf,
    /// Plugin configuration file (passed as is to proxy_on_configure).
    #[arg(long)]
    config: Option<PathBuf>,
    /// VM configuration file.
    #[arg(long)]
    vm_config: Option<PathBuf>,
    /// Upstream clusters for HTTP callouts (JSON object: name -> behaviour).
    #[arg(long)]
    upstreams: Option<PathBuf>,
    /// One request as JSON.
    #[arg(
        long,
        conflicts_with = "requests",
        required_unless_present = "requests"
    )]
    request: Option<String>,
    /// A file of requests, one JSON object per line.
    #[arg(long)]
    requests: Option<PathBuf>,
    /// Answer this cluster with the public JWKS of the run's test keys (repeatable).
    #[arg(long = "jwks-upstream", value_name = "CLUSTER")]
    jwks_upstreams: Vec<String>,
    /// Number of workers (VMs); requests go round-robin.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Virtual clock at start: Unix seconds, or `now` (the wall clock, so real tokens are
    /// judged by their real expiry).
    #[arg(long, default_value = "now")]
    start_time: String,
}

struct Case {
    line: usize,
    request: Request,
    token: Option<TokenSpec>,
    expect: Option<Value>,
    advance: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { common, json, logs } => run(&common, json, logs),
        Command::Bench {
            common,
            duration,
            count,
            json,
        } => bench(&common, duration, count, json),
        Command::Validate {
            schema,
            plugin,
            json,
            configs,
        } => validate(schema.as_deref(), plugin.as_deref(), &configs, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("host-harness: {e}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn headers_of(v: &Value, what: &str) -> Result<Headers, String> {
    match v {
        Value::Null => Ok(Headers::new()),
        Value::Object(m) => Ok(m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect()),
        Value::Array(a) => {
            let mut h = Headers::new();
            for pair in a {
                match pair.as_array().map(|p| {
                    (
                        p.first().and_then(Value::as_str),
                        p.get(1).and_then(Value::as_str),
                    )
                }) {
                    Some((Some(k), Some(v))) => h.add(k, v),
                    _ => return Err(format!("{what}: expected [name, value] pairs")),
                }
            }
            Ok(h)
        }
        _ => Err(format!(
            "{what}: expected an object or a list of [name, value] pairs"
        )),
    }
}

fn parse_case(text: &str, line: usize) -> Result<Case, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("expected a JSON object")?;
    let s = |k: &str| obj.get(k).and_then(Value::as_str);
    let mut request = Request::new(s("method").unwrap_or("GET"), s("path").unwrap_or("/"));
    if let Some(a) = s("authority").or(s("host")) {
        request = request.authority(a);
    }
    if let Some(sc) = s("scheme") {
        request = request.scheme(sc);
    }
    if let Some(src) = s("source") {
        request = request.source_address(src);
    }
    request.headers = headers_of(obj.get("headers").unwrap_or(&Value::Null), "headers")?;
    request.trailers = headers_of(obj.get("trailers").unwrap_or(&Value::Null), "trailers")?;
    if let Some(b) = s("body") {
        request = request.body(b.as_bytes().to_vec());
    }
    if let Some(r) = obj.get("upstream_response") {
        request = request.respond_with(response_of(r, "upstream_response", Path::new("."))?);
    }
    let token = match obj.get("token") {
        None => None,
        Some(t) => Some(TokenSpec::from_json(t).map_err(|e| e.to_string())?),
    };
    let advance = Duration::from_millis(obj.get("advance_ms").and_then(Value::as_u64).unwrap_or(0));
    let expect = obj.get("expect").cloned();
    if let Some(e) = &expect {
        if !e.is_object() {
            return Err("`expect` must be an object".into());
        }
    }
    Ok(Case {
        line,
        request,
        token,
        expect,
        advance,
    })
}

fn load_cases(common: &Common) -> Result<Vec<Case>, String> {
    if let Some(r) = &common.request {
        return Ok(vec![
            parse_case(r, 1).map_err(|e| format!("--request: {e}"))?
        ]);
    }
    let Some(path) = &common.requests else {
        return Err("give --request or --requests".into());
    };
    let text =
        String::from_utf8(read(path)?).map_err(|_| format!("{}: not UTF-8", path.display()))?;
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("//") {
            continue;
        }
        cases.push(
            parse_case(trimmed, i + 1)
                .map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(cases)
}

fn response_of(v: &Value, what: &str, base: &Path) -> Result<Response, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what}: expected an object"))?;
    let status = obj.get("status").and_then(Value::as_u64).unwrap_or(200) as u32;
    let mut r = Response::new(status);
    r.headers = headers_of(obj.get("headers").unwrap_or(&Value::Null), what)?;
    if let Some(b) = obj.get("body") {
        r.body = match b {
            Value::String(s) => s.as_bytes().to_vec(),
            other => other.to_string().into_bytes(),
        };
    }
    if let Some(f) = obj.get("body_file").and_then(Value::as_str) {
        r.body = read(&base.join(f))?;
    }
    Ok(r)
}

/// An upstream that publishes the test keys: the JWKS for every path, except the OpenID
/// discovery document when `discovery` (`{"issuer", "jwks_uri"}`) is given.
fn jwks_upstream(keys: &TestKeys, discovery: Option<&Value>) -> Result<Upstream, String> {
    let jwks = keys.jwks().map_err(|e| e.to_string())?.to_string();
    let json = |body: &str| {
        Response::new(200)
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())
    };
    let Some(doc) = discovery else {
        return Ok(Upstream::respond(json(&jwks)));
    };
    let fields = (
        doc.get("issuer").and_then(Value::as_str),
        doc.get("jwks_uri").and_then(Value::as_str),
    );
    if !matches!(fields, (Some(_), Some(_))) {
        return Err("`discovery` needs \"issuer\" and \"jwks_uri\" strings".into());
    }
    let doc = doc.to_string();
    Ok(Upstream::handler(move |req: &CalloutRequest| {
        let path = req.path().split('?').next().unwrap_or("");
        if path.ends_with("/.well-known/openid-configuration") {
            json(&doc)
        } else {
            json(&jwks)
        }
    }))
}

fn upstream_of(name: &str, v: &Value, base: &Path, keys: &TestKeys) -> Result<Upstream, String> {
    let what = format!("upstream `{name}`");
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what}: expected an object"))?;
    let mut u = if obj.get("jwks").and_then(Value::as_bool) == Some(true) {
        jwks_upstream(keys, obj.get("discovery")).map_err(|e| format!("{what}: {e}"))?
    } else if obj.get("reset").and_then(Value::as_bool) == Some(true) {
        Upstream::reset()
    } else if obj.get("hang").and_then(Value::as_bool) == Some(true) {
        Upstream::hang()
    } else {
        Upstream::respond(response_of(v, &what, base)?)
    };
    if let Some(ms) = obj.get("delay_ms").and_then(Value::as_u64) {
        u = Upstream::delayed(Duration::from_millis(ms), u);
    }
    Ok(u)
}

fn build(
    common: &Common,
    plugin: &Plugin,
    keys: &TestKeys,
    recording: Recording,
) -> Result<Harness, String> {
    let start = match common.start_time.as_str() {
        "now" => std::time::SystemTime::now(),
        secs => {
            let secs: u64 = secs.parse().map_err(|_| {
                format!("--start-time: {secs:?} is neither Unix seconds nor \"now\"")
            })?;
            std::time::UNIX_EPOCH + Duration::from_secs(secs)
        }
    };
    let mut b = Harness::builder()
        .plugin(plugin)
        .workers(common.workers)
        .start_time(start)
        .recording(recording);
    if let Some(c) = &common.config {
        b = b.plugin_config(read(c)?);
    }
    if let Some(c) = &common.vm_config {
        b = b.vm_config(read(c)?);
    }
    if let Some(path) = &common.upstreams {
        let text = read(path)?;
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{}: expected an object of upstreams", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (name, spec) in obj {
            b = b.upstream(
                name,
                upstream_of(name, spec, base, keys)
                    .map_err(|e| format!("{}: {e}", path.display()))?,
            );
        }
    }
    for name in &common.jwks_upstreams {
        b = b.upstream(name, jwks_upstream(keys, None)?);
    }
    b.build().map_err(|e| e.to_string())
}

fn send(
    h: &mut Harness,
    keys: &TestKeys,
    case: &Case,
    worker: usize,
) -> Result<Outcome, HarnessError> {
    let mut request = case.request.clone();
    if let Some(spec) = &case.token {
        // Minted now, so relative times follow the virtual clock as earlier lines advanced it.
        let now = h
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = keys
            .mint(spec, now)
            .map_err(|e| HarnessError::Invalid(format!("line {}: {e}", case.line)))?;
        spec.placement.apply(&mut request, &token);
    }
    let out = h.request_on(worker, request)?;
    if !case.advance.is_zero() {
        h.advance(case.advance)?;
    }
    match h.outcome(out.stream()).cloned().unwrap_or(out) {
        Outcome::Paused { stream, .. } => h.advance_until_done(stream, Duration::from_secs(600)),
        other => Ok(other),
    }
}

fn verdict(out: &Outcome) -> String {
    match out {
        Outcome::Forwarded { response, .. } => {
            format!("forwarded (origin answered {})", response.status)
        }
        Outcome::LocalResponse { status, .. } => format!("local response {status}"),
        Outcome::Paused { phase, .. } => format!("paused in {phase:?}"),
        Outcome::Reset { .. } => "reset".into(),
    }
}

fn check(out: &Outcome, expect: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(status) = expect.get("status").and_then(Value::as_u64) {
        let ok = match out {
            Outcome::Forwarded { .. } => status == 200,
            Outcome::LocalResponse { status: s, .. } => u64::from(*s) == status,
            _ => false,
        };
        if !ok {
            let wanted = if status == 200 {
                "forwarded (200)".to_string()
            } else {
                format!("local response {status}")
            };
            problems.push(format!("expected {wanted}, got {}", verdict(out)));
        }
    }
    if let Some(Value::Object(want)) = expect.get("upstream_headers") {
        for (k, v) in want {
            let got = out.upstream_header(k);
            let ok = match v {
                Value::Null => got.is_none(),
                Value::String(s) => got == Some(s.as_str()),
                other => got == Some(other.to_string().as_str()),
            };
            if !ok {
                problems.push(format!("upstream header `{k}`: expected {v}, got {got:?}"));
            }
        }
    }
    if let Some(Value::Object(want)) = expect.get("headers") {
        for (k, v) in want {
            let got = out.response_header(k);
            if got != v.as_str() {
                problems.push(format!("response header `{k}`: expected {v}, got {got:?}"));
            }
        }
    }
    if let Some(want) = expect.get("route_cache_cleared") {
        let got = out.route_cache_cleared();
        let ok = match want {
            Value::Bool(b) => *b == (got > 0),
            Value::Number(n) => n.as_u64() == Some(u64::from(got)),
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "route cache cleared: expected {want}, got {got} time(s)"
            ));
        }
    }
    if let Some(want) = expect.get("body_contains").and_then(Value::as_str) {
        let body = out
            .response_body()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if !body.contains(want) {
            problems.push(format!("response body does not contain {want:?}: {body:?}"));
        }
    }
    problems
}

fn headers_json(h: &Headers) -> Value {
    Value::Array(h.iter().map(|(k, v)| json!([k, v])).collect())
}

fn run(common: &Common, as_json: bool, show_logs: bool) -> Result<ExitCode, String> {
    let cases = load_cases(common)?;
    let plugin = Plugin::from_file(&common.plugin).map_err(|e| e.to_string())?;
    let keys = TestKeys::new();
    let mut h = build(common, &plugin, &keys, Recording::Full)?;
    let mut failed = 0usize;
    // What the plugin logged while starting is not any line's: print it (with --logs) and set it aside.
    for l in h.take_logs() {
        if show_logs {
            eprintln!("  {l}");
        }
    }
    let stdout = std::io::stdout();
    let mut out_lock = stdout.lock();
    for (i, case) in cases.iter().enumerate() {
        let worker = i % h.workers();
        let callouts_before = h.callouts().len();
        let result = send(&mut h, &keys, case, worker);
        let callouts: Vec<Value> = h
            .callouts()
            .iter()
            .skip(callouts_before)
            .map(|c| {
                json!({"cluster": c.request.upstream, "method": c.request.method(),
                       "path": c.request.path(), "headers": headers_json(&c.request.headers)})
            })
            .collect();
        let logs = if show_logs || as_json {
            h.take_logs()
        } else {
            Vec::new()
        };
        if show_logs {
            for l in &logs {
                eprintln!("  {l}");
            }
        }
        let label = format!(
            "line {}: {} {}",
            case.line, case.request.method, case.request.path
        );
        let (problems, record) = match &result {
            Ok(out) => {
                let problems = case
                    .expect
                    .as_ref()
                    .map(|e| check(out, e))
                    .unwrap_or_default();
                let mut rec = Map::new();
                rec.insert("line".into(), json!(case.line));
                rec.insert("verdict".into(), json!(verdict(out)));
                rec.insert("status".into(), json!(out.status()));
                rec.insert("forwarded".into(), json!(out.is_forwarded()));
                rec.insert(
                    "route_cache_cleared".into(),
                    json!(out.route_cache_cleared()),
                );
                if let Outcome::Forwarded {
                    upstream_headers,
                    upstream_body,
                    response,
                    ..
                } = out
                {
                    rec.insert("upstream_headers".into(), headers_json(upstream_headers));
                    rec.insert(
                        "upstream_body".into(),
                        json!(String::from_utf8_lossy(upstream_body)),
                    );
                    rec.insert(
                        "response".into(),
                        json!({"status": response.status, "headers": headers_json(&response.headers),
                               "body": String::from_utf8_lossy(&response.body)}),
                    );
                }
                if let Outcome::LocalResponse {
                    headers,
                    body,
                    details,
                    ..
                } = out
                {
                    rec.insert("headers".into(), headers_json(headers));
                    rec.insert("body".into(), json!(String::from_utf8_lossy(body)));
                    rec.insert("details".into(), json!(details));
                }
                (problems, rec)
            }
            Err(e) => {
                let mut rec = Map::new();
                rec.insert("line".into(), json!(case.line));
                rec.insert("error".into(), json!(e.to_string()));
                (vec![format!("plugin error: {e}")], rec)
            }
        };
        let ok = problems.is_empty();
        if !ok {
            failed += 1;
        }
        if as_json {
            let mut rec = record;
            rec.insert("callouts".into(), Value::Array(callouts));
            // Every metric's value after this line (counters and gauges; histograms: the last sample).
            let metrics: Map<String, Value> = h
                .metrics()
                .into_iter()
                .map(|m| (m.name, json!(m.value)))
                .collect();
            rec.insert("metrics".into(), Value::Object(metrics));
            rec.insert(
                "logs".into(),
                json!(logs.iter().map(|l| l.message.clone()).collect::<Vec<_>>()),
            );
            rec.insert("ok".into(), json!(ok));
            rec.insert("problems".into(), json!(problems));
            let _ = writeln!(out_lock, "{}", Value::Object(rec));
        } else {
            let v = match &result {
                Ok(out) => verdict(out),
                Err(_) => "error".into(),
            };
            let mark = if case.expect.is_none() {
                ""
            } else if ok {
                "  ok"
            } else {
                "  MISMATCH"
            };
            let _ = writeln!(out_lock, "{label} -> {v}{mark}");
            // Most plugins never ask, so the line appears only when one did.
            if let Some(n) = result
                .as_ref()
                .ok()
                .map(Outcome::route_cache_cleared)
                .filter(|n| *n > 0)
            {
                let _ = writeln!(out_lock, "    route cache cleared: {n}");
            }
            if let Ok(Outcome::Forwarded {
                upstream_headers, ..
            }) = &result
            {
                for (k, v) in upstream_headers.iter().filter(|(k, _)| !k.starts_with(':')) {
                    let _ = writeln!(out_lock, "    upstream {k}: {v}");
                }
            }
            if let Ok(Outcome::LocalResponse { body, .. }) = &result {
                if !body.is_empty() {
                    let _ = writeln!(out_lock, "    body: {}", String::from_utf8_lossy(body));
                }
            }
            for p in &problems {
                let _ = writeln!(out_lock, "    line {}: {p}", case.line);
            }
        }
    }
    if !as_json {
        let _ = writeln!(
            out_lock,
            "{} passed, {} failed",
            cases.len() - failed,
            failed
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Where a configuration is wrong: a JSON pointer for schema errors, `plugin` for the
/// plugin's own refusal, or `file` when it is not JSON at all.
struct Problem {
    at: String,
    message: String,
}

fn schema_problems(validator: &jsonschema::Validator, bytes: &[u8]) -> Vec<Problem> {
    let doc: Value = match serde_json::from_slice(bytes) {
        Ok(d) => d,
        Err(e) => {
            return vec![Problem {
                at: "file".into(),
                message: format!("invalid JSON: {e}"),
            }]
        }
    };
    validator
        .iter_errors(&doc)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            Problem {
                at: if pointer.is_empty() {
                    "/".into()
                } else {
                    pointer
                },
                message: e.to_string(),
            }
        })
        .collect()
}

fn validate(
    schema: Option<&Path>,
    plugin: Option<&Path>,
    configs: &[PathBuf],
    as_json: bool,
) -> Result<ExitCode, String> {
    if schema.is_none() && plugin.is_none() {
        return Err("validate: give --schema, --plugin, or both".into());
    }
    let validator = match schema {
        None => None,
        Some(p) => {
            let v: Value = serde_json::from_slice(&read(p)?)
                .map_err(|e| format!("{}: invalid JSON: {e}", p.display()))?;
            Some(
                jsonschema::validator_for(&v)
                    .map_err(|e| format!("{}: not a usable JSON Schema: {e}", p.display()))?,
            )
        }
    };
    let plugin = match plugin {
        None => None,
        Some(p) => Some(Plugin::from_file(p).map_err(|e| e.to_string())?),
    };
    let mut invalid = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for path in configs {
        let bytes = read(path)?;
        let mut problems = validator
            .as_ref()
            .map(|v| schema_problems(v, &bytes))
            .unwrap_or_default();
        if let Some(plugin) = &plugin {
            // Configure only: a plugin that rejects its configuration says why in its logs,
            // which the harness error carries.
            if let Err(e) = Harness::builder()
                .plugin(plugin)
                .plugin_config(bytes.clone())
                .build()
            {
                problems.push(Problem {
                    at: "plugin".into(),
                    message: e.to_string(),
                });
            }
        }
        if !problems.is_empty() {
            invalid += 1;
        }
        if as_json {
            let list: Vec<Value> = problems
                .iter()
                .map(|p| json!({"at": p.at, "message": p.message}))
                .collect();
            let _ = writeln!(
                out,
                "{}",
                json!({"file": path.display().to_string(), "valid": problems.is_empty(), "problems": list})
            );
        } else if problems.is_empty() {
            let _ = writeln!(out, "{}: valid", path.display());
        } else {
            let _ = writeln!(out, "{}: invalid", path.display());
            for p in &problems {
                let _ = writeln!(out, "  {}: {}", p.at, p.message);
            }
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn bench(
    common: &Common,
    duration: f64,
    count: Option<u64>,
    as_json: bool,
) -> Result<ExitCode, String> {
    let mut cases = load_cases(common)?;
    if cases.is_empty() {
        return Err("no requests to send".into());
    }
    let plugin = Plugin::from_file(&common.plugin).map_err(|e| e.to_string())?;
    let keys = TestKeys::new();
    // A bounded history keeps memory flat on long runs.
    let mut h = build(common, &plugin, &keys, Recording::Bounded(1024))?;
    // Signing costs more than most decisions: each line's token is minted once, before the
    // clock starts, so the figures are the plugin's and not the signer's.
    let now = h
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for case in &mut cases {
        if let Some(spec) = case.token.take() {
            let token = keys
                .mint(&spec, now)
                .map_err(|e| format!("line {}: {e}", case.line))?;
            spec.placement.apply(&mut case.request, &token);
        }
    }
    let limit = Duration::from_secs_f64(duration.max(0.01));
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut latencies: Vec<u64> = Vec::new();
    let mut n: u64 = 0;
    loop {
        if let Some(c) = count {
            if n >= c {
                break;
            }
        } else if start.elapsed() >= limit {
            break;
        }
        let case = &cases[(n as usize) % cases.len()];
        let t = Instant::now();
        let worker = (n as usize) % h.workers();
        send(&mut h, &keys, case, worker).map_err(|e| format!("request {n} failed: {e}"))?;
        latencies.push(t.elapsed().as_nanos() as u64);
        n += 1;
        if last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprint!("\r{n} requests, {:.0} req/s   ", n as f64 / secs);
            let _ = std::io::stderr().flush();
        }
    }
    eprintln!();
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    let rps = n as f64 / secs;
    if as_json {
        println!(
            "{}",
            json!({"requests": n, "seconds": secs, "req_per_s": rps, "p50_us": pct(0.50), "p99_us": pct(0.99), "max_us": pct(1.0)})
        );
    } else {
        println!(
            "{n} requests in {secs:.2}s: {rps:.0} req/s, latency p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
    }
    Ok(ExitCode::SUCCESS)
}
