//! Contexts: `proxy_set_effective_context`, `proxy_done`.

use wasmtime::{Linker, Result};

use super::Ctx;
use crate::host::HostState;
use crate::types::Status;

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Ctx<'_>, id: i32| -> Result<i32> {
            let state = caller.data_mut();
            let id = id as u32;
            if id == state.root_id || state.streams.contains_key(&id) {
                state.effective = id;
                Ok(Status::Ok.code())
            } else {
                Ok(Status::BadArgument.code())
            }
        },
    )?;
    linker.func_wrap("env", "proxy_done", |mut caller: Ctx<'_>| -> Result<i32> {
        let state = caller.data_mut();
        let id = state.effective;
        state.done_called.insert(id);
        Ok(Status::Ok.code())
    })?;
    Ok(())
}
