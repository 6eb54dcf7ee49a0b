//! The admin endpoint: `/metrics` (Prometheus text: the plugin's metrics from the shared state, and
//! the agent's own counters) and `/ready`. HTTP/1.0, one request per connection, loopback use.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use proxy_wasm_harness::{MetricKind, SharedState};

use crate::workers::AgentStats;

/// A metric name Prometheus accepts: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn prometheus_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The exposition text.
pub fn render(shared: &SharedState, stats: &AgentStats) -> String {
    let mut out = String::new();
    let mut metrics = shared.metrics();
    metrics.sort_by(|a, b| a.name.cmp(&b.name));
    for m in metrics {
        let name = prometheus_name(&m.name);
        match m.kind {
            MetricKind::Counter => {
                let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", m.value);
            }
            MetricKind::Gauge => {
                let _ = writeln!(out, "# TYPE {name} gauge\n{name} {}", m.value);
            }
            MetricKind::Histogram => {
                let sum: u64 = m.samples.iter().sum();
                let _ = writeln!(
                    out,
                    "# TYPE {name} summary\n{name}_sum {sum}\n{name}_count {}",
                    m.samples.len()
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "# TYPE portcullis_spoa_decided_total counter\nportcullis_spoa_decided_total {}",
        stats.decided.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE portcullis_spoa_vm_restarts_total counter\nportcullis_spoa_vm_restarts_total {}",
        stats.vm_restarts.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE portcullis_spoa_held gauge\nportcullis_spoa_held {}",
        stats.held.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# TYPE portcullis_spoa_refused_total counter");
    if let Ok(refused) = stats.refused.lock() {
        let mut rows: Vec<_> = refused.iter().collect();
        rows.sort();
        for (reason, n) in rows {
            let _ = writeln!(
                out,
                "portcullis_spoa_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }
    out
}

fn answer(mut stream: TcpStream, shared: &SharedState, stats: &AgentStats) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader.take(8192));
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path.split('?').next() {
        Some("/metrics") | Some("/stats/prometheus") => ("200 OK", render(shared, stats)),
        Some("/ready") => ("200 OK", "ready\n".to_string()),
        _ => ("404 Not Found", "try /metrics or /ready\n".to_string()),
    };
    let reply = format!(
        "HTTP/1.0 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

/// Serves the admin endpoint until the listener fails.
pub fn serve(listener: TcpListener, shared: SharedState, stats: Arc<AgentStats>) {
    for stream in listener.incoming().flatten() {
        answer(stream, &shared, &stats);
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_prometheus_safe() {
        assert_eq!(prometheus_name("portcullis.jwt_ok"), "portcullis_jwt_ok");
        assert_eq!(prometheus_name("9lives"), "_9lives");
        assert_eq!(prometheus_name(""), "_");
    }
}
