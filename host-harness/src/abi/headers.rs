//! Header maps: request/response headers and trailers of the current stream, and the headers/trailers of the
//! HTTP callout response being delivered.

use wasmtime::{Linker, Result};

use super::{copy_out, read, read_string, write_u32, Ctx};
use crate::host::HostState;
use crate::stream::HeaderEdit;
use crate::types::{deserialize_pairs, serialize_pairs, Callback, Headers, MapType, Status};

/// Finds the map `map` for the current context, or the status Envoy would return (recording a violation when
/// the plugin asks for a map at a time it cannot exist).
fn map_mut<'a>(
    state: &'a mut HostState,
    map: MapType,
    hostcall: &'static str,
    write: bool,
) -> std::result::Result<&'a mut Headers, Status> {
    match map {
        MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers => {
            if state.call_response.is_none() {
                state.violation(
                    hostcall,
                    format!("{map:?} is only available in proxy_on_http_call_response"),
                );
                return Err(Status::NotFound);
            }
            let cr = state.call_response.as_mut().ok_or(Status::NotFound)?;
            Ok(if map == MapType::HttpCallResponseHeaders {
                &mut cr.headers
            } else {
                &mut cr.trailers
            })
        }
        MapType::GrpcReceiveInitialMetadata | MapType::GrpcReceiveTrailingMetadata => {
            Err(Status::NotFound)
        }
        _ => {
            let cb = state.callback();
            let Some(stream) = state.streams.get(&state.effective) else {
                state.violation(
                    hostcall,
                    format!("{map:?} accessed outside an HTTP stream context"),
                );
                return Err(Status::NotFound);
            };
            let (needed, exists) = match map {
                MapType::RequestHeaders => (Callback::RequestHeaders, true),
                MapType::RequestTrailers => (
                    Callback::RequestTrailers,
                    !stream.request.trailers.is_empty(),
                ),
                MapType::ResponseHeaders => (Callback::ResponseHeaders, true),
                _ => (
                    Callback::ResponseTrailers,
                    !stream.response_trailers.is_empty()
                        || stream.seen.contains(&Callback::ResponseTrailers),
                ),
            };
            if !stream.seen.contains(&needed) {
                if exists {
                    let when = cb
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "this callback".into());
                    state.violation(
                        hostcall,
                        format!("{map:?} is not available yet in {when} (first in {needed})"),
                    );
                }
                return Err(Status::NotFound);
            }
            if write {
                let forwarded = stream.forwarded.is_some();
                let finished = stream.is_finished();
                if matches!(map, MapType::RequestHeaders | MapType::RequestTrailers) && forwarded {
                    state.violation(hostcall, format!("{map:?} changed after the request was forwarded; the origin does not see the change"));
                } else if finished {
                    state.violation(
                        hostcall,
                        format!("{map:?} changed after the response was sent"),
                    );
                }
            }
            let stream = state
                .streams
                .get_mut(&state.effective)
                .ok_or(Status::NotFound)?;
            Ok(match map {
                MapType::RequestHeaders => &mut stream.request_headers,
                MapType::RequestTrailers => &mut stream.request_trailers,
                MapType::ResponseHeaders => &mut stream.response_headers,
                _ => &mut stream.response_trailers,
            })
        }
    }
}

/// Notes edits of the request headers on the stream, for the request-phase verdict (only those that reach
/// the origin are kept; see `StreamState::record_edit`).
fn note_edits(state: &mut HostState, map: MapType, edits: Vec<HeaderEdit>) {
    if map != MapType::RequestHeaders {
        return;
    }
    if let Some(stream) = state.stream_mut() {
        for e in edits {
            stream.record_edit(e);
        }
    }
}

fn map_type(state: &HostState, code: i32, hostcall: &'static str) -> Option<MapType> {
    let m = MapType::from_code(code);
    if m.is_none() {
        state.violation(hostcall, format!("invalid map type {code}"));
    }
    m
}

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Ctx<'_>, map: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            const NAME: &str = "proxy_get_header_map_pairs";
            let Some(map) = map_type(caller.data(), map, NAME) else {
                return Ok(Status::BadArgument.code());
            };
            // An unavailable map reads as empty (SDKs treat any other status here as fatal); the
            // violation is recorded by `map_mut`.
            let bytes = match map_mut(caller.data_mut(), map, NAME, false) {
                Ok(h) => serialize_pairs(&h.0),
                Err(_) => serialize_pairs(&[]),
            };
            copy_out(&mut caller, &bytes, ptr_ptr, size_ptr, NAME)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Ctx<'_>, map: i32, ptr: i32, size: i32| -> Result<i32> {
            const NAME: &str = "proxy_set_header_map_pairs";
            let Some(map) = map_type(caller.data(), map, NAME) else {
                return Ok(Status::BadArgument.code());
            };
            let bytes = read(&caller, ptr, size, NAME)?;
            let Some(pairs) = deserialize_pairs(&bytes) else {
                caller
                    .data()
                    .violation(NAME, "malformed serialized header map");
                return Ok(Status::BadArgument.code());
            };
            let new: Headers = pairs.into_iter().collect();
            let edits = match map_mut(caller.data_mut(), map, NAME, true) {
                Ok(h) => {
                    // As edits: every old name removed, then every new pair added.
                    let mut names: Vec<String> = Vec::new();
                    for (k, _) in h.iter() {
                        if !names.iter().any(|n| n == k) {
                            names.push(k.to_string());
                        }
                    }
                    let mut edits: Vec<HeaderEdit> =
                        names.into_iter().map(HeaderEdit::Remove).collect();
                    edits.extend(
                        new.iter()
                            .map(|(k, v)| HeaderEdit::Add(k.to_string(), v.to_string())),
                    );
                    *h = new;
                    edits
                }
                Err(s) => return Ok(s.code()),
            };
            note_edits(caller.data_mut(), map, edits);
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Ctx<'_>,
         map: i32,
         kp: i32,
         ks: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32> {
            const NAME: &str = "proxy_get_header_map_value";
            let Some(map) = map_type(caller.data(), map, NAME) else {
                return Ok(Status::BadArgument.code());
            };
            let key = read_string(&caller, kp, ks, NAME)?;
            let value = match map_mut(caller.data_mut(), map, NAME, false) {
                Ok(h) => h.get(&key).map(|v| v.as_bytes().to_vec()),
                Err(s) => return Ok(s.code()),
            };
            match value {
                Some(v) => {
                    copy_out(&mut caller, &v, ptr_ptr, size_ptr, NAME)?;
                    Ok(Status::Ok.code())
                }
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |caller: Ctx<'_>, map: i32, kp: i32, ks: i32, vp: i32, vs: i32| -> Result<i32> {
            write_pair(
                caller,
                [map, kp, ks, vp, vs],
                "proxy_replace_header_map_value",
                Replace::Set,
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |caller: Ctx<'_>, map: i32, kp: i32, ks: i32, vp: i32, vs: i32| -> Result<i32> {
            write_pair(
                caller,
                [map, kp, ks, vp, vs],
                "proxy_add_header_map_value",
                Replace::Add,
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Ctx<'_>, map: i32, kp: i32, ks: i32| -> Result<i32> {
            const NAME: &str = "proxy_remove_header_map_value";
            let Some(map) = map_type(caller.data(), map, NAME) else {
                return Ok(Status::BadArgument.code());
            };
            let key = read_string(&caller, kp, ks, NAME)?;
            match map_mut(caller.data_mut(), map, NAME, true) {
                Ok(h) => h.remove(&key),
                Err(s) => return Ok(s.code()),
            }
            let edit = HeaderEdit::Remove(key.to_ascii_lowercase());
            note_edits(caller.data_mut(), map, vec![edit]);
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Ctx<'_>, map: i32, out: i32| -> Result<i32> {
            const NAME: &str = "proxy_get_header_map_size";
            let Some(map) = map_type(caller.data(), map, NAME) else {
                return Ok(Status::BadArgument.code());
            };
            let size = map_mut(caller.data_mut(), map, NAME, false)
                .map(|h| h.byte_size())
                .unwrap_or(0);
            write_u32(&mut caller, out, size as u32, NAME)?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}

/// Which single-value write `write_pair` does.
#[derive(Copy, Clone)]
enum Replace {
    Set,
    Add,
}

/// The shared body of `proxy_replace_header_map_value` and `proxy_add_header_map_value`:
/// read name and value from guest memory, then apply the write to the writable map.
fn write_pair(
    mut caller: Ctx<'_>,
    [map, kp, ks, vp, vs]: [i32; 5],
    name: &'static str,
    op: Replace,
) -> Result<i32> {
    let Some(map) = map_type(caller.data(), map, name) else {
        return Ok(Status::BadArgument.code());
    };
    let key = read_string(&caller, kp, ks, name)?;
    let value = read_string(&caller, vp, vs, name)?;
    let edit = match map_mut(caller.data_mut(), map, name, true) {
        Ok(h) => {
            let lower = key.to_ascii_lowercase();
            match op {
                Replace::Set => {
                    h.set(&key, &value);
                    HeaderEdit::Set(lower, value)
                }
                Replace::Add => {
                    h.add(&key, &value);
                    HeaderEdit::Add(lower, value)
                }
            }
        }
        Err(s) => return Ok(s.code()),
    };
    note_edits(caller.data_mut(), map, vec![edit]);
    Ok(Status::Ok.code())
}
