//! A proxy-wasm plugin whose behaviour is chosen by its configuration and by request headers, so the
//! harness tests can exercise the host ABI surface.
//!
//! Configuration: lines `key=value`:
//! - `fail_configure=1`: `proxy_on_configure` logs an error naming the key and returns false.
//! - `tick_ms=N`: ticks every N ms; each tick increments counter `ticks` and stores `last_tick` in shared data.
//! - `queue=NAME`: registers a shared queue; items are logged as `queue item: ...` and counted (`queue_items`).
//! - `callout_on_tick=CLUSTER`: each tick dispatches a callout from the root context; its status is stored
//!   in shared data `tick_callout_status`.
//! - `clear_route_cache_on_configure=1`: `proxy_on_configure` calls the `clear_route_cache` foreign function
//!   from the root context and logs `clear_route_cache at configure: <result>`.
//!
//! Request header `x-action` (comma-separated) picks what `proxy_on_request_headers` does; see `Action`.
//! `set-tick` sets a 250 ms tick period from the HTTP context; `random` puts a value derived from WASI
//! `random_get` (std's hash keys) in `x-random`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    config: Rc<RefCell<HashMap<String, String>>>,
    queue: Option<u32>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_else(|| "none".into());
        let _ = self.set_shared_data("tick_callout_status", Some(status.as_bytes()), None);
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        let vm = self.get_vm_configuration().unwrap_or_default();
        proxy_wasm::hostcalls::log(
            LogLevel::Info,
            &format!("vm config: {}", String::from_utf8_lossy(&vm)),
        )
        .ok();
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut map = HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                map.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        if map.get("fail_configure").map(String::as_str) == Some("1") {
            log::error("invalid configuration: fail_configure is set");
            return false;
        }
        if map.get("trap_configure").map(String::as_str) == Some("1") {
            panic!("configure trap requested");
        }
        if let Some(ms) = map.get("tick_ms").and_then(|v| v.parse::<u64>().ok()) {
            self.set_tick_period(Duration::from_millis(ms));
        }
        if let Some(name) = map.get("queue") {
            self.queue = Some(self.register_shared_queue(name));
        }
        if map
            .get("clear_route_cache_on_configure")
            .map(String::as_str)
            == Some("1")
        {
            let r = self.call_foreign_function("clear_route_cache", Some(&[]));
            log::info(&format!("clear_route_cache at configure: {r:?}"));
        }
        log::info(&format!("configured with {} keys", map.len()));
        *self.config.borrow_mut() = map;
        true
    }

    fn on_tick(&mut self) {
        if let Ok(id) = hostcalls::define_metric(MetricType::Counter, "ticks") {
            let _ = hostcalls::increment_metric(id, 1);
        }
        let now = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = self.set_shared_data("last_tick", Some(now.to_string().as_bytes()), None);
        let cluster = self.config.borrow().get("callout_on_tick").cloned();
        if let Some(cluster) = cluster {
            let _ = self.dispatch_http_call(
                &cluster,
                vec![
                    (":method", "GET"),
                    (":path", "/tick"),
                    (":authority", "tick"),
                ],
                None,
                vec![],
                Duration::from_secs(1),
            );
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            log::info(&format!("queue item: {}", String::from_utf8_lossy(&item)));
            if let Ok(id) = hostcalls::define_metric(MetricType::Counter, "queue_items") {
                let _ = hostcalls::increment_metric(id, 1);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            context_id,
            actions: Vec::new(),
            request_body_size: 0,
            response_body_size: 0,
            config: self.config.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

mod log {
    use proxy_wasm::types::LogLevel;

    pub fn info(msg: &str) {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Info, msg);
    }

    pub fn error(msg: &str) {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Error, msg);
    }
}

struct Stream {
    context_id: u32,
    actions: Vec<String>,
    request_body_size: usize,
    response_body_size: usize,
    #[allow(dead_code)]
    config: Rc<RefCell<HashMap<String, String>>>,
}

impl Stream {
    fn has(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.get_http_request_header(name)
    }

    fn pair(&self, name: &str) -> Option<(String, String)> {
        let v = self.header(name)?;
        let (k, v) = v.split_once('=')?;
        Some((k.to_string(), v.to_string()))
    }

    fn transform_request_body(&self, body_size: usize) {
        if self.has("body") && body_size > 0 {
            let body = self.get_http_request_body(0, body_size).unwrap_or_default();
            let upper = String::from_utf8_lossy(&body).to_uppercase();
            self.set_http_request_body(0, body_size, upper.as_bytes());
            log::info(&format!("request body: {}", String::from_utf8_lossy(&body)));
        }
    }

    fn transform_response_body(&self, body_size: usize) {
        if self.has("response") && body_size > 0 {
            let mut body = self
                .get_http_response_body(0, body_size)
                .unwrap_or_default();
            body.extend_from_slice(b"!");
            self.set_http_response_body(0, body_size, &body);
        }
    }

    fn counter(name: &str, delta: i64) {
        if let Ok(id) = hostcalls::define_metric(MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, delta);
        }
    }

    fn shared_increment(&self) -> u64 {
        loop {
            let (value, cas) = self.get_shared_data("counter");
            let n = value
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            match self.set_shared_data("counter", Some((n + 1).to_string().as_bytes()), cas) {
                Ok(()) => return n + 1,
                Err(Status::CasMismatch) => continue,
                Err(_) => return 0,
            }
        }
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if num_headers == 0 {
            let (code, message) = self.get_grpc_status();
            self.send_http_response(
                502,
                vec![("x-callout", "reset")],
                Some(
                    format!(
                        "callout failed: status {code} {}",
                        message.unwrap_or_default()
                    )
                    .as_bytes(),
                ),
            );
            return;
        }
        let status = self
            .get_http_call_response_header(":status")
            .unwrap_or_default();
        let body = self
            .get_http_call_response_body(0, body_size)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if status == "200" {
            self.set_http_request_header("x-callout-status", Some(&status));
            self.set_http_request_header("x-callout-body", Some(&body));
            if let Some(v) = self.get_http_call_response_header("x-user") {
                self.set_http_request_header("x-user", Some(&v));
            }
            self.resume_http_request();
        } else {
            self.send_http_response(
                503,
                vec![("x-callout-status", &status)],
                Some(format!("callout answered {status}: {body}").as_bytes()),
            );
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _eos: bool) -> Action {
        self.actions = self
            .header("x-action")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        Self::counter("requests_total", 1);

        if self.has("trap") {
            panic!("deliberate trap requested by x-action");
        }
        if self.has("loop") {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        if self.has("echo-headers") {
            for (k, v) in self.get_http_request_headers() {
                log::info(&format!("hdr {k}={v}"));
            }
        }
        if let Some((k, v)) = self.pair("x-set") {
            self.set_http_request_header(&k, Some(&v));
        }
        if let Some((k, v)) = self.pair("x-add") {
            self.add_http_request_header(&k, &v);
        }
        if let Some(k) = self.header("x-remove") {
            self.set_http_request_header(&k, None);
        }
        if self.has("replace-all") {
            let mut all = self.get_http_request_headers();
            all.retain(|(k, _)| k.starts_with(':'));
            all.push(("x-replaced".into(), "yes".into()));
            let refs: Vec<(&str, &str)> =
                all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.set_http_request_headers(refs);
        }
        if self.has("pseudo") {
            let seen = [":method", ":path", ":authority", ":scheme"]
                .iter()
                .map(|h| self.header(h).unwrap_or_else(|| "-".into()))
                .collect::<Vec<_>>()
                .join(" ");
            self.set_http_request_header("x-seen-pseudo", Some(&seen));
            let upper = self.header("X-Mixed-Case").unwrap_or_else(|| "-".into());
            self.set_http_request_header("x-seen-mixed", Some(&upper));
        }
        if self.has("read-body-early") {
            let early = self.get_http_request_body(0, 1024);
            self.set_http_request_header(
                "x-early-body",
                Some(if early.is_some() { "some" } else { "none" }),
            );
        }
        if self.has("properties") {
            for (path, header) in [
                (vec!["request", "path"], "x-prop-path"),
                (vec!["request", "method"], "x-prop-method"),
                (vec!["request", "host"], "x-prop-host"),
                (vec!["source", "address"], "x-prop-source"),
                (vec!["plugin_name"], "x-prop-plugin-name"),
                (vec!["plugin_root_id"], "x-prop-root-id"),
                (vec!["plugin_vm_id"], "x-prop-vm-id"),
                (vec!["request", "headers", "x-probe"], "x-prop-probe"),
                (vec!["custom", "thing"], "x-prop-custom"),
            ] {
                let v = self
                    .get_property(path)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|| "<none>".into());
                self.set_http_request_header(header, Some(&v));
            }
            self.set_property(vec!["filter", "note"], Some(b"noted"));
            let back = self
                .get_property(vec!["filter", "note"])
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            self.set_http_request_header("x-prop-set", Some(&back));
        }
        if self.has("time") {
            let secs = self
                .get_current_time()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            self.set_http_request_header("x-time", Some(&secs.to_string()));
        }
        if self.has("stdout") {
            println!("hello from stdout ctx {}", self.context_id);
            eprintln!("hello from stderr");
        }
        if self.has("log-levels") {
            for (level, name) in [
                (LogLevel::Trace, "trace"),
                (LogLevel::Debug, "debug"),
                (LogLevel::Info, "info"),
                (LogLevel::Warn, "warn"),
                (LogLevel::Error, "error"),
                (LogLevel::Critical, "critical"),
            ] {
                let _ = hostcalls::log(level, &format!("level {name}"));
            }
        }
        if self.has("metrics") {
            Self::counter("hits", 2);
            if let Ok(g) = hostcalls::define_metric(MetricType::Gauge, "inflight") {
                let _ = hostcalls::increment_metric(g, 5);
                let _ = hostcalls::increment_metric(g, -2);
            }
            if let Ok(hist) = hostcalls::define_metric(MetricType::Histogram, "latency_ms") {
                let _ = hostcalls::record_metric(hist, 42);
                let _ = hostcalls::record_metric(hist, 7);
            }
            if let Ok(c) = hostcalls::define_metric(MetricType::Counter, "hits") {
                let v = hostcalls::get_metric(c).unwrap_or(0);
                self.set_http_request_header("x-hits", Some(&v.to_string()));
                let neg = hostcalls::increment_metric(c, -1);
                self.set_http_request_header("x-negative-counter", Some(&format!("{neg:?}")));
            }
        }
        if self.has("shared-incr") {
            let n = self.shared_increment();
            self.set_http_request_header("x-counter", Some(&n.to_string()));
        }
        if self.has("shared-cas-stale") {
            let _ = self.set_shared_data("k", Some(b"v1"), None);
            let (_, cas) = self.get_shared_data("k");
            let stale = cas.map(|c| c.wrapping_add(1000));
            let r = self.set_shared_data("k", Some(b"v2"), stale);
            self.set_http_request_header("x-cas", Some(&format!("{r:?}")));
            let ok = self.set_shared_data("k", Some(b"v3"), cas);
            self.set_http_request_header("x-cas-fresh", Some(&format!("{ok:?}")));
        }
        if self.has("shared-get") {
            let key = self.header("x-key").unwrap_or_default();
            let (v, _) = self.get_shared_data(&key);
            let v = v
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| "<none>".into());
            self.set_http_request_header("x-shared", Some(&v));
        }
        if self.has("enqueue") {
            let name = self.header("x-queue").unwrap_or_else(|| "q".into());
            let item = self.header("x-item").unwrap_or_default();
            match self.resolve_shared_queue("", &name) {
                Some(id) => {
                    let r = self.enqueue_shared_queue(id, Some(item.as_bytes()));
                    self.set_http_request_header("x-enqueue", Some(&format!("{r:?}")));
                }
                None => self.set_http_request_header("x-enqueue", Some("no-queue")),
            }
        }
        if self.has("foreign") {
            let r = self.call_foreign_function("echo", Some(b"ping"));
            let v = match r {
                Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                Ok(None) => "<empty>".into(),
                Err(s) => format!("{s:?}"),
            };
            self.set_http_request_header("x-foreign", Some(&v));
            let missing = self.call_foreign_function("missing", None);
            self.set_http_request_header(
                "x-foreign-missing",
                Some(&format!("{:?}", missing.err())),
            );
        }
        if self.has("clear-route-cache") {
            let r = self.call_foreign_function("clear_route_cache", Some(b"ignored"));
            self.set_http_request_header("x-clear-route-cache", Some(&format!("{r:?}")));
        }
        if self.has("callout-bad") {
            let r = self.dispatch_http_call(
                "auth",
                vec![(":method", "GET"), (":path", "/check")],
                None,
                vec![],
                Duration::from_secs(1),
            );
            self.set_http_request_header("x-dispatch", Some(&format!("{:?}", r.err())));
            let r = self.dispatch_http_call(
                "no-such-cluster",
                vec![(":method", "GET"), (":path", "/check"), (":authority", "x")],
                None,
                vec![],
                Duration::from_secs(1),
            );
            self.set_http_request_header("x-dispatch-unknown", Some(&format!("{:?}", r.err())));
        }
        if self.has("callout") {
            let cluster = self.header("x-upstream").unwrap_or_else(|| "auth".into());
            let timeout = self
                .header("x-timeout-ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            let token = self.header("authorization").unwrap_or_default();
            match self.dispatch_http_call(
                &cluster,
                vec![
                    (":method", "POST"),
                    (":path", "/check"),
                    (":authority", "auth.local"),
                    ("x-token", &token),
                ],
                Some(b"check-body"),
                vec![],
                Duration::from_millis(timeout),
            ) {
                Ok(_) => return Action::Pause,
                Err(s) => {
                    self.send_http_response(
                        500,
                        vec![],
                        Some(format!("dispatch failed: {s:?}").as_bytes()),
                    );
                    return Action::Pause;
                }
            }
        }
        if self.has("set-tick") {
            // From the HTTP context: Envoy sets the tick period of this stream's root context.
            let _ = hostcalls::set_tick_period(Duration::from_millis(250));
        }
        if self.has("random") {
            use std::hash::BuildHasher;
            let h = std::collections::hash_map::RandomState::new().hash_one(0u64);
            self.set_http_request_header("x-random", Some(&format!("{h:016x}")));
        }
        if self.has("deny") {
            self.send_http_response(
                403,
                vec![("x-denied", "yes"), ("content-type", "text/plain")],
                Some(b"denied by plugin"),
            );
            return Action::Pause;
        }
        if self.has("close") {
            self.reset_http_request();
            return Action::Pause;
        }
        if self.has("pause") {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.request_body_size = body_size;
        if !end_of_stream {
            // Buffer until the end (trailers follow).
            return Action::Pause;
        }
        self.transform_request_body(body_size);
        if self.has("read-response-early") {
            let early = self.get_http_response_body(0, 1024);
            log::info(&format!("early response body: {}", early.is_some()));
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num: usize) -> Action {
        self.transform_request_body(self.request_body_size);
        if self.has("trailers") {
            let seen = self
                .get_http_request_trailers()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";");
            log::info(&format!("request trailers: {seen}"));
            self.add_http_request_trailer("x-trailer-seen", "yes");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num: usize, _eos: bool) -> Action {
        if self.has("response") {
            let status = self.get_http_response_header(":status").unwrap_or_default();
            self.set_http_response_header("x-plugin", Some(&format!("saw {status}")));
            self.set_http_response_header("server", None);
        }
        if self.has("clear-route-cache-late") {
            let r = self.call_foreign_function("clear_route_cache", None);
            self.set_http_response_header("x-clear-route-cache", Some(&format!("{r:?}")));
        }
        if self.has("deny-response") {
            self.send_http_response(500, vec![("x-replaced", "yes")], Some(b"response replaced"));
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.response_body_size = body_size;
        if !end_of_stream {
            return Action::Pause;
        }
        self.transform_response_body(body_size);
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num: usize) -> Action {
        self.transform_response_body(self.response_body_size);
        if self.has("response") {
            self.add_http_response_trailer("x-resp-trailer", "yes");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.has("log-done") {
            log::info(&format!("on_log ctx {}", self.context_id));
        }
    }
}
