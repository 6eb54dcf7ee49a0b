//! The live callout transport: `proxy_http_call` to real upstreams, named like Envoy clusters.
//!
//! Each callout runs on a short-lived thread of its own with a blocking client (ureq over rustls):
//! callouts are rare (key fetches, a few per minute), so a thread each is cheaper to reason about than
//! an async runtime beside the VM threads, and the VM thread never blocks on the network. Failures are
//! answered the way Envoy answers them, a `503`/`504` its router makes up with a fixed text body, so
//! the plugin sees in the agent what it sees in Envoy.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use proxy_wasm_harness::{
    Answer, CalloutRequest, CalloutResult, CalloutTransport, Headers, Response, TransportError,
};

/// A problem with a cluster definition (`--cluster NAME=URL`) or the TLS roots.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Not `NAME=URL`.
    #[error("cluster `{0}` is not NAME=URL (e.g. idp=https://login.example.com)")]
    Syntax(String),
    /// The URL is not `http://host[:port]` or `https://host[:port]`.
    #[error("cluster `{name}`: `{url}` is not an http:// or https:// address without a path")]
    Url {
        /// The cluster name.
        name: String,
        /// What was given.
        url: String,
    },
    /// The same name twice.
    #[error("cluster `{0}` is defined twice")]
    Duplicate(String),
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {path}: {message}")]
    CaFile {
        /// The path.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Named upstreams: cluster name → base address (`http://host:port` or `https://host:port`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Clusters(HashMap<String, String>);

impl Clusters {
    /// Parses `NAME=URL` definitions.
    pub fn parse<'a>(defs: impl IntoIterator<Item = &'a str>) -> Result<Clusters, ClusterError> {
        let mut map = HashMap::new();
        for def in defs {
            let (name, url) = def
                .split_once('=')
                .filter(|(n, u)| !n.is_empty() && !u.is_empty())
                .ok_or_else(|| ClusterError::Syntax(def.to_string()))?;
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            let base = url.trim_end_matches('/');
            let valid = rest.is_some_and(|r| {
                let host = r.trim_end_matches('/');
                !host.is_empty() && !host.contains(['/', '?', '#', '@', ' '])
            });
            if !valid {
                return Err(ClusterError::Url {
                    name: name.into(),
                    url: url.into(),
                });
            }
            if map.insert(name.to_string(), base.to_string()).is_some() {
                return Err(ClusterError::Duplicate(name.into()));
            }
        }
        Ok(Clusters(map))
    }

    /// The base address of a cluster.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// How callouts are made.
#[derive(Clone, Debug)]
pub struct CalloutSettings {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The longest response body accepted; a longer one is a failed callout.
    pub max_response_bytes: u64,
    /// Callouts in flight per VM beyond which new ones fail at once (a stuck IdP must not pile up
    /// threads).
    pub max_in_flight: usize,
    /// PEM file of the CA certificates to trust for `https://` clusters instead of the system's.
    pub ca_file: Option<String>,
}

impl Default for CalloutSettings {
    fn default() -> Self {
        CalloutSettings {
            connect_timeout: Duration::from_secs(2),
            max_response_bytes: 1 << 20,
            max_in_flight: 64,
            ca_file: None,
        }
    }
}

/// The HTTP client shared by every VM's transport.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    clusters: Arc<Clusters>,
    settings: Arc<CalloutSettings>,
}

impl Client {
    /// A client for these clusters; reads the CA file now, so a bad one fails at start.
    pub fn new(clusters: Clusters, settings: CalloutSettings) -> Result<Client, ClusterError> {
        use ureq::tls::{RootCerts, TlsConfig};
        let roots = match &settings.ca_file {
            None => RootCerts::PlatformVerifier,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| ClusterError::CaFile {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(ClusterError::CaFile {
                        path: path.clone(),
                        message: "no PEM certificate in it".into(),
                    });
                }
                RootCerts::new_with_certs(&certs)
            }
        };
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(settings.connect_timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build()
            .new_agent();
        Ok(Client {
            agent,
            clusters: Arc::new(clusters),
            settings: Arc::new(settings),
        })
    }

    /// A transport for one VM.
    pub fn transport(&self) -> LiveTransport {
        let (tx, rx) = channel();
        LiveTransport {
            client: self.clone(),
            answers_tx: tx,
            answers: rx,
            in_flight: Arc::new(AtomicUsize::new(0)),
            cancelled: Vec::new(),
        }
    }
}

/// One VM's callouts: dispatched to threads, answers collected on `poll`.
pub struct LiveTransport {
    client: Client,
    answers_tx: Sender<(u32, CalloutResult)>,
    answers: Receiver<(u32, CalloutResult)>,
    in_flight: Arc<AtomicUsize>,
    /// Tokens whose answers are no longer wanted (few: timeouts and ended contexts).
    cancelled: Vec<u32>,
}

/// The answer Envoy's router makes up when a callout gets no response (the plugin classifies these
/// texts as failures, not as what the upstream said).
fn made_up(status: u32, text: &str) -> CalloutResult {
    CalloutResult::Response(
        Response::new(status)
            .header("content-length", &text.len().to_string())
            .header("content-type", "text/plain")
            .body(text.as_bytes().to_vec()),
    )
}

fn connect_failure() -> CalloutResult {
    made_up(
        503,
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
    )
}

fn reset() -> CalloutResult {
    made_up(
        503,
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
    )
}

impl Client {
    /// Makes one callout, blocking; never panics, every failure is an Envoy-style answer.
    fn call(&self, base: &str, request: &CalloutRequest) -> CalloutResult {
        let path = request.path();
        let path = if path.starts_with('/') { path } else { "/" };
        let method = request.headers.get(":method").unwrap_or("GET");
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"));
        for (name, value) in request.headers.iter() {
            if name.starts_with(':') || name.eq_ignore_ascii_case("content-length") {
                continue;
            }
            builder = builder.header(name, value);
        }
        if let Some(authority) = request.headers.get(":authority") {
            builder = builder.header("host", authority);
        }
        let Ok(http_request) = builder.body(request.body.clone()) else {
            return connect_failure();
        };
        let timeout = (!request.timeout.is_zero()).then_some(request.timeout);
        let configured = ureq::RequestExt::with_agent(http_request, &self.agent)
            .configure()
            .timeout_global(timeout)
            .build();
        let response = match configured.run() {
            Ok(r) => r,
            Err(ureq::Error::Timeout(_)) => return made_up(504, "upstream request timeout"),
            Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return connect_failure()
            }
            Err(ureq::Error::ConnectionFailed) | Err(ureq::Error::HostNotFound) => {
                return connect_failure()
            }
            Err(ureq::Error::Tls(_)) | Err(ureq::Error::Rustls(_)) => return connect_failure(),
            Err(_) => return reset(),
        };
        let (parts, body) = response.into_parts();
        let mut headers = Headers::new();
        for (name, value) in &parts.headers {
            headers.add(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
        }
        let limit = self.settings.max_response_bytes;
        let mut bytes = Vec::new();
        let read = body
            .into_reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut bytes);
        if read.is_err() || bytes.len() as u64 > limit {
            return reset();
        }
        CalloutResult::Response(Response {
            status: u32::from(parts.status.as_u16()),
            headers,
            body: bytes,
            trailers: Headers::new(),
        })
    }
}

impl CalloutTransport for LiveTransport {
    fn dispatch(
        &mut self,
        token: u32,
        request: &CalloutRequest,
        _now: Duration,
    ) -> Result<(), TransportError> {
        let base = self
            .client
            .clusters
            .get(&request.upstream)
            .ok_or_else(|| TransportError::UnknownCluster(request.upstream.clone()))?
            .to_string();
        let tx = self.answers_tx.clone();
        if self.in_flight.load(Ordering::Relaxed) >= self.client.settings.max_in_flight {
            // Envoy's answer when its cluster's circuit breaker is open.
            let _ = tx.send((token, made_up(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow")));
            return Ok(());
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = self.in_flight.clone();
        let client = self.client.clone();
        let request = request.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("callout-{token}"))
            .spawn(move || {
                let result = client.call(&base, &request);
                in_flight.fetch_sub(1, Ordering::Relaxed);
                // The VM may be gone (replaced after a trap): then nobody wants the answer.
                let _ = tx.send((token, result));
            });
        if spawned.is_err() {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = self.answers_tx.send((token, reset()));
        }
        Ok(())
    }

    fn poll(&mut self, now: Duration) -> Vec<Answer> {
        let mut out = Vec::new();
        while let Ok((token, result)) = self.answers.try_recv() {
            if let Some(i) = self.cancelled.iter().position(|t| *t == token) {
                self.cancelled.swap_remove(i);
                continue;
            }
            out.push(Answer {
                token,
                at: now,
                result,
            });
        }
        out
    }

    fn next_answer_at(&self) -> Option<Duration> {
        None
    }

    fn cancel(&mut self, token: u32) {
        // Bounded: a cancelled token whose answer never comes (a hung upstream past its global
        // timeout cannot happen, ureq's timeout ends it) is forgotten after a while.
        if self.cancelled.len() >= 4096 {
            self.cancelled.remove(0);
        }
        self.cancelled.push(token);
    }

    fn has_cluster(&self, name: &str) -> Option<bool> {
        Some(self.client.clusters.get(name).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_name_equals_http_address() {
        let c = Clusters::parse(["idp=http://127.0.0.1:9000/", "okta=https://x.okta.com"]).unwrap();
        assert_eq!(c.get("idp"), Some("http://127.0.0.1:9000"));
        assert_eq!(c.get("okta"), Some("https://x.okta.com"));
        for bad in [
            "idp",
            "=http://a",
            "idp=ftp://a",
            "idp=http://",
            "idp=http://a/b",
            "idp=http://u@a",
        ] {
            assert!(Clusters::parse([bad]).is_err(), "{bad}");
        }
        assert!(matches!(
            Clusters::parse(["a=http://x", "a=http://y"]),
            Err(ClusterError::Duplicate(_))
        ));
    }
}
