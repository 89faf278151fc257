//! OAuth protected-resource metadata (RFC 9728): how a standard MCP client that was refused
//! finds the identity providers to get a token from. The 401 of `/mcp` carries
//! `WWW-Authenticate: Bearer resource_metadata="…"`, pointing at the metadata document, which
//! names this server's resource identifier and the trusted issuers.

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

/// Where the metadata is published, relative to the host.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata of one resource identifier.
#[derive(Clone, Debug)]
pub struct ProtectedResource {
    resource: String,
    /// The resource identifier's path (`/mcp`), empty for a bare host.
    path: String,
    metadata_url: String,
}

impl ProtectedResource {
    /// The metadata of `resource` (an https URL, checked by the configuration). As RFC 9728
    /// §3.1 places it: the well-known path between the host and the resource's path.
    #[must_use]
    pub fn new(resource: &str) -> Self {
        let (origin, path) = match reqwest::Url::parse(resource) {
            Ok(url) => {
                let path = url.path().trim_end_matches('/').to_owned();
                (url.origin().ascii_serialization(), path)
            }
            Err(_) => (resource.trim_end_matches('/').to_owned(), String::new()),
        };
        Self {
            resource: resource.to_owned(),
            metadata_url: format!("{origin}{WELL_KNOWN}{path}"),
            path,
        }
    }

    /// The `WWW-Authenticate` challenge of a refused call.
    #[must_use]
    pub fn challenge(&self) -> String {
        format!(
            r#"Bearer realm="decision-gate", resource_metadata="{}""#,
            self.metadata_url
        )
    }

    /// The metadata document.
    fn document<'a>(&self, issuers: impl Iterator<Item = &'a str>) -> Value {
        json!({
            "resource": self.resource,
            "authorization_servers": issuers.collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": "Decision Gate",
        })
    }

    /// The routes serving the document: at the path RFC 9728 derives from the resource, and
    /// at the bare well-known path for clients that look there first.
    pub fn routes<'a>(&self, issuers: impl Iterator<Item = &'a str>) -> Router {
        let body = self.document(issuers).to_string();
        let serve = move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        };
        let mut router = Router::new().route(WELL_KNOWN, get(serve.clone()));
        if !self.path.is_empty() {
            router = router.route(&format!("{WELL_KNOWN}{}", self.path), get(serve));
        }
        router
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_sits_between_the_host_and_the_resource_path() {
        let r = ProtectedResource::new("https://dg.example.com:8443/mcp");
        assert_eq!(
            r.challenge(),
            r#"Bearer realm="decision-gate", resource_metadata="https://dg.example.com:8443/.well-known/oauth-protected-resource/mcp""#
        );
        let doc = r.document(["https://id.example.com"].into_iter());
        assert_eq!(doc["resource"], "https://dg.example.com:8443/mcp");
        assert_eq!(doc["authorization_servers"][0], "https://id.example.com");
        let bare = ProtectedResource::new("https://dg.example.com");
        assert!(
            bare.challenge().ends_with(r#"oauth-protected-resource""#),
            "{}",
            bare.challenge()
        );
    }
}
