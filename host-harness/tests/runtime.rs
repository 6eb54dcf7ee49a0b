//! The runtime's injectable parts: a transport that answers later, the real-time loop on the wall clock,
//! wall-time budgets, VMs on several threads sharing state, and recording levels.
//!
//! Nothing here asserts how long something took: the machine is shared and noisy. Waits are bounded and
//! the assertions are about order and that things happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_wasm_harness::{
    Answer, CalloutRequest, CalloutResult, CalloutTransport, HarnessError, Outcome, Recording,
    Request, Response, SharedState, TransportError,
};

fn act(action: &str) -> Request {
    Request::get("/api").header("x-action", action)
}

/// A transport the test answers by hand: it keeps what was dispatched and answers only what the test
/// released, and cannot say when (like a network client).
#[derive(Clone, Default)]
struct Manual {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Default)]
struct ManualInner {
    dispatched: Vec<(u32, CalloutRequest)>,
    released: VecDeque<Answer>,
    cancelled: Vec<u32>,
}

impl Manual {
    fn release(&self, token: u32, status: u32, body: &str) {
        self.inner.lock().unwrap().released.push_back(Answer {
            token,
            at: Duration::ZERO,
            result: CalloutResult::Response(Response::new(status).body(body)),
        });
    }
}

impl CalloutTransport for Manual {
    fn dispatch(
        &mut self,
        token: u32,
        request: &CalloutRequest,
        _now: Duration,
    ) -> Result<(), TransportError> {
        if request.upstream != "auth" {
            return Err(TransportError::UnknownCluster(request.upstream.clone()));
        }
        let mut m = self.inner.lock().unwrap();
        m.dispatched.push((token, request.clone()));
        Ok(())
    }

    fn poll(&mut self, now: Duration) -> Vec<Answer> {
        let mut m = self.inner.lock().unwrap();
        m.released
            .drain(..)
            .map(|mut a| {
                a.at = now;
                a
            })
            .collect()
    }

    fn next_answer_at(&self) -> Option<Duration> {
        None
    }

    fn cancel(&mut self, token: u32) {
        self.inner.lock().unwrap().cancelled.push(token);
    }
}

#[test]
fn a_transport_answers_after_dispatch_not_at_it() {
    let t = Manual::default();
    let mut h = common::builder("").transport(t.clone()).build().unwrap();
    let out = h.request(act("callout")).unwrap();
    let stream = out.stream();
    assert!(out.is_paused());
    let (token, req) = t.inner.lock().unwrap().dispatched[0].clone();
    assert_eq!(req.path(), "/check");
    assert_eq!(h.pending_callouts().len(), 1);
    // Time passes, nothing answers yet (the 1 s timeout is not reached).
    h.advance(Duration::from_millis(500)).unwrap();
    assert!(h.outcome(stream).unwrap().is_paused());
    t.release(token, 200, "late but fine");
    h.advance(Duration::from_millis(1)).unwrap();
    let out = h.outcome(stream).unwrap();
    assert_eq!(
        out.upstream_header("x-callout-body"),
        Some("late but fine"),
        "{out:?}"
    );
    assert!(h.pending_callouts().is_empty());
    assert!(h.callouts()[0].delivered);
    assert!(h.violations().is_empty(), "{:?}", h.violations());
    // An unknown cluster is refused at dispatch, as before.
    let out = h
        .request(act("callout").header("x-upstream", "nope"))
        .unwrap();
    assert_eq!(out.status(), Some(500));
}

#[test]
fn the_host_times_out_what_the_transport_never_answers() {
    let t = Manual::default();
    let mut h = common::builder("").transport(t.clone()).build().unwrap();
    let out = h
        .request(act("callout").header("x-timeout-ms", "250"))
        .unwrap();
    let out = h
        .advance_until_done(out.stream(), Duration::from_secs(10))
        .unwrap();
    let Outcome::LocalResponse { headers, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(headers.get("x-callout-status"), Some("504"));
    let m = t.inner.lock().unwrap();
    assert_eq!(
        m.cancelled,
        [m.dispatched[0].0],
        "the transport was told to drop it"
    );
}

#[test]
fn wall_clock_delivers_a_callout_answered_from_another_thread() {
    let t = Manual::default();
    let mut h = common::builder("")
        .transport(t.clone())
        .wall_clock()
        .build()
        .unwrap();
    let out = h
        .request(act("callout").header("x-timeout-ms", "60000"))
        .unwrap();
    assert!(out.is_paused());
    let token = t.inner.lock().unwrap().dispatched[0].0;
    let answerer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        t.release(token, 200, "from the network");
    });
    let out = h
        .advance_until_done(out.stream(), Duration::from_secs(30))
        .unwrap();
    answerer.join().unwrap();
    assert_eq!(
        out.upstream_header("x-callout-body"),
        Some("from the network"),
        "{out:?}"
    );
}

#[test]
fn wall_clock_fires_ticks_in_real_time() {
    let mut h = common::builder("tick_ms=5").wall_clock().build().unwrap();
    let ticked = h
        .run_until(Duration::from_secs(30), |h| {
            h.metric("ticks").is_some_and(|n| n >= 3)
        })
        .unwrap();
    assert!(ticked, "three ticks within 30 s of wall time");
    let (last, _) = h.shared_data("last_tick").unwrap();
    let secs: u64 = String::from_utf8(last).unwrap().parse().unwrap();
    assert!(
        secs > proxy_wasm_harness::DEFAULT_START_UNIX_SECS,
        "wall time, not the virtual start"
    );
}

#[test]
fn a_wall_time_budget_stops_a_runaway_callback() {
    let mut h = common::builder("")
        .fuel_per_callback(None)
        .wall_time_per_callback(Some(Duration::from_millis(50)))
        .build()
        .unwrap();
    let err = h.request(act("loop")).unwrap_err();
    assert!(
        matches!(err, HarnessError::WallTimeExceeded { worker: 0, .. }),
        "{err}"
    );
    assert!(!h.is_alive(0));
    // A normal request under the same budget is untouched on another harness.
    let mut ok = common::builder("")
        .wall_time_per_callback(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    assert!(ok.request(Request::get("/")).unwrap().is_forwarded());
}

#[test]
fn vms_on_two_threads_share_data() {
    let shared = SharedState::new("two-threads");
    let plugin = common::plugin();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let shared = shared.clone();
            let plugin = plugin.clone();
            std::thread::spawn(move || {
                let mut h = proxy_wasm_harness::Harness::builder()
                    .plugin(&plugin)
                    .shared_state(shared)
                    .build()
                    .unwrap();
                let mut seen = Vec::new();
                for _ in 0..20 {
                    let out = h.request(act("shared-incr")).unwrap();
                    let n: u64 = out.upstream_header("x-counter").unwrap().parse().unwrap();
                    seen.push(n);
                }
                seen
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| {
            let seen = t.join().unwrap();
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
            seen
        })
        .collect();
    all.sort_unstable();
    // Compare-and-swap across threads: every increment counted once.
    assert_eq!(all, (1..=40).collect::<Vec<u64>>());
    assert_eq!(shared.shared_data("counter").unwrap().0, b"40");
    assert_eq!(shared.metric("requests_total"), Some(40));
}

#[test]
fn queue_notices_go_to_the_vm_that_registered_the_queue() {
    let shared = SharedState::new("");
    let mut owner = common::builder("queue=q")
        .shared_state(shared.clone())
        .build()
        .unwrap();
    let mut other = common::builder("").shared_state(shared).build().unwrap();
    other
        .request(act("enqueue").header("x-item", "cross-thread"))
        .unwrap();
    assert!(!other.logs_contain("queue item: cross-thread"));
    owner.advance(Duration::ZERO).unwrap();
    assert!(owner.logs_contain("queue item: cross-thread"));
}

#[test]
fn recording_off_or_bounded_keeps_the_runtime_working() {
    let mut h = common::builder("")
        .recording(Recording::Off)
        .upstream(
            "auth",
            proxy_wasm_harness::Upstream::delayed(
                Duration::from_millis(10),
                proxy_wasm_harness::Upstream::json(200, "ok"),
            ),
        )
        .build()
        .unwrap();
    let out = h.request(act("callout,log-levels")).unwrap();
    assert_eq!(h.pending_callouts().len(), 1, "pending is not history");
    let out = h
        .advance_until_done(out.stream(), Duration::from_secs(1))
        .unwrap();
    assert!(out.is_forwarded(), "{out:?}");
    assert!(h.logs().is_empty() && h.callouts().is_empty());

    let mut b = common::builder("")
        .recording(Recording::Bounded(3))
        .build()
        .unwrap();
    for _ in 0..5 {
        b.request(act("log-levels")).unwrap();
    }
    assert_eq!(b.logs().len(), 3);
}

#[test]
fn a_failed_configure_is_reported_even_with_recording_off() {
    let err = common::builder("fail_configure=1")
        .recording(Recording::Off)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("fail_configure"), "{err}");
}
