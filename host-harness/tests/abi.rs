//! Host function behaviour, exercised through the test plugin.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use proxy_wasm_harness::{
    Callback, CalloutResult, HarnessError, HeaderEdit, LogLevel, Outcome, Phase, Request,
    RequestPhase, RequestVerdict, Response, Status, Upstream, CLEAR_ROUTE_CACHE,
};

fn act(action: &str) -> Request {
    Request::get("/api").header("x-action", action)
}

#[test]
fn headers_set_add_remove() {
    let mut h = common::harness("");
    let out = h
        .request(
            Request::get("/api")
                .header("x-set", "x-user=alice")
                .header("x-add", "x-extra=1")
                .header("x-drop", "gone")
                .header("x-remove", "x-drop"),
        )
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-user"), Some("alice"));
    assert_eq!(out.upstream_header("x-extra"), Some("1"));
    assert_eq!(out.upstream_header("x-drop"), None);
    assert!(h.violations().is_empty(), "{:?}", h.violations());
}

#[test]
fn set_header_map_pairs_replaces_all() {
    let mut h = common::harness("");
    let out = h.request(act("replace-all").header("x-old", "1")).unwrap();
    let Outcome::Forwarded {
        upstream_headers, ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(upstream_headers.get("x-replaced"), Some("yes"));
    assert_eq!(upstream_headers.get("x-old"), None);
    assert_eq!(upstream_headers.get(":path"), Some("/api"));
}

#[test]
fn pseudo_headers_and_lowercase_names() {
    let mut h = common::harness("");
    let out = h
        .request(
            Request::new("PUT", "/v1/items?x=1")
                .authority("api.example.com")
                .scheme("http")
                .header("x-action", "pseudo,echo-headers")
                .header("X-Mixed-Case", "v"),
        )
        .unwrap();
    assert_eq!(
        out.upstream_header("x-seen-pseudo"),
        Some("PUT /v1/items?x=1 api.example.com http")
    );
    assert_eq!(out.upstream_header("x-seen-mixed"), Some("v"));
    let logs = h.log_messages();
    let first: Vec<&String> = logs
        .iter()
        .filter(|l| l.starts_with("hdr "))
        .take(5)
        .collect();
    assert_eq!(first[0], "hdr :authority=api.example.com");
    assert_eq!(first[1], "hdr :path=/v1/items?x=1");
    assert_eq!(first[2], "hdr :method=PUT");
    assert_eq!(first[3], "hdr :scheme=http");
    assert!(h.logs_contain("hdr x-mixed-case=v"), "{logs:?}");
}

#[test]
fn local_response_ends_stream() {
    let mut h = common::harness("");
    let out = h.request(act("deny").header("x-set", "x-never=1")).unwrap();
    match out {
        Outcome::LocalResponse {
            status,
            headers,
            body,
            forwarded,
            ..
        } => {
            assert_eq!(status, 403);
            assert_eq!(headers.get("x-denied"), Some("yes"));
            // Envoy's sendLocalReply keeps the plugin's headers (its content-type too) and adds
            // content-length; the connection manager adds date and server on the way out.
            let names: Vec<&str> = headers.iter().map(|(k, _)| k).collect();
            assert_eq!(
                names,
                [
                    "x-denied",
                    "content-type",
                    "content-length",
                    "date",
                    "server"
                ],
                "{headers:?}"
            );
            assert_eq!(headers.get("content-type"), Some("text/plain"));
            assert_eq!(headers.get("content-length"), Some("16"));
            assert_eq!(headers.get("server"), Some("envoy"));
            assert_eq!(body, b"denied by plugin");
            assert!(!forwarded);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn local_response_from_response_phase_replaces_origin_response() {
    let mut h = common::harness("");
    let out = h.request(act("deny-response")).unwrap();
    match out {
        Outcome::LocalResponse {
            status,
            body,
            forwarded,
            ..
        } => {
            assert_eq!(status, 500);
            assert_eq!(body, b"response replaced");
            assert!(forwarded);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pause_and_continue_from_host() {
    let mut h = common::harness("");
    let out = h.request(act("pause")).unwrap();
    let Outcome::Paused { stream, phase } = out else {
        panic!("{out:?}")
    };
    assert_eq!(phase, Phase::RequestHeaders);
    assert_eq!(h.paused_streams(), vec![stream]);
    let out = h.resume(stream).unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert!(h.paused_streams().is_empty());
}

#[test]
fn close_stream_resets() {
    let mut h = common::harness("");
    let out = h.request(act("close")).unwrap();
    assert!(matches!(out, Outcome::Reset { .. }), "{out:?}");
}

#[test]
fn callout_immediate_response_resumes_request() {
    let mut h = common::builder("")
        .upstream(
            "auth",
            Upstream::handler(|req| {
                assert_eq!(req.method(), "POST");
                Response::new(200).header("x-user", "bob").body(format!(
                    "checked {}",
                    req.headers.get("x-token").unwrap_or("")
                ))
            }),
        )
        .build()
        .unwrap();
    let out = h
        .request(act("callout").header("authorization", "Bearer t1"))
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-user"), Some("bob"));
    assert_eq!(out.upstream_header("x-callout-status"), Some("200"));
    assert_eq!(
        out.upstream_header("x-callout-body"),
        Some("checked Bearer t1")
    );
    let calls = h.callouts();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].request.path(), "/check");
    assert_eq!(calls[0].request.body, b"check-body");
    assert_eq!(calls[0].request.timeout, Duration::from_millis(1000));
    assert!(calls[0].delivered);
}

#[test]
fn delayed_callout_holds_request_until_time_passes() {
    let mut h = common::builder("")
        .upstream(
            "auth",
            Upstream::delayed(
                Duration::from_millis(300),
                Upstream::fixed(200, [("x-user", "carol")], "ok"),
            ),
        )
        .build()
        .unwrap();
    let out = h.request(act("callout")).unwrap();
    let Outcome::Paused { stream, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(h.pending_callouts().len(), 1);
    h.advance(Duration::from_millis(299)).unwrap();
    assert!(h.outcome(stream).unwrap().is_paused());
    h.advance(Duration::from_millis(1)).unwrap();
    let out = h.outcome(stream).unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-user"), Some("carol"));
    assert!(h.pending_callouts().is_empty());
}

#[test]
fn callout_timeout_is_synthetic_504() {
    let mut h = common::builder("")
        .upstream("auth", Upstream::hang())
        .build()
        .unwrap();
    let out = h
        .request(act("callout").header("x-timeout-ms", "250"))
        .unwrap();
    let stream = out.stream();
    assert!(out.is_paused());
    let out = h
        .advance_until_done(stream, Duration::from_secs(10))
        .unwrap();
    match out {
        Outcome::LocalResponse {
            status,
            headers,
            body,
            ..
        } => {
            assert_eq!(status, 503);
            assert_eq!(headers.get("x-callout-status"), Some("504"));
            assert_eq!(
                String::from_utf8_lossy(&body),
                "callout answered 504: upstream request timeout"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.elapsed(), Duration::from_millis(250));
    assert_eq!(h.callouts()[0].result, CalloutResult::TimedOut);
}

#[test]
fn slow_upstream_past_timeout_times_out() {
    let mut h = common::builder("")
        .upstream(
            "auth",
            Upstream::delayed(
                Duration::from_secs(5),
                Upstream::fixed(200, Vec::<(String, String)>::new(), ""),
            ),
        )
        .build()
        .unwrap();
    let out = h
        .request(act("callout").header("x-timeout-ms", "1000"))
        .unwrap();
    let out = h
        .advance_until_done(out.stream(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(out.status(), Some(503));
    assert_eq!(out.response_header("x-callout-status"), Some("504"));
    assert_eq!(h.elapsed(), Duration::from_secs(1));
}

#[test]
fn callout_reset_delivers_zero_headers_and_broken_connection() {
    let mut h = common::builder("")
        .upstream("auth", Upstream::reset())
        .build()
        .unwrap();
    let out = h.request(act("callout")).unwrap();
    match out {
        Outcome::LocalResponse { status, body, .. } => {
            assert_eq!(status, 502);
            // BrokenConnection = 11, message "reset" (Envoy).
            assert_eq!(
                String::from_utf8_lossy(&body),
                "callout failed: status 11 reset"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn callout_validation_needs_pseudo_headers_and_known_cluster() {
    let mut h = common::builder("")
        .upstream("auth", Upstream::json(200, "{}"))
        .build()
        .unwrap();
    let out = h.request(act("callout-bad")).unwrap();
    assert_eq!(out.upstream_header("x-dispatch"), Some("Some(BadArgument)"));
    assert_eq!(
        out.upstream_header("x-dispatch-unknown"),
        Some("Some(BadArgument)")
    );
    assert!(h.callouts().is_empty());
}

#[test]
fn upstream_sequence_and_schedule() {
    let mut h = common::builder("")
        .upstream(
            "auth",
            Upstream::sequence([
                Upstream::fixed(500, Vec::<(String, String)>::new(), "first"),
                Upstream::json(200, "second"),
            ]),
        )
        .upstream(
            "sched",
            Upstream::schedule([
                (
                    Duration::ZERO,
                    Upstream::fixed(503, Vec::<(String, String)>::new(), "early"),
                ),
                (Duration::from_secs(60), Upstream::json(200, "late")),
            ]),
        )
        .build()
        .unwrap();
    assert_eq!(h.request(act("callout")).unwrap().status(), Some(503));
    let out = h.request(act("callout")).unwrap();
    assert_eq!(out.upstream_header("x-callout-body"), Some("second"));
    assert_eq!(
        h.request(act("callout"))
            .unwrap()
            .upstream_header("x-callout-body"),
        Some("second")
    );

    assert_eq!(
        h.request(act("callout").header("x-upstream", "sched"))
            .unwrap()
            .status(),
        Some(503)
    );
    h.advance(Duration::from_secs(60)).unwrap();
    let out = h
        .request(act("callout").header("x-upstream", "sched"))
        .unwrap();
    assert_eq!(out.upstream_header("x-callout-body"), Some("late"));
}

#[test]
fn callout_of_finished_stream_is_cancelled() {
    let mut h = common::builder("")
        .upstream(
            "auth",
            Upstream::delayed(Duration::from_secs(1), Upstream::json(200, "{}")),
        )
        .build()
        .unwrap();
    let out = h.request(act("callout")).unwrap();
    assert!(out.is_paused());
    let out = h.reset_stream(out.stream()).unwrap();
    assert!(matches!(out, Outcome::Reset { .. }), "{out:?}");
    h.advance(Duration::from_secs(1)).unwrap();
    let calls = h.callouts();
    assert!(calls[0].cancelled && !calls[0].delivered, "{calls:?}");
    assert!(h.violations().is_empty(), "{:?}", h.violations());
}

#[test]
fn ticks_fire_with_virtual_time() {
    let mut h = common::harness("tick_ms=100");
    assert_eq!(h.tick_period(0), Some(Duration::from_millis(100)));
    assert_eq!(h.metric("ticks"), None);
    h.advance(Duration::from_millis(99)).unwrap();
    assert_eq!(h.metric("ticks"), None);
    h.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(h.metric("ticks"), Some(1));
    h.advance(Duration::from_millis(1000)).unwrap();
    assert_eq!(h.metric("ticks"), Some(11));
    let (last, _) = h.shared_data("last_tick").unwrap();
    let expected = proxy_wasm_harness::DEFAULT_START_UNIX_SECS + 1;
    assert_eq!(String::from_utf8(last).unwrap(), expected.to_string());
}

#[test]
fn root_context_callout_from_tick() {
    let mut h = common::builder("tick_ms=1000\ncallout_on_tick=auth")
        .upstream(
            "auth",
            Upstream::delayed(Duration::from_millis(500), Upstream::json(200, "{}")),
        )
        .build()
        .unwrap();
    h.advance(Duration::from_millis(1000)).unwrap();
    assert_eq!(h.pending_callouts().len(), 1);
    assert!(h.shared_data("tick_callout_status").is_none());
    h.advance(Duration::from_millis(500)).unwrap();
    assert_eq!(h.shared_data("tick_callout_status").unwrap().0, b"200");
    assert_eq!(
        h.callouts()[0].context_id,
        1,
        "dispatched from the root context"
    );
}

#[test]
fn shared_data_cas() {
    let mut h = common::harness("");
    let out = h.request(act("shared-cas-stale")).unwrap();
    assert_eq!(out.upstream_header("x-cas"), Some("Err(CasMismatch)"));
    assert_eq!(out.upstream_header("x-cas-fresh"), Some("Ok(())"));
    assert_eq!(h.shared_data("k").unwrap().0, b"v3");
    for i in 1..=3 {
        let out = h.request(act("shared-incr")).unwrap();
        assert_eq!(
            out.upstream_header("x-counter"),
            Some(i.to_string().as_str())
        );
    }
    h.set_shared_data("from-test", "hello");
    let out = h
        .request(act("shared-get").header("x-key", "from-test"))
        .unwrap();
    assert_eq!(out.upstream_header("x-shared"), Some("hello"));
    let out = h
        .request(act("shared-get").header("x-key", "absent"))
        .unwrap();
    assert_eq!(out.upstream_header("x-shared"), Some("<none>"));
}

#[test]
fn shared_queue_enqueue_and_ready() {
    let mut h = common::harness("queue=q");
    let out = h.request(act("enqueue").header("x-item", "one")).unwrap();
    assert_eq!(out.upstream_header("x-enqueue"), Some("Ok(())"));
    assert!(h.logs_contain("queue item: one"), "{:?}", h.log_messages());
    h.enqueue("q", "two").unwrap();
    assert!(h.logs_contain("queue item: two"));
    assert_eq!(h.metric("queue_items"), Some(2));
    assert_eq!(h.queue_items("q"), Some(vec![]));
    let out = h.request(act("enqueue").header("x-queue", "nope")).unwrap();
    assert_eq!(out.upstream_header("x-enqueue"), Some("no-queue"));
    assert!(h.enqueue("nope", "x").is_err());
}

#[test]
fn metrics_counter_gauge_histogram() {
    let mut h = common::harness("");
    let out = h.request(act("metrics")).unwrap();
    assert_eq!(h.metric("requests_total"), Some(1));
    assert_eq!(h.metric("hits"), Some(2));
    assert_eq!(out.upstream_header("x-hits"), Some("2"));
    assert_eq!(
        out.upstream_header("x-negative-counter"),
        Some("Err(BadArgument)")
    );
    assert_eq!(h.metric("inflight"), Some(3));
    assert_eq!(h.histogram("latency_ms"), Some(vec![42, 7]));
    h.request(act("metrics")).unwrap();
    assert_eq!(h.metric("hits"), Some(4));
    assert_eq!(h.metric("requests_total"), Some(2));
}

#[test]
fn request_body_and_trailers() {
    let mut h = common::harness("");
    let out = h
        .request(
            Request::post("/upload")
                .header("x-action", "body,trailers")
                .body("hello")
                .trailer("x-checksum", "abc"),
        )
        .unwrap();
    let Outcome::Forwarded {
        upstream_body,
        upstream_trailers,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(upstream_body, b"HELLO");
    assert_eq!(upstream_trailers.get("x-checksum"), Some("abc"));
    assert_eq!(upstream_trailers.get("x-trailer-seen"), Some("yes"));
    assert!(h.logs_contain("request body: hello"));
    assert!(h.logs_contain("request trailers: x-checksum=abc"));
}

#[test]
fn response_headers_body_trailers() {
    let mut h = common::harness("");
    let origin = Response::new(201)
        .header("server", "origin")
        .body("payload")
        .trailer("grpc-status", "0");
    let out = h.request(act("response").respond_with(origin)).unwrap();
    let Outcome::Forwarded { response, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(response.status, 201);
    assert_eq!(response.headers.get("x-plugin"), Some("saw 201"));
    // The plugin removed the origin's `server`; Envoy's connection manager writes its own after the
    // response callbacks (server_header_transformation OVERWRITE).
    assert_eq!(response.headers.get("server"), Some("envoy"));
    assert_eq!(response.body, b"payload!");
    assert_eq!(response.trailers.get("x-resp-trailer"), Some("yes"));
}

#[test]
fn early_buffer_access_is_a_violation() {
    let mut h = common::harness("");
    let out = h
        .request(
            Request::post("/x")
                .header("x-action", "read-body-early,read-response-early")
                .body("data"),
        )
        .unwrap();
    assert_eq!(out.upstream_header("x-early-body"), Some("none"));
    let v = h.violations();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].callback, Some(Callback::RequestHeaders));
    assert_eq!(v[0].hostcall, "proxy_get_buffer_bytes");
    assert!(v[0].message.contains("RequestBody"), "{}", v[0]);
    assert_eq!(v[1].callback, Some(Callback::RequestBody));
    assert!(v[1].message.contains("ResponseBody"), "{}", v[1]);
    assert!(h.logs_contain("early response body: false"));
}

#[test]
fn properties() {
    let mut h = common::builder("")
        .plugin_name("my-plugin")
        .root_id("my-root")
        .vm_id("my-vm")
        .property("custom.thing", "value")
        .build()
        .unwrap();
    let out = h
        .request(
            Request::new("DELETE", "/p?q=1")
                .authority("host.test")
                .source_address("10.1.2.3:5555")
                .header("x-action", "properties")
                .header("x-probe", "probed"),
        )
        .unwrap();
    let hv = |n: &str| out.upstream_header(n).map(str::to_string);
    assert_eq!(hv("x-prop-path").as_deref(), Some("/p?q=1"));
    assert_eq!(hv("x-prop-method").as_deref(), Some("DELETE"));
    assert_eq!(hv("x-prop-host").as_deref(), Some("host.test"));
    assert_eq!(hv("x-prop-source").as_deref(), Some("10.1.2.3:5555"));
    assert_eq!(hv("x-prop-plugin-name").as_deref(), Some("my-plugin"));
    assert_eq!(hv("x-prop-root-id").as_deref(), Some("my-root"));
    assert_eq!(hv("x-prop-vm-id").as_deref(), Some("my-vm"));
    assert_eq!(hv("x-prop-probe").as_deref(), Some("probed"));
    assert_eq!(hv("x-prop-custom").as_deref(), Some("value"));
    assert_eq!(hv("x-prop-set").as_deref(), Some("noted"));
    assert_eq!(h.property("plugin_name"), Some(b"my-plugin".to_vec()));
}

#[test]
fn foreign_functions() {
    let mut h = common::builder("")
        .foreign_function("echo", |args| {
            let mut v = b"echo:".to_vec();
            v.extend_from_slice(args);
            Ok(v)
        })
        .build()
        .unwrap();
    let out = h.request(act("foreign")).unwrap();
    assert_eq!(out.upstream_header("x-foreign"), Some("echo:ping"));
    assert_eq!(
        out.upstream_header("x-foreign-missing"),
        Some("Some(NotFound)")
    );
    h.register_foreign_function("echo", |_| Err(Status::BadArgument));
    let out = h.request(act("foreign")).unwrap();
    assert_eq!(out.upstream_header("x-foreign"), Some("BadArgument"));
}

#[test]
fn clear_route_cache_from_the_root_context_is_ok_and_counts_nothing() {
    let mut h = common::harness("clear_route_cache_on_configure=1");
    assert!(
        h.logs_contain("clear_route_cache at configure: Ok(None)"),
        "{:?}",
        h.log_messages()
    );
    let out = h.request(Request::get("/api")).unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.route_cache_cleared(), 0);
}

#[test]
fn clear_route_cache_counts_on_a_stream_before_its_route_is_used() {
    let mut h = common::harness("");
    let out = h
        .request(act("clear-route-cache,clear-route-cache-late"))
        .unwrap();
    assert_eq!(out.upstream_header("x-clear-route-cache"), Some("Ok(None)"));
    // From the response headers the route was already used: Ok, but nothing to match again.
    assert_eq!(out.response_header("x-clear-route-cache"), Some("Ok(None)"));
    let Outcome::Forwarded {
        route_cache_cleared,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(route_cache_cleared, 1);

    let out = h.request(act("clear-route-cache,deny")).unwrap();
    assert_eq!(out.status(), Some(403), "{out:?}");
    assert_eq!(out.route_cache_cleared(), 1, "asked before the local reply");

    let out = h.request(act("deny")).unwrap();
    assert_eq!(out.route_cache_cleared(), 0);
    assert!(h.violations().is_empty(), "{:?}", h.violations());
}

#[test]
fn clear_route_cache_removed_answers_not_found() {
    let mut h = common::builder("clear_route_cache_on_configure=1")
        .without_foreign_function(CLEAR_ROUTE_CACHE)
        .build()
        .unwrap();
    assert!(
        h.logs_contain("clear_route_cache at configure: Err(NotFound)"),
        "{:?}",
        h.log_messages()
    );
    let out = h.request(act("clear-route-cache")).unwrap();
    assert_eq!(
        out.upstream_header("x-clear-route-cache"),
        Some("Err(NotFound)")
    );
    assert_eq!(out.route_cache_cleared(), 0);

    // A test's own function under the name is an ordinary one: its answer, no count.
    h.register_foreign_function(CLEAR_ROUTE_CACHE, |_| Ok(b"mine".to_vec()));
    let out = h.request(act("clear-route-cache")).unwrap();
    assert_eq!(
        out.upstream_header("x-clear-route-cache"),
        Some("Ok(Some([109, 105, 110, 101]))")
    );
    assert_eq!(out.route_cache_cleared(), 0);
}

#[test]
fn abi_0_1_clear_route_cache_counts_like_the_foreign_function() {
    let wasm = wat::parse_str(
        r#"(module
            (import "env" "proxy_clear_route_cache" (func $clear (result i32)))
            (memory (export "memory") 1)
            (func (export "malloc") (param i32) (result i32) i32.const 4096)
            (func (export "proxy_on_context_create") (param i32 i32))
            (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                (drop (call $clear))
                (drop (call $clear))
                i32.const 0)
            (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
                (drop (call $clear))
                i32.const 0))"#,
    )
    .unwrap();
    let mut h = proxy_wasm_harness::Harness::builder()
        .module_bytes(wasm)
        .build()
        .unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(out.route_cache_cleared(), 2, "{out:?}");
}

#[test]
fn trap_is_an_error_and_kills_the_vm() {
    let mut h = common::harness("");
    let err = h.request(act("trap")).unwrap_err();
    match &err {
        HarnessError::Trap {
            callback,
            message,
            worker,
        } => {
            assert_eq!(*callback, Callback::RequestHeaders);
            assert_eq!(*worker, 0);
            assert!(message.contains("deliberate trap requested"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!h.is_alive(0));
    let again = h.request(Request::get("/")).unwrap_err();
    assert!(
        matches!(again, HarnessError::VmDead { worker: 0, .. }),
        "{again}"
    );
}

#[test]
fn runaway_loop_is_stopped_by_fuel() {
    let mut h = common::builder("")
        .fuel_per_callback(Some(20_000_000))
        .build()
        .unwrap();
    let err = h.request(act("loop")).unwrap_err();
    assert!(
        matches!(
            err,
            HarnessError::OutOfFuel {
                callback: Callback::RequestHeaders,
                budget: 20_000_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("runaway"), "{err}");
}

#[test]
fn failing_configure_is_an_error_with_the_plugin_message() {
    let err = common::builder("fail_configure=1").build().unwrap_err();
    assert!(
        matches!(err, HarnessError::ConfigureFailed { worker: 0, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("invalid configuration: fail_configure is set"),
        "{err}"
    );
    let err = common::builder("trap_configure=1").build().unwrap_err();
    assert!(
        matches!(
            err,
            HarnessError::Trap {
                callback: Callback::Configure,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn vm_configuration_is_readable_at_start() {
    let h = common::builder("")
        .vm_config(b"vm-cfg".to_vec())
        .build()
        .unwrap();
    assert!(
        h.logs_contain("vm config: vm-cfg"),
        "{:?}",
        h.log_messages()
    );
    assert!(h.logs_contain("configured with 0 keys"));
}

#[test]
fn logs_levels_and_stdout_are_captured() {
    let mut h = common::builder("")
        .log_level(LogLevel::Info)
        .build()
        .unwrap();
    h.take_logs();
    h.request(act("log-levels,stdout")).unwrap();
    let logs = h.logs();
    let levels: Vec<LogLevel> = logs
        .iter()
        .filter(|l| l.message.starts_with("level "))
        .map(|l| l.level)
        .collect();
    assert_eq!(
        levels,
        vec![
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Critical
        ]
    );
    let out = logs
        .iter()
        .find(|l| l.message.starts_with("hello from stdout"))
        .unwrap();
    assert_eq!(out.level, LogLevel::Info);
    assert_eq!(out.context_id, 2);
    assert!(logs
        .iter()
        .any(|l| l.message == "hello from stderr" && l.level == LogLevel::Error));
}

#[test]
fn virtual_time_is_what_the_plugin_sees() {
    let mut h = common::harness("");
    let out = h.request(act("time")).unwrap();
    assert_eq!(
        out.upstream_header("x-time"),
        Some(
            proxy_wasm_harness::DEFAULT_START_UNIX_SECS
                .to_string()
                .as_str()
        )
    );
    h.advance(Duration::from_secs(3600)).unwrap();
    let out = h.request(act("time")).unwrap();
    let expected = proxy_wasm_harness::DEFAULT_START_UNIX_SECS + 3600;
    assert_eq!(
        out.upstream_header("x-time"),
        Some(expected.to_string().as_str())
    );
}

#[test]
fn on_log_runs_at_stream_end() {
    let mut h = common::harness("");
    h.request(act("log-done")).unwrap();
    assert!(h.logs_contain("on_log ctx 2"));
}

#[test]
fn pause_in_headers_holds_the_body_like_envoy_unless_allow_on_headers_stop_iteration() {
    // Envoy's default (`allow_on_headers_stop_iteration: false`) turns a headers Pause into
    // StopAllIterationAndWatermark: the body callback and the origin wait for the callout's answer.
    let auth = || Upstream::delayed(Duration::from_millis(10), Upstream::json(200, "{}"));
    let req = || Request::post("/p").header("x-action", "callout").body("b");
    let mut h = common::builder("")
        .upstream("auth", auth())
        .build()
        .unwrap();
    let out = h.request(req()).unwrap();
    assert!(
        matches!(
            out,
            Outcome::Paused {
                phase: Phase::RequestHeaders,
                ..
            }
        ),
        "{out:?}"
    );
    h.advance(Duration::from_millis(10)).unwrap();
    let out = h.outcome(out.stream()).unwrap().clone();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-callout-status"), Some("200"));
    // With the knob set, Envoy still delivers the body to the paused filter; a body callback that returns
    // Continue lets the request go on before the callout answers.
    let mut h = common::builder("")
        .allow_on_headers_stop_iteration(true)
        .upstream("auth", auth())
        .build()
        .unwrap();
    let out = h.request(req()).unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert_eq!(out.upstream_header("x-callout-status"), None);
    assert_eq!(h.callouts().len(), 1);
}

#[test]
fn tick_period_set_from_an_http_context_applies_to_the_root_context() {
    // Envoy's Context::setTickPeriod sets the period of the stream's root context; no violation.
    let mut h = common::harness("");
    assert_eq!(h.tick_period(0), None);
    let out = h.request(act("set-tick")).unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert!(h.violations().is_empty(), "{:?}", h.violations());
    assert_eq!(h.tick_period(0), Some(Duration::from_millis(250)));
    h.advance(Duration::from_millis(250)).unwrap();
    assert_eq!(h.metric("ticks"), Some(1), "the root context ticked");
}

#[test]
fn request_phase_reports_header_edits_in_order() {
    let mut h = common::harness("");
    let req = Request::get("/api")
        .header("x-set", "x-user=alice")
        .header("x-add", "x-extra=1")
        .header("x-drop", "gone")
        .header("x-remove", "x-drop");
    let original = req.header_map();
    let verdict = h.request_phase(req).unwrap();
    let RequestPhase::Decided(RequestVerdict::Forward { edits, headers }) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(
        edits,
        [
            HeaderEdit::Set("x-user".into(), "alice".into()),
            HeaderEdit::Add("x-extra".into(), "1".into()),
            HeaderEdit::Remove("x-drop".into()),
        ]
    );
    let mut replayed = original;
    for e in &edits {
        e.apply(&mut replayed);
    }
    assert_eq!(replayed, headers);
    assert!(h.violations().is_empty(), "{:?}", h.violations());
    // The origin never saw it and the response callbacks never ran.
    assert!(h.paused_streams().is_empty());
}

#[test]
fn request_phase_edits_replay_a_full_replacement() {
    let mut h = common::harness("");
    let req = act("replace-all").header("x-old", "1");
    let original = req.header_map();
    let RequestPhase::Decided(RequestVerdict::Forward { edits, headers }) =
        h.request_phase(req).unwrap()
    else {
        panic!("not forwarded")
    };
    let mut replayed = original;
    for e in &edits {
        e.apply(&mut replayed);
    }
    assert_eq!(replayed, headers);
    assert_eq!(headers.get("x-replaced"), Some("yes"));
    assert_eq!(headers.get("x-old"), None);
}

#[test]
fn request_phase_reports_the_local_reply() {
    let mut h = common::harness("");
    let verdict = h.request_phase(act("deny")).unwrap();
    match verdict {
        RequestPhase::Decided(RequestVerdict::Respond {
            status,
            headers,
            body,
            ..
        }) => {
            assert_eq!(status, 403);
            assert_eq!(headers.get("x-denied"), Some("yes"));
            assert_eq!(body, b"denied by plugin");
        }
        other => panic!("{other:?}"),
    }
    let closed = h.request_phase(act("close")).unwrap();
    assert_eq!(closed, RequestPhase::Decided(RequestVerdict::Reset));
}

#[test]
fn request_phase_waits_for_a_callout() {
    let mut h = common::builder("")
        .upstream(
            "auth",
            Upstream::delayed(Duration::from_millis(100), Upstream::json(200, "ok")),
        )
        .build()
        .unwrap();
    let RequestPhase::Paused { stream } = h.request_phase(act("callout")).unwrap() else {
        panic!("should wait for the callout")
    };
    assert!(h.request_verdict(stream).is_none());
    h.advance(Duration::from_millis(100)).unwrap();
    match h.request_verdict(stream) {
        Some(RequestVerdict::Forward { edits, .. }) => {
            assert!(
                edits.contains(&HeaderEdit::Set("x-callout-status".into(), "200".into())),
                "{edits:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn random_is_the_os_csprng_unless_seeded() {
    let random = |b: proxy_wasm_harness::HarnessBuilder| {
        let mut h = b.build().unwrap();
        let out = h.request(act("random")).unwrap();
        out.upstream_header("x-random").unwrap().to_string()
    };
    let a = random(common::builder(""));
    let b = random(common::builder(""));
    assert_ne!(a, b, "two OS-seeded VMs agree only with probability 2^-64");
    let c = random(common::builder("").insecure_seeded_random(7));
    let d = random(common::builder("").seed(7));
    assert_eq!(c, d, "seed() is the same insecure deterministic generator");
}
