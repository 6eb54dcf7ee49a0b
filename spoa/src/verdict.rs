//! The plugin's verdict as SPOE variables, per the [`Plan`] the HAProxy configuration was generated
//! from. Sans-IO: a verdict in, the variables of one ACK out.

use proxy_wasm_harness::{HeaderEdit, Headers, RequestVerdict};

use crate::plan::{self, Plan, ReplyType};

/// A variable's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string (bytes).
    Str(Vec<u8>),
}

/// One transaction variable to set (name without the `txn.<prefix>.` part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Var {
    /// The name.
    pub name: String,
    /// The value.
    pub value: Value,
}

impl Var {
    fn new(name: impl Into<String>, value: Value) -> Var {
        Var {
            name: name.into(),
            value,
        }
    }
}

/// Why the agent refused a request itself (HAProxy answers 503).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The plugin changed a header the generated configuration cannot apply.
    #[error("the plugin changed header `{0}`, which the HAProxy configuration does not apply: regenerate it with `portcullis-spoa haproxy-config` for this policy")]
    UnknownHeader(String),
    /// A value holds CR, LF or NUL: HAProxy would copy it verbatim into the request.
    #[error("the plugin's value for `{0}` holds CR, LF or NUL")]
    UnsafeValue(String),
    /// The plugin's local reply sets more cookies than the configuration carries.
    #[error("the plugin's reply sets {0} cookies; the HAProxy configuration carries {max}", max = plan::MAX_REPLY_COOKIES)]
    TooManyCookies(usize),
    /// The plugin answered with a status the configuration has no rule for.
    #[error("the plugin answered {0}, a status the HAProxy configuration has no rule for")]
    Status(u32),
    /// The plugin reset the stream.
    #[error("the plugin reset the stream")]
    Reset,
    /// The plugin's VM failed (trapped, ran out of its budget, or could not be started).
    #[error("the plugin VM failed: {0}")]
    VmFailed(String),
    /// The plugin held the request longer than the agent waits.
    #[error("the plugin held the request for longer than {0} ms")]
    Held(u64),
    /// The NOTIFY lacked what the request needs.
    #[error("the SPOE message is unusable: {0}")]
    BadMessage(String),
    /// The agent is shutting down or overloaded.
    #[error("the agent is unavailable: {0}")]
    Unavailable(&'static str),
}

impl Refusal {
    /// A short code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownHeader(_) => "unknown_header",
            Refusal::UnsafeValue(_) => "unsafe_value",
            Refusal::Status(_) => "unknown_status",
            Refusal::TooManyCookies(_) => "too_many_cookies",
            Refusal::Reset => "reset",
            Refusal::VmFailed(_) => "vm_failed",
            Refusal::Held(_) => "held_too_long",
            Refusal::BadMessage(_) => "bad_message",
            Refusal::Unavailable(_) => "unavailable",
        }
    }
}

fn safe(value: &[u8]) -> bool {
    !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// The variables for a verdict: header edits and `allow` (last) for a forwarded request, the reply
/// for a local one; a verdict the configuration cannot apply is a [`Refusal`].
pub fn encode(plan: &Plan, verdict: &RequestVerdict) -> Result<Vec<Var>, Refusal> {
    match verdict {
        RequestVerdict::Forward { edits, headers } => forward(plan, edits, headers),
        RequestVerdict::Respond {
            status,
            headers,
            body,
            ..
        } => respond(*status, headers, body),
        RequestVerdict::Reset => Err(Refusal::Reset),
    }
}

fn forward(plan: &Plan, edits: &[HeaderEdit], after: &Headers) -> Result<Vec<Var>, Refusal> {
    let mut touched: Vec<(String, bool)> = Vec::new();
    for edit in edits {
        let (name, removal) = match edit {
            HeaderEdit::Remove(n) => (n, true),
            HeaderEdit::Set(n, _) | HeaderEdit::Add(n, _) => (n, false),
        };
        let name = name.to_ascii_lowercase();
        match touched.iter_mut().find(|(n, _)| *n == name) {
            Some((_, only_removed)) => *only_removed &= removal,
            None => touched.push((name, removal)),
        }
    }
    let mut vars = Vec::new();
    for (name, only_removed) in touched {
        if name == ":path" {
            let path = after.get(":path").unwrap_or("/");
            if !plan.rewrites_path {
                return Err(Refusal::UnknownHeader(name));
            }
            if !safe(path.as_bytes()) {
                return Err(Refusal::UnsafeValue(name));
            }
            vars.push(Var::new(
                plan::VAR_PATH,
                Value::Str(path.as_bytes().to_vec()),
            ));
            continue;
        }
        if name.starts_with(':') {
            return Err(Refusal::UnknownHeader(name));
        }
        let Some(i) = plan.slot(&name) else {
            if only_removed && plan.removed_anyway(&name) {
                continue;
            }
            return Err(Refusal::UnknownHeader(name));
        };
        let values = after.get_all(&name);
        if values.is_empty() {
            if !plan.slots[i].owned {
                vars.push(Var::new(plan::delete_var(i), Value::Bool(true)));
            }
            continue;
        }
        let joined = values.join(if name == "cookie" { "; " } else { ", " });
        if !safe(joined.as_bytes()) {
            return Err(Refusal::UnsafeValue(name));
        }
        vars.push(Var::new(
            plan::value_var(i),
            Value::Str(joined.into_bytes()),
        ));
    }
    vars.push(Var::new(plan::VAR_ALLOW, Value::Bool(true)));
    Ok(vars)
}

fn respond(status: u32, headers: &Headers, body: &[u8]) -> Result<Vec<Var>, Refusal> {
    if !plan::LOCAL_STATUSES.iter().any(|s| u32::from(*s) == status) {
        return Err(Refusal::Status(status));
    }
    let kind = ReplyType::of(headers.get("content-type"));
    let mut vars = vec![
        Var::new(plan::VAR_STATUS, Value::Int(i64::from(status))),
        Var::new(plan::VAR_REPLY_TYPE, Value::Str(kind.code().into())),
    ];
    for name in plan::REPLY_HEADERS {
        if let Some(v) = headers.get(name) {
            if !safe(v.as_bytes()) {
                return Err(Refusal::UnsafeValue((*name).into()));
            }
            vars.push(Var::new(
                plan::reply_var(name),
                Value::Str(v.as_bytes().into()),
            ));
        }
    }
    let cookies = headers.get_all("set-cookie");
    if cookies.len() > plan::MAX_REPLY_COOKIES {
        return Err(Refusal::TooManyCookies(cookies.len()));
    }
    for (i, c) in cookies.iter().enumerate() {
        if !safe(c.as_bytes()) {
            return Err(Refusal::UnsafeValue("set-cookie".into()));
        }
        vars.push(Var::new(
            plan::reply_cookie_var(i),
            Value::Str(c.as_bytes().into()),
        ));
    }
    if body.contains(&0) {
        return Err(Refusal::UnsafeValue("the reply body".into()));
    }
    vars.push(Var::new(plan::VAR_BODY, Value::Str(body.to_vec())));
    Ok(vars)
}

/// The variables for a request the agent refuses: a 503 with a JSON body, no `allow`.
pub fn refused(refusal: &Refusal) -> Vec<Var> {
    vec![
        Var::new(plan::VAR_REFUSAL, Value::Str(refusal.code().into())),
        Var::new(plan::VAR_STATUS, Value::Int(503)),
        Var::new(
            plan::VAR_REPLY_TYPE,
            Value::Str(ReplyType::Json.code().into()),
        ),
        Var::new(plan::reply_var("retry-after"), Value::Str(b"1".to_vec())),
        Var::new(
            plan::VAR_BODY,
            Value::Str(
                br#"{"error":"temporarily_unavailable","error_description":"the identity check could not be made"}"#
                    .to_vec(),
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Slot;

    fn plan() -> Plan {
        Plan {
            slots: vec![
                Slot {
                    name: "x-jwt-sub".into(),
                    owned: true,
                },
                Slot {
                    name: "authorization".into(),
                    owned: false,
                },
                Slot {
                    name: "cookie".into(),
                    owned: false,
                },
            ],
            always_removed: vec!["x_jwt_sub".into()],
            rewrites_path: true,
            hold_ms: 1000,
            clusters: Vec::new(),
            routing: None,
        }
    }

    fn forward(edits: Vec<HeaderEdit>, start: &[(&str, &str)]) -> Result<Vec<Var>, Refusal> {
        let mut headers = Headers::from_iter(start.iter().copied());
        for e in &edits {
            e.apply(&mut headers);
        }
        encode(&plan(), &RequestVerdict::Forward { edits, headers })
    }

    fn names(vars: &[Var]) -> Vec<&str> {
        vars.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn a_forward_sets_its_slots_and_ends_with_allow() {
        let vars = forward(
            vec![
                HeaderEdit::Remove("x-jwt-sub".into()),
                HeaderEdit::Remove("x_jwt_sub".into()),
                HeaderEdit::Set("x-jwt-sub".into(), "alice".into()),
                HeaderEdit::Remove("authorization".into()),
                HeaderEdit::Set("cookie".into(), "a=1".into()),
                HeaderEdit::Set(":path".into(), "/x?y=1".into()),
            ],
            &[
                (":path", "/x?y=1&access_token=t"),
                ("x-jwt-sub", "mallory"),
                ("x_jwt_sub", "m"),
            ],
        )
        .unwrap();
        assert_eq!(names(&vars), ["h0", "d1", "h2", "path", "allow"]);
        assert_eq!(vars[0].value, Value::Str(b"alice".to_vec()));
        assert_eq!(vars[3].value, Value::Str(b"/x?y=1".to_vec()));
        assert_eq!(vars[4].value, Value::Bool(true));
    }

    #[test]
    fn an_owned_header_removed_needs_no_variable() {
        let vars = forward(
            vec![HeaderEdit::Remove("X-JWT-SUB".into())],
            &[("x-jwt-sub", "m")],
        )
        .unwrap();
        assert_eq!(names(&vars), ["allow"]);
    }

    #[test]
    fn what_the_configuration_cannot_apply_is_refused() {
        let unknown = forward(vec![HeaderEdit::Set("x-other".into(), "1".into())], &[]);
        assert_eq!(unknown, Err(Refusal::UnknownHeader("x-other".into())));
        let pseudo = forward(
            vec![HeaderEdit::Set(":authority".into(), "evil".into())],
            &[],
        );
        assert!(matches!(pseudo, Err(Refusal::UnknownHeader(_))));
        let crlf = forward(
            vec![HeaderEdit::Set("x-jwt-sub".into(), "a\r\nx: y".into())],
            &[],
        );
        assert_eq!(crlf, Err(Refusal::UnsafeValue("x-jwt-sub".into())));
        let mut no_path = plan();
        no_path.rewrites_path = false;
        let edits = vec![HeaderEdit::Set(":path".into(), "/".into())];
        let v = RequestVerdict::Forward {
            edits,
            headers: Headers::from_iter([(":path", "/")]),
        };
        assert!(matches!(
            encode(&no_path, &v),
            Err(Refusal::UnknownHeader(_))
        ));
    }

    #[test]
    fn a_local_reply_carries_status_type_headers_and_body_without_allow() {
        let v = RequestVerdict::Respond {
            status: 401,
            headers: Headers::from_iter([
                ("content-type", "application/json"),
                ("www-authenticate", "Bearer realm=\"r\""),
                ("x-ignored", "1"),
            ]),
            body: b"{}".to_vec(),
            details: String::new(),
        };
        let vars = encode(&plan(), &v).unwrap();
        assert_eq!(
            names(&vars),
            ["status", "rtype", "r_www_authenticate", "body"]
        );
        assert_eq!(vars[0].value, Value::Int(401));
        let teapot = RequestVerdict::Respond {
            status: 418,
            headers: Headers::new(),
            body: Vec::new(),
            details: String::new(),
        };
        assert_eq!(encode(&plan(), &teapot), Err(Refusal::Status(418)));
        assert_eq!(encode(&plan(), &RequestVerdict::Reset), Err(Refusal::Reset));
    }

    #[test]
    fn a_sign_in_redirect_carries_each_of_its_cookies() {
        let reply = |n: usize| RequestVerdict::Respond {
            status: 302,
            headers: Headers::from_iter(
                [("location", "/app".to_string())]
                    .into_iter()
                    .chain((0..n).map(|i| ("set-cookie", format!("c{i}=v; Path=/; HttpOnly")))),
            ),
            body: Vec::new(),
            details: String::new(),
        };
        let vars = encode(&plan(), &reply(2)).unwrap();
        assert_eq!(
            names(&vars),
            [
                "status",
                "rtype",
                "r_location",
                "r_set_cookie_0",
                "r_set_cookie_1",
                "body"
            ]
        );
        assert_eq!(
            vars[4].value,
            Value::Str(b"c1=v; Path=/; HttpOnly".to_vec())
        );
        assert_eq!(
            encode(&plan(), &reply(plan::MAX_REPLY_COOKIES + 1)),
            Err(Refusal::TooManyCookies(plan::MAX_REPLY_COOKIES + 1))
        );
    }

    #[test]
    fn a_refusal_is_a_503_without_allow() {
        let vars = refused(&Refusal::Reset);
        assert!(vars.iter().all(|v| v.name != plan::VAR_ALLOW));
        assert!(vars.contains(&Var::new("status", Value::Int(503))));
    }
}
