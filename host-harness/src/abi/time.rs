//! Time: `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds`, on the host's clock.

use std::time::Duration;

use wasmtime::{Linker, Result};

use super::{write_u64, Ctx};
use crate::host::HostState;
use crate::types::Status;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_>, out: i32| -> Result<i32> {
            let now = caller.data().clock.unix_nanos();
            write_u64(&mut caller, out, now, "proxy_get_current_time_nanoseconds")?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Ctx<'_>, period: i32| -> Result<i32> {
            // From an HTTP context this sets the period of that stream's root context, as Envoy's
            // `Context::setTickPeriod` does (`root_context_id_ ? root_context_id_ : id_`); each VM here has
            // one root context, so it is the VM's tick period either way.
            let period = Duration::from_millis(u64::from(period as u32));
            caller.data_mut().set_tick_period(period);
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
