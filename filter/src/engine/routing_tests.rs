//! Route tags from verified claims: which tag each identity gets, what the upstream sees,
//! and when the host is told to match the route again.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::config;
use portcullis_testkit::{self as testkit, claims, NOW};
use serde_json::json;

const ROLE: &str = "https://aws.amazon.com/role";

fn policy(extra: Value) -> Value {
    let mut c = json!({
        "providers": {"idp": {
            "issuer": "https://idp.test",
            "audiences": ["api"],
            "jwks": {"keys": [testkit::rsa().jwk()]}
        }},
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "auth": "none"},
            {"name": "plain", "match": {"path": {"prefix": "/plain/"}}},
            {"name": "guest", "match": {"path": {"prefix": "/guest/"}}, "auth": "optional",
             "routing": "optional"},
            {"name": "reports", "match": {"path": {"prefix": "/reports/"}}, "routing": "optional"},
            {"name": "db", "match": {"path": {"prefix": "/db/"}}, "routing": "required"}
        ],
        "claim_headers": [{"claim": "sub", "header": "x-jwt-sub"}],
        "routing": {
            "routes": [
                {"claim": ROLE, "glob": "arn:aws:iam::*:role/Admin*", "tag": "admin"},
                {"claim": "cognito:groups", "any_of": ["analysts", "readers"], "tag": "replica"}
            ]
        }
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}

fn engine(extra: Value) -> Engine {
    Engine::new(config::parse(policy(extra).to_string().as_bytes()).unwrap())
}

fn get(
    e: &mut Engine,
    path: &str,
    claims_extra: Option<Value>,
    more: &[(&str, &str)],
) -> Evaluation {
    let mut h = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "api.test".to_string()),
    ];
    if let Some(extra) = claims_extra {
        let token = testkit::rsa().sign(claims(extra));
        h.push(("authorization".into(), format!("Bearer {token}")));
    }
    h.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    e.decide(&h, UnixTime::from_secs(NOW))
}

fn allowed(ev: &Evaluation) -> &Allow {
    match &ev.step {
        Step::Allow(a) => a,
        other => panic!("expected allow, got {other:?}"),
    }
}

fn tag_sent(ev: &Evaluation) -> Option<&str> {
    allowed(ev)
        .request
        .set
        .iter()
        .find(|(n, _)| n == "x-portcullis-route")
        .map(|(_, v)| v.as_str())
}

fn admin() -> Value {
    json!({ROLE: "arn:aws:iam::123456789012:role/AdminOps"})
}

#[test]
fn the_first_entry_that_holds_gives_the_tag_and_the_route_is_matched_again() {
    let mut e = engine(json!({}));
    let ev = get(&mut e, "/db/users", Some(admin()), &[]);
    assert_eq!(tag_sent(&ev), Some("admin"));
    assert!(allowed(&ev).reroute);
    assert_eq!(ev.record.route.as_deref(), Some("admin"));
    assert!(
        ev.record.to_string().contains(" route=\"admin\" "),
        "{}",
        ev.record
    );
    // An admin who is also an analyst matches the first entry only.
    let both = json!({ROLE: "arn:aws:iam::1:role/Admin", "cognito:groups": ["analysts"]});
    assert_eq!(
        tag_sent(&get(&mut e, "/db/x", Some(both), &[])),
        Some("admin")
    );
    let reader = json!({"cognito:groups": ["readers"]});
    assert_eq!(
        tag_sent(&get(&mut e, "/db/x", Some(reader), &[])),
        Some("replica")
    );
    // A role that only looks like an admin one does not match the glob.
    let lookalike = json!({ROLE: "arn:aws:iam::1:role/ReadOnlyAdmin"});
    let ev = get(&mut e, "/db/x", Some(lookalike), &[]);
    assert!(
        matches!(&ev.step, Step::Respond(r) if r.status == 403),
        "{ev:?}"
    );
    assert_eq!(ev.record.reason, Reason::NoRoute);
    assert_eq!(
        ev.record.subject.as_deref(),
        Some("alice"),
        "the log says who"
    );
}

#[test]
fn an_inbound_tag_is_removed_on_every_rule_and_the_route_is_matched_again() {
    let mut e = engine(json!({}));
    let spoof = [
        ("x-portcullis-route", "admin"),
        ("X_Portcullis_Route", "admin"),
    ];
    for (path, who) in [
        ("/healthz", None),
        ("/plain/a", Some(json!({"cognito:groups": ["readers"]}))),
        ("/reports/a", Some(json!({"cognito:groups": ["nobody"]}))),
        ("/guest/a", None),
    ] {
        let ev = get(&mut e, path, who, &spoof);
        let a = allowed(&ev);
        assert!(
            a.request.remove.contains(&"x-portcullis-route".to_string()),
            "{path}"
        );
        assert!(
            a.request.remove.contains(&"X_Portcullis_Route".to_string()),
            "{path}"
        );
        assert_eq!(tag_sent(&ev), None, "{path}: no tag of the plugin's");
        assert!(a.reroute, "{path}: the spoofed route must not stand");
    }
    // The reader's tag replaces the spoofed one.
    let ev = get(
        &mut e,
        "/db/a",
        Some(json!({"cognito:groups": ["readers"]})),
        &spoof,
    );
    assert_eq!(tag_sent(&ev), Some("replica"));
}

#[test]
fn unmatched_identities_are_refused_or_untagged_as_the_rule_says() {
    let mut e = engine(json!({}));
    let nobody = json!({"cognito:groups": ["nobody"]});
    let ev = get(&mut e, "/db/a", Some(nobody.clone()), &[]);
    match &ev.step {
        Step::Respond(r) => {
            assert_eq!(r.status, 403);
            assert!(String::from_utf8_lossy(&r.body).contains("access_denied"));
            assert_eq!(r.header("www-authenticate"), None, "not a token problem");
        }
        other => panic!("{other:?}"),
    }
    let ev = get(&mut e, "/reports/a", Some(nobody), &[]);
    assert_eq!(tag_sent(&ev), None);
    assert_eq!(ev.record.reason, Reason::Authorized);
    // Anonymous requests have no identity to map: untagged where the rule allows them.
    let ev = get(&mut e, "/guest/a", None, &[]);
    assert_eq!(ev.record.reason, Reason::Anonymous);
    assert_eq!(tag_sent(&ev), None);
    // A rule that does not route never tags, whoever calls.
    assert_eq!(tag_sent(&get(&mut e, "/plain/a", Some(admin()), &[])), None);
}

#[test]
fn the_default_tag_catches_identities_no_entry_maps() {
    let mut e = engine(json!({"routing": {
        "header": "X-Pool",
        "routes": [{"claim": ROLE, "glob": "*role/Admin*", "tag": "admin"}],
        "default": "general"
    }}));
    let ev = get(
        &mut e,
        "/db/a",
        Some(json!({"cognito:groups": ["nobody"]})),
        &[],
    );
    assert!(allowed(&ev)
        .request
        .set
        .contains(&("x-pool".into(), "general".into())));
    let ev = get(&mut e, "/db/a", None, &[("x-pool", "admin")]);
    assert!(
        matches!(&ev.step, Step::Respond(r) if r.status == 401),
        "a token is still needed"
    );
}

#[test]
fn observe_mode_forwards_an_unrouted_identity_untagged_and_still_strips_spoofs() {
    let mut e = engine(json!({"mode": "observe"}));
    let ev = get(
        &mut e,
        "/db/a",
        Some(json!({"cognito:groups": ["nobody"]})),
        &[("x-portcullis-route", "admin")],
    );
    assert_eq!(ev.record.verdict, Verdict::Deny);
    assert_eq!(ev.record.reason, Reason::NoRoute);
    assert!(!ev.record.enforced);
    let a = allowed(&ev);
    assert_eq!(tag_sent(&ev), None);
    assert!(a.request.remove.contains(&"x-portcullis-route".to_string()));
    assert!(a.reroute);
}

#[test]
fn without_routing_the_route_is_matched_again_only_for_a_rewritten_path() {
    let base = json!({"routing": null, "rules": [{"match": {"path": {"prefix": "/"}}}],
                      "path_mode": "normalize"});
    let mut e = Engine::new({
        let mut p = policy(base);
        p.as_object_mut().unwrap().remove("routing");
        config::parse(p.to_string().as_bytes()).unwrap()
    });
    let ev = get(&mut e, "/a", Some(json!({})), &[]);
    assert!(
        !allowed(&ev).request.set.is_empty(),
        "the claim header is set"
    );
    assert!(!allowed(&ev).reroute);
    let ev = get(&mut e, "/a/./b", Some(json!({})), &[]);
    assert!(allowed(&ev).reroute, "a new path may match another route");
}

#[test]
fn routing_mistakes_are_refused_with_their_path() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"routing": {"routes": []}}),
            "routing: give \"routes\", a \"default\" tag, or both",
        ),
        (
            json!({"routing": {"default": "a b"}}),
            "routing.default: a tag is 1 to 64",
        ),
        (
            json!({"routing": {"routes": [{"claim": "sub", "equals": "x", "tag": "", }]}}),
            "routing.routes[0].tag: a tag is",
        ),
        (
            json!({"routing": {"routes": [{"claim": "sub", "tag": "a"}]}}),
            "routing.routes[0]: give exactly one test",
        ),
        (
            json!({"routing": {"routes": [{"claim": "sub", "equals": "x", "tag": "a", "color": 1}]}}),
            "routing.routes[0]",
        ),
        (
            json!({"routing": {"default": "a", "header": "x-jwt-sub"}}),
            "routing.header: \"x-jwt-sub\" also carries claims",
        ),
        (
            json!({"routing": {"default": "a", "header": "authorization"}}),
            "routing.header: \"authorization\" cannot be set by Portcullis",
        ),
        (
            json!({"routing": {"default": "a", "header": "x pool"}}),
            "routing.header: \"x pool\" is not a valid header name",
        ),
    ];
    for (extra, want) in cases {
        let err = config::parse(policy(extra.clone()).to_string().as_bytes())
            .err()
            .unwrap_or_else(|| panic!("{extra} was accepted"))
            .to_string();
        assert!(err.starts_with(want), "{extra}: {err}");
    }
    let mut no_section = policy(json!({}));
    no_section.as_object_mut().unwrap().remove("routing");
    let err = config::parse(no_section.to_string().as_bytes())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("rules[2].routing: the policy has no \"routing\" section"),
        "{err}"
    );
    let public = policy(json!({"rules": [{"auth": "none", "routing": "optional"}]}));
    let err = config::parse(public.to_string().as_bytes())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("rules[0].routing: a rule with \"auth\": \"none\""),
        "{err}"
    );
}
