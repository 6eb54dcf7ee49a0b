//! Properties (`proxy_get_property`, `proxy_set_property`), serialized per Envoy's conventions: strings as raw
//! bytes, integers as 8-byte little-endian, booleans as one byte, maps as proxy-wasm pair maps.
//!
//! Known paths: `plugin_name`, `plugin_root_id`, `plugin_vm_id`; in an HTTP context `request.path`,
//! `request.url_path`, `request.host`, `request.scheme`, `request.method`, `request.protocol`, `request.id`,
//! `request.query`, `request.referer`, `request.useragent`, `request.headers` (and `request.headers.<name>`),
//! `request.size`, `response.code`, `response.headers` (and `.<name>`), `response.code_details`,
//! `source.address`, `source.port`, `destination.address`, `destination.port`, `connection.mtls`. Anything set
//! with `proxy_set_property` or the harness builder is returned as set.

use wasmtime::{Linker, Result};

use super::{copy_out, read, Ctx};
use crate::host::HostState;
use crate::types::{serialize_pairs, Headers, Status};

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn header_prop(h: &Headers, rest: &[&str]) -> Option<Vec<u8>> {
    match rest {
        [] => Some(serialize_pairs(&h.0)),
        [name] => h.get(name).map(|v| v.as_bytes().to_vec()),
        _ => None,
    }
}

fn split_addr(addr: &str) -> (String, i64) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}

/// Looks up a property path for the current context of `state`.
pub(crate) fn lookup(state: &HostState, segments: &[&str]) -> Option<Vec<u8>> {
    let key = segments.join(".");
    if let Some(stream) = state.stream() {
        if let Some(v) = stream.properties.get(&key) {
            return Some(v.clone());
        }
    }
    {
        let w = state.shared.lock();
        if let Some(v) = w.properties.get(&key) {
            return Some(v.clone());
        }
        match key.as_str() {
            "plugin_name" => return Some(state.identity.plugin_name.as_bytes().to_vec()),
            "plugin_root_id" => return Some(state.identity.root_id.as_bytes().to_vec()),
            "plugin_vm_id" => return Some(w.vm_id.as_bytes().to_vec()),
            _ => {}
        }
    }
    let s = state.stream()?;
    let path = s
        .request_headers
        .get(":path")
        .unwrap_or(&s.request.path)
        .to_string();
    let str_prop = |v: &str| Some(v.as_bytes().to_vec());
    match segments {
        ["request", "path"] => str_prop(&path),
        ["request", "url_path"] => str_prop(path.split('?').next().unwrap_or("")),
        ["request", "query"] => str_prop(path.split_once('?').map(|(_, q)| q).unwrap_or("")),
        ["request", "host"] => str_prop(
            s.request_headers
                .get(":authority")
                .unwrap_or(&s.request.authority),
        ),
        ["request", "scheme"] => str_prop(
            s.request_headers
                .get(":scheme")
                .unwrap_or(&s.request.scheme),
        ),
        ["request", "method"] => str_prop(
            s.request_headers
                .get(":method")
                .unwrap_or(&s.request.method),
        ),
        ["request", "protocol"] => str_prop("HTTP/1.1"),
        ["request", "id"] => s.request_headers.get("x-request-id").and_then(str_prop),
        ["request", "referer"] => s.request_headers.get("referer").and_then(str_prop),
        ["request", "useragent"] => s.request_headers.get("user-agent").and_then(str_prop),
        ["request", "size"] => Some(int(s.request.body.len() as i64)),
        ["request", "headers", rest @ ..] => header_prop(&s.request_headers, rest),
        ["response", "headers", rest @ ..]
            if s.seen.contains(&crate::types::Callback::ResponseHeaders) =>
        {
            header_prop(&s.response_headers, rest)
        }
        ["response", "code"] if s.seen.contains(&crate::types::Callback::ResponseHeaders) => s
            .response_headers
            .get(":status")
            .and_then(|c| c.parse::<i64>().ok())
            .map(int),
        ["response", "code_details"] => s.local_details().and_then(str_prop),
        ["source", "address"] => str_prop(&s.request.source_address),
        ["source", "port"] => Some(int(split_addr(&s.request.source_address).1)),
        ["destination", "address"] => str_prop("127.0.0.1:8443"),
        ["destination", "port"] => Some(int(8443)),
        ["connection", "mtls"] => Some(vec![0]),
        _ => None,
    }
}

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Ctx<'_>, pp: i32, ps: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32> {
            const NAME: &str = "proxy_get_property";
            let raw = read(&caller, pp, ps, NAME)?;
            let path = String::from_utf8_lossy(&raw).into_owned();
            let segments: Vec<&str> = path.split('\0').filter(|s| !s.is_empty()).collect();
            match lookup(caller.data(), &segments) {
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
        "proxy_set_property",
        |mut caller: Ctx<'_>, pp: i32, ps: i32, vp: i32, vs: i32| -> Result<i32> {
            const NAME: &str = "proxy_set_property";
            let raw = read(&caller, pp, ps, NAME)?;
            let value = read(&caller, vp, vs, NAME)?;
            let key = String::from_utf8_lossy(&raw)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(".");
            let state = caller.data_mut();
            match state.stream_mut() {
                Some(s) => {
                    s.properties.insert(key, value);
                }
                None => {
                    state.shared.lock().properties.insert(key, value);
                }
            }
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
