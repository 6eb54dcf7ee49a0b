//! HTTP callouts: `proxy_http_call`. The request goes to the host's callout transport; the answer comes later
//! through `proxy_on_http_call_response`, when the scheduler finds it (or the plugin's timeout) due.

use std::time::Duration;

use wasmtime::{Linker, Result};

use super::{read, read_string, write_u32, Ctx};
use crate::host::{lock_callouts, HostState};
use crate::types::{deserialize_pairs, Headers, Status};
use crate::upstream::CalloutRequest;

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
            let request = CalloutRequest {
                upstream,
                headers,
                body,
                trailers,
                timeout,
            };
            // Dispatched now, answered later: the transport gets the request, the scheduler delivers
            // its answer (or the timeout) through `proxy_on_http_call_response`.
            let state = caller.data();
            let now = state.clock.elapsed();
            let dispatched = lock_callouts(&state.callouts).dispatch(
                state.worker,
                state.effective,
                request,
                now,
            );
            let Ok(record) = dispatched else {
                return Ok(Status::BadArgument.code());
            };
            let token = record.token;
            state.recorder.lock().callout_dispatched(&record);
            write_u32(&mut caller, token_ptr, token, NAME)?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
