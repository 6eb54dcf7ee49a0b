//! The seed corpus of every target, made from the repository's own material: tokens and
//! JWKS documents from the test kit, the ready-made policies, the path examples of
//! `docs/paths.md`, claim sets the way the supported IdPs write them, and decision
//! scripts for each kind of token and each way a held request ends.
//!
//! `scripts/fuzz --seed` writes them to `fuzz/corpus/<target>/seed-*`; they are committed,
//! and the replay test runs them. Tokens and keys are generated anew on each write.

use super::decide::{Script, SeedToken, World};
use super::input::Output;
use serde_json::{json, Value};
use std::fs;
use std::io;
use std::path::Path;

/// One seed: target, name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every seed, made from the repository at `root`.
pub fn all(root: &Path) -> io::Result<Vec<Seed>> {
    let world = World::new();
    let mut seeds = Vec::new();
    jwt(&world, &mut seeds);
    jwks(&world, &mut seeds);
    config(root, &world, &mut seeds)?;
    claims(&mut seeds);
    path(root, &mut seeds)?;
    decide(&mut seeds);
    Ok(seeds)
}

/// Replaces the `seed-*` files of every corpus directory under `root/fuzz/corpus`
/// (inputs the fuzzer found, and crash reproducers, are left alone).
pub fn write(root: &Path) -> io::Result<usize> {
    let seeds = all(root)?;
    let corpus = root.join("fuzz").join("corpus");
    for (target, _) in super::TARGETS {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
            {
                fs::remove_file(path)?;
            }
        }
    }
    for (target, name, bytes) in &seeds {
        fs::write(corpus.join(target).join(format!("seed-{name}")), bytes)?;
    }
    Ok(seeds.len())
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwt(world: &World, seeds: &mut Vec<Seed>) {
    let h = |v: Value| b64(v.to_string().as_bytes());
    let p = h(json!({"iss": "https://idp.test", "sub": "alice"}));
    let mut tokens: Vec<String> = world.presigned().to_vec();
    tokens.extend([
        format!(
            "{}.{p}.c2ln",
            h(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}))
        ),
        format!("{}.{p}.c2ln", h(json!({"alg": "ES256", "crit": ["exp"]}))),
        format!("{}.{p}.c2ln", h(json!({"alg": "RS256", "typ": "JOSE"}))),
        format!("{}.{p}.c2ln", h(json!({"alg": "RS256", "typ": "at+jwt"}))),
        format!("{}.{p}.c2ln", h(json!({"alg": "RS256", "kid": 5}))),
        format!("{}.{p}.c2ln", h(json!({"alg": "nOnE"}))),
        format!("{}.{p}.", h(json!({"alg": "HS256"}))),
        format!(
            "{}.{p}.c2ln.YQ.Yg",
            h(json!({"alg": "RSA-OAEP", "enc": "A256GCM"}))
        ),
        format!("{}.{}.c2ln", h(json!({"alg": "RS256"})), h(json!([1, 2]))),
        "a.b.c".to_string(),
        "...".to_string(),
        "eyJ.eyJ.eyJ".to_string(),
    ]);
    for (i, t) in tokens.iter().enumerate() {
        let mut data = vec![0u8];
        data.extend_from_slice(t.as_bytes());
        seeds.push(("jwt", format!("{i:02}"), data));
    }
    if let Some(t) = world.presigned().first() {
        let mut small = vec![1u8];
        small.extend_from_slice(t.as_bytes());
        seeds.push(("jwt", "too-large".into(), small));
    }
}

fn jwks(world: &World, seeds: &mut Vec<Seed>) {
    use super::oracle::KeyName::*;
    let keys = world.keys();
    let jwk = |k| keys.jwk(k);
    let mut rsa_private = jwk(Rsa);
    rsa_private["d"] = json!("AQAB");
    let mut rsa_enc = jwk(Ps256);
    rsa_enc["use"] = json!("enc");
    let mut rsa_e1 = jwk(Rsa);
    rsa_e1["e"] = json!("AQ");
    let mut ec_wrong_curve = jwk(Es256);
    ec_wrong_curve["crv"] = json!("P-384");
    let mut ec_rs256 = jwk(Es256);
    ec_rs256["alg"] = json!("RS256");
    let hs_mask = 1u16; // HS256 allowed
    let all_mask = 0x0fff;
    let docs: Vec<(&str, u16, Value)> = vec![
        ("rsa", 0, json!({"keys": [jwk(Rsa)]})),
        ("ps256", 0, json!({"keys": [jwk(Ps256)]})),
        ("es256", 0, json!({"keys": [jwk(Es256)]})),
        ("es384", 0, json!({"keys": [jwk(Es384)]})),
        ("eddsa", 0, json!({"keys": [jwk(EdDsa)]})),
        ("hs256", hs_mask, json!({"keys": [jwk(Hs256)]})),
        ("hs256-not-allowed", 0, json!({"keys": [jwk(Hs256)]})),
        (
            "all",
            all_mask,
            json!({"keys": [jwk(Rsa), jwk(Ps256), jwk(Es256), jwk(Es384), jwk(EdDsa), jwk(Hs256)]}),
        ),
        ("private", 0, json!({"keys": [rsa_private, jwk(Es256)]})),
        ("use-enc", 0, json!({"keys": [rsa_enc]})),
        ("e-is-1", 0, json!({"keys": [rsa_e1]})),
        ("wrong-curve", 0, json!({"keys": [ec_wrong_curve]})),
        ("alg-mismatch", 0, json!({"keys": [ec_rs256]})),
        (
            "small-n",
            0,
            json!({"keys": [{"kty": "RSA", "kid": "s", "n": "AQAB", "e": "AQAB"}]}),
        ),
        ("empty", 0, json!({"keys": []})),
        ("no-keys", 0, json!({"key": []})),
        ("not-object", 0, json!([1])),
        (
            "x5c",
            0,
            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "x", "x5c": ["AAAA"], "x": "AA", "y": "AA"}]}),
        ),
    ];
    for (name, mask, doc) in docs {
        let mut o = Output::new();
        o.u16(mask).bytes(&[]).raw(doc.to_string().as_bytes());
        seeds.push(("jwks", name.into(), o.finish()));
    }
    let mut o = Output::new();
    o.u16(all_mask).bytes(&[0x41; 256]).raw(
        json!({"keys": [jwk(Rsa), jwk(Es256), jwk(Hs256)]})
            .to_string()
            .as_bytes(),
    );
    seeds.push(("jwks", "forged-signature".into(), o.finish()));
    seeds.push(("jwks", "html".into(), b"\0\0\0<html>502</html>".to_vec()));
}

fn config(root: &Path, world: &World, seeds: &mut Vec<Seed>) -> io::Result<()> {
    let mut files = Vec::new();
    for entry in fs::read_dir(root.join("policies"))? {
        let policy = entry?.path().join("policy.json");
        if policy.is_file() {
            files.push(policy);
        }
    }
    files.push(root.join("examples/envoy/policy.json"));
    files.sort();
    for f in files {
        let name = f
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("policy")
            .to_string();
        seeds.push(("config", name, fs::read(&f)?));
    }
    seeds.push(("config", "decide".into(), world.policy_json().into_bytes()));
    let minimal = json!({
        "providers": {"p": {"issuer": "https://idp.test", "audiences": ["api"],
                            "jwks": {"keys": [world.keys().jwk(super::oracle::KeyName::Es256)]}}},
        "rules": [{"match": {"path": {"prefix": "/"}}}]
    });
    seeds.push(("config", "minimal".into(), minimal.to_string().into_bytes()));
    let observe =
        json!({"mode": "observe", "rules": [{"match": {"path": {"exact": "/"}}, "auth": "none"}]});
    seeds.push(("config", "observe".into(), observe.to_string().into_bytes()));
    for (name, bad) in [
        (
            "bad-issuer",
            r#"{"providers": {"p": {"issuer": "http://x", "audiences": ["a"], "jwks": {"keys": []}}}, "rules": []}"#,
        ),
        ("bad-realm", r#"{"realm": "a\"b", "rules": []}"#),
        ("unknown-field", r#"{"rules": [], "extra": 1}"#),
        ("not-json", "{rules"),
    ] {
        seeds.push(("config", name.into(), bad.as_bytes().to_vec()));
    }
    Ok(())
}

fn claims(seeds: &mut Vec<Seed>) {
    let sets: [(&str, &str, &str, &str, Value); 8] = [
        (
            "keycloak",
            "realm_access.roles",
            "admin",
            "admin",
            json!({"realm_access": {"roles": ["user", "admin"]}, "resource_access": {"orders.api": {"roles": ["writer"]}}, "scope": "openid profile"}),
        ),
        (
            "okta",
            "groups",
            "*ops*",
            "devops",
            json!({"scp": ["orders.read", "orders.write"], "groups": ["devops"]}),
        ),
        (
            "azure",
            "roles",
            "Orders.*",
            "Orders.Write",
            json!({"scp": "Orders.Read Orders.Write", "roles": ["Orders.Write"], "tid": "t"}),
        ),
        (
            "auth0",
            "https://example.com/roles",
            "adm?n",
            "admin",
            json!({"https://example.com/roles": ["admin"], "scope": "read:orders"}),
        ),
        (
            "cognito",
            "cognito:groups",
            "arn:aws:iam::*:role/Admin*",
            "arn:aws:iam::123456789012:role/AdminFull",
            json!({"cognito:groups": ["admins"], "scope": "aws.cognito.signin.user.admin"}),
        ),
        (
            "google",
            "email",
            "*@example.com",
            "bob@example.com",
            json!({"email": "bob@example.com", "email_verified": true, "hd": "example.com"}),
        ),
        (
            "headers",
            "sub",
            "**",
            "",
            json!({"sub": "evil\r\nx-admin: 1", "n": 1.5, "o": {"k": [1, null]}, "b": false, "z": null}),
        ),
        (
            "dots",
            "a.b.c",
            "a*b*c",
            "aXbYc",
            json!({"a.b.c": 1, "a": {"b": {"c": 2}}, "scope": "  x  y "}),
        ),
    ];
    for (name, path, pattern, text, payload) in sets {
        let data = format!("{path}\n{pattern}\n{text}\n{payload}");
        seeds.push(("claims", name.into(), data.into_bytes()));
    }
    seeds.push((
        "claims",
        "not-json".into(),
        b"scope\n*\nx\nread write".to_vec(),
    ));
}

/// The examples in the tables of `docs/paths.md`: every backticked text of the second
/// column, split at `, `.
fn path(root: &Path, seeds: &mut Vec<Seed>) -> io::Result<()> {
    let doc = fs::read_to_string(root.join("docs/paths.md"))?;
    let mut examples = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| ")) {
        let Some(cell) = line.split(" | ").nth(1) else {
            continue;
        };
        for (i, part) in cell.split('`').enumerate() {
            if i % 2 == 1 {
                examples.extend(part.split(", ").map(str::to_string));
            }
        }
    }
    examples.extend(
        [
            "/a?x=\t",
            "/caf\u{e9}",
            "/a\\b",
            "Example.COM.:443",
            "[FE80::1]:8080",
            "//..",
            "/a/b/../../..",
            "/%2e%2e/%2e",
        ]
        .map(str::to_string),
    );
    examples.sort();
    examples.dedup();
    for (i, e) in examples.iter().enumerate() {
        seeds.push(("path", format!("{i:02}"), e.clone().into_bytes()));
    }
    Ok(())
}

fn decide(seeds: &mut Vec<Seed>) {
    use SeedToken::*;
    let bearer = |t: SeedToken| vec![(0u8, 0u8, Some(t))];
    let mut add = |name: &str, s: &mut Script| seeds.push(("decide", name.into(), s.finish()));
    // Every pre-signed token, read then again from the cache.
    for i in 0..16u8 {
        add(
            &format!("presigned-{i:02}"),
            Script::new()
                .request(0, 0, None, 0, &bearer(Presigned(i)))
                .repeat(),
        );
    }
    // Built tokens, one per signer, with an alg that fits it and the issuer of its provider.
    for (signer, alg, kid, iss) in [
        (0u8, 0u8, 0u8, 0u8),
        (1, 2, 1, 0),
        (2, 3, 2, 0),
        (3, 5, 4, 0),
        (4, 6, 5, 1),
        (5, 4, 3, 2),
        (6, 0, 0, 0),
        (7, 7, 6, 0),
        (0, 1, 0, 0),
        (0, 2, 0, 0),
    ] {
        let t = Built {
            header: [alg, kid, 1],
            payload: [iss, 0, 0, 0, 0, 0, 1, 1],
            signer,
        };
        add(
            &format!("built-{signer}-{alg}"),
            Script::new().request(0, 0, None, 0, &bearer(t)),
        );
    }
    add(
        "remote-fetched",
        Script::new()
            .request(0, 7, None, 0, &bearer(Presigned(6)))
            .fetch_real()
            .repeat(),
    );
    add(
        "remote-failed",
        Script::new()
            .request(0, 7, None, 0, &bearer(Presigned(6)))
            .fetch_fail()
            .advance(5)
            .overdue(),
    );
    add(
        "remote-cancelled",
        Script::new()
            .request(0, 7, None, 0, &bearer(Presigned(6)))
            .cancel()
            .resume(0),
    );
    add(
        "remote-resumed",
        Script::new()
            .request(0, 7, None, 0, &bearer(Presigned(6)))
            .resume(0)
            .resume(1),
    );
    add(
        "remote-adopted",
        Script::new()
            .adopt_real()
            .request(0, 7, None, 0, &bearer(Presigned(6))),
    );
    add(
        "spoofed-claim-header",
        Script::new().request(
            0,
            0,
            None,
            0,
            &[(0, 0, Some(Presigned(0))), (3, 7, None), (4, 7, None)],
        ),
    );
    add(
        "query-token",
        Script::new().request(0, 1, Some(&Presigned(0)), 0, &[]),
    );
    add(
        "cookie-token",
        Script::new().request(0, 0, None, 0, &[(1, 5, Some(Presigned(0)))]),
    );
    add(
        "x-token",
        Script::new().request(0, 0, None, 0, &[(2, 1, Some(Presigned(3)))]),
    );
    add(
        "two-tokens",
        Script::new().request(
            0,
            0,
            None,
            0,
            &[(0, 0, Some(Presigned(0))), (2, 1, Some(Presigned(3)))],
        ),
    );
    add(
        "public-anonymous",
        Script::new().request(0, 4, None, 0, &[]),
    );
    add(
        "public-token",
        Script::new().request(0, 5, Some(&Presigned(7)), 0, &[]),
    );
    add(
        "health",
        Script::new().request(0, 6, None, 1, &[(3, 7, None)]),
    );
    add(
        "dotdot",
        Script::new().request(0, 9, None, 0, &bearer(Presigned(0))),
    );
    add(
        "encoded-dotdot",
        Script::new().request(0, 10, None, 0, &bearer(Presigned(1))),
    );
    add(
        "tomcat",
        Script::new().request(0, 13, None, 0, &bearer(Presigned(1))),
    );
    add(
        "admin",
        Script::new()
            .request(0, 2, None, 0, &bearer(Presigned(1)))
            .request(0, 2, None, 0, &bearer(Presigned(0))),
    );
    add(
        "write",
        Script::new()
            .request(1, 0, None, 0, &bearer(Presigned(1)))
            .request(1, 0, None, 0, &bearer(Presigned(0))),
    );
    add(
        "expiring",
        Script::new()
            .request(0, 0, None, 0, &bearer(Presigned(12)))
            .advance(200)
            .repeat(),
    );
    add(
        "unlogged",
        Script::new()
            .logging()
            .request(0, 0, None, 0, &bearer(Presigned(0)))
            .logging()
            .repeat(),
    );
    for pos in [5u16, 40, 120, 300, 500] {
        add(
            &format!("mutated-{pos}"),
            Script::new()
                .request(0, 0, None, 0, &bearer(Mutated(0, pos)))
                .request(0, 0, None, 0, &bearer(Mutated(3, pos))),
        );
    }
    add(
        "raw",
        Script::new().request(0, 0, None, 0, &bearer(Raw("a.b.c".into()))),
    );
}
