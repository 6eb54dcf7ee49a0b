//! gRPC callouts. The harness carries no gRPC: a call to a cluster that does not exist answers as Envoy does
//! (`ParseFailure`); one Envoy would make is refused with an error naming it (see [`refuse`]); operations on
//! tokens answer `NotFound` (no call is ever open).

use wasmtime::{Linker, Result};

use super::{read, write_u32, Ctx};
use crate::host::{lock_callouts, HostState};
use crate::types::Status;

/// What a gRPC call or stream to `service` gets. The harness carries no gRPC: where Envoy would answer
/// without calling (a cluster name that names no cluster: `ParseFailure`, Envoy's `grpcCall` and
/// `grpcStream`), the harness answers the same; where Envoy would call (a defined cluster, a serialized
/// `GrpcService`, or a transport that cannot tell), the call fails with an error naming it, which traps
/// the plugin's VM and reaches the test as a `HarnessError`: never a silently different answer.
fn refuse(caller: &Ctx<'_>, hostcall: &str, service: &[u8]) -> Result<i32> {
    // A serialized `GrpcService` starts with field 1 (`envoy_grpc`) or 2 (`google_grpc`), length-delimited;
    // a cluster name is text and does not parse as one.
    let proto = matches!(service.first(), Some(0x0a | 0x12));
    let name = String::from_utf8_lossy(service).into_owned();
    let known = lock_callouts(&caller.data().callouts).has_cluster(&name);
    if !proto && known == Some(false) {
        return Ok(Status::ParseFailure.code());
    }
    let target = if proto {
        "a GrpcService configuration".to_string()
    } else {
        format!("cluster `{name}`")
    };
    Err(wasmtime::Error::msg(format!(
        "{hostcall} to {target}: gRPC callouts are not supported by the harness (Envoy would make the call)"
    )))
}

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |caller: Ctx<'_>,
         service_ptr: i32,
         service_len: i32,
         _c: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _timeout: i32,
         _token: i32|
         -> Result<i32> {
            const NAME: &str = "proxy_grpc_call";
            let service = read(&caller, service_ptr, service_len, NAME)?;
            refuse(&caller, NAME, &service)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |caller: Ctx<'_>,
         service_ptr: i32,
         service_len: i32,
         _c: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _token: i32|
         -> Result<i32> {
            const NAME: &str = "proxy_grpc_stream";
            let service = read(&caller, service_ptr, service_len, NAME)?;
            refuse(&caller, NAME, &service)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |_caller: Ctx<'_>, _token: i32, _p: i32, _l: i32, _end: i32| -> Result<i32> {
            Ok(Status::NotFound.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |_caller: Ctx<'_>, _token: i32| -> Result<i32> { Ok(Status::NotFound.code()) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |_caller: Ctx<'_>, _token: i32| -> Result<i32> { Ok(Status::NotFound.code()) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Ctx<'_>, code_ptr: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            let status = caller.data().status.clone();
            let (code, message) = (status.code, status.message);
            write_u32(&mut caller, code_ptr, code as u32, "proxy_get_status")?;
            super::copy_out(
                &mut caller,
                message.as_bytes(),
                ptr_ptr,
                size_ptr,
                "proxy_get_status",
            )?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
