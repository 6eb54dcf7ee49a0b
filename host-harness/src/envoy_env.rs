//! What Envoy's connection manager and router add around a plugin, so that a plugin sees (and a test checks)
//! the headers it would see in Envoy:
//!
//! - request headers get `x-forwarded-proto` (the request's scheme) and `x-request-id` (a random UUID v4),
//!   each only if absent (Envoy's defaults: `use_remote_address: false` preserves both), before
//!   `on_http_request_headers` (not on request-phase streams: they model a proxy that asks for a verdict);
//! - a local reply is `:status`, the plugin's headers, then `content-length` and (unless the plugin gave one)
//!   `content-type: text/plain` for a non-empty body; for an empty body neither (Envoy's `sendLocalReply`),
//!   before `on_http_response_headers`;
//! - an origin response gets `x-envoy-upstream-service-time` (the router's, in ms) before
//!   `on_http_response_headers`, and so does the answer of an HTTP callout (dispatch to delivery);
//! - the response to the client gets `date` (if absent) and `server: envoy` (replacing the origin's; the
//!   default `server_header_transformation: OVERWRITE`) after the plugin's response callbacks, so the plugin
//!   does not see them, as in Envoy.
//!
//! [`crate::HarnessBuilder::envoy_environment`] turns all of this off (a host that is not Envoy).

use crate::random::RandomSource;
use crate::types::Headers;

/// Adds Envoy's request headers (see the module docs).
pub(crate) fn request_headers(headers: &mut Headers, random: &mut dyn RandomSource) {
    if !headers.contains("x-forwarded-proto") {
        let scheme = headers.get(":scheme").unwrap_or("http").to_string();
        headers.add("x-forwarded-proto", &scheme);
    }
    if !headers.contains("x-request-id") {
        headers.add("x-request-id", &uuid_v4(random));
    }
}

/// The headers of a local reply as Envoy sends it into the response path.
pub(crate) fn local_reply_headers(status: u32, plugin: &Headers, body: &[u8]) -> Headers {
    let mut h = Headers(vec![(":status".into(), status.to_string())]);
    for (k, v) in plugin.iter() {
        h.add(k, v);
    }
    if body.is_empty() {
        h.remove("content-length");
        h.remove("content-type");
    } else {
        h.set("content-length", &body.len().to_string());
        if !h.contains("content-type") {
            h.add("content-type", "text/plain");
        }
    }
    h
}

/// The router's `x-envoy-upstream-service-time` on an origin response.
pub(crate) fn upstream_service_time(headers: &mut Headers, millis: u128) {
    headers.set("x-envoy-upstream-service-time", &millis.to_string());
}

/// What the connection manager adds to every response on its way to the client.
pub(crate) fn client_response(headers: &mut Headers, unix_nanos: u64) {
    if !headers.contains("date") {
        headers.add("date", &http_date(unix_nanos / 1_000_000_000));
    }
    headers.set("server", "envoy");
}

/// A random UUID v4 in its text form, as Envoy's request id generator makes.
fn uuid_v4(random: &mut dyn RandomSource) -> String {
    let mut b = [0u8; 16];
    // A random source that fails leaves zeros: the id stays well-formed, only not unique.
    let _ = random.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The calendar date (year, month 1–12, day 1–31) of a day counted from 1970-01-01, proleptic
/// Gregorian: what a host needs to print Envoy's `date` header or its log timestamps.
pub fn civil_date(days_since_epoch: i64) -> (i64, i64, i64) {
    // In 400-year eras from 0000-03-01, so the leap day is the last day of a year.
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// An IMF-fixdate (`Tue, 01 Dec 2026 23:30:25 GMT`), the form of Envoy's `date` header.
pub(crate) fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (year, month, day) = civil_date(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::InsecureSeededRandom;

    #[test]
    fn http_date_is_imf_fixdate() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_709_208_000), "Thu, 29 Feb 2024 12:00:00 GMT");
        assert_eq!(http_date(1_796_167_825), "Tue, 01 Dec 2026 23:30:25 GMT");
    }

    #[test]
    fn local_reply_headers_follow_send_local_reply() {
        let plugin = Headers::from([("x-a", "1")]);
        let h = local_reply_headers(403, &plugin, b"no");
        assert_eq!(
            h,
            Headers::from([
                (":status", "403"),
                ("x-a", "1"),
                ("content-length", "2"),
                ("content-type", "text/plain"),
            ])
        );
        let plugin = Headers::from([
            ("content-type", "application/json"),
            ("content-length", "9"),
        ]);
        let h = local_reply_headers(401, &plugin, b"{}");
        assert_eq!(h.get("content-type"), Some("application/json"));
        assert_eq!(h.get("content-length"), Some("2"));
        let h = local_reply_headers(204, &plugin, b"");
        assert_eq!(h, Headers::from([(":status", "204")]));
    }

    #[test]
    fn request_ids_are_uuid_v4_and_kept_when_given() {
        let mut r = InsecureSeededRandom::new(1);
        let mut h = Headers::from([(":scheme", "https")]);
        request_headers(&mut h, &mut r);
        assert_eq!(h.get("x-forwarded-proto"), Some("https"));
        let id = h.get("x-request-id").unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let mut h = Headers::from([("x-request-id", "given"), ("x-forwarded-proto", "http")]);
        request_headers(&mut h, &mut r);
        assert_eq!(h.get("x-request-id"), Some("given"));
        assert_eq!(h.get("x-forwarded-proto"), Some("http"));
        assert_eq!(h.len(), 2);
    }
}
