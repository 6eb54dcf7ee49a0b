//! Target `decide`: the whole decision. Requests with random headers and tokens go into
//! [`Engine::decide`], interleaved with the clock moving, held requests resumed or
//! cancelled, and key fetches answered with real, mutated or random JWKS documents.
//!
//! Input: a script of operations (see [`Op`]); tokens are pre-signed, built from fuzzed
//! header and payload and then really signed (so the fuzzer gets past base64 and JSON
//! at once), random text, or any of these with bytes mutated.
//!
//! Properties, for every evaluation:
//! - no panic; the held requests are exactly those whose tickets the engine gave out and
//!   that were not resumed or cancelled (a ticket is released once), at most 4096;
//! - **an allow on a rule that requires a token carries an identity, and the token the
//!   request carries verifies under one of the reference keys, checked by [`Keys::verifies`]
//!   independently of the engine**, for the provider that key belongs to; its issuer and
//!   audience are that provider's, it has not expired and is valid already (60 s skew), and
//!   it satisfies the rule's scope or role;
//! - an allow without identity is on a rule with `auth: none`, or `optional` with no token;
//! - an allow strips every inbound copy of a claim header; a refusal is a 400, 401, 403
//!   or 503 with a verdict of deny; only the remote provider's keys are waited for.
//!
//! The engine's token caches are private, so their bounds are not observable here; the
//! policy makes them small (8 and 2 entries) so that eviction runs constantly.

use super::input::{Input, Output};
use super::oracle::{KeyName, Keys, IDP, OTHER, REMOTE};
use base64::Engine as _;
use portcullis::cache;
use portcullis::callout::{CalloutFailure, CalloutResponse, CalloutResult, Ticket};
use portcullis::config::{self, Config};
use portcullis::engine::{Allow, Engine, Evaluation, Resumption, Step, Suspension, Verdict};
use portcullis::keyring::ProviderId;
use portcullis::request::Request;
use portcullis::time::UnixTime;
use portcullis::token::{self, TokenSource};
use portcullis_testkit::{claims, NOW};
use serde_json::{json, Map, Value};

/// Index of the remote provider in the policy (providers are ordered by name).
pub const REMOTE_PROVIDER: ProviderId = ProviderId::from_index(2);

/// Owned claim headers of the policy.
const CLAIM_HEADERS: [&str; 3] = ["x-jwt-sub", "x-jwt-roles", "x-jwt-payload"];

/// Clock skew of every provider (the default).
const SKEW: u64 = 60;

/// The operations of a script, by their opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Decide a request.
    Request = 0,
    /// Move the clock.
    Advance = 1,
    /// Resume a held request.
    Resume = 2,
    /// Cancel a held request.
    Cancel = 3,
    /// Answer the key fetches that are due (and maybe one that is not).
    Fetch = 4,
    /// Adopt a key set "another VM" published.
    Adopt = 5,
    /// Time out every overdue request.
    Overdue = 6,
    /// Switch decision logging.
    Logging = 7,
    /// Decide the last request again.
    Repeat = 8,
}

const OPS: usize = 9;

/// Methods a request may have (the last choice is fuzz text).
pub const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "get"];
/// Paths; `{T}` is replaced by a token.
pub const PATHS: [&str; 14] = [
    "/api/items",
    "/api/items?access_token={T}",
    "/admin/users",
    "/admin",
    "/public/page",
    "/public/page?access_token={T}",
    "/healthz",
    "/remote/x",
    "/",
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/api//items",
    "/healthz?access_token={T}",
    "/public/..;/admin",
];
/// Hosts.
pub const HOSTS: [&str; 3] = ["api.test", "API.test:443", "api.test."];
/// Header names.
pub const NAMES: [&str; 9] = [
    "authorization",
    "cookie",
    "x-token",
    "x-jwt-sub",
    "X-JWT-Roles",
    "x-jwt-payload",
    "Authorization",
    "host",
    ":path",
];
/// Header values; `{T}` is replaced by a token.
pub const VALUES: [&str; 8] = [
    "Bearer {T}",
    "{T}",
    "session={T}",
    "bearer  {T} ",
    "Basic {T}",
    "a=b; session={T}; c=d",
    "Bearer {T}, Bearer {T}",
    "mallory",
];
/// Header algorithms of built tokens (the last choice is fuzz text).
pub const ALGS: [&str; 11] = [
    "RS256", "RS384", "PS256", "ES256", "ES384", "HS256", "EdDSA", "none", "RS512", "PS384", "",
];
/// Header kids of built tokens; "" means none.
pub const KIDS: [&str; 8] = [
    "rsa-1", "ps-1", "ec-1", "ec384-1", "hs-1", "ed-1", "", "unknown",
];
/// Header types of built tokens; "" means none.
pub const TYPS: [&str; 5] = ["", "JWT", "at+jwt", "JOSE", "jwt"];
/// Signers of built tokens, by choice.
pub const SIGNERS: [Option<KeyName>; 9] = [
    Some(KeyName::Rsa),
    Some(KeyName::Ps256),
    Some(KeyName::Es256),
    Some(KeyName::Hs256),
    Some(KeyName::EdDsa),
    Some(KeyName::Es384),
    Some(KeyName::RsaOther),
    None, // no signature
    None, // fuzz bytes as the signature
];

/// What a target run needs that is the same for every input: keys, policy, tokens.
pub struct World {
    keys: Keys,
    config: Config,
    presigned: Vec<String>,
    remote_jwks: Vec<u8>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl World {
    /// Generates the keys and signs the fixed tokens.
    pub fn new() -> World {
        let keys = Keys::generate();
        let policy = policy(&keys);
        let config = match config::parse(policy.to_string().as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("the decide policy is invalid: {e}"),
        };
        let sign = |k: KeyName, extra: Value| keys.signer(k).sign(claims(extra));
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(claims(json!({"scope": "read"})).to_string().as_bytes())
        );
        let presigned = vec![
            sign(KeyName::Rsa, json!({"scope": "read"})),
            sign(
                KeyName::Rsa,
                json!({"scope": "read write", "realm_access": {"roles": ["admin"]}}),
            ),
            sign(KeyName::Ps256, json!({"scope": "read"})),
            sign(KeyName::Es256, json!({"scope": "read admin"})),
            sign(KeyName::Hs256, json!({"scp": ["read", "write"]})),
            sign(KeyName::EdDsa, json!({"iss": OTHER, "scope": "read"})),
            sign(KeyName::Es384, json!({"iss": REMOTE, "scope": "read"})),
            sign(KeyName::RsaOther, json!({"scope": "read"})),
            sign(KeyName::Rsa, json!({"exp": NOW - 3600, "scope": "read"})),
            sign(KeyName::Rsa, json!({"aud": "other-api", "scope": "read"})),
            sign(KeyName::Rsa, json!({"iss": OTHER, "scope": "read"})),
            sign(KeyName::EdDsa, json!({"scope": "read"})),
            sign(KeyName::Es256, json!({"exp": NOW + 30, "scope": "read"})),
            none,
            sign(KeyName::Es384, json!({"iss": IDP, "scope": "read"})),
            sign(KeyName::Rsa, json!({"nbf": NOW + 600, "scope": "read"})),
        ];
        let remote_jwks = json!({"keys": [keys.jwk(KeyName::Es384)]})
            .to_string()
            .into_bytes();
        World {
            keys,
            config,
            presigned,
            remote_jwks,
        }
    }

    /// The fixed tokens.
    pub fn presigned(&self) -> &[String] {
        &self.presigned
    }

    /// The policy the engine is built from.
    pub fn policy_json(&self) -> String {
        policy(&self.keys).to_string()
    }

    /// The JWKS document the remote provider's fetches bring.
    pub fn remote_jwks(&self) -> &[u8] {
        &self.remote_jwks
    }

    /// The reference keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

impl Default for World {
    fn default() -> World {
        World::new()
    }
}

fn policy(keys: &Keys) -> Value {
    let sources = json!([
        {"header": "authorization", "prefix": "Bearer "},
        {"query": "access_token"},
        {"cookie": "session"},
        {"header": "x-token"}
    ]);
    json!({
        "mode": "enforce",
        "providers": {
            "idp": {
                "issuer": IDP, "audiences": ["api"],
                "jwks": {"keys": [keys.jwk(KeyName::Rsa), keys.jwk(KeyName::Ps256),
                                  keys.jwk(KeyName::Es256), keys.jwk(KeyName::Hs256)]},
                "algorithms": ["RS256", "RS384", "PS256", "ES256", "HS256"],
                "token_sources": sources
            },
            "other": {
                "issuer": OTHER, "audiences": ["api"],
                "jwks": {"keys": [keys.jwk(KeyName::EdDsa)]},
                "token_sources": sources
            },
            "remote": {
                "issuer": REMOTE, "audiences": ["api"],
                "remote_jwks": {"cluster": "idp", "uri": "https://remote.test/jwks", "timeout_ms": 1000},
                "algorithms": ["ES384", "RS256"],
                "token_sources": sources
            }
        },
        "rules": [
            {"name": "health", "match": {"path": {"exact": "/healthz"}}, "auth": "none"},
            {"name": "public", "match": {"path": {"prefix": "/public/"}}, "auth": "optional"},
            {"name": "remote", "match": {"path": {"prefix": "/remote/"}}, "providers": ["remote"]},
            {"name": "read", "match": {"path": {"prefix": "/api/"}, "methods": ["GET"]},
             "scopes": {"all_of": ["read"]}},
            {"name": "write", "match": {"path": {"prefix": "/api/"}, "methods": ["POST"]},
             "scopes": {"any_of": ["write", "admin"]}},
            {"name": "admin", "match": {"path": {"regex": "^/admin(/|$)"}},
             "claims": [{"claim": "realm_access.roles", "any_of": ["admin"]}]},
            {"name": "any", "match": {"path": {"prefix": "/"}}}
        ],
        "claim_headers": [
            {"claim": "sub", "header": "x-jwt-sub"},
            {"claim": "realm_access.roles", "header": "x-jwt-roles"}
        ],
        "payload_header": "x-jwt-payload",
        "forward_token": false,
        "cache_size": 8
    })
}

thread_local! {
    static WORLD: World = World::new();
}

/// Generates the keys and tokens now rather than in the first input (which a fuzzer's
/// per-input timeout would then count: RSA key generation under a sanitizer is slow).
pub fn warm_up() {
    WORLD.with(|w| assert!(!w.presigned().is_empty()));
}

/// Checks one input.
pub fn check(data: &[u8]) {
    trace(data);
}

/// Checks one input and says what became of each evaluation, in order: `allow <rule>`,
/// `deny <status>` or `suspend` (for tests of the seeds themselves).
pub fn trace(data: &[u8]) -> Vec<String> {
    WORLD.with(|world| Session::new(world).run(data))
}

/// Most operations one input runs.
const MAX_OPS: usize = 48;

struct Session<'w> {
    world: &'w World,
    engine: Engine,
    now_ms: u64,
    held: Vec<(Ticket, Vec<(String, String)>)>,
    released: Vec<Ticket>,
    logging: bool,
    last: Option<Vec<(String, String)>>,
    trace: Vec<String>,
}

fn pick(input: &mut Input<'_>, items: &[&str]) -> String {
    let i = input.below(items.len() + 1);
    match items.get(i) {
        Some(s) => (*s).to_string(),
        None => input.text(),
    }
}

const MUTATION_CHARS: &[u8] = b"AQgw_-.=+/ %0eyJ\"{}";

/// Mutates bytes the way the fuzzer cannot easily: at positions, keeping the rest.
fn mutate(base: &[u8], input: &mut Input<'_>) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for _ in 0..=input.below(4) {
        let pos = usize::from(input.u16()) % (bytes.len() + 1);
        let c = *input.choose(MUTATION_CHARS);
        match input.below(5) {
            0 if pos < bytes.len() => bytes[pos] = c,
            1 if pos < bytes.len() => {
                bytes.remove(pos);
            }
            2 => bytes.insert(pos, c),
            3 if pos < bytes.len() => bytes[pos] ^= 0x20,
            _ => bytes.truncate(pos),
        }
    }
    bytes
}

impl<'w> Session<'w> {
    fn new(world: &'w World) -> Session<'w> {
        Session {
            world,
            engine: Engine::new(world.config.clone()),
            now_ms: NOW * 1000,
            held: Vec::new(),
            released: Vec::new(),
            logging: true,
            last: None,
            trace: Vec::new(),
        }
    }

    fn now(&self) -> UnixTime {
        UnixTime::from_millis(self.now_ms)
    }

    fn secs(&self) -> u64 {
        self.now_ms / 1000
    }

    fn run(mut self, data: &[u8]) -> Vec<String> {
        let mut input = Input::new(data);
        for _ in 0..MAX_OPS {
            if input.is_empty() {
                break;
            }
            match input.below(OPS) {
                0 => {
                    let headers = self.request(&mut input);
                    self.decide(headers);
                }
                1 => {
                    let unit = [1, 100, 1000, 60_000][input.below(4)];
                    self.now_ms += u64::from(input.u16()) * unit;
                }
                2 => self.resume(&mut input),
                3 => {
                    if let Some(i) = self.held_index(&mut input) {
                        let (ticket, _) = self.held.remove(i);
                        self.engine.cancel(ticket);
                        self.released.push(ticket);
                    } else if let Some(t) = self.released.last().copied() {
                        self.engine.cancel(t);
                    }
                }
                4 => self.fetch(&mut input),
                5 => {
                    let doc = self.jwks_body(&mut input);
                    let fetched_at = self.secs().saturating_sub(u64::from(input.byte()));
                    let refresh_at = self.secs() + u64::from(input.u16());
                    let adopted = self.engine.keyring_mut().adopt_shared(
                        REMOTE_PROVIDER,
                        &doc,
                        fetched_at,
                        refresh_at,
                    );
                    if matches!(adopted, Ok(true)) {
                        self.resume_waiting();
                    }
                }
                6 => {
                    for ticket in self.engine.overdue(self.now()) {
                        self.resume_ticket(ticket, Resumption::TimedOut);
                    }
                }
                7 => {
                    self.logging = !self.logging;
                    self.engine.set_logging(self.logging);
                }
                _ => {
                    if let Some(headers) = self.last.clone() {
                        self.decide(headers);
                    }
                }
            }
            self.check_held();
        }
        self.trace
    }

    fn check_held(&self) {
        assert!(self.engine.suspended() <= 4096);
        assert_eq!(
            self.engine.suspended(),
            self.held.len(),
            "the engine holds other requests than it gave tickets for"
        );
    }

    fn held_index(&self, input: &mut Input<'_>) -> Option<usize> {
        let i = input.byte();
        (!self.held.is_empty()).then(|| usize::from(i) % self.held.len())
    }

    fn resume(&mut self, input: &mut Input<'_>) {
        let resumption = match input.below(4) {
            0 => Resumption::Keys,
            1 => Resumption::TimedOut,
            2 => Resumption::Callout(Err(CalloutFailure::TimedOut)),
            _ => Resumption::Callout(Ok(CalloutResponse {
                status: input.u16(),
                headers: Vec::new(),
                body: input.bytes().to_vec(),
                truncated: false,
            })),
        };
        match self.held_index(input) {
            Some(i) => {
                let ticket = self.held[i].0;
                self.resume_ticket(ticket, resumption);
            }
            None => {
                if let Some(t) = self.released.last().copied() {
                    let again = self.engine.resume(t, resumption, self.now());
                    assert!(again.is_none(), "a released ticket was resumed again");
                }
            }
        }
    }

    fn resume_ticket(&mut self, ticket: Ticket, resumption: Resumption) {
        let Some(i) = self.held.iter().position(|(t, _)| *t == ticket) else {
            panic!("the engine reports a ticket it never gave out: {ticket:?}");
        };
        let (_, headers) = self.held.remove(i);
        self.released.push(ticket);
        let Some(ev) = self.engine.resume(ticket, resumption, self.now()) else {
            panic!("a held ticket could not be resumed");
        };
        self.check(&headers, &ev);
    }

    fn resume_waiting(&mut self) {
        for ticket in self.engine.waiting_for(REMOTE_PROVIDER) {
            self.resume_ticket(ticket, Resumption::Keys);
        }
    }

    fn jwks_body(&self, input: &mut Input<'_>) -> Vec<u8> {
        let real = self.world.remote_jwks();
        match input.below(6) {
            0 | 1 => real.to_vec(),
            2 => mutate(real, input),
            3 => input.bytes().to_vec(),
            4 => b"<html>502 Bad Gateway</html>".to_vec(),
            _ => br#"{"keys": []}"#.to_vec(),
        }
    }

    fn fetch(&mut self, input: &mut Input<'_>) {
        let now = self.secs();
        let mut due: Vec<ProviderId> = self
            .engine
            .keyring_mut()
            .poll_fetches(now)
            .into_iter()
            .map(|(p, callout)| {
                assert_eq!(p, REMOTE_PROVIDER, "a fetch for an inline provider");
                assert!(callout.timeout_ms <= 60_000);
                p
            })
            .collect();
        // Read whether or not anything is due, so the script does not depend on it.
        let unsolicited = input.byte() % 4 == 0;
        if due.is_empty() && unsolicited {
            due.push(REMOTE_PROVIDER);
        }
        for p in due {
            let cache_control = [
                "max-age=300",
                "no-store",
                "max-age=0",
                "max-age=99999999999",
            ];
            let result: CalloutResult = match input.below(5) {
                0 => Err(*input.choose(&[
                    CalloutFailure::NoResponse,
                    CalloutFailure::TimedOut,
                    CalloutFailure::NotDispatched,
                ])),
                n => Ok(CalloutResponse {
                    status: if n == 1 { input.u16() } else { 200 },
                    headers: vec![(
                        "cache-control".into(),
                        (*input.choose(&cache_control)).into(),
                    )],
                    body: self.jwks_body(input),
                    truncated: n == 4,
                }),
            };
            let _ = self.engine.keyring_mut().fetch_result(p, now, &result);
            self.resume_waiting();
        }
    }

    fn token(&self, input: &mut Input<'_>) -> String {
        match input.below(4) {
            0 => input.choose(self.world.presigned()).clone(),
            1 => self.built(input),
            2 => input.text(),
            _ => {
                let base = if input.byte() % 2 == 0 {
                    input.choose(self.world.presigned()).clone()
                } else {
                    self.built(input)
                };
                // Sometimes another token's signature, else byte mutations.
                if input.byte() % 4 == 0 {
                    let donor = input.choose(self.world.presigned());
                    let head = base.rsplit_once('.').map_or(base.as_str(), |(h, _)| h);
                    let tail = donor.rsplit_once('.').map_or("", |(_, s)| s);
                    format!("{head}.{tail}")
                } else {
                    String::from_utf8_lossy(&mutate(base.as_bytes(), input)).into_owned()
                }
            }
        }
    }

    fn built(&self, input: &mut Input<'_>) -> String {
        let alg = pick(input, &ALGS);
        let kid = pick(input, &KIDS);
        let typ = pick(input, &TYPS);
        let mut header = Map::new();
        if !alg.is_empty() {
            header.insert("alg".into(), Value::String(alg.clone()));
        }
        if !kid.is_empty() {
            header.insert("kid".into(), Value::String(kid));
        }
        if !typ.is_empty() {
            header.insert("typ".into(), Value::String(typ.clone()));
        }
        if input.byte() % 16 == 0 {
            header.insert("crit".into(), json!(["exp"]));
        }
        let header = if input.byte() % 8 == 0 {
            input.bytes().to_vec()
        } else {
            Value::Object(header).to_string().into_bytes()
        };
        let payload = self.payload(input);
        let payload_bytes = if input.byte() % 8 == 0 {
            input.bytes().to_vec()
        } else {
            Value::Object(payload.clone()).to_string().into_bytes()
        };
        let signer_choice = input.below(SIGNERS.len());
        match SIGNERS[signer_choice] {
            Some(k @ (KeyName::Es256 | KeyName::Es384 | KeyName::EdDsa)) => {
                let typ = (!typ.is_empty()).then_some(typ);
                self.world.keys().sign_payload(k, payload, typ)
            }
            Some(k) => self
                .world
                .keys()
                .sign_raw(k, &alg, &header, &payload_bytes)
                .unwrap_or_default(),
            None => {
                let signature = if signer_choice == 7 {
                    String::new()
                } else {
                    b64(input.bytes())
                };
                format!("{}.{}.{signature}", b64(&header), b64(&payload_bytes))
            }
        }
    }

    fn payload(&self, input: &mut Input<'_>) -> Map<String, Value> {
        let mut p = Map::new();
        let iss = [
            json!(IDP),
            json!(OTHER),
            json!(REMOTE),
            json!("https://IDP.test"),
            Value::Null,
            json!(5),
        ];
        let aud = [
            json!("api"),
            json!(["x", "api"]),
            json!("nope"),
            json!(7),
            Value::Null,
            json!([]),
        ];
        let sub = [
            json!("alice"),
            json!("bob"),
            json!(5),
            Value::Null,
            json!("a\r\nx-admin: 1"),
        ];
        let now = NOW;
        let offset = i64::from(input.u16()) - 32_768;
        let exp = [
            json!(now + 600),
            json!(now - 600),
            Value::Null,
            json!(now as f64 + 600.5),
            json!(-1),
            json!("soon"),
            json!(1e300),
            json!(now.saturating_add_signed(offset)),
        ];
        let nbf = [
            Value::Null,
            json!(now - 10),
            json!(now + 1000),
            json!(now.saturating_add_signed(offset)),
        ];
        let scope = [
            Value::Null,
            json!("read"),
            json!("read write"),
            json!("admin"),
            json!(""),
            json!(["read"]),
            json!("write"),
            json!(" read  "),
        ];
        let roles = [
            Value::Null,
            json!({"roles": ["admin"]}),
            json!({"roles": "admin"}),
            json!({"roles": ["user"]}),
            json!("admin"),
        ];
        for (name, choices) in [
            ("iss", &iss[..]),
            ("aud", &aud[..]),
            ("sub", &sub[..]),
            ("exp", &exp[..]),
            ("nbf", &nbf[..]),
            ("iat", &nbf[..]),
            ("scope", &scope[..]),
            ("realm_access", &roles[..]),
        ] {
            let v = input.choose(choices).clone();
            if !v.is_null() {
                p.insert(name.into(), v);
            }
        }
        if input.byte() % 2 == 1 {
            let key = if input.byte() % 2 == 0 {
                "scp"
            } else {
                "scope"
            };
            p.insert(key.into(), Value::String(input.text()));
        }
        p
    }

    fn request(&self, input: &mut Input<'_>) -> Vec<(String, String)> {
        let method = pick(input, &METHODS);
        let path = pick(input, &PATHS);
        let path = if path.contains("{T}") {
            path.replace("{T}", &self.token(input))
        } else {
            path
        };
        let host = pick(input, &HOSTS);
        let mut headers = vec![
            (":method".to_string(), method),
            (":path".to_string(), path),
            (":authority".to_string(), host),
        ];
        for _ in 0..input.below(5) {
            let name = pick(input, &NAMES);
            let value = pick(input, &VALUES);
            let value = if value.contains("{T}") {
                value.replace("{T}", &self.token(input))
            } else {
                value
            };
            headers.push((name, value));
        }
        headers
    }

    fn decide(&mut self, headers: Vec<(String, String)>) {
        let ev = self.engine.decide(&headers, self.now());
        self.check(&headers, &ev);
        self.last = Some(headers);
    }

    fn check(&mut self, headers: &[(String, String)], ev: &Evaluation) {
        self.trace.push(match &ev.step {
            Step::Allow(_) => format!("allow {}", ev.record.rule.as_deref().unwrap_or("-")),
            Step::Respond(r) => format!("deny {}", r.status),
            Step::Suspend(_) => "suspend".into(),
        });
        match &ev.step {
            Step::Allow(allow) => self.check_allow(headers, ev, allow),
            Step::Respond(reply) => {
                assert!(
                    matches!(reply.status, 400 | 401 | 403 | 503),
                    "status {}",
                    reply.status
                );
                assert_eq!(ev.record.verdict, Verdict::Deny);
                for (n, v) in &reply.headers {
                    assert!(!format!("{n}{v}").contains(['\r', '\n']), "{n}: {v:?}");
                }
            }
            Step::Suspend(s) => {
                if let Suspension::Keys { provider, .. } = s {
                    assert_eq!(*provider, REMOTE_PROVIDER, "waits for inline keys");
                }
                let ticket = s.ticket();
                assert!(
                    !self.held.iter().any(|(t, _)| *t == ticket)
                        && !self.released.contains(&ticket),
                    "a ticket was given out twice"
                );
                self.held.push((ticket, headers.to_vec()));
            }
        }
    }

    fn check_allow(&self, headers: &[(String, String)], ev: &Evaluation, allow: &Allow) {
        let record = &ev.record;
        let rule = record.rule.as_deref();
        assert!(record.enforced);
        let req = Request::new(headers);
        for owned in CLAIM_HEADERS {
            if req.header(owned).is_some() {
                assert!(
                    allow
                        .request
                        .remove
                        .iter()
                        .any(|r| r.eq_ignore_ascii_case(owned)),
                    "inbound {owned} kept on rule {rule:?}"
                );
            }
        }
        let sources = [
            TokenSource::bearer(),
            TokenSource::Query {
                name: "access_token".into(),
            },
            TokenSource::Cookie {
                name: "session".into(),
            },
            TokenSource::Header {
                name: "x-token".into(),
                prefix: None,
            },
        ];
        let sources: Vec<&TokenSource> = sources.iter().collect();
        let found = token::extract(&sources, &req, 8192);
        let Some(identity) = &allow.identity else {
            match rule {
                Some("health") => {}
                Some("public") => assert!(
                    matches!(found, Ok(None)),
                    "anonymous allow on an optional rule with a token: {found:?}"
                ),
                _ => panic!("allowed without an identity on rule {rule:?}: {headers:?}"),
            }
            return;
        };
        let Ok(Some(found)) = found else {
            panic!("an identity without a token: {found:?} {headers:?}");
        };
        let t = found.token;
        // A token first seen while decisions were not logged keeps the placeholder `-`.
        match record.token_hash.as_deref() {
            Some("-") => {}
            hash => assert_eq!(
                hash,
                Some(&*cache::fingerprint(&t)),
                "the decision was about another token than the request's"
            ),
        }
        let now = self.secs();
        let Some((key, provider, issuer)) = KeyName::PUBLISHED
            .iter()
            .find(|(k, _, _)| self.world.keys().verifies(*k, &t, now))
        else {
            panic!("ALLOW for a token no reference key signed: rule {rule:?}, token {t}");
        };
        assert_eq!(identity.provider, *provider, "signed by {key:?}");
        let payload = t
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|p| serde_json::from_slice::<Map<String, Value>>(&p).ok());
        let Some(payload) = payload else {
            panic!("allowed payload is not JSON: {t}");
        };
        let s = |name: &str| payload.get(name).and_then(Value::as_str);
        assert_eq!(s("iss"), Some(*issuer), "issuer of a {key:?} token");
        assert_eq!(identity.issuer.as_deref(), Some(*issuer));
        assert_eq!(identity.subject.as_deref(), s("sub"));
        let aud_ok = match payload.get("aud") {
            Some(Value::String(a)) => a == "api",
            Some(Value::Array(a)) => a.iter().any(|x| x == "api"),
            _ => false,
        };
        assert!(aud_ok, "audience {:?}", payload.get("aud"));
        let date = |name: &str| payload.get(name).and_then(Value::as_f64);
        let Some(exp) = date("exp") else {
            panic!("allowed without exp: {t}");
        };
        assert!(
            exp >= 0.0 && now <= (exp as u64).saturating_add(SKEW),
            "expired: exp {exp}, now {now}"
        );
        if let Some(nbf) = date("nbf") {
            assert!(
                now.saturating_add(SKEW) >= nbf as u64,
                "not yet valid: nbf {nbf}, now {now}"
            );
        }
        let scopes: Vec<&str> = ["scope", "scp"]
            .iter()
            .filter_map(|n| payload.get(*n))
            .flat_map(|v| match v {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            })
            .flat_map(|s| s.split(' '))
            .collect();
        let roles = payload
            .get("realm_access")
            .and_then(|r| r.get("roles"))
            .cloned()
            .unwrap_or(Value::Null);
        match rule {
            Some("read") => assert!(
                scopes.contains(&"read"),
                "read without scope read: {scopes:?}"
            ),
            Some("write") => assert!(scopes.contains(&"write") || scopes.contains(&"admin")),
            Some("admin") => assert!(
                roles == json!("admin")
                    || roles
                        .as_array()
                        .is_some_and(|r| r.contains(&json!("admin"))),
                "admin without role: {roles}"
            ),
            Some("remote") => assert_eq!(*provider, "remote"),
            Some("public" | "any") => {}
            other => panic!("an identity on rule {other:?}"),
        }
    }
}

/// Writes a script of operations for the seed corpus; mirrors what [`check`] reads.
#[derive(Debug, Default)]
pub struct Script {
    out: Output,
}

/// How a seed token is made (mirrors `Session::token`).
#[derive(Debug, Clone)]
pub enum SeedToken {
    /// `presigned()[i]`.
    Presigned(u8),
    /// Built: choices for alg, kid and typ (indexes into [`ALGS`], [`KIDS`], [`TYPS`]), the
    /// payload choices (eight indexes and a `u16` offset), the signer's index.
    Built {
        /// Header choices.
        header: [u8; 3],
        /// Payload choices.
        payload: [u8; 8],
        /// Index into [`SIGNERS`].
        signer: u8,
    },
    /// Text as it is.
    Raw(String),
    /// A pre-signed token with one byte replaced at a position.
    Mutated(u8, u16),
}

impl Script {
    /// An empty script.
    pub fn new() -> Script {
        Script::default()
    }

    fn token(&mut self, t: &SeedToken) {
        let o = &mut self.out;
        match t {
            SeedToken::Presigned(i) => {
                o.byte(0).byte(*i);
            }
            SeedToken::Built {
                header,
                payload,
                signer,
            } => {
                o.byte(1);
                Script::built(o, header, payload, *signer);
            }
            SeedToken::Raw(s) => {
                o.byte(2).bytes(s.as_bytes());
            }
            SeedToken::Mutated(i, pos) => {
                // base presigned, no transplant, one mutation: replace with 'A'.
                o.byte(3)
                    .byte(0)
                    .byte(*i)
                    .byte(1)
                    .byte(0)
                    .u16(*pos)
                    .byte(0)
                    .byte(0);
            }
        }
    }

    fn built(o: &mut Output, header: &[u8; 3], payload: &[u8; 8], signer: u8) {
        o.choices(header).byte(1).byte(1); // no crit, structured header
        o.u16(32_768).choices(payload).byte(0); // offset 0, choices, no extra scope
        o.byte(1).byte(signer); // structured payload, signer
    }

    /// A request: indexes into [`METHODS`], [`PATHS`], [`HOSTS`]; headers as indexes into
    /// [`NAMES`] and [`VALUES`] with the token for `{T}`; `path_token` for a path with `{T}`.
    pub fn request(
        &mut self,
        method: u8,
        path: u8,
        path_token: Option<&SeedToken>,
        host: u8,
        headers: &[(u8, u8, Option<SeedToken>)],
    ) -> &mut Script {
        self.out.byte(Op::Request as u8).byte(method).byte(path);
        if let Some(t) = path_token {
            self.token(t);
        }
        self.out
            .byte(host)
            .byte(u8::try_from(headers.len()).unwrap_or(0));
        for (name, value, token) in headers {
            self.out.byte(*name).byte(*value);
            if let Some(t) = token {
                self.token(t);
            }
        }
        self
    }

    /// Moves the clock by `seconds`.
    pub fn advance(&mut self, seconds: u16) -> &mut Script {
        self.out.byte(Op::Advance as u8).byte(2).u16(seconds);
        self
    }

    /// Answers due fetches with the real JWKS (`max-age=300`).
    pub fn fetch_real(&mut self) -> &mut Script {
        self.out
            .byte(Op::Fetch as u8)
            .byte(1)
            .byte(2)
            .byte(0)
            .byte(0);
        self
    }

    /// Answers due fetches with a failure.
    pub fn fetch_fail(&mut self) -> &mut Script {
        self.out.byte(Op::Fetch as u8).byte(1).byte(0).byte(1);
        self
    }

    /// Resumes the first held request with `Keys` (0) or `TimedOut` (1).
    pub fn resume(&mut self, how: u8) -> &mut Script {
        self.out.byte(Op::Resume as u8).byte(how).byte(0);
        self
    }

    /// Cancels the first held request.
    pub fn cancel(&mut self) -> &mut Script {
        self.out.byte(Op::Cancel as u8).byte(0);
        self
    }

    /// Times out every overdue request.
    pub fn overdue(&mut self) -> &mut Script {
        self.out.byte(Op::Overdue as u8);
        self
    }

    /// Switches logging.
    pub fn logging(&mut self) -> &mut Script {
        self.out.byte(Op::Logging as u8);
        self
    }

    /// Repeats the last request.
    pub fn repeat(&mut self) -> &mut Script {
        self.out.byte(Op::Repeat as u8);
        self
    }

    /// Adopts the real JWKS as if another VM had published it.
    pub fn adopt_real(&mut self) -> &mut Script {
        self.out.byte(Op::Adopt as u8).byte(0).byte(0).u16(300);
        self
    }

    /// The encoded script.
    pub fn finish(&self) -> Vec<u8> {
        self.out.finish()
    }
}
