//! The small HTML pages a browser is shown by the login flow: a person reads these, so
//! they say what happened and what to do, and never carry a code, token or cookie.

use crate::engine::LocalReply;

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A page with a title and one paragraph, never cached.
pub fn page(status: u16, title: &str, text: &str) -> LocalReply {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{x}</p><p><a href=\"/\">Start again</a></p></body></html>\n",
        t = escape(title),
        x = escape(text)
    );
    LocalReply {
        status,
        headers: vec![
            ("content-type".into(), "text/html; charset=utf-8".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: body.into_bytes(),
    }
}

/// A 302 to `location`, setting these cookies.
pub fn redirect(location: &str, set_cookies: Vec<String>) -> LocalReply {
    let mut headers = vec![
        ("location".to_string(), location.to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(
        set_cookies
            .into_iter()
            .map(|c| ("set-cookie".to_string(), c)),
    );
    LocalReply {
        status: 302,
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let p = page(400, "Sign-in failed", "<script>x</script>");
        let body = String::from_utf8(p.body).unwrap_or_default();
        assert!(body.contains("&lt;script&gt;"));
        assert!(!body.contains("<script>"));
        let r = redirect("/x", vec!["a=1".into(), "b=2".into()]);
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some("/x"));
        assert_eq!(
            r.headers.iter().filter(|(n, _)| n == "set-cookie").count(),
            2
        );
    }
}
