//! What the HAProxy side must be able to apply, agreed between the generated configuration and the
//! agent: which request headers the plugin may set or remove (HAProxy's `set-header` takes literal
//! names, so every name is listed in advance), which local replies it may send, and the variable
//! that carries each piece.
//!
//! The agent and `haproxy-config` build the same [`Plan`] from the same policy, so a header the
//! configuration does not know is never silently dropped: the agent refuses the request instead.

use portcullis::config::Config;
use portcullis::policy::KeySource;
use portcullis::token::TokenSource;

/// The SPOE engine, agent, message and group names, and the variable prefix.
pub const ENGINE: &str = "portcullis";
/// The SPOE variable prefix (`option var-prefix`): variables arrive as `txn.portcullis.<name>`.
pub const VAR_PREFIX: &str = "portcullis";
/// The SPOE message the agent answers.
pub const MESSAGE: &str = "portcullis-request";

/// The variable set last in every ACK: true when the request may go on. HAProxy drops the rest of an
/// ACK after a malformed action, so a cut-short list leaves it unset and the request is refused.
pub const VAR_ALLOW: &str = "allow";
/// The status of a local reply (INT).
pub const VAR_STATUS: &str = "status";
/// Which content type the local reply has: see [`ReplyType`].
pub const VAR_REPLY_TYPE: &str = "rtype";
/// The body of a local reply.
pub const VAR_BODY: &str = "body";
/// The rewritten `:path` (path and query) when the plugin changed it.
pub const VAR_PATH: &str = "path";
/// Why the agent refused a request itself (for HAProxy's logs).
pub const VAR_REFUSAL: &str = "refusal";

/// Local-reply headers carried back, each in a variable of its own (`r_` + name with `_` for `-`).
pub const REPLY_HEADERS: &[&str] = &[
    "www-authenticate",
    "retry-after",
    "cache-control",
    "location",
];

/// The content types a local reply can have; HAProxy's `http-request return` takes the type as a
/// literal, so there is one rule per status and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyType {
    /// `application/json`.
    Json,
    /// `text/html; charset=utf-8`.
    Html,
    /// `text/plain; charset=utf-8` (and anything else).
    Text,
}

impl ReplyType {
    /// All of them, in rule order.
    pub const ALL: [ReplyType; 3] = [ReplyType::Json, ReplyType::Html, ReplyType::Text];

    /// The value of [`VAR_REPLY_TYPE`].
    pub fn code(self) -> &'static str {
        match self {
            ReplyType::Json => "json",
            ReplyType::Html => "html",
            ReplyType::Text => "text",
        }
    }

    /// The `content-type` HAProxy sends.
    pub fn content_type(self) -> &'static str {
        match self {
            ReplyType::Json => "application/json",
            ReplyType::Html => "text/html; charset=utf-8",
            ReplyType::Text => "text/plain; charset=utf-8",
        }
    }

    /// The type for a `content-type` the plugin gave.
    pub fn of(content_type: Option<&str>) -> ReplyType {
        let essence = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/json") | Some("application/problem+json") => ReplyType::Json,
            Some("text/html") => ReplyType::Html,
            _ => ReplyType::Text,
        }
    }
}

/// The statuses Portcullis answers locally; another status is refused with 503 by the agent, since
/// HAProxy cannot take a status from a variable.
pub const LOCAL_STATUSES: &[u16] = &[302, 400, 401, 403, 500, 502, 503];

/// One request header the plugin may change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The header name, lower-case.
    pub name: String,
    /// Whether the plugin owns it: HAProxy removes every inbound copy before applying the verdict.
    pub owned: bool,
}

/// The headers, statuses and variables both sides agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Headers the plugin may set or remove, each with the index of its variables (`h<i>`, `d<i>`).
    pub slots: Vec<Slot>,
    /// Other spellings of owned headers that HAProxy removes from every request (`x_jwt_sub` for
    /// `x-jwt-sub`: CGI-style upstreams read them as the same header).
    pub always_removed: Vec<String>,
    /// Whether the plugin may rewrite `:path` (a query token removed, or path normalization).
    pub rewrites_path: bool,
    /// How long the plugin may hold a request (waiting for keys: discovery and JWKS, each within
    /// the provider's fetch timeout): the agent waits this long, HAProxy's `timeout processing` a
    /// little longer.
    pub hold_ms: u64,
    /// The callout clusters the policy names (each needs `--cluster NAME=URL`).
    pub clusters: Vec<String>,
    /// The route tag header and every tag the policy can give, when it routes by identity.
    pub routing: Option<RouteTags>,
}

/// What HAProxy chooses the backend by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTags {
    /// The header the plugin sets the tag in (also one of the owned slots).
    pub header: String,
    /// The tags, in policy order.
    pub tags: Vec<String>,
}

/// The hold budget when every provider's keys are inline: nothing to wait for but the VM.
const INLINE_HOLD_MS: u64 = 1000;

impl Plan {
    /// The plan for a Portcullis policy.
    pub fn for_policy(config: &Config) -> Plan {
        let policy = &config.policy;
        let mut plan = Plan {
            slots: Vec::new(),
            always_removed: Vec::new(),
            rewrites_path: policy.path_mode == portcullis::config::PathMode::Normalize,
            hold_ms: INLINE_HOLD_MS,
            clusters: Vec::new(),
            routing: policy.routing.as_ref().map(|r| RouteTags {
                header: r.header.clone(),
                tags: r.tags().into_iter().map(str::to_string).collect(),
            }),
        };
        for provider in &policy.providers {
            if let KeySource::Remote(fetch) = &provider.keys {
                // Discovery, then the JWKS, then a tick to notice the answer.
                let budget = fetch.timeout_ms.saturating_mul(2).saturating_add(500);
                plan.hold_ms = plan.hold_ms.max(budget);
                if !plan.clusters.contains(&fetch.cluster) {
                    plan.clusters.push(fetch.cluster.clone());
                }
            }
        }
        for name in policy.owned_headers() {
            plan.add(&name, true);
            let underscored = name.replace('-', "_");
            if underscored != name && !plan.always_removed.contains(&underscored) {
                plan.always_removed.push(underscored);
            }
        }
        for provider in &policy.providers {
            for source in &provider.sources {
                match source {
                    TokenSource::Header { name, .. } => plan.add(name, false),
                    TokenSource::Cookie { .. } => plan.add("cookie", false),
                    TokenSource::Query { .. } => plan.rewrites_path = true,
                }
            }
        }
        // A session's cookies are taken out of the Cookie header before it goes upstream.
        if !policy.logins.is_empty() {
            plan.add("cookie", false);
        }
        // The code exchange and session refreshes are callouts too, bounded by their timeout.
        for login in &policy.logins {
            plan.hold_ms = plan.hold_ms.max(login.timeout_ms.saturating_add(500));
            if !plan.clusters.contains(&login.cluster) {
                plan.clusters.push(login.cluster.clone());
            }
        }
        plan
    }

    fn add(&mut self, name: &str, owned: bool) {
        let name = name.to_ascii_lowercase();
        match self.slots.iter_mut().find(|s| s.name == name) {
            Some(slot) => slot.owned |= owned,
            None => self.slots.push(Slot { name, owned }),
        }
    }

    /// The slot index of a header name (case-insensitive).
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.name.eq_ignore_ascii_case(name))
    }

    /// Whether HAProxy removes this header from every request anyway.
    pub fn removed_anyway(&self, name: &str) -> bool {
        self.always_removed
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
            || self.slot(name).is_some_and(|i| self.slots[i].owned)
    }
}

/// The variable holding the value of slot `i`.
pub fn value_var(i: usize) -> String {
    format!("h{i}")
}

/// The variable saying slot `i` is removed.
pub fn delete_var(i: usize) -> String {
    format!("d{i}")
}

/// The variable holding local-reply header `name`.
pub fn reply_var(name: &str) -> String {
    format!("r_{}", name.replace('-', "_"))
}

/// Most `Set-Cookie` headers one local reply carries: a sign-in's end sets the session's
/// pieces (up to four) and deletes its flow cookie.
pub const MAX_REPLY_COOKIES: usize = 6;

/// The variable holding the `i`th `Set-Cookie` of a local reply.
pub fn reply_cookie_var(i: usize) -> String {
    format!("r_set_cookie_{i}")
}

/// The full name HAProxy gives a transaction variable of ours.
pub fn txn(var: &str) -> String {
    format!("txn.{VAR_PREFIX}.{var}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Plan {
        Plan::for_policy(&portcullis::config::parse(json.as_bytes()).unwrap())
    }

    const POLICY: &str = r#"{
        "providers": {"p": {"issuer": "https://i.example", "audiences": ["a"],
            "remote_jwks": {"cluster": "idp", "uri": "https://i.example/jwks", "timeout_ms": 2000},
            "token_sources": [{"header": "authorization", "prefix": "Bearer "},
                               {"cookie": "session"}, {"query": "access_token"}]}},
        "rules": [{"name": "all", "match": {"path": {"prefix": "/"}}}],
        "claim_headers": [{"claim": "sub", "header": "X-Jwt-Sub"}, {"claim": "scope", "header": "x-jwt-scope"}]
    }"#;

    #[test]
    fn owned_headers_come_first_then_token_sources() {
        let p = plan(POLICY);
        let names: Vec<_> = p.slots.iter().map(|s| (s.name.as_str(), s.owned)).collect();
        assert_eq!(
            names,
            [
                ("x-jwt-sub", true),
                ("x-jwt-scope", true),
                ("authorization", false),
                ("cookie", false)
            ]
        );
        assert_eq!(p.always_removed, ["x_jwt_sub", "x_jwt_scope"]);
        assert!(p.rewrites_path, "a query token source rewrites :path");
        assert_eq!(p.clusters, ["idp"]);
        assert_eq!(
            p.hold_ms, 4500,
            "discovery and JWKS within 2 s each, and a tick"
        );
        assert!(p.removed_anyway("X_JWT_SUB"));
        assert!(!p.removed_anyway("authorization"));
        assert_eq!(p.routing, None);
    }

    #[test]
    fn a_routing_policy_owns_its_tag_header_and_lists_every_tag() {
        let p = plan(
            r#"{
            "providers": {"p": {"issuer": "https://i.example", "audiences": ["a"],
                "remote_jwks": {"cluster": "idp", "uri": "https://i.example/jwks"}}},
            "rules": [{"match": {"path": {"prefix": "/"}}, "routing": "required"}],
            "routing": {"header": "X-Pool", "default": "general", "routes": [
                {"claim": "groups", "equals": "ops", "tag": "admin"},
                {"claim": "groups", "equals": "root", "tag": "admin"}]}
        }"#,
        );
        let routing = p.routing.as_ref().unwrap();
        assert_eq!(routing.header, "x-pool");
        assert_eq!(routing.tags, ["admin", "general"]);
        assert!(p.removed_anyway("x-pool") && p.removed_anyway("x_pool"));
    }

    #[test]
    fn variable_names_fit_haproxy_s_63_characters() {
        let longest = REPLY_HEADERS
            .iter()
            .map(|h| txn(&reply_var(h)))
            .chain([txn(&value_var(9999)), txn(VAR_REFUSAL)])
            .map(|n| n.len())
            .max();
        assert!(longest.is_some_and(|n| n <= 63), "{longest:?}");
    }

    #[test]
    fn reply_types_follow_the_content_type_essence() {
        assert_eq!(ReplyType::of(Some("application/json")), ReplyType::Json);
        assert_eq!(
            ReplyType::of(Some("Text/HTML; charset=utf-8")),
            ReplyType::Html
        );
        assert_eq!(ReplyType::of(None), ReplyType::Text);
    }
}
