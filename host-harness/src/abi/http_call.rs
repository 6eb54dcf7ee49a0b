//! HTTP callouts: `proxy_http_call`. The answer comes later from the harness's event loop through
//! `proxy_on_http_call_response`, at the virtual time the upstream script says.

use std::time::Duration;

use wasmtime::{Linker, Result};

use super::{read, read_string, write_u32, Ctx};
use crate::host::HostState;
use crate::types::{deserialize_pairs, Headers, Status};
use crate::upstream::{Callout, CalloutRequest, CalloutResult};
use crate::world::lock;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Ctx<'_>,
         up_ptr: i32,
         up_len: i32,
         h_ptr: i32,
         h_len: i32,
         b_ptr: i32,
         b_len: i32,
         t_ptr: i32,
         t_len: i32,
         timeout_ms: i32,
         token_ptr: i32|
         -> Result<i32> {
            const NAME: &str = "proxy_http_call";
            let upstream = read_string(&caller, up_ptr, up_len, NAME)?;
            let headers = read(&caller, h_ptr, h_len, NAME)?;
            let body = read(&caller, b_ptr, b_len, NAME)?;
            let trailers = read(&caller, t_ptr, t_len, NAME)?;
            let (Some(headers), Some(trailers)) =
                (deserialize_pairs(&headers), deserialize_pairs(&trailers))
            else {
                caller
                    .data()
                    .violation(NAME, "malformed serialized header map");
                return Ok(Status::BadArgument.code());
            };
            let headers: Headers = headers.into_iter().collect();
            let trailers: Headers = trailers.into_iter().collect();
            for required in [":method", ":path", ":authority"] {
                if !headers.contains(required) {
                    return Ok(Status::BadArgument.code());
                }
            }
            let timeout = Duration::from_millis(u64::from(timeout_ms as u32));
            let (behaviour, call_index, now) = {
                let mut w = lock(&caller.data().world);
                let Some(b) = w.upstreams.get(&upstream).cloned() else {
                    return Ok(Status::BadArgument.code());
                };
                let n = w.upstream_calls.entry(upstream.clone()).or_insert(0);
                let index = *n;
                *n += 1;
                (b, index, w.elapsed)
            };
            let request = CalloutRequest {
                upstream,
                headers,
                body,
                trailers,
                timeout,
            };
            let resolved = behaviour.resolve(&request, call_index, now);
            let times_out = |delay: Duration| !timeout.is_zero() && delay >= timeout;
            let (result, due_at) = match resolved.result {
                None if timeout.is_zero() => (CalloutResult::TimedOut, Duration::MAX),
                None => (CalloutResult::TimedOut, now + timeout),
                Some(_) if times_out(resolved.delay) => (CalloutResult::TimedOut, now + timeout),
                Some(Ok(resp)) => (CalloutResult::Response(resp), now + resolved.delay),
                Some(Err(())) => (CalloutResult::Reset, now + resolved.delay),
            };
            let state = caller.data();
            let token = {
                let mut w = lock(&state.world);
                let token = w.next_token;
                w.next_token = w.next_token.wrapping_add(1).max(1);
                let index = w.callouts.len();
                w.pending.push(index);
                w.callouts.push(Callout {
                    token,
                    worker: state.worker,
                    context_id: state.effective,
                    request,
                    dispatched_at: now,
                    due_at,
                    result,
                    delivered: false,
                    cancelled: false,
                });
                token
            };
            write_u32(&mut caller, token_ptr, token, NAME)?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
