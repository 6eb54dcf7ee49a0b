//! Foreign functions: `proxy_call_foreign_function`. The built-in `verify_signature` and `clear_route_cache`
//! (as Envoy's) and the functions the test registered exist; any other name answers `NotFound`.

use wasmtime::{Linker, Result};

use super::{copy_out, read, read_string, Ctx};
use crate::host::HostState;
use crate::shared::Foreign;
use crate::types::Status;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut caller: Ctx<'_>,
         np: i32,
         ns: i32,
         ap: i32,
         asz: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32> {
            const NAME: &str = "proxy_call_foreign_function";
            let name = read_string(&caller, np, ns, NAME)?;
            let args = read(&caller, ap, asz, NAME)?;
            let f = caller.data().shared.lock().foreign.get(&name).cloned();
            let answer = match f {
                None => return Ok(Status::NotFound.code()),
                Some(Foreign::ClearRouteCache) => {
                    // Envoy's ignores its arguments and answers Ok with no bytes, whether or not the
                    // effective context is a stream whose route can still change.
                    if let Some(stream) = caller.data_mut().stream_mut() {
                        stream.clear_route_cache();
                    }
                    Ok(Vec::new())
                }
                Some(Foreign::Function(f)) => f(&args),
            };
            match answer {
                Ok(out) => {
                    copy_out(&mut caller, &out, ptr_ptr, size_ptr, NAME)?;
                    Ok(Status::Ok.code())
                }
                Err(status) => Ok(status.code()),
            }
        },
    )?;
    Ok(())
}
