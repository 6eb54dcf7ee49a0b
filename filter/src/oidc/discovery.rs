//! The provider's endpoints from its discovery document (OpenID Connect Discovery 1.0),
//! when the policy does not give them: fetched by a callout the first time a VM needs them.

use super::{Endpoints, Login};
use crate::callout::{Callout, CalloutResult, Method};
use crate::jwks_fetch::Endpoint;
use crate::url::HttpsUrl;
use serde_json::Value;

/// Largest discovery document read; real ones are a few KiB.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// The callout that fetches the discovery document; `None` when the login has none.
pub fn request(login: &Login) -> Option<Callout> {
    let doc = login.discovery.as_ref()?;
    Some(Callout {
        cluster: login.cluster.clone(),
        method: Method::Get,
        authority: doc.authority.clone(),
        path: doc.path.clone(),
        headers: vec![("accept".into(), "application/json".into())],
        body: None,
        timeout_ms: login.timeout_ms,
        max_response_bytes: MAX_DOCUMENT_BYTES,
    })
}

/// The endpoints the document names, for this issuer (§4.3: its `issuer` must be the one
/// the document was fetched for).
pub fn endpoints(result: CalloutResult, issuer: &str) -> Result<Endpoints, String> {
    let response = result.map_err(|e| format!("the discovery document did not arrive: {e}"))?;
    if response.status != 200 || response.truncated {
        return Err(format!(
            "the discovery document answered HTTP {}{}",
            response.status,
            if response.truncated {
                " (too large)"
            } else {
                ""
            }
        ));
    }
    let doc: Value = serde_json::from_slice(&response.body)
        .map_err(|_| "the discovery document is not JSON".to_string())?;
    if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err("the discovery document names another issuer".into());
    }
    let url = |name: &str| -> Result<Option<HttpsUrl>, String> {
        doc.get(name)
            .and_then(Value::as_str)
            .map(|u| HttpsUrl::parse(u).map_err(|e| format!("its {name} is unusable: {e}")))
            .transpose()
    };
    let authorization = url("authorization_endpoint")?
        .ok_or("the discovery document has no authorization_endpoint")?;
    let token = url("token_endpoint")?.ok_or("the discovery document has no token_endpoint")?;
    Ok(Endpoints {
        authorization: authorization.as_str().to_string(),
        token: Endpoint::from(&token),
        end_session: url("end_session_endpoint")?.map(|u| u.as_str().to_string()),
    })
}
