//! Time: `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds` (virtual clock).

use std::time::Duration;

use wasmtime::{Linker, Result};

use super::{write_u64, Ctx};
use crate::host::HostState;
use crate::types::Status;
use crate::world::lock;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_>, out: i32| -> Result<i32> {
            let now = lock(&caller.data().world).now_unix_nanos();
            write_u64(&mut caller, out, now, "proxy_get_current_time_nanoseconds")?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Ctx<'_>, period: i32| -> Result<i32> {
            // Envoy sets the tick of the calling context's root context
            // (`root_context_id_ ? root_context_id_ : id_`), so a stream may set it too; a VM
            // here has one root context, so it is the VM's tick period either way.
            let state = caller.data_mut();
            let period = period as u32;
            if period == 0 {
                state.tick_period = None;
                state.next_tick = None;
            } else {
                let p = Duration::from_millis(u64::from(period));
                let now = lock(&state.world).elapsed;
                state.tick_period = Some(p);
                state.next_tick = Some(now + p);
            }
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
