//! Stream control: `proxy_continue_stream`, `proxy_close_stream`, `proxy_send_local_response`, and ABI
//! 0.1.0's `proxy_continue_request`, `proxy_continue_response`, `proxy_clear_route_cache`.
//!
//! These only record the request on the stream's state machine (`crate::stream`); the host acts on it after
//! the current callback returns, as Envoy defers them.

use wasmtime::{Linker, Result};

use super::{read, read_string, Ctx};
use crate::host::HostState;
use crate::stream::LocalReply;
use crate::types::{deserialize_pairs, Status};

fn continue_stream(state: &mut HostState, ty: i32, hostcall: &'static str) -> i32 {
    if !(0..=1).contains(&ty) {
        state.violation(
            hostcall,
            format!("stream type {ty} is not an HTTP stream; the harness has no TCP streams"),
        );
        return Status::BadArgument.code();
    }
    let Some(stream) = state.stream_mut() else {
        state.violation(hostcall, "called outside an HTTP stream context");
        return Status::NotFound.code();
    };
    stream.continue_direction(ty == 0);
    Status::Ok.code()
}

fn close_stream(state: &mut HostState, ty: i32) -> i32 {
    const NAME: &str = "proxy_close_stream";
    if !(0..=1).contains(&ty) {
        state.violation(
            NAME,
            format!("stream type {ty} is not an HTTP stream; the harness has no TCP streams"),
        );
        return Status::BadArgument.code();
    }
    let Some(stream) = state.stream_mut() else {
        state.violation(NAME, "called outside an HTTP stream context");
        return Status::NotFound.code();
    };
    stream.close();
    Status::Ok.code()
}

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Ctx<'_>, ty: i32| -> Result<i32> {
            Ok(continue_stream(
                caller.data_mut(),
                ty,
                "proxy_continue_stream",
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_request",
        |mut caller: Ctx<'_>| -> Result<i32> {
            Ok(continue_stream(
                caller.data_mut(),
                0,
                "proxy_continue_request",
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_response",
        |mut caller: Ctx<'_>| -> Result<i32> {
            Ok(continue_stream(
                caller.data_mut(),
                1,
                "proxy_continue_response",
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Ctx<'_>, ty: i32| -> Result<i32> { Ok(close_stream(caller.data_mut(), ty)) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |mut caller: Ctx<'_>| -> Result<i32> {
            // As the `clear_route_cache` foreign function: Ok, and a no-op outside a stream.
            if let Some(stream) = caller.data_mut().stream_mut() {
                stream.clear_route_cache();
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Ctx<'_>,
         status: i32,
         dp: i32,
         ds: i32,
         bp: i32,
         bs: i32,
         hp: i32,
         hs: i32,
         _grpc_status: i32|
         -> Result<i32> {
            const NAME: &str = "proxy_send_local_response";
            let details = read_string(&caller, dp, ds, NAME)?;
            let body = read(&caller, bp, bs, NAME)?;
            let headers = read(&caller, hp, hs, NAME)?;
            let Some(headers) = deserialize_pairs(&headers) else {
                caller
                    .data()
                    .violation(NAME, "malformed serialized header map");
                return Ok(Status::BadArgument.code());
            };
            let state = caller.data_mut();
            let Some(stream) = state.stream_mut() else {
                state.violation(NAME, "called outside an HTTP stream context");
                return Ok(Status::BadArgument.code());
            };
            let refused = stream
                .request_local(LocalReply {
                    status: status as u32,
                    headers: headers.into_iter().collect(),
                    body,
                    details,
                })
                .err();
            match refused {
                Some(why) => {
                    state.violation(NAME, why);
                    Ok(Status::BadArgument.code())
                }
                None => Ok(Status::Ok.code()),
            }
        },
    )?;
    Ok(())
}
