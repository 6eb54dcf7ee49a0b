//! Several VMs, parallel harnesses, module loading errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use proxy_wasm_harness::{Harness, HarnessError, Plugin, Request, Upstream};

#[test]
fn workers_share_data_but_have_own_root_contexts() {
    let mut h = common::builder("queue=q").workers(3).build().unwrap();
    assert_eq!(h.workers(), 3);
    let mut seen = Vec::new();
    for i in 0..6 {
        let out = h
            .request_on(i % 3, Request::get("/").header("x-action", "shared-incr"))
            .unwrap();
        seen.push(out.upstream_header("x-counter").unwrap().to_string());
    }
    assert_eq!(seen, ["1", "2", "3", "4", "5", "6"]);
    // Each worker configured its own root context.
    let configured = h
        .logs()
        .iter()
        .filter(|l| l.message == "configured with 1 keys")
        .map(|l| l.worker)
        .collect::<Vec<_>>();
    assert_eq!(configured, vec![0, 1, 2]);
    // Metrics are process-wide.
    assert_eq!(h.metric("requests_total"), Some(6));
    // The queue was registered last by worker 2; an enqueue from worker 0 notifies worker 2.
    h.request_on(
        0,
        Request::get("/")
            .header("x-action", "enqueue")
            .header("x-item", "cross"),
    )
    .unwrap();
    let item = h
        .logs()
        .into_iter()
        .find(|l| l.message == "queue item: cross")
        .unwrap();
    assert_eq!(item.worker, 2);
}

#[test]
fn a_trap_kills_only_its_worker() {
    let mut h = common::builder("").workers(2).build().unwrap();
    assert!(h
        .request_on(1, Request::get("/").header("x-action", "trap"))
        .is_err());
    assert!(h.is_alive(0));
    assert!(!h.is_alive(1));
    assert!(h.request_on(0, Request::get("/")).unwrap().is_forwarded());
    assert!(matches!(
        h.request_on(5, Request::get("/")),
        Err(HarnessError::NoSuchWorker {
            worker: 5,
            workers: 2
        })
    ));
}

#[test]
fn harness_and_plugin_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Harness>();
    assert_send::<Plugin>();
    // And usable from another thread.
    let plugin = common::plugin();
    let out = std::thread::spawn(move || {
        let mut h = Harness::builder().plugin(&plugin).build().unwrap();
        h.request(Request::get("/t")).unwrap()
    })
    .join()
    .unwrap();
    assert!(out.is_forwarded());
}

#[test]
fn parallel_harnesses_do_not_share_state() {
    let plugin = common::plugin();
    let handles: Vec<_> = (0..4)
        .map(|n| {
            let plugin = plugin.clone();
            std::thread::spawn(move || {
                let mut h = Harness::builder().plugin(&plugin).build().unwrap();
                let mut last = String::new();
                for _ in 0..=n {
                    let out = h
                        .request(Request::get("/").header("x-action", "shared-incr"))
                        .unwrap();
                    last = out.upstream_header("x-counter").unwrap().to_string();
                }
                (n, last, h.metric("requests_total"))
            })
        })
        .collect();
    for handle in handles {
        let (n, last, total) = handle.join().unwrap();
        assert_eq!(last, (n + 1).to_string());
        assert_eq!(total, Some(n as i64 + 1));
    }
}

#[test]
fn unknown_import_fails_load_naming_it() {
    let wasm = wat::parse_str(
        r#"(module
            (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
            (import "env" "proxy_frobnicate" (func (param i32) (result i32)))
            (memory (export "memory") 1))"#,
    )
    .unwrap();
    let err = Plugin::from_bytes(&wasm).unwrap_err();
    assert!(
        matches!(&err, HarnessError::UnknownImport { module, name } if module == "env" && name == "proxy_frobnicate"),
        "{err}"
    );
    assert!(err.to_string().contains("env::proxy_frobnicate"), "{err}");
}

#[test]
fn out_of_bounds_pointer_traps() {
    let wasm = wat::parse_str(
        r#"(module
            (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
            (func (export "proxy_on_context_create") (param i32 i32))
            (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                (drop (call $log (i32.const 2) (i32.const 65000) (i32.const 1000)))
                i32.const 0))"#,
    )
    .unwrap();
    let mut h = Harness::builder().module_bytes(wasm).build().unwrap();
    let err = h.request(Request::get("/")).unwrap_err();
    assert!(
        err.to_string()
            .contains("out-of-bounds guest pointer in proxy_log"),
        "{err}"
    );
}

#[test]
fn minimal_module_without_sdk_forwards() {
    // A hand-written module exporting only what it needs: the harness must not require the rest.
    let wasm = wat::parse_str(
        r#"(module
            (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "x-wat" )
            (data (i32.const 32) "yes")
            (func (export "malloc") (param i32) (result i32) i32.const 4096)
            (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                (drop (call $add (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 32) (i32.const 3)))
                i32.const 0))"#,
    )
    .unwrap();
    let mut h = Harness::builder().module_bytes(wasm).build().unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert_eq!(out.upstream_header("x-wat"), Some("yes"));
}

#[test]
fn invalid_module_is_an_error() {
    let err = Harness::builder()
        .module_bytes(b"not wasm".to_vec())
        .build()
        .unwrap_err();
    assert!(matches!(err, HarnessError::Compile(_)), "{err}");
    let err = Harness::builder()
        .module_file("/nonexistent/x.wasm")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x.wasm"), "{err}");
    assert!(matches!(
        Harness::builder().build(),
        Err(HarnessError::NoModule)
    ));
}

#[test]
fn http_call_response_is_delivered_to_the_root_context() {
    // The ABI and Envoy: `proxy_on_http_call_response` gets the plugin (root) context id; the module finds
    // its stream itself and switches to it with `proxy_set_effective_context`. This one writes the id it got
    // into a request header.
    let wasm = wat::parse_str(
        r#"(module
            (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
            (import "env" "proxy_set_effective_context" (func $eff (param i32) (result i32)))
            (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
            (import "env" "proxy_continue_stream" (func $cont (param i32) (result i32)))
            (memory (export "memory") 1)
            (global $stream (mut i32) (i32.const 0))
            (data (i32.const 16) "up")
            (data (i32.const 32) "x-ctx")
            (data (i32.const 100) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\01\00\00\00:method\00GET\00:path\00/\00:authority\00a\00")
            (data (i32.const 200) "\00\00\00\00")
            (func (export "malloc") (param i32) (result i32) i32.const 4096)
            (func (export "proxy_on_context_create") (param i32 i32))
            (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                (global.set $stream (local.get 0))
                (drop (call $call (i32.const 16) (i32.const 2) (i32.const 100) (i32.const 61)
                    (i32.const 0) (i32.const 0) (i32.const 200) (i32.const 4) (i32.const 1000) (i32.const 240)))
                i32.const 1)
            (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
                (i32.store8 (i32.const 300) (i32.add (i32.const 48) (local.get 0)))
                (drop (call $eff (global.get $stream)))
                (drop (call $add (i32.const 0) (i32.const 32) (i32.const 5) (i32.const 300) (i32.const 1)))
                (drop (call $cont (i32.const 0)))))"#,
    )
    .unwrap();
    let mut h = Harness::builder()
        .module_bytes(wasm)
        .upstream(
            "up",
            Upstream::delayed(Duration::from_millis(1), Upstream::json(200, "{}")),
        )
        .build()
        .unwrap();
    let out = h.request(Request::get("/")).unwrap();
    assert!(out.is_paused(), "{out:?}");
    h.advance(Duration::from_millis(1)).unwrap();
    let out = h.outcome(out.stream()).unwrap();
    assert_eq!(out.upstream_header("x-ctx"), Some("1"), "{out:?}");
    assert_ne!(
        h.callouts()[0].context_id,
        1,
        "recorded as the stream's callout"
    );
}
