//! Where the plugin's log lines go: stdout, one line each, in Envoy's layout
//! (`[time][thread][level][wasm] wasm log <plugin> <root id>: <message>`), so the decision lines read
//! the same whichever proxy ran the plugin.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use proxy_wasm_harness::{Callout, CalloutEnd, LogEntry, LogLevel, Recorder, Violation};

/// Prints one VM's log lines at or above a level.
pub struct StdoutLog {
    /// Names the VM in each line (Envoy names the worker thread).
    pub thread: String,
    /// `plugin_name root_id`, as Envoy prints them.
    pub plugin: String,
    /// Lines below this level are dropped.
    pub level: LogLevel,
}

/// The UTC time in Envoy's log layout: `2026-12-02 06:10:00.123`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let rem = secs % 86_400;
    let (year, month, day) = proxy_wasm_harness::civil_date((secs / 86_400) as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warning",
        LogLevel::Error => "error",
        LogLevel::Critical => "critical",
    }
}

/// Prints an agent line (not the plugin's) in the same layout.
pub fn agent_line(level: LogLevel, message: &str) {
    let line = format!(
        "[{}][agent][{}][spoa] {message}\n",
        timestamp(SystemTime::now()),
        level_name(level)
    );
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

impl Recorder for StdoutLog {
    fn log(&mut self, entry: LogEntry) {
        if entry.level < self.level {
            return;
        }
        let line = format!(
            "[{}][{}][{}][wasm] wasm log {}: {}\n",
            timestamp(SystemTime::now()),
            self.thread,
            level_name(entry.level),
            self.plugin,
            entry.message
        );
        // One write per line, so lines of different VMs never interleave.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }

    fn violation(&mut self, violation: Violation) {
        agent_line(
            LogLevel::Warn,
            &format!("{} ABI violation: {violation}", self.thread),
        );
    }

    fn callout_dispatched(&mut self, _callout: &Callout) {}

    fn callout_ended(&mut self, _token: u32, _end: &CalloutEnd) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_735_689_600_123);
        assert_eq!(timestamp(t), "2025-01-01 00:00:00.123");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399);
        assert_eq!(timestamp(leap), "2000-02-29 23:59:59.000");
    }
}
