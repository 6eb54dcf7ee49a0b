//! Shared data (`proxy_get_shared_data`, `proxy_set_shared_data`): a key-value store shared by all VMs of the
//! harness, with compare-and-swap tokens as Envoy implements them.

use wasmtime::{Linker, Result};

use super::{copy_out, read, read_string, write_u32, Ctx};
use crate::host::HostState;
use crate::types::Status;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Ctx<'_>,
         kp: i32,
         ks: i32,
         ptr_ptr: i32,
         size_ptr: i32,
         cas_ptr: i32|
         -> Result<i32> {
            const NAME: &str = "proxy_get_shared_data";
            let key = read_string(&caller, kp, ks, NAME)?;
            let found = caller.data().shared.lock().shared_data.get(&key).cloned();
            match found {
                None => Ok(Status::NotFound.code()),
                Some(v) => {
                    copy_out(&mut caller, &v.bytes, ptr_ptr, size_ptr, NAME)?;
                    write_u32(&mut caller, cas_ptr, v.cas, NAME)?;
                    Ok(Status::Ok.code())
                }
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |caller: Ctx<'_>, kp: i32, ks: i32, vp: i32, vs: i32, cas: i32| -> Result<i32> {
            const NAME: &str = "proxy_set_shared_data";
            let key = read_string(&caller, kp, ks, NAME)?;
            let value = read(&caller, vp, vs, NAME)?;
            let cas = cas as u32;
            // One lock for the check and the write: VMs on other threads must not slip in between.
            let mut abi = caller.data().shared.lock();
            if let Some(current) = abi.shared_data.get(&key) {
                if cas != 0 && cas != current.cas {
                    return Ok(Status::CasMismatch.code());
                }
            }
            abi.set_shared(&key, value);
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
