//! The request HAProxy describes in a NOTIFY, as the request a proxy-wasm plugin sees in Envoy.
//!
//! The SPOE message carries `method`, `pathq` (path and query, origin form; `url` when it is empty),
//! `hdrs` (`req.hdrs_bin`:
//! every header, in order, names lower-case), `src`/`src_port`, `tls` (`ssl_fc`) and `id`
//! (`unique-id`). Envoy shows an HTTP/1 `Host` as `:authority` and no `host` header, so the same is done
//! here; `id` becomes `x-request-id`, which Envoy would have added.

use proxy_wasm_harness::{Headers, Request};

use crate::spop::{decode_hdrs_bin, Message, TypedData};
use crate::verdict::Refusal;

fn text(message: &Message, name: &str) -> Option<String> {
    match message.arg(name)? {
        TypedData::String(b) | TypedData::Binary(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}

/// Builds the request from the agent's SPOE message.
pub fn from_message(message: &Message) -> Result<Request, Refusal> {
    let bad = |what: &str| Refusal::BadMessage(what.to_string());
    let method = text(message, "method").ok_or_else(|| bad("no `method` argument"))?;
    // `pathq` is empty for the asterisk form (`OPTIONS *`) and the authority form (`CONNECT
    // host:port`); Envoy shows those targets as they came, so `url` stands in.
    let path = text(message, "pathq")
        .filter(|p| !p.is_empty())
        .or_else(|| text(message, "url"))
        .ok_or_else(|| bad("no `pathq` or `url` argument"))?;
    let raw = message
        .arg("hdrs")
        .and_then(TypedData::as_bytes)
        .ok_or_else(|| bad("no `hdrs` argument (the headers did not fit in HAProxy's buffer)"))?;
    let pairs = decode_hdrs_bin(raw).map_err(|e| Refusal::BadMessage(e.to_string()))?;
    let mut headers = Headers::new();
    let mut authority = None;
    for (name, value) in &pairs {
        // Header bytes need not be UTF-8; replaced bytes cannot form a valid token or claim.
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value);
        if name == "host" && authority.is_none() {
            authority = Some(value.into_owned());
            continue;
        }
        headers.add(&name, &value);
    }
    if let Some(id) = text(message, "id").filter(|id| !id.is_empty()) {
        headers.set("x-request-id", &id);
    }
    let tls = matches!(message.arg("tls"), Some(TypedData::Bool(true)));
    let source = match message.arg("src") {
        Some(TypedData::Ipv4(a)) => Some(a.to_string()),
        Some(TypedData::Ipv6(a)) => Some(format!("[{a}]")),
        _ => None,
    };
    let port = message.arg("src_port").and_then(TypedData::as_u64);
    let mut request = Request::new(&method, &path)
        .authority(authority.as_deref().unwrap_or(""))
        .scheme(if tls { "https" } else { "http" });
    request.headers = headers;
    if let Some(ip) = source {
        request = request.source_address(&format!("{ip}:{}", port.unwrap_or(0)));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::encode_varint;

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in pairs {
            encode_varint(n.len() as u64, &mut out);
            out.extend_from_slice(n.as_bytes());
            encode_varint(v.len() as u64, &mut out);
            out.extend_from_slice(v.as_bytes());
        }
        out.extend_from_slice(&[0, 0]);
        out
    }

    fn message(args: Vec<(&str, TypedData)>) -> Message {
        Message {
            name: b"portcullis-request".to_vec(),
            args: args
                .into_iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v))
                .collect(),
        }
    }

    #[test]
    fn host_becomes_the_authority_and_the_rest_stays_in_order() {
        let m = message(vec![
            ("method", TypedData::String(b"GET".to_vec())),
            ("pathq", TypedData::String(b"/api?x=1".to_vec())),
            (
                "hdrs",
                TypedData::Binary(hdrs(&[
                    ("host", "a.example"),
                    ("x-b", "1"),
                    ("x-a", "2"),
                    ("x-b", "3"),
                ])),
            ),
            ("src", TypedData::Ipv4("10.0.0.7".parse().unwrap())),
            ("src_port", TypedData::Int64(5555)),
            ("tls", TypedData::Bool(true)),
            ("id", TypedData::String(b"req-1".to_vec())),
        ]);
        let r = from_message(&m).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api?x=1"));
        assert_eq!(
            (r.authority.as_str(), r.scheme.as_str()),
            ("a.example", "https")
        );
        assert_eq!(r.source_address, "10.0.0.7:5555");
        let names: Vec<_> = r.headers.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(names, ["x-b=1", "x-a=2", "x-b=3", "x-request-id=req-1"]);
    }

    #[test]
    fn a_message_without_headers_is_refused() {
        let m = message(vec![
            ("method", TypedData::String(b"GET".to_vec())),
            ("pathq", TypedData::String(b"/".to_vec())),
            ("hdrs", TypedData::Null),
        ]);
        assert!(matches!(from_message(&m), Err(Refusal::BadMessage(_))));
        let m = message(vec![("pathq", TypedData::String(b"/".to_vec()))]);
        assert!(matches!(from_message(&m), Err(Refusal::BadMessage(_))));
    }
}
