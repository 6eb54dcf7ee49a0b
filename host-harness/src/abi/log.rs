//! Logging: `proxy_log`, `proxy_get_log_level`. Lines go to the host's recorder, not to a terminal.

use wasmtime::{Linker, Result};

use super::{read_string, write_u32, Ctx};
use crate::host::HostState;
use crate::types::{LogLevel, Status};

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Ctx<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            let Some(level) = LogLevel::from_code(level) else {
                caller
                    .data()
                    .violation("proxy_log", format!("invalid log level {level}"));
                return Ok(Status::BadArgument.code());
            };
            let message = read_string(&caller, ptr, len, "proxy_log")?;
            caller.data_mut().log(level, message);
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Ctx<'_>, out: i32| -> Result<i32> {
            let level = caller.data().identity.log_level;
            write_u32(&mut caller, out, level.code() as u32, "proxy_get_log_level")?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
