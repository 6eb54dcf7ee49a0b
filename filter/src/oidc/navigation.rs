//! Which unauthenticated requests are a person's browser opening a page (sent to sign in)
//! and which are programs (answered 401): an SPA's fetch or an API client must never get
//! the identity provider's HTML.

use crate::request::Request;

/// True for a top-level browser navigation: GET or HEAD, no `Authorization`, no
/// `X-Requested-With`, and `Sec-Fetch-Mode: navigate` (or, from a browser too old to send
/// Fetch Metadata, an `Accept` that prefers `text/html`).
pub fn is_browser_navigation(req: &Request<'_>) -> bool {
    if !matches!(req.method(), "GET" | "HEAD")
        || req.header("authorization").is_some()
        || req.header("x-requested-with").is_some()
    {
        return false;
    }
    match req.header("sec-fetch-mode") {
        Some(mode) => {
            mode.eq_ignore_ascii_case("navigate")
                && req
                    .header("sec-fetch-dest")
                    .is_none_or(|d| d.eq_ignore_ascii_case("document"))
        }
        None => prefers_html(req.header("accept").unwrap_or("")),
    }
}

/// `text/html` is listed with a q no other listed type beats (`*/*` alone is a program's).
fn prefers_html(accept: &str) -> bool {
    let mut html = None;
    let mut best_other = 0.0f32;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if media == "text/html" {
            html = Some(html.map_or(q, |h: f32| h.max(q)));
        } else if media != "application/xhtml+xml" && !media.ends_with("/*") {
            best_other = best_other.max(q);
        }
    }
    html.is_some_and(|h| h > 0.0 && h >= best_other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nav(h: &[(&str, &str)]) -> bool {
        let headers: Vec<(String, String)> = h
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        is_browser_navigation(&Request::new(&headers))
    }

    const CHROME: &str =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";

    #[test]
    fn browsers_opening_pages_are_navigations() {
        assert!(nav(&[(":method", "GET"), ("accept", CHROME)]));
        assert!(nav(&[
            (":method", "GET"),
            ("accept", CHROME),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ]));
        assert!(nav(&[(":method", "HEAD"), ("accept", "text/html")]));
    }

    #[test]
    fn programs_are_not() {
        for h in [
            vec![(":method", "GET"), ("accept", "application/json")],
            vec![(":method", "GET"), ("accept", "*/*")],
            vec![(":method", "GET")],
            vec![(":method", "POST"), ("accept", CHROME)],
            vec![
                (":method", "GET"),
                ("accept", CHROME),
                ("x-requested-with", "XMLHttpRequest"),
            ],
            vec![
                (":method", "GET"),
                ("accept", CHROME),
                ("authorization", "Bearer x"),
            ],
            vec![
                (":method", "GET"),
                ("accept", CHROME),
                ("sec-fetch-mode", "cors"),
            ],
            vec![
                (":method", "GET"),
                ("accept", CHROME),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "iframe"),
            ],
            vec![
                (":method", "GET"),
                ("accept", "application/json, text/html;q=0.5"),
            ],
            vec![(":method", "GET"), ("accept", "text/html;q=0")],
        ] {
            assert!(!nav(&h), "{h:?}");
        }
    }
}
