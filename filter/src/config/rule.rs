//! Compiles `rules`: when each applies (path, methods, hosts), whether it needs a token,
//! which providers it accepts, and the scopes and claim conditions it requires.

use super::headers::is_tchar;
use super::raw::{
    RawAuth, RawClaimCondition, RawClaimPath, RawMatch, RawPath, RawRule, RawRuleRouting,
};
use super::{ConfigError, JsonPath};
use crate::claims::ClaimPath;
use crate::oidc::Login;
use crate::policy::{
    AuthMode, ClaimCondition, ClaimTest, HostPattern, PathMatch, Provider, RouteMatch, Rule,
    RuleRouting, ScopeRequirement,
};

/// Every rule, in order; `providers` are the compiled ones the rules may name, `routes`
/// whether the policy has a `routing` section for rules to use.
pub(super) fn compile_all(
    rules: Vec<RawRule>,
    providers: &[Provider],
    logins: &[Login],
    routes: bool,
) -> Result<Vec<Rule>, ConfigError> {
    let at = JsonPath::root("rules");
    if rules.is_empty() {
        return Err(at.invalid("must list at least one rule (with none, every request is denied)"));
    }
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| compile(&at.index(i), r, &names, logins, routes))
        .collect()
}

/// One rule; `providers` holds the name of each compiled provider, by index.
fn compile(
    at: &JsonPath,
    r: RawRule,
    providers: &[&str],
    logins: &[Login],
    routes: bool,
) -> Result<Rule, ConfigError> {
    let name = r.name.unwrap_or_else(|| at.to_string());
    let matcher = compile_match(&at.field("match"), r.matcher)?;
    let indexes = provider_indexes(&at.field("providers"), &r.providers, providers)?;
    let auth = match r.auth {
        RawAuth::Required => AuthMode::Required,
        RawAuth::Optional => AuthMode::Optional,
        RawAuth::None => AuthMode::None,
        RawAuth::Login => {
            let usable: Vec<usize> = logins
                .iter()
                .enumerate()
                .filter(|(_, l)| indexes.is_empty() || indexes.contains(&l.provider))
                .map(|(i, _)| i)
                .collect();
            match usable.as_slice() {
                [one] => AuthMode::Login(*one),
                [] => return Err(at.field("auth").invalid(
                    "\"login\" needs a provider with a \"login\" block among the rule's providers",
                )),
                _ => {
                    return Err(at
                        .field("providers")
                        .invalid("several providers can sign in: name the one this rule uses"))
                }
            }
        }
    };
    if auth == AuthMode::None
        && (!r.providers.is_empty()
            || !r.scopes.all_of.is_empty()
            || !r.scopes.any_of.is_empty()
            || !r.claims.is_empty())
    {
        return Err(
            at.invalid("a rule with \"auth\": \"none\" cannot require providers, scopes or claims")
        );
    }
    let routing = match r.routing {
        RawRuleRouting::Off => RuleRouting::Off,
        _ if !routes => {
            return Err(at
                .field("routing")
                .invalid("the policy has no \"routing\" section to tag requests by"))
        }
        _ if auth == AuthMode::None => {
            return Err(at
                .field("routing")
                .invalid("a rule with \"auth\": \"none\" has no identity to route by"))
        }
        RawRuleRouting::Required => RuleRouting::Required,
        RawRuleRouting::Optional => RuleRouting::Optional,
    };
    if auth != AuthMode::None && providers.is_empty() {
        return Err(at.invalid("needs a token, but no provider is configured"));
    }
    for (field, list) in [("all_of", &r.scopes.all_of), ("any_of", &r.scopes.any_of)] {
        if let Some(i) = list
            .iter()
            .position(|s| s.is_empty() || s.contains(' ') || s.contains('"'))
        {
            return Err(at
                .field("scopes")
                .field(field)
                .index(i)
                .invalid("a scope is one non-empty word without quotes"));
        }
    }
    let claims = r
        .claims
        .into_iter()
        .enumerate()
        .map(|(i, c)| compile_condition(&at.field("claims").index(i), c))
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        name,
        matcher,
        auth,
        providers: indexes,
        scopes: ScopeRequirement {
            all_of: r.scopes.all_of,
            any_of: r.scopes.any_of,
        },
        claims,
        routing,
    })
}

/// The indexes of the named providers. A provider with several issuers is several entries
/// under one name, so one name can give several indexes.
fn provider_indexes(
    at: &JsonPath,
    named: &[String],
    providers: &[&str],
) -> Result<Vec<usize>, ConfigError> {
    let mut indexes = Vec::new();
    for (i, p) in named.iter().enumerate() {
        let before = indexes.len();
        indexes.extend((0..providers.len()).filter(|&idx| providers[idx] == p.as_str()));
        if indexes.len() == before {
            return Err(at.index(i).invalid(format!("no provider named \"{p}\"")));
        }
    }
    Ok(indexes)
}

fn compile_match(at: &JsonPath, m: RawMatch) -> Result<RouteMatch, ConfigError> {
    Ok(RouteMatch {
        path: compile_path(&at.field("path"), m.path)?,
        methods: compile_methods(&at.field("methods"), &m.methods)?,
        hosts: compile_hosts(&at.field("hosts"), &m.hosts)?,
    })
}

fn compile_path(at: &JsonPath, path: Option<RawPath>) -> Result<PathMatch, ConfigError> {
    let Some(p) = path else {
        return Ok(PathMatch::Any);
    };
    match (p.exact, p.prefix, p.regex) {
        (Some(e), None, None) => Ok(PathMatch::Exact(e)),
        (None, Some(pr), None) => Ok(PathMatch::Prefix(pr)),
        (None, None, Some(re)) => regex_lite::Regex::new(&re)
            .map(PathMatch::Regex)
            .map_err(|e| at.field("regex").invalid(format!("not a valid regex: {e}"))),
        _ => Err(at.invalid("give exactly one of \"exact\", \"prefix\" or \"regex\"")),
    }
}

/// Methods are tokens (RFC 9110 §9.1), compared upper-cased.
fn compile_methods(at: &JsonPath, methods: &[String]) -> Result<Vec<String>, ConfigError> {
    methods
        .iter()
        .enumerate()
        .map(|(i, method)| {
            if method.is_empty() || !method.bytes().all(is_tchar) {
                return Err(at.index(i).invalid("not an HTTP method"));
            }
            Ok(method.to_ascii_uppercase())
        })
        .collect()
}

/// `api.example.com`, or `*.example.com` for its subdomains; a `*` anywhere else would
/// suggest a glob the matcher does not do.
fn compile_hosts(at: &JsonPath, hosts: &[String]) -> Result<Vec<HostPattern>, ConfigError> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                    Ok(HostPattern::Subdomain(suffix.to_string()))
                }
                Some(_) => Err(at
                    .index(i)
                    .invalid("a wildcard host is written \"*.example.com\"")),
                None if !h.is_empty() && !h.contains('*') => Ok(HostPattern::Exact(h)),
                None => Err(at.index(i).invalid("not a host name")),
            }
        })
        .collect()
}

/// A claim condition, as rules and routing entries write it.
pub(super) fn compile_condition(
    at: &JsonPath,
    c: RawClaimCondition,
) -> Result<ClaimCondition, ConfigError> {
    let any_of = match (c.one_of, c.any_of) {
        (Some(_), Some(_)) => {
            return Err(at.invalid("\"one_of\" and \"any_of\" mean the same; give one"))
        }
        (a, b) => a.or(b),
    };
    let mut tests = Vec::new();
    if let Some(v) = c.equals {
        tests.push(ClaimTest::Equals(v));
    }
    if let Some(v) = any_of {
        tests.push(ClaimTest::AnyOf(v));
    }
    if let Some(v) = c.all_of {
        tests.push(ClaimTest::AllOf(v));
    }
    if let Some(g) = c.glob {
        tests.push(ClaimTest::Glob(g));
    }
    if let Some(p) = c.present {
        tests.push(ClaimTest::Present(p));
    }
    let (Some(test), true) = (tests.pop(), tests.is_empty()) else {
        return Err(
            at.invalid("give exactly one test: equals, one_of, any_of, all_of, glob or present")
        );
    };
    if let ClaimTest::AnyOf(v) | ClaimTest::AllOf(v) = &test {
        if v.is_empty() {
            return Err(at.invalid("the list of values must not be empty"));
        }
    }
    Ok(ClaimCondition {
        path: claim_path(&at.field("claim"), c.claim)?,
        test,
    })
}

/// A claim as rules and claim headers name it.
pub(super) fn claim_path(at: &JsonPath, c: RawClaimPath) -> Result<ClaimPath, ConfigError> {
    match c {
        RawClaimPath::Dotted(s) if !s.is_empty() => Ok(ClaimPath::dotted(&s)),
        RawClaimPath::Segments(v) if !v.is_empty() && v.iter().all(|s| !s.is_empty()) => {
            Ok(ClaimPath::segments(v))
        }
        _ => Err(at.invalid("a claim is a non-empty name, dotted path, or array of keys")),
    }
}
