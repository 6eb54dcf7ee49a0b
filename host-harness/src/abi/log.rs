//! Logging: `proxy_log`, `proxy_get_log_level`. Lines are captured in the harness, not printed.

use wasmtime::{Linker, Result};

use super::{read_string, write_u32, Ctx};
use crate::host::HostState;
use crate::types::{LogLevel, Status};
use crate::world::{lock, LogEntry};

/// Appends one captured log line.
pub(crate) fn push(state: &HostState, level: LogLevel, message: String) {
    let mut w = lock(&state.world);
    if level < w.log_level {
        return;
    }
    let at = w.elapsed;
    w.logs.push(LogEntry {
        worker: state.worker,
        context_id: state.effective,
        level,
        message,
        at,
    });
}

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |caller: Ctx<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(level) = LogLevel::from_code(level) else {
                caller
                    .data()
                    .violation("proxy_log", format!("invalid log level {level}"));
                return Ok(Status::BadArgument.code());
            };
            let message = read_string(&caller, ptr, len, "proxy_log")?;
            push(caller.data(), level, message);
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Ctx<'_>, out: i32| -> Result<i32> {
            let level = lock(&caller.data().world).log_level;
            write_u32(&mut caller, out, level.code() as u32, "proxy_get_log_level")?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
