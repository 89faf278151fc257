//! OpenID Connect on the running enterprise server, against a real provider on loopback:
//! tokens from client credentials and from authorization code + PKCE are accepted and bound
//! by the configured claim rules; a key rotation at the provider rejects nothing; forged and
//! broken tokens are all refused and audited; refused MCP calls point standard clients at the
//! protected-resource metadata (RFC 9728).

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::oidc_provider::{AUDIENCE, OidcProvider};
use crate::support::{
    ConfigDir, Enterprise, PgServer, ScratchDb, config, cycle, error_kind, migrate_and_provision,
    ok, start_args,
};

fn groups() -> Value {
    json!({ "svc": ["dg-agents"], "alice": ["dg-admins"], "bob": [] })
}

/// The enterprise configuration trusting `issuer` for organisation 1.
fn identity(issuer: &str) -> String {
    format!(
        r#"
[identity]
resource = "{AUDIENCE}"

[[identity.issuers]]
issuer = "{issuer}"
organisation_id = 1
mfa_acr = ["urn:decision-gate:mfa"]

[[identity.issuers.rules]]
claim = "groups"
equals = "dg-agents"
grant = ["agent@namespace:1/1"]

[[identity.issuers.rules]]
claim = "groups"
equals = "dg-admins"
grant = ["tenant_admin@tenant:1"]

[server.limits.auth_failures]
per_minute = 6000
burst = 1000
"#
    )
}

fn start(provider: &OidcProvider) -> (ScratchDb, ConfigDir, Enterprise) {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dir = ConfigDir::new(&config(&db, "", &identity(&provider.issuer)));
    migrate_and_provision(&dir);
    let server = Enterprise::start(&dir);
    (db, dir, server)
}

/// The HTTP status and `WWW-Authenticate` of one `scenarios_list` call as the bearer of
/// `token` (no header when `None`).
fn attempt(server: &Enterprise, token: Option<&str>) -> (u16, Option<String>) {
    let mut request = reqwest::blocking::Client::new()
        .post(server.url("/mcp"))
        .timeout(Duration::from_secs(30))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "scenarios_list",
                              "arguments": {"tenant_id": 1, "namespace_id": 1}}})
            .to_string(),
        );
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let answer = request.send().expect("request");
    let challenge = answer
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (answer.status().as_u16(), challenge)
}

#[test]
fn provider_tokens_are_accepted_bound_by_claim_rules_and_survive_a_key_rotation() {
    let provider = OidcProvider::start(&groups());
    let (_db, _dir, server) = start(&provider);

    // A service (client credentials) in group dg-agents: an agent in namespace 1/1.
    let svc = provider.service_token();
    let s = Some(svc.as_str());
    let denied = server.call(s, "scenario_define", json!({ "spec": cycle() }));
    assert_eq!(
        error_kind(&denied).as_deref(),
        Some("permission_denied"),
        "{denied}"
    );
    let listed = server.call(
        s,
        "scenarios_list",
        json!({ "tenant_id": 2, "namespace_id": 1 }),
    );
    assert_eq!(
        error_kind(&listed).as_deref(),
        Some("not_found"),
        "{listed}"
    );

    // A user (authorization code + PKCE) in group dg-admins: tenant 1's administrator.
    let alice = provider.user_token("alice", false);
    let a = Some(alice.as_str());
    ok(&server.call(a, "scenario_define", json!({ "spec": cycle() })));
    ok(&server.call(s, "scenario_start", start_args(1, "run-svc")));
    // A user with no group holds no binding: every tenant is out of reach.
    let bob = provider.user_token("bob", false);
    let nothing = server.call(
        Some(&bob),
        "scenarios_list",
        json!({ "tenant_id": 1, "namespace_id": 1 }),
    );
    assert_eq!(
        error_kind(&nothing).as_deref(),
        Some("not_found"),
        "{nothing}"
    );

    // Key rotation at the provider: old tokens and new ones, interleaved, all accepted.
    let before = provider.keys();
    provider.rotate();
    let after = provider.keys();
    assert_ne!(before[0].kid, after[0].kid, "a new signing key");
    for round in 0..5 {
        let fresh = provider.service_token();
        let header = jsonwebtoken::decode_header(&fresh).expect("header");
        assert_eq!(
            header.kid.as_deref(),
            Some(after[0].kid.as_str()),
            "signed with the new key"
        );
        for token in [&fresh, &svc] {
            let (status, _) = attempt(&server, Some(token));
            assert_eq!(
                status, 200,
                "round {round}: a valid token was refused after rotation"
            );
        }
    }
}

#[derive(serde::Serialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    groups: Vec<String>,
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[test]
fn forged_and_broken_tokens_are_refused_and_every_refusal_is_audited() {
    let provider = OidcProvider::start(&groups());
    let stranger = OidcProvider::start(&groups());
    let (db, _dir, server) = start(&provider);
    let key = &provider.keys()[0];
    let signing = EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).expect("private key");
    let claims = || Claims {
        iss: provider.issuer.clone(),
        aud: AUDIENCE.to_owned(),
        sub: "mallory".to_owned(),
        exp: now() + 300,
        nbf: now() - 10,
        iat: now(),
        groups: vec!["dg-admins".to_owned()],
    };
    let sign = |claims: &Claims, kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &signing).expect("sign")
    };

    // The control: a token signed with the provider's key, with every claim right, is accepted
    // — so each refusal below is for the one thing changed.
    let good = sign(&claims(), &key.kid);
    assert_eq!(attempt(&server, Some(&good)).0, 200);

    // (what was forged, the token, what the refusal says)
    let mut forged: Vec<(&str, String, &str)> = Vec::new();
    let payload = serde_json::to_value(claims()).expect("claims");
    forged.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": key.kid})),
            b64(&payload)
        ),
        "header is not valid",
    ));
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(key.kid.clone());
    forged.push((
        "HS256 signed with the public key",
        jsonwebtoken::encode(
            &hs,
            &claims(),
            &EncodingKey::from_secret(key.public_pem.as_bytes()),
        )
        .expect("hs256"),
        "which its issuer is not allowed",
    ));
    forged.push((
        "wrong iss",
        sign(
            &Claims {
                iss: "http://127.0.0.1:1".into(),
                ..claims()
            },
            &key.kid,
        ),
        "issuer is not trusted",
    ));
    forged.push((
        "wrong aud",
        sign(
            &Claims {
                aud: "https://other.test/mcp".into(),
                ..claims()
            },
            &key.kid,
        ),
        "InvalidAudience",
    ));
    forged.push((
        "expired",
        sign(
            &Claims {
                exp: now() - 120,
                ..claims()
            },
            &key.kid,
        ),
        "ExpiredSignature",
    ));
    forged.push((
        "not yet valid",
        sign(
            &Claims {
                nbf: now() + 120,
                ..claims()
            },
            &key.kid,
        ),
        "ImmatureSignature",
    ));
    forged.push((
        "unknown kid",
        sign(&claims(), "no-such-key"),
        "key id is not among",
    ));
    let parts: Vec<&str> = good.split('.').collect();
    let mut tampered = payload.clone();
    tampered["sub"] = json!("root");
    forged.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]),
        "InvalidSignature",
    ));
    forged.push((
        "a provider not configured",
        stranger.service_token(),
        "issuer is not trusted",
    ));

    let count = || -> usize {
        db.strings(
            "SELECT count(*)::text FROM deployment_audit_events WHERE event_json LIKE '%unauthenticated%'",
        )[0]
        .parse()
        .expect("count")
    };
    let before = count();
    for (what, token, reason) in &forged {
        let (status, _) = attempt(&server, Some(token));
        assert_eq!(status, 401, "{what} was not refused");
        let last = db.strings(
            "SELECT event_json FROM deployment_audit_events ORDER BY event_id DESC LIMIT 1",
        );
        let event: Value = serde_json::from_str(&last[0]).expect("event");
        let detail = event["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(reason),
            "{what}: refused for another reason: {detail}"
        );
    }
    assert_eq!(count() - before, forged.len(), "every refusal is audited");
    let trail = db
        .strings("SELECT event_json FROM deployment_audit_events")
        .join("\n");
    assert!(
        !trail.contains(&good[..40]),
        "the trail holds digests, never tokens"
    );
}

#[test]
fn a_refused_mcp_call_points_clients_at_the_protected_resource_metadata() {
    let provider = OidcProvider::start(&groups());
    let (_db, _dir, server) = start(&provider);
    let (status, challenge) = attempt(&server, None);
    assert_eq!(status, 401);
    let challenge = challenge.expect("WWW-Authenticate");
    let metadata_url = "https://dg.test/.well-known/oauth-protected-resource/mcp";
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata_url}""#)),
        "{challenge}"
    );
    // The server publishes the document at the path the resource identifier gives it.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let doc: Value = reqwest::blocking::get(server.url(path))
            .expect("metadata")
            .json()
            .expect("JSON");
        assert_eq!(doc["resource"], AUDIENCE, "{doc}");
        assert_eq!(
            doc["authorization_servers"],
            json!([provider.issuer]),
            "{doc}"
        );
    }
    // The issuer it names answers OpenID discovery, so a client can get a token there.
    let discovery: Value = reqwest::blocking::get(format!(
        "{}/.well-known/openid-configuration",
        provider.issuer
    ))
    .expect("discovery")
    .json()
    .expect("JSON");
    assert_eq!(discovery["issuer"], json!(provider.issuer));
}
