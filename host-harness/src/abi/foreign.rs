//! Foreign functions: `proxy_call_foreign_function`. The built-in `verify_signature` (as Envoy's) and the
//! functions the test registered exist; any other name answers `NotFound`.

use wasmtime::{Linker, Result};

use super::{copy_out, read, read_string, Ctx};
use crate::host::HostState;
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
            let Some(f) = f else {
                return Ok(Status::NotFound.code());
            };
            match f(&args) {
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
