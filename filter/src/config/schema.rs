//! The JSON Schema of the policy document (`policies/portcullis.schema.json`), generated
//! from the types [`super::raw`] reads, so it cannot drift from them.

use super::raw::RawConfig;
use serde_json::Value;

/// The JSON Schema of the plugin configuration, generated from the types the parser reads
/// (so it cannot drift from them); `policies/portcullis.schema.json` is this, pretty-printed.
pub fn json_schema() -> Value {
    let mut schema = schemars::schema_for!(RawConfig).to_value();
    drop_null_branches(&mut schema);
    schema
}

/// Optional fields are written out or left out, never `null`: without the null branch of
/// `Option`, a wrong value is reported at its own path instead of "not valid under anyOf" at
/// its parent's.
fn drop_null_branches(v: &mut Value) {
    let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    map.insert("type".into(), only);
                }
            }
            let branch = match map.get("anyOf") {
                Some(Value::Array(b)) if b.len() == 2 && b.iter().any(is_null) => {
                    b.iter().find(|s| !is_null(s)).cloned()
                }
                _ => None,
            };
            if let Some(Value::Object(inner)) = branch {
                map.remove("anyOf");
                for (k, val) in inner {
                    map.entry(k).or_insert(val);
                }
            }
            map.values_mut().for_each(drop_null_branches);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null_branches),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::defaults;
    use super::*;

    fn description(def: &str, field: &str) -> String {
        let schema = json_schema();
        let props = match def {
            "" => &schema["properties"],
            _ => &schema["$defs"][def]["properties"],
        };
        props[field]["description"].as_str().unwrap().to_string()
    }

    /// The descriptions that state a default are written from `defaults`; this catches one
    /// that goes back to a literal.
    #[test]
    fn descriptions_state_the_defaults_the_compiler_applies() {
        let cases = [
            ("", "cache_size", defaults::CACHE_SIZE.default.to_string()),
            ("", "realm", format!("\"{}\"", defaults::REALM)),
            ("", "forward_token", defaults::FORWARD_TOKEN.to_string()),
            (
                "RawProvider",
                "clock_skew_seconds",
                defaults::CLOCK_SKEW_SECONDS.default.to_string(),
            ),
            (
                "RawProvider",
                "max_token_bytes",
                defaults::MAX_TOKEN_BYTES.default.to_string(),
            ),
            (
                "RawProvider",
                "require_expiration",
                defaults::REQUIRE_EXPIRATION.to_string(),
            ),
            (
                "RawRemoteJwks",
                "timeout_ms",
                defaults::FETCH_TIMEOUT_MS.default.to_string(),
            ),
            (
                "RawRemoteJwks",
                "refresh_seconds",
                defaults::REFRESH_SECONDS.default.to_string(),
            ),
            (
                "RawRemoteJwks",
                "min_refresh_seconds",
                defaults::MIN_REFRESH_SECONDS.default.to_string(),
            ),
            (
                "RawRemoteJwks",
                "max_refresh_seconds",
                defaults::MAX_REFRESH_SECONDS.default.to_string(),
            ),
            (
                "RawRemoteJwks",
                "max_stale_seconds",
                defaults::MAX_STALE_SECONDS.default.to_string(),
            ),
            (
                "RawRemoteJwks",
                "unknown_kid_refetch_seconds",
                defaults::UNKNOWN_KID_REFETCH_SECONDS.default.to_string(),
            ),
        ];
        for (def, field, value) in cases {
            let text = description(def, field);
            assert!(
                text.contains(&format!("(default {value}")),
                "{field}: {text}"
            );
        }
        assert!(description("RawRemoteJwks", "timeout_ms").contains("100 to 60000"));
        assert!(description("RawProvider", "clock_skew_seconds").contains("at most 3600"));
    }
}
