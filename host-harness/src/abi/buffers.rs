//! Buffers: request/response body of the current stream, HTTP callout response body, VM and plugin
//! configuration (`proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`,
//! and ABI 0.1.0's `proxy_get_configuration`).

use wasmtime::{Linker, Result};

use super::{copy_out, read, write_u32, Ctx};
use crate::host::HostState;
use crate::types::{BufferType, Callback, Status};

/// Where a buffer lives, after checking it exists for the current context and callback.
enum Slot {
    RequestBody,
    ResponseBody,
    CallBody,
    VmConfig,
    PluginConfig,
}

fn slot(
    state: &HostState,
    ty: BufferType,
    hostcall: &'static str,
) -> std::result::Result<Slot, Status> {
    match ty {
        BufferType::RequestBody | BufferType::ResponseBody => {
            let Some(stream) = state.stream() else {
                state.violation(
                    hostcall,
                    format!("{ty:?} accessed outside an HTTP stream context"),
                );
                return Err(Status::NotFound);
            };
            let (needed, has_data, gone) = if ty == BufferType::RequestBody {
                (
                    Callback::RequestBody,
                    !stream.request.body.is_empty(),
                    stream.forwarded.is_some(),
                )
            } else {
                let responded = stream.seen.contains(&Callback::ResponseHeaders);
                (
                    Callback::ResponseBody,
                    !responded || !stream.response_body.is_empty(),
                    false,
                )
            };
            if !stream.seen.contains(&needed) {
                if has_data {
                    let when = state
                        .callback()
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "this callback".into());
                    state.violation(
                        hostcall,
                        format!("{ty:?} is not available in {when} (first in {needed})"),
                    );
                }
                return Err(Status::NotFound);
            }
            if gone {
                state.violation(
                    hostcall,
                    format!("{ty:?} read after the request was forwarded upstream"),
                );
                return Err(Status::NotFound);
            }
            Ok(if ty == BufferType::RequestBody {
                Slot::RequestBody
            } else {
                Slot::ResponseBody
            })
        }
        BufferType::HttpCallResponseBody => {
            if state.call_response.is_none() {
                state.violation(
                    hostcall,
                    "HttpCallResponseBody is only available in proxy_on_http_call_response",
                );
                return Err(Status::NotFound);
            }
            Ok(Slot::CallBody)
        }
        BufferType::VmConfiguration => Ok(Slot::VmConfig),
        BufferType::PluginConfiguration => {
            if state.callback() != Some(Callback::Configure) {
                state.violation(
                    hostcall,
                    "PluginConfiguration is only available in proxy_on_configure",
                );
                return Err(Status::NotFound);
            }
            Ok(Slot::PluginConfig)
        }
        _ => Err(Status::NotFound),
    }
}

fn bytes_of(state: &HostState, slot: &Slot) -> Vec<u8> {
    match slot {
        Slot::RequestBody => state
            .stream()
            .map(|s| s.request_body.clone())
            .unwrap_or_default(),
        Slot::ResponseBody => state
            .stream()
            .map(|s| s.response_body.clone())
            .unwrap_or_default(),
        Slot::CallBody => state
            .call_response
            .as_ref()
            .map(|c| c.body.clone())
            .unwrap_or_default(),
        Slot::VmConfig => state.vm_config.to_vec(),
        Slot::PluginConfig => state.plugin_config.to_vec(),
    }
}

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Ctx<'_>,
         ty: i32,
         start: i32,
         max: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32> {
            const NAME: &str = "proxy_get_buffer_bytes";
            let Some(ty) = BufferType::from_code(ty) else {
                caller
                    .data()
                    .violation(NAME, format!("invalid buffer type {ty}"));
                return Ok(Status::BadArgument.code());
            };
            let slot = match slot(caller.data(), ty, NAME) {
                Ok(s) => s,
                Err(s) => return Ok(s.code()),
            };
            let all = bytes_of(caller.data(), &slot);
            let start = start as u32 as usize;
            let max = max as u32 as usize;
            if start > all.len() {
                return Ok(Status::BadArgument.code());
            }
            let end = start.saturating_add(max).min(all.len());
            copy_out(&mut caller, &all[start..end], ptr_ptr, size_ptr, NAME)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Ctx<'_>, ty: i32, start: i32, size: i32, ptr: i32, len: i32| -> Result<i32> {
            const NAME: &str = "proxy_set_buffer_bytes";
            let Some(ty) = BufferType::from_code(ty) else {
                caller
                    .data()
                    .violation(NAME, format!("invalid buffer type {ty}"));
                return Ok(Status::BadArgument.code());
            };
            let slot = match slot(caller.data(), ty, NAME) {
                Ok(s) => s,
                Err(s) => return Ok(s.code()),
            };
            let data = read(&caller, ptr, len, NAME)?;
            let state = caller.data_mut();
            let target = match slot {
                Slot::RequestBody => state.stream_mut().map(|s| &mut s.request_body),
                Slot::ResponseBody => state.stream_mut().map(|s| &mut s.response_body),
                _ => {
                    state.violation(NAME, format!("{ty:?} is read-only"));
                    return Ok(Status::BadArgument.code());
                }
            };
            let Some(buf) = target else {
                return Ok(Status::NotFound.code());
            };
            // Envoy's rules: start 0 & size 0 prepends; start 0 & size >= len replaces; start >= len appends.
            let start = start as u32 as usize;
            let size = size as u32 as usize;
            if start == 0 {
                if size == 0 {
                    let mut v = data;
                    v.extend_from_slice(buf);
                    *buf = v;
                } else if size >= buf.len() {
                    *buf = data;
                } else {
                    return Ok(Status::BadArgument.code());
                }
            } else if start >= buf.len() {
                buf.extend_from_slice(&data);
            } else {
                return Ok(Status::BadArgument.code());
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Ctx<'_>, ty: i32, len_ptr: i32, flags_ptr: i32| -> Result<i32> {
            const NAME: &str = "proxy_get_buffer_status";
            let Some(ty) = BufferType::from_code(ty) else {
                return Ok(Status::BadArgument.code());
            };
            let slot = match slot(caller.data(), ty, NAME) {
                Ok(s) => s,
                Err(s) => return Ok(s.code()),
            };
            let len = bytes_of(caller.data(), &slot).len();
            write_u32(&mut caller, len_ptr, len as u32, NAME)?;
            write_u32(&mut caller, flags_ptr, 0, NAME)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_configuration",
        |mut caller: Ctx<'_>, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            let cfg = caller.data().plugin_config.clone();
            copy_out(
                &mut caller,
                &cfg,
                ptr_ptr,
                size_ptr,
                "proxy_get_configuration",
            )?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
