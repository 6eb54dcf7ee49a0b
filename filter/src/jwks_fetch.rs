//! When to fetch a provider's keys: the fetch state machine, with no host in sight.
//!
//! One fetch at a time per provider (single-flight), refresh before expiry honouring
//! `Cache-Control: max-age` within bounds, exponential backoff after failures (never longer
//! than the refresh interval), a rate limit on re-fetches caused by unknown `kid`s (which
//! the backoff does not delay: the rate limit already bounds them, and they are how a
//! rotated key is learnt as soon as the IdP is back), and last-good keys kept while the IdP
//! is down (up to a maximum staleness). The adapter turns a [`FetchRequest`] into an HTTP callout
//! and feeds the response back through [`KeyFetcher::on_response`].

use crate::alg::Alg;
use crate::callout::CalloutFailure;
use crate::fetch_lease::Lease;
use crate::keys::{KeyIssue, KeySet};
use crate::url::HttpsUrl;
use serde_json::Value;

/// Largest JWKS or discovery document accepted. Real ones are a few KiB.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// An HTTPS endpoint split the way a proxy callout needs it: the request view of an
/// [`HttpsUrl`], which did the checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URI as configured or discovered.
    pub uri: String,
    /// `:authority`.
    pub authority: String,
    /// `:path` (with query).
    pub path: String,
}

impl Endpoint {
    /// Splits an absolute `https` URI (`http` only for localhost, 127.0.0.1 and `[::1]`);
    /// [`HttpsUrl::parse`] says why one is refused.
    pub fn parse(uri: &str) -> Option<Endpoint> {
        HttpsUrl::parse(uri).ok().map(|url| Endpoint::from(&url))
    }
}

impl From<&HttpsUrl> for Endpoint {
    fn from(url: &HttpsUrl) -> Endpoint {
        Endpoint {
            uri: url.as_str().to_string(),
            authority: url.authority().to_string(),
            path: url.path_and_query(),
        }
    }
}

/// How a provider's remote keys are fetched and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// The host cluster (Envoy) the callouts go through.
    pub cluster: String,
    /// The JWKS endpoint, when configured directly.
    pub jwks: Option<Endpoint>,
    /// The OIDC discovery document, when keys are found through it.
    pub discovery: Option<Endpoint>,
    /// The issuer the discovery document must name (OpenID Connect Discovery §4.3).
    pub issuer: String,
    /// Callout timeout, in milliseconds.
    pub timeout_ms: u64,
    /// Refresh interval when the response says nothing (seconds).
    pub refresh_seconds: u64,
    /// Lower bound on the refresh interval, whatever `max-age` says.
    pub min_refresh_seconds: u64,
    /// Upper bound on the refresh interval.
    pub max_refresh_seconds: u64,
    /// How long past its refresh time the last good key set keeps serving when the IdP
    /// cannot be reached.
    pub max_stale_seconds: u64,
    /// At most one re-fetch per this many seconds because of an unknown `kid`.
    pub unknown_kid_refetch_seconds: u64,
}

/// Which document a fetch asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The OIDC discovery document.
    Discovery,
    /// The JWKS itself.
    Jwks,
}

/// A callout to make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// What is fetched.
    pub stage: Stage,
    /// The host cluster.
    pub cluster: String,
    /// `:authority`.
    pub authority: String,
    /// `:path`.
    pub path: String,
    /// Callout timeout in milliseconds.
    pub timeout_ms: u64,
}

/// Why a fetch did not produce keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// An answer came for a provider with no fetch outstanding.
    #[error("no fetch was in flight")]
    Unexpected,
    /// The IdP answered with a status other than 200.
    #[error("{stage:?} fetch answered HTTP {status}")]
    Status {
        /// What was fetched.
        stage: Stage,
        /// The HTTP status.
        status: u16,
    },
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("{0:?} document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge(Stage),
    /// The discovery document is unusable.
    #[error("discovery document: {0}")]
    Discovery(String),
    /// The JWKS is unusable.
    #[error("JWKS: {0}")]
    Jwks(String),
    /// No answer: timed out, refused or reset, as the host reported it.
    #[error("{stage:?} fetch got no answer: {failure}")]
    NoAnswer {
        /// What was fetched.
        stage: Stage,
        /// How the callout failed.
        failure: CalloutFailure,
    },
}

/// Keys from a successful fetch.
#[derive(Debug, Clone)]
pub struct FetchedKeys {
    /// The parsed keys.
    pub keys: KeySet,
    /// Keys of the document that were skipped.
    pub issues: Vec<KeyIssue>,
    /// The document as received, for sharing with other VMs.
    pub document: Vec<u8>,
    /// When the keys should be refreshed (Unix seconds).
    pub refresh_at: u64,
}

/// What a response led to.
#[derive(Debug, Clone)]
pub enum FetchProgress {
    /// The discovery document named the JWKS; fetch it next (poll again).
    Discovered(Endpoint),
    /// New keys.
    Keys(FetchedKeys),
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    stage: Stage,
    deadline: u64,
}

/// The fetch state of one provider.
#[derive(Debug, Clone)]
pub struct KeyFetcher {
    settings: FetchSettings,
    jwks: Option<Endpoint>,
    in_flight: Option<InFlight>,
    fetched_at: Option<u64>,
    refresh_at: u64,
    retry_at: u64,
    failures: u32,
    last_kid_refetch: Option<u64>,
    urgent: bool,
    /// A request with an unknown `kid` waits for the next re-fetch the rate limit permits.
    kid_demand: bool,
}

/// Longest backoff after failed fetches, in seconds.
const MAX_BACKOFF_SECONDS: u64 = 60;

/// Seconds between retries after `failures` consecutive failures: 1, 2, 4, ... 60, and
/// never more than `refresh_seconds`: the IdP being back must not go unnoticed for longer
/// than a routine refresh would.
fn backoff(failures: u32, refresh_seconds: u64) -> u64 {
    let doubling = 1u64 << failures.saturating_sub(1).min(6);
    doubling
        .min(MAX_BACKOFF_SECONDS)
        .min(refresh_seconds.max(1))
}

impl KeyFetcher {
    /// A fetcher that will fetch at the first poll.
    pub fn new(settings: FetchSettings) -> KeyFetcher {
        KeyFetcher {
            jwks: settings.jwks.clone(),
            settings,
            in_flight: None,
            fetched_at: None,
            refresh_at: 0,
            retry_at: 0,
            failures: 0,
            last_kid_refetch: None,
            urgent: false,
            kid_demand: false,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    /// Consecutive failed fetches since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the installed keys were fetched (by this VM or another).
    pub fn fetched_at(&self) -> Option<u64> {
        self.fetched_at
    }

    /// True while a callout is outstanding.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// True while a fetch is outstanding or asked for: requests that wait for it should
    /// be decided when it completes, not before.
    pub fn fetch_pending(&self) -> bool {
        self.in_flight.is_some() || self.urgent || self.kid_demand
    }

    /// When the rate limit next permits a re-fetch for an unknown `kid` (Unix seconds).
    pub fn kid_refetch_at(&self) -> u64 {
        self.last_kid_refetch.map_or(0, |t| {
            t.saturating_add(self.settings.unknown_kid_refetch_seconds)
        })
    }

    /// The fetch to start now, if one is due and none is outstanding. A callout past its
    /// deadline (the host never answered) counts as failed.
    pub fn poll(&mut self, now: u64) -> Option<FetchRequest> {
        if let Some(f) = self.in_flight {
            if now < f.deadline {
                return None;
            }
            self.in_flight = None;
            self.fail(now);
        }
        let scheduled = (self.urgent || now >= self.refresh_at) && now >= self.retry_at;
        let for_kid = self.kid_demand && now >= self.kid_refetch_at();
        if !scheduled && !for_kid {
            return None;
        }
        if for_kid {
            self.last_kid_refetch = Some(now);
            self.kid_demand = false;
        }
        self.urgent = false;
        let (stage, endpoint) = match (&self.jwks, &self.settings.discovery) {
            (Some(e), _) => (Stage::Jwks, e),
            (None, Some(d)) => (Stage::Discovery, d),
            (None, None) => return None,
        };
        let timeout_secs = self.settings.timeout_ms.div_ceil(1000);
        self.in_flight = Some(InFlight {
            stage,
            deadline: now + timeout_secs + 1,
        });
        Some(FetchRequest {
            stage,
            cluster: self.settings.cluster.clone(),
            authority: endpoint.authority.clone(),
            path: endpoint.path.clone(),
            timeout_ms: self.settings.timeout_ms,
        })
    }

    /// Like [`KeyFetcher::poll`], agreed with the other VMs of the proxy through `lease`,
    /// the shared record (if there is one). Their backoff and kid rate limit become ours;
    /// nothing is due while another VM holds the lease (its keys arrive through shared
    /// data). With the request comes the record to store, by compare-and-swap, before the
    /// callout is sent; if the swap fails, [`KeyFetcher::lost_lease`].
    pub fn poll_shared(
        &mut self,
        now_ms: u64,
        lease: Option<&Lease>,
        me: u64,
    ) -> Option<(FetchRequest, Lease)> {
        if let Some(shared) = lease {
            if shared.failures > 0 && shared.retry_at > self.retry_at {
                self.failures = self.failures.max(shared.failures);
                self.retry_at = shared.retry_at;
            }
            if shared.last_kid_refetch > self.last_kid_refetch {
                self.last_kid_refetch = shared.last_kid_refetch;
            }
            if self.in_flight.is_none() && shared.held_by_other(me, now_ms) {
                return None;
            }
        }
        let request = self.poll(now_ms / 1000)?;
        let claim = Lease {
            holder: me,
            until_ms: now_ms
                .saturating_add(self.settings.timeout_ms)
                .saturating_add(1000),
            ..self.released_lease()
        };
        Some((request, claim))
    }

    /// Another VM took the lease first: this VM's fetch is not sent, and is not a failure.
    /// The keys it wanted come through shared data.
    pub fn lost_lease(&mut self) {
        self.in_flight = None;
        self.urgent = true;
    }

    /// The record to store once this VM's fetch has ended: nobody holds the lease, and the
    /// proxy knows the outcome's backoff and the last kid re-fetch.
    pub fn released_lease(&self) -> Lease {
        Lease {
            holder: 0,
            until_ms: 0,
            last_kid_refetch: self.last_kid_refetch,
            failures: self.failures,
            retry_at: self.retry_at,
        }
    }

    /// A request is waiting for keys: fetch at the next poll (backoff still applies).
    pub fn want_now(&mut self) {
        self.urgent = true;
    }

    /// A token named a `kid` we do not have: it waits for the fetch under way, or for the
    /// next re-fetch the rate limit permits (at most `unknown_kid_refetch_seconds` plus the
    /// callout timeout away), so a key rotated in during a flood of random kids works on
    /// its first request while the IdP still sees one re-fetch per interval.
    /// Returns when the wait ends, as Unix milliseconds.
    pub fn want_unknown_kid(&mut self, now: u64) -> u64 {
        let timeout_ms = self.settings.timeout_ms;
        let answered_by = |start_secs: u64| {
            start_secs
                .saturating_mul(1000)
                .saturating_add(timeout_ms)
                .saturating_add(1000)
        };
        if let Some(f) = self.in_flight {
            return f.deadline.saturating_mul(1000).saturating_add(1000);
        }
        if self.urgent && now >= self.retry_at {
            return answered_by(now);
        }
        self.kid_demand = true;
        // Another VM may have made the proxy's last re-fetch more recently than this one
        // knows (it learns at its next poll), but never later than now: one interval from
        // now always covers the next permitted re-fetch.
        answered_by(now.saturating_add(self.settings.unknown_kid_refetch_seconds))
    }

    /// True when the last fetches failed and the next try is not yet due: a request
    /// with no keys to use should not wait for it.
    pub fn backing_off(&self, now: u64) -> bool {
        self.failures > 0 && self.in_flight.is_none() && now < self.retry_at
    }

    /// Seconds until the next try, for `Retry-After`.
    pub fn retry_after(&self, now: u64) -> u64 {
        self.retry_at.saturating_sub(now).max(1)
    }

    /// True when keys installed at `fetched_at` are too old to serve.
    pub fn keys_too_stale(&self, now: u64) -> bool {
        match self.fetched_at {
            None => true,
            Some(_) => {
                now > self
                    .refresh_at
                    .saturating_add(self.settings.max_stale_seconds)
            }
        }
    }

    /// True when keys another VM fetched at `fetched_at` should replace ours: unless ours
    /// are strictly newer. Same-second keys are taken, since clocks are in seconds and a
    /// re-fetch for a rotated key often lands in the second of the last refresh.
    pub fn accepts_shared(&self, fetched_at: u64) -> bool {
        self.fetched_at.is_none_or(|f| f <= fetched_at)
    }

    /// Keys published by another VM: adopt their schedule unless ours are newer.
    pub fn adopt_shared(&mut self, fetched_at: u64, refresh_at: u64) -> bool {
        if !self.accepts_shared(fetched_at) {
            return false;
        }
        self.fetched_at = Some(fetched_at);
        self.refresh_at = refresh_at;
        self.failures = 0;
        self.retry_at = 0;
        self.urgent = false;
        self.kid_demand = false;
        true
    }

    /// The callout failed before any response (host error, refused, reset, timeout).
    pub fn on_failure(&mut self, now: u64, failure: CalloutFailure) -> FetchError {
        let stage = self.in_flight.take().map_or(Stage::Jwks, |f| f.stage);
        self.fail(now);
        FetchError::NoAnswer { stage, failure }
    }

    /// The response was 200 but its body longer than [`MAX_DOCUMENT_BYTES`], so the host
    /// read only its start.
    pub fn on_oversized(&mut self, now: u64) -> FetchError {
        let stage = self.in_flight.take().map_or(Stage::Jwks, |f| f.stage);
        self.fail(now);
        FetchError::TooLarge(stage)
    }

    fn fail(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = now + backoff(self.failures, self.settings.refresh_seconds);
    }

    /// Handles a callout response. `max_age` is the `Cache-Control: max-age` value, if any.
    pub fn on_response(
        &mut self,
        now: u64,
        status: u16,
        max_age: Option<u64>,
        body: &[u8],
        algorithms: &[Alg],
    ) -> Result<FetchProgress, FetchError> {
        let Some(flight) = self.in_flight.take() else {
            return Err(FetchError::Unexpected);
        };
        let outcome = self.interpret(flight.stage, now, status, max_age, body, algorithms);
        match &outcome {
            Err(_) => self.fail(now),
            Ok(FetchProgress::Discovered(e)) => {
                self.jwks = Some(e.clone());
                self.urgent = true;
            }
            Ok(FetchProgress::Keys(k)) => {
                self.fetched_at = Some(now);
                self.refresh_at = k.refresh_at;
                self.failures = 0;
                self.retry_at = 0;
                // Whoever was waiting is served (or refused) by these keys.
                self.urgent = false;
                self.kid_demand = false;
            }
        }
        outcome
    }

    fn interpret(
        &self,
        stage: Stage,
        now: u64,
        status: u16,
        max_age: Option<u64>,
        body: &[u8],
        algorithms: &[Alg],
    ) -> Result<FetchProgress, FetchError> {
        if status != 200 {
            return Err(FetchError::Status { stage, status });
        }
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge(stage));
        }
        match stage {
            Stage::Discovery => {
                let doc: Value = serde_json::from_slice(body)
                    .map_err(|_| FetchError::Discovery("not JSON".into()))?;
                if doc.get("issuer").and_then(Value::as_str) != Some(self.settings.issuer.as_str())
                {
                    return Err(FetchError::Discovery(
                        "\"issuer\" differs from the configured issuer".into(),
                    ));
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| FetchError::Discovery("no \"jwks_uri\"".into()))?;
                let endpoint = Endpoint::parse(uri).ok_or_else(|| {
                    FetchError::Discovery("\"jwks_uri\" is not an https URL".into())
                })?;
                Ok(FetchProgress::Discovered(endpoint))
            }
            Stage::Jwks => {
                let (keys, issues) = KeySet::from_jwks(body, algorithms)
                    .map_err(|e| FetchError::Jwks(e.to_string()))?;
                let s = &self.settings;
                let interval = max_age
                    .unwrap_or(s.refresh_seconds)
                    .clamp(s.min_refresh_seconds, s.max_refresh_seconds);
                Ok(FetchProgress::Keys(FetchedKeys {
                    keys,
                    issues,
                    document: body.to_vec(),
                    refresh_at: now + interval,
                }))
            }
        }
    }
}

/// `max-age` from a `Cache-Control` header value (`no-store`/`no-cache` count as 0).
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut out = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            out = v.trim_matches('"').parse().ok();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_testkit as testkit;
    use serde_json::json;

    fn settings(discovery: bool) -> FetchSettings {
        FetchSettings {
            cluster: "idp".into(),
            jwks: (!discovery).then(|| Endpoint::parse("https://idp.test/keys").unwrap()),
            discovery: discovery.then(|| {
                Endpoint::parse("https://idp.test/.well-known/openid-configuration").unwrap()
            }),
            issuer: "https://idp.test".into(),
            timeout_ms: 2000,
            refresh_seconds: 300,
            min_refresh_seconds: 60,
            max_refresh_seconds: 3600,
            max_stale_seconds: 600,
            unknown_kid_refetch_seconds: 30,
        }
    }

    fn jwks() -> Vec<u8> {
        json!({"keys": [testkit::es256().jwk()]})
            .to_string()
            .into_bytes()
    }

    const ALGS: &[Alg] = &Alg::ASYMMETRIC;

    #[test]
    fn endpoints_split_into_authority_and_path() {
        let e = Endpoint::parse("https://login.example.com:8443/t/keys?v=2").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("login.example.com:8443", "/t/keys?v=2")
        );
        assert_eq!(Endpoint::parse("https://idp.test").unwrap().path, "/");
        assert!(Endpoint::parse("http://idp.test/keys").is_none());
        assert!(Endpoint::parse("http://127.0.0.1:8080/keys").is_some());
        assert!(Endpoint::parse("https://user@idp.test/").is_none());
        assert!(Endpoint::parse("ftp://idp.test/").is_none());
    }

    #[test]
    fn endpoints_follow_the_url_rules() {
        // The rules config.rs applies to issuers, now that both use HttpsUrl.
        let e = Endpoint::parse("http://[::1]:8080/keys?x=1").unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("[::1]:8080", "/keys?x=1")
        );
        assert_eq!(
            Endpoint::parse("https://IdP.test/k").unwrap().authority,
            "idp.test"
        );
        assert_eq!(
            Endpoint::parse("https://IdP.test/k").unwrap().uri,
            "https://IdP.test/k"
        );
        assert!(Endpoint::parse("https://idp.test/keys#frag").is_none());
        assert!(Endpoint::parse("http://localhost.evil.test/keys").is_none());
        assert!(Endpoint::parse("https://idp.test:0/").is_none());
        let url = HttpsUrl::parse("https://idp.test/t?v=2").unwrap();
        assert_eq!(Endpoint::from(&url), Endpoint::parse(url.as_str()).unwrap());
    }

    #[test]
    fn single_flight_then_refresh_on_schedule() {
        let mut f = KeyFetcher::new(settings(false));
        let r = f.poll(1000).unwrap();
        assert_eq!((r.stage, r.path.as_str()), (Stage::Jwks, "/keys"));
        f.want_now();
        assert!(f.poll(1000).is_none(), "one fetch at a time");
        let got = f.on_response(1001, 200, Some(120), &jwks(), ALGS).unwrap();
        let FetchProgress::Keys(k) = got else {
            panic!("keys expected")
        };
        assert_eq!(k.refresh_at, 1121);
        assert!(f.poll(1100).is_none());
        assert!(f.poll(1121).is_some());
    }

    #[test]
    fn max_age_is_clamped() {
        for (max_age, expect) in [(Some(5), 60), (Some(999_999), 3600), (None, 300)] {
            let mut f = KeyFetcher::new(settings(false));
            f.poll(0).unwrap();
            let FetchProgress::Keys(k) = f.on_response(0, 200, max_age, &jwks(), ALGS).unwrap()
            else {
                panic!()
            };
            assert_eq!(k.refresh_at, expect);
        }
        assert_eq!(max_age("public, max-age=600"), Some(600));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("private"), None);
    }

    #[test]
    fn failures_back_off_and_garbage_is_a_failure() {
        let mut f = KeyFetcher::new(settings(false));
        let bad: Vec<(u16, Vec<u8>)> = vec![
            (500, jwks()),
            (200, b"<html>oops</html>".to_vec()),
            (200, br#"{"keys": []}"#.to_vec()),
            (200, vec![b' '; MAX_DOCUMENT_BYTES + 1]),
        ];
        let mut now = 0;
        for (i, (status, body)) in bad.into_iter().enumerate() {
            f.poll(now).unwrap();
            assert!(f.on_response(now, status, None, &body, ALGS).is_err());
            assert_eq!(f.failures(), i as u32 + 1);
            assert!(f.backing_off(now));
            f.want_now();
            assert!(
                f.poll(now).is_none(),
                "backoff holds even when a request waits"
            );
            now += backoff(f.failures(), 300);
        }
        assert!(f.poll(now).is_some());
        assert!(f.on_response(now, 200, None, &jwks(), ALGS).is_ok());
        assert_eq!(f.failures(), 0);
    }

    #[test]
    fn an_unanswered_callout_expires() {
        let mut f = KeyFetcher::new(settings(false));
        f.poll(0).unwrap();
        assert!(f.poll(2).is_none());
        assert!(
            f.poll(3).is_none(),
            "deadline is past the 2 s timeout plus a second"
        );
        assert_eq!(f.failures(), 1);
        assert!(f.poll(4).is_some());
    }

    #[test]
    fn unknown_kids_wait_for_the_next_permitted_refetch() {
        let mut f = KeyFetcher::new(settings(false));
        f.poll(0).unwrap();
        f.on_response(0, 200, None, &jwks(), ALGS).unwrap();
        // A flood: a new random kid every second from t=10 to t=45.
        let mut fetched_at = Vec::new();
        for t in 10..=45 {
            let until = f.want_unknown_kid(t);
            assert!(f.fetch_pending());
            // Held long enough for the next permitted re-fetch to answer, and never more
            // than one interval plus the callout timeout.
            let next = if t == 10 {
                10
            } else {
                f.kid_refetch_at().max(t)
            };
            assert!(until >= next * 1000 + 3000, "t={t} until={until}");
            assert!(until <= (t + 30) * 1000 + 3000, "t={t} until={until}");
            if f.poll(t).is_some() {
                fetched_at.push(t);
                f.on_response(t, 200, None, &jwks(), ALGS).unwrap();
            }
        }
        assert_eq!(fetched_at, vec![10, 40], "one re-fetch per 30 s interval");
        // A kid that arrives while a fetch is in flight joins it.
        assert_eq!(f.want_unknown_kid(70), 100_000 + 3000);
        f.poll(70).unwrap();
        assert_eq!(f.want_unknown_kid(71), (70 + 2 + 1) * 1000 + 1000);
        // No demand, no callout: a quiet interval costs the IdP nothing.
        f.on_response(71, 200, None, &jwks(), ALGS).unwrap();
        assert!(f.poll(200).is_none());
    }

    #[test]
    fn backoff_stops_at_the_refresh_interval_and_never_delays_a_permitted_kid_refetch() {
        let mut short = settings(false);
        short.refresh_seconds = 5;
        assert_eq!(
            (1..=8).map(|n| backoff(n, 300)).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 16, 32, 60, 60]
        );
        assert_eq!(backoff(8, 5), 5);
        let mut f = KeyFetcher::new(short);
        f.poll(0).unwrap();
        f.on_response(0, 200, None, &jwks(), ALGS).unwrap();
        // The first refresh is due after min_refresh_seconds (60 here).
        let mut now = 60;
        for _ in 0..6 {
            f.poll(now).unwrap();
            f.on_failure(now, CalloutFailure::ConnectFailed);
            assert!(
                f.retry_after(now) <= 5,
                "backoff is capped at refresh_seconds"
            );
            now += f.retry_after(now);
        }
        // The IdP is back; the backoff would hold a scheduled retry, but an unknown kid
        // whose re-fetch the rate limit permits is answered by the very next callout.
        f.poll(now).unwrap();
        f.on_failure(now, CalloutFailure::TimedOut);
        assert!(f.backing_off(now));
        f.want_unknown_kid(now);
        assert!(f.poll(now).is_some());
        assert!(f.on_response(now, 200, None, &jwks(), ALGS).is_ok());
        assert_eq!(f.failures(), 0);
    }

    #[test]
    fn discovery_leads_to_the_jwks() {
        let mut f = KeyFetcher::new(settings(true));
        let r = f.poll(0).unwrap();
        assert_eq!(
            (r.stage, r.path.as_str()),
            (Stage::Discovery, "/.well-known/openid-configuration")
        );
        let doc = json!({"issuer": "https://idp.test", "jwks_uri": "https://keys.idp.test/jwks"})
            .to_string();
        assert!(matches!(
            f.on_response(0, 200, None, doc.as_bytes(), ALGS).unwrap(),
            FetchProgress::Discovered(_)
        ));
        let r = f.poll(0).unwrap();
        assert_eq!(
            (r.stage, r.authority.as_str()),
            (Stage::Jwks, "keys.idp.test")
        );
    }

    #[test]
    fn discovery_for_another_issuer_is_refused() {
        let mut f = KeyFetcher::new(settings(true));
        f.poll(0).unwrap();
        let doc = json!({"issuer": "https://evil.test", "jwks_uri": "https://evil.test/jwks"})
            .to_string();
        assert!(matches!(
            f.on_response(0, 200, None, doc.as_bytes(), ALGS),
            Err(FetchError::Discovery(_))
        ));
    }

    #[test]
    fn stale_keys_serve_until_the_bound() {
        let mut f = KeyFetcher::new(settings(false));
        assert!(f.keys_too_stale(0));
        f.poll(0).unwrap();
        f.on_response(0, 200, None, &jwks(), ALGS).unwrap();
        assert!(!f.keys_too_stale(300 + 600));
        assert!(f.keys_too_stale(300 + 601));
    }

    #[test]
    fn shared_keys_from_another_vm_move_the_schedule() {
        let mut f = KeyFetcher::new(settings(false));
        assert!(f.adopt_shared(50, 350));
        assert!(
            f.poll(100).is_none(),
            "another VM fetched at 50; next refresh at 350"
        );
        assert!(!f.adopt_shared(40, 999), "older keys are ignored");
        assert!(f.poll(350).is_some());
    }
}
