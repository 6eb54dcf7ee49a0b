//! gRPC callouts. The harness defines no gRPC services: calls answer as Envoy does for an unknown cluster
//! (`BadArgument`), and operations on tokens answer `NotFound`.

use wasmtime::{Linker, Result};

use super::{write_u32, Ctx};
use crate::host::HostState;
use crate::types::Status;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |caller: Ctx<'_>,
         _a: i32,
         _b: i32,
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
            caller.data().violation(
                "proxy_grpc_call",
                "gRPC callouts are not supported by the harness",
            );
            Ok(Status::BadArgument.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |caller: Ctx<'_>,
         _a: i32,
         _b: i32,
         _c: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _token: i32|
         -> Result<i32> {
            caller.data().violation(
                "proxy_grpc_stream",
                "gRPC streams are not supported by the harness",
            );
            Ok(Status::BadArgument.code())
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
