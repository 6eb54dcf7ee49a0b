//! The compiled policy: which rule applies to a request, and whether verified claims
//! satisfy it. Built from the JSON configuration by [`crate::config`].

use crate::claims::{self, ClaimPath};
pub use crate::config::PathMode;
use crate::jwks_fetch::FetchSettings;
use crate::keys::KeySet;
use crate::request::Request;
use crate::token::TokenSource;
use crate::verify::Requirements;
use regex_lite::Regex;
use serde_json::{Map, Value};

/// Whether decisions are enforced or only logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Denials are answered locally.
    Enforce,
    /// Every request goes through; denials are logged as what would have happened.
    Observe,
}

/// Whether a rule needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid token is required.
    Required,
    /// No token is fine; a token that is present must be valid.
    Optional,
    /// No verification at all (public routes).
    None,
    /// A valid token, or a browser session of this login (an index into
    /// [`Policy::logins`]); browsers without either are sent to sign in.
    Login(usize),
}

/// How a rule matches the request path (without query string).
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Every path.
    Any,
    /// Exactly this path.
    Exact(String),
    /// Paths starting with this.
    Prefix(String),
    /// Paths the regex matches (use anchors to match whole paths).
    Regex(Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Any => true,
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

/// A host a rule applies to: exact (`api.example.com`) or a wildcard (`*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// The host, lower-case.
    Exact(String),
    /// Any subdomain of this suffix (stored with its leading dot).
    Subdomain(String),
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h),
            HostPattern::Subdomain(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// What a request must look like for a rule to apply.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// Path condition.
    pub path: PathMatch,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Hosts; empty means any.
    pub hosts: Vec<HostPattern>,
}

impl RouteMatch {
    /// `path` is the normalized path ([`crate::path::normalize`]), never the raw `:path`:
    /// a rule must not be matched by a spelling the upstream resolves elsewhere.
    fn matches(&self, req: &Request<'_>, path: &str) -> bool {
        // Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
        (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method()))
            && (self.hosts.is_empty() || {
                let host = req.host();
                self.hosts.iter().any(|h| h.matches(&host))
            })
            && self.path.matches(path)
    }
}

/// Scopes a token must carry.
#[derive(Debug, Clone, Default)]
pub struct ScopeRequirement {
    /// Every one of these.
    pub all_of: Vec<String>,
    /// At least one of these (when non-empty).
    pub any_of: Vec<String>,
}

/// A test applied to a claim's value; arrays are tested element by element.
#[derive(Debug, Clone)]
pub enum ClaimTest {
    /// The value (or an element) equals this JSON value.
    Equals(Value),
    /// The value (or an element) is one of these.
    AnyOf(Vec<Value>),
    /// Every one of these is the value or one of its elements.
    AllOf(Vec<Value>),
    /// The value (or an element) is a string matching this glob.
    Glob(String),
    /// The claim is present (true) or absent (false).
    Present(bool),
}

/// A condition on one claim.
#[derive(Debug, Clone)]
pub struct ClaimCondition {
    /// Where the claim is.
    pub path: ClaimPath,
    /// What it must satisfy.
    pub test: ClaimTest,
}

impl ClaimCondition {
    /// Whether the claims satisfy the condition.
    pub fn holds(&self, payload: &Map<String, Value>) -> bool {
        let value = self.path.lookup(payload);
        match (&self.test, value) {
            (ClaimTest::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (ClaimTest::Equals(want), Some(v)) => claims::values(v).any(|x| x == want),
            (ClaimTest::AnyOf(set), Some(v)) => claims::values(v).any(|x| set.contains(x)),
            (ClaimTest::AllOf(set), Some(v)) => {
                set.iter().all(|want| claims::values(v).any(|x| x == want))
            }
            (ClaimTest::Glob(pattern), Some(v)) => claims::values(v)
                .filter_map(Value::as_str)
                .any(|s| claims::glob_matches(pattern, s)),
        }
    }
}

/// One entry of the rule list.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name used in logs.
    pub name: String,
    /// When the rule applies.
    pub matcher: RouteMatch,
    /// Whether a token is needed.
    pub auth: AuthMode,
    /// Indexes of the providers whose tokens the rule accepts; empty means all.
    pub providers: Vec<usize>,
    /// Required scopes.
    pub scopes: ScopeRequirement,
    /// Required claim conditions (all must hold).
    pub claims: Vec<ClaimCondition>,
    /// Whether the rule tags its requests for routing.
    pub routing: RuleRouting,
}

/// Whether a rule tags its requests with [`Policy::routing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRouting {
    /// No tag (an inbound copy is still removed).
    Off,
    /// A tag, or 403 when the identity maps to none.
    Required,
    /// A tag when the identity maps to one; forwarded untagged otherwise.
    Optional,
}

/// One routing entry: when its condition holds, the request gets its tag.
#[derive(Debug, Clone)]
pub struct RouteTag {
    /// The condition on the verified claims.
    pub when: ClaimCondition,
    /// The tag.
    pub tag: String,
}

/// Route tags from verified claims, for the proxy to choose the backend by.
#[derive(Debug, Clone)]
pub struct Routing {
    /// The header the tag goes upstream in, lower-case.
    pub header: String,
    /// Entries in order, first match wins.
    pub routes: Vec<RouteTag>,
    /// The tag when no entry matches.
    pub default: Option<String>,
}

impl Routing {
    /// The tag for these verified claims (`None`: anonymous), if any.
    pub fn tag_for(&self, claims: Option<&Map<String, Value>>) -> Option<&str> {
        let claims = claims?;
        self.routes
            .iter()
            .find(|r| r.when.holds(claims))
            .map(|r| r.tag.as_str())
            .or(self.default.as_deref())
    }

    /// Every tag the policy can give, in order, without repeats.
    pub fn tags(&self) -> Vec<&str> {
        let mut tags: Vec<&str> = Vec::new();
        for t in self
            .routes
            .iter()
            .map(|r| r.tag.as_str())
            .chain(self.default.as_deref())
        {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        tags
    }
}

/// Why verified claims do not satisfy a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The scopes to name in `WWW-Authenticate` (empty when the shortfall is not about scopes).
    pub scopes: Vec<String>,
    /// A short explanation for the client and the log.
    pub description: String,
}

impl Rule {
    /// True when the rule accepts tokens from provider `index`.
    pub fn accepts_provider(&self, index: usize) -> bool {
        self.providers.is_empty() || self.providers.contains(&index)
    }

    /// Checks scopes and claim conditions against verified claims.
    pub fn authorize(&self, payload: &Map<String, Value>) -> Result<(), Shortfall> {
        let granted = claims::scopes(payload);
        let missing: Vec<&String> = self
            .scopes
            .all_of
            .iter()
            .filter(|s| !granted.contains(&s.as_str()))
            .collect();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
            return Err(Shortfall {
                description: format!("missing scope: {}", names.join(" ")),
                scopes: self.scopes.all_of.clone(),
            });
        }
        if !self.scopes.any_of.is_empty()
            && !self
                .scopes
                .any_of
                .iter()
                .any(|s| granted.contains(&s.as_str()))
        {
            return Err(Shortfall {
                description: format!("needs one of the scopes: {}", self.scopes.any_of.join(" ")),
                scopes: self.scopes.any_of.clone(),
            });
        }
        if let Some(failed) = self.claims.iter().find(|c| !c.holds(payload)) {
            return Err(Shortfall {
                scopes: Vec::new(),
                description: format!("claim {} does not satisfy the rule", failed.path.as_str()),
            });
        }
        Ok(())
    }
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Keys given in the configuration.
    Inline(KeySet),
    /// Keys fetched from the identity provider through host callouts.
    Remote(Box<FetchSettings>),
}

/// A named identity provider.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The configuration key.
    pub name: String,
    /// What its tokens must satisfy.
    pub requirements: Requirements,
    /// Where its tokens are found, in order.
    pub sources: Vec<TokenSource>,
    /// Where its keys come from.
    pub keys: KeySource,
}

/// A claim copied into a request header for the upstream.
#[derive(Debug, Clone)]
pub struct ClaimHeader {
    /// The claim.
    pub path: ClaimPath,
    /// The header name, lower-case.
    pub header: String,
}

/// The whole compiled configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Enforce or observe.
    pub mode: Mode,
    /// The `realm` of `WWW-Authenticate`.
    pub realm: String,
    /// Providers in configuration order (sorted by name, since JSON objects are unordered).
    pub providers: Vec<Provider>,
    /// Rules, first match wins.
    pub rules: Vec<Rule>,
    /// Claims copied into headers on allow.
    pub claim_headers: Vec<ClaimHeader>,
    /// Header carrying the whole verified payload (base64url), if any.
    pub payload_header: Option<String>,
    /// Whether the token goes upstream.
    pub forward_token: bool,
    /// Whether the upstream gets the normalized path or the one the client sent.
    pub path_mode: PathMode,
    /// Browser sign-in, per provider that has it.
    pub logins: Vec<crate::oidc::Login>,
    /// Route tags from claims, if the policy routes by identity.
    pub routing: Option<Routing>,
}

impl Policy {
    /// The first rule matching the request, whose normalized path is `path`.
    pub fn route(&self, req: &Request<'_>, path: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matcher.matches(req, path))
    }

    /// Headers this plugin owns: removed from every inbound request so a client cannot
    /// spoof them.
    pub fn owned_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .claim_headers
            .iter()
            .map(|h| h.header.clone())
            .collect();
        names.extend(self.payload_header.iter().cloned());
        names.extend(self.routing.iter().map(|r| r.header.clone()));
        names.dedup();
        names
    }
}
