//! The agent over a real socket, spoken to as HAProxy does (the codec's frames, byte for byte on the
//! wire), hosting the harness's test plugin: decisions, a trapping VM refused and replaced, runaway
//! callbacks, garbage frames, health checks.
// Test helpers outside #[test] functions: a failed setup is the test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use portcullis_spoa::plan::{Plan, Slot};
use portcullis_spoa::server::{self, ServerSettings};
use portcullis_spoa::spop::{
    decode_frame, encode_frame, encode_varint, frame_length, Action, Frame, KvList, Message,
    TypedData,
};
use portcullis_spoa::upstreams::{CalloutSettings, Client, Clusters};
use portcullis_spoa::workers::{AgentStats, VmPool, VmSettings};
use proxy_wasm_harness::{LogLevel, Plugin, SharedState};

fn test_plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let manifest =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../host-harness/test-plugin/Cargo.toml");
        let wasm = proxy_wasm_harness::build_wasm(&manifest).expect("build the test plugin");
        Plugin::from_file(wasm).expect("compile the test plugin")
    })
}

struct Agent {
    address: std::net::SocketAddr,
    stats: Arc<AgentStats>,
}

fn agent(max_frame_size: u32) -> Agent {
    let plan = Plan {
        slots: vec![Slot {
            name: "x-test".into(),
            owned: false,
        }],
        always_removed: Vec::new(),
        rewrites_path: false,
        hold_ms: 1000,
        clusters: Vec::new(),
        routing: None,
    };
    let settings = VmSettings {
        plugin: test_plugin().clone(),
        plugin_config: Vec::new(),
        plugin_name: "test".into(),
        root_id: "test".into(),
        log_level: LogLevel::Warn,
        hold_limit: Duration::from_millis(plan.hold_ms),
        callback_budget: Duration::from_millis(300),
    };
    let client = Client::new(Clusters::default(), CalloutSettings::default()).unwrap();
    let stats = Arc::new(AgentStats::default());
    let pool = VmPool::start(
        1,
        settings,
        Arc::new(plan),
        client,
        SharedState::new("test"),
        stats.clone(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let settings = ServerSettings {
        max_frame_size,
        ..ServerSettings::default()
    };
    std::thread::spawn(move || server::serve(listener, Arc::new(pool), settings));
    Agent { address, stats }
}

fn kv(pairs: Vec<(&str, TypedData)>) -> KvList {
    KvList(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn haproxy_hello(healthcheck: bool) -> Frame {
    let mut pairs = vec![
        ("supported-versions", TypedData::String(b"2.0".to_vec())),
        ("max-frame-size", TypedData::Uint32(16_380)),
        (
            "capabilities",
            TypedData::String(b"pipelining,async".to_vec()),
        ),
    ];
    if healthcheck {
        pairs.push(("healthcheck", TypedData::Bool(true)));
    }
    Frame::HaproxyHello { kv: kv(pairs) }
}

fn read(conn: &mut TcpStream) -> Option<Frame> {
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix).ok()?;
    let mut body = vec![0u8; frame_length(prefix, 1 << 20).ok()?];
    conn.read_exact(&mut body).ok()?;
    Some(decode_frame(&body).unwrap())
}

fn send(conn: &mut TcpStream, frame: &Frame) {
    conn.write_all(&encode_frame(frame, 1 << 20).unwrap())
        .unwrap();
}

fn connect(agent: &Agent) -> TcpStream {
    let mut conn = TcpStream::connect(agent.address).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    send(&mut conn, &haproxy_hello(false));
    match read(&mut conn) {
        Some(Frame::AgentHello { kv }) => {
            assert_eq!(kv.get("version"), Some(&TypedData::String(b"2.0".to_vec())));
            assert_eq!(
                kv.get("capabilities"),
                Some(&TypedData::String(b"pipelining".to_vec()))
            );
        }
        other => panic!("no AGENT-HELLO: {other:?}"),
    }
    conn
}

fn hdrs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in pairs {
        encode_varint(n.len() as u64, &mut out);
        out.extend_from_slice(n.as_bytes());
        encode_varint(v.len() as u64, &mut out);
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    out
}

fn notify(stream_id: u64, headers: &[(&str, &str)]) -> Frame {
    let args = vec![
        (b"method".to_vec(), TypedData::String(b"GET".to_vec())),
        (b"pathq".to_vec(), TypedData::String(b"/x".to_vec())),
        (b"hdrs".to_vec(), TypedData::Binary(hdrs(headers))),
    ];
    Frame::Notify {
        stream_id,
        frame_id: 1,
        messages: vec![Message {
            name: b"portcullis-request".to_vec(),
            args,
        }],
    }
}

/// The variables of the ACK for `stream_id`, by name.
fn ack(conn: &mut TcpStream, stream_id: u64) -> Vec<(String, TypedData)> {
    match read(conn) {
        Some(Frame::Ack {
            stream_id: s,
            frame_id: 1,
            actions,
        }) if s == stream_id => actions
            .into_iter()
            .map(|a| match a {
                Action::SetVar { name, value, .. } => (name, value),
                other => panic!("unexpected action {other:?}"),
            })
            .collect(),
        other => panic!("no ACK for stream {stream_id}: {other:?}"),
    }
}

fn var<'a>(vars: &'a [(String, TypedData)], name: &str) -> Option<&'a TypedData> {
    vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

#[test]
fn a_forwarded_request_sets_its_header_and_ends_with_allow() {
    let agent = agent(16_380);
    let mut conn = connect(&agent);
    send(
        &mut conn,
        &notify(
            7,
            &[
                ("host", "a"),
                ("x-action", "x-set"),
                ("x-set", "x-test=hello"),
            ],
        ),
    );
    let vars = ack(&mut conn, 7);
    assert_eq!(
        var(&vars, "h0"),
        Some(&TypedData::String(b"hello".to_vec())),
        "{vars:?}"
    );
    assert_eq!(vars.last().map(|(n, _)| n.as_str()), Some("allow"));
}

#[test]
fn a_header_the_configuration_does_not_know_is_refused_not_dropped() {
    let agent = agent(16_380);
    let mut conn = connect(&agent);
    send(
        &mut conn,
        &notify(3, &[("x-action", "x-set"), ("x-set", "x-unknown=1")]),
    );
    let vars = ack(&mut conn, 3);
    assert_eq!(var(&vars, "allow"), None);
    assert_eq!(
        var(&vars, "refusal"),
        Some(&TypedData::String(b"unknown_header".to_vec()))
    );
    assert_eq!(var(&vars, "status"), Some(&TypedData::Int64(503)));
}

#[test]
fn a_trapping_vm_refuses_its_request_and_is_replaced() {
    let agent = agent(16_380);
    let mut conn = connect(&agent);
    send(&mut conn, &notify(1, &[("x-action", "trap")]));
    let vars = ack(&mut conn, 1);
    assert_eq!(
        var(&vars, "refusal"),
        Some(&TypedData::String(b"vm_failed".to_vec())),
        "{vars:?}"
    );
    assert_eq!(var(&vars, "allow"), None);
    // The next request meets a fresh VM.
    send(&mut conn, &notify(2, &[("host", "a")]));
    let vars = ack(&mut conn, 2);
    assert_eq!(
        var(&vars, "allow"),
        Some(&TypedData::Bool(true)),
        "{vars:?}"
    );
    assert_eq!(
        agent
            .stats
            .vm_restarts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn a_runaway_callback_is_stopped_by_its_wall_time_budget() {
    let agent = agent(16_380);
    let mut conn = connect(&agent);
    send(&mut conn, &notify(5, &[("x-action", "loop")]));
    let vars = ack(&mut conn, 5);
    assert_eq!(
        var(&vars, "refusal"),
        Some(&TypedData::String(b"vm_failed".to_vec())),
        "{vars:?}"
    );
    send(&mut conn, &notify(6, &[]));
    assert_eq!(
        var(&ack(&mut conn, 6), "allow"),
        Some(&TypedData::Bool(true))
    );
}

#[test]
fn pipelined_requests_are_all_answered_with_their_ids() {
    let agent = agent(16_380);
    let mut conn = connect(&agent);
    for id in 10..60 {
        send(&mut conn, &notify(id, &[("x-n", &id.to_string())]));
    }
    let mut seen = Vec::new();
    for _ in 10..60 {
        match read(&mut conn) {
            Some(Frame::Ack {
                stream_id, actions, ..
            }) => {
                assert!(!actions.is_empty());
                seen.push(stream_id);
            }
            other => panic!("{other:?}"),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (10..60).collect::<Vec<_>>());
}

#[test]
fn garbage_gets_a_disconnect_and_the_agent_serves_on() {
    let agent = agent(16_380);
    let garbage: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n", // HTTP at an SPOP port: a 1.2 GB frame length
        &[0, 0, 0, 3, 1, 0, 0],    // a frame too short to hold its flags
        &[0, 0, 0, 0],             // an empty frame
        &[0, 0, 0, 6, 3, 0, 0, 0, 1, 0x05], // a NOTIFY before the hello
    ];
    for bytes in garbage {
        let mut conn = TcpStream::connect(agent.address).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(bytes).unwrap();
        match read(&mut conn) {
            Some(Frame::AgentDisconnect { kv }) => {
                let code = kv.get("status-code").and_then(TypedData::as_u64);
                assert!(code.is_some_and(|c| c > 0), "{kv:?}");
            }
            other => panic!("{bytes:?}: want AGENT-DISCONNECT, got {other:?}"),
        }
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        assert!(rest.is_empty(), "the agent closes after its disconnect");
    }
    // A garbage frame after a good handshake ends that connection only.
    let mut conn = connect(&agent);
    conn.write_all(&[0, 0, 0, 2, 0xff, 0xff]).unwrap();
    assert!(matches!(
        read(&mut conn),
        Some(Frame::AgentDisconnect { .. })
    ));
    let mut conn = connect(&agent);
    send(&mut conn, &notify(1, &[]));
    assert_eq!(
        var(&ack(&mut conn, 1), "allow"),
        Some(&TypedData::Bool(true))
    );
}

#[test]
fn a_health_check_gets_a_hello_then_the_connection_closes() {
    let agent = agent(16_380);
    let mut conn = TcpStream::connect(agent.address).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    send(&mut conn, &haproxy_hello(true));
    assert!(matches!(read(&mut conn), Some(Frame::AgentHello { .. })));
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

#[test]
fn a_frame_over_the_negotiated_size_ends_the_connection_with_status_3() {
    let agent = agent(1024);
    let mut conn = connect(&agent);
    let big = "v".repeat(2000);
    send(&mut conn, &notify(1, &[("x-big", &big)]));
    match read(&mut conn) {
        Some(Frame::AgentDisconnect { kv }) => {
            assert_eq!(kv.get("status-code").and_then(TypedData::as_u64), Some(3));
        }
        other => panic!("{other:?}"),
    }
}
