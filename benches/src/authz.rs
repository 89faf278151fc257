//! Area `authz`: what authentication and authorization cost on the enterprise server.
//!
//! - `added_us`: the time one call spends authenticating and being authorized, with warm
//!   caches, for an API key and for a cached OIDC access token (the larger is the figure), each
//!   measured in this process through the server's own `EnterpriseAuthenticator` and
//!   authorizers on the scratch database, beside a refused call (an agent's key asking for
//!   `scenario_define`). Target: under 20 µs.
//! - `throughput_cost`: `scenario_next` calls/s over Streamable HTTP through the release
//!   `decision-gate-enterprise` binary on Postgres (eight clients), presenting an API key or an
//!   OIDC access token, against the same server and load presenting a configured bearer token
//!   (one SHA-256 and a scope check: the cheapest credential the server accepts, as close to
//!   "auth disabled" as a server that authenticates every caller gets). The larger of the two
//!   credentials' median relative loss over nine rounds whose order rotates. Target: at most
//!   5 %.
//!
//! The identity provider is a JWKS this process serves on loopback (an Ed25519 key), so the
//! server fetches real keys and verifies real signatures.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use decision_gate_core::access::{Action, Authorizer, RequestContext, Resource, ScopeAuthorizer};
use decision_gate_core::identity::{Authenticate, Credentials};
use decision_gate_core::{NamespaceId, TenantId};
use decision_gate_enterprise::api_keys::{ApiKeys, Pepper};
use decision_gate_enterprise::credentials::{EnterpriseAuthenticator, configured};
use decision_gate_enterprise::oidc::OidcVerifier;
use decision_gate_enterprise::{RoleAuthorizer, TenancyAuthorizer};
use decision_gate_store_enterprise::PoolConfig;
use serde_json::{Value, json};

use crate::mcp::{self, CONCURRENCY};

/// Rounds of the throughput comparison: each credential goes first in a third of them. The
/// VM's speed drifts by more than the effect, so the figure is a median over many.
const ROUNDS: usize = 9;
use crate::postgres::{self, Database, TOKEN};

const AUDIENCE: &str = "https://bench.test/mcp";
/// An Ed25519 private key's PKCS#8 v1 DER: this prefix, then the 32-byte seed (RFC 8410).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const SEED: [u8; 32] = [7; 32];
const KID: &str = "bench-key";

/// Serves `body` to every request on a loopback port, from a thread, for the life of the run.
fn serve_jwks(body: String) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind the JWKS server")?;
    let addr = listener.local_addr().context("address")?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    Ok(format!("http://{addr}"))
}

/// A signed access token of `issuer` for the bench's subject, valid for an hour.
fn access_token(issuer: &str) -> anyhow::Result<String> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&SEED);
    let key = jsonwebtoken::EncodingKey::from_ed_der(&der);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(KID.to_owned());
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "iss": issuer, "aud": AUDIENCE, "sub": "bench-jwt", "iat": now,
                         "exp": now + 3600, "groups": ["bench"] });
    jsonwebtoken::encode(&header, &claims, &key).context("sign the access token")
}

fn jwks() -> Value {
    let public = ed25519_dalek::SigningKey::from_bytes(&SEED)
        .verifying_key()
        .to_bytes();
    json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "kid": KID, "alg": "EdDSA", "use": "sig",
                       "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public) }] })
}

/// A key made by `keys create` on `db`'s configuration.
fn api_key(bin: &Path, db: &Database, role: &str) -> anyhow::Result<String> {
    let config = db.config.to_str().context("path")?;
    let out = postgres::enterprise(
        bin,
        &[
            "keys",
            "create",
            "--json",
            "--config",
            config,
            "--organisation",
            "1",
            "--tenant",
            "1",
            "--namespace",
            "1",
            "--role",
            role,
            "--name",
            role,
        ],
    )?;
    let doc: Value = serde_json::from_str(&out).context("keys create JSON")?;
    Ok(doc["key"].as_str().context("the key")?.to_owned())
}

/// The median time of one `f().await`, in nanoseconds, over batches of about 10 ms.
pub(crate) async fn per_call_ns<F, Fut>(mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..200 {
        f().await;
    }
    let mut batch: u32 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            f().await;
        }
        if start.elapsed() > Duration::from_millis(10) || batch > 1 << 22 {
            break;
        }
        batch *= 2;
    }
    let mut samples = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        for _ in 0..batch {
            f().await;
        }
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
    }
    crate::median(samples)
}

/// Authentication + authorization of one call presenting `token`, through the server's own
/// parts on `db`; nanoseconds per call, and whether the call was allowed.
fn in_process(
    db: &Database,
    tokens: &[(&'static str, String, Action)],
) -> anyhow::Result<Vec<(&'static str, f64, bool)>> {
    let config = decision_gate_enterprise::config::load(&db.config)
        .map_err(|p| anyhow::anyhow!("bench configuration: {p:?}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    runtime.block_on(async {
        let pool = PoolConfig::default()
            .lazy_pool(&postgres::app_url(&db.name))
            .context("pool")?;
        let pepper = Pepper::load(&config.pepper_file())
            .map_err(anyhow::Error::msg)?
            .context("the pepper file keys create made")?;
        let oidc = OidcVerifier::new(&config.identity.issuers, Some(pool.clone()), 300)
            .map_err(anyhow::Error::msg)?;
        let authenticate = EnterpriseAuthenticator::new(
            ApiKeys::new(pool.clone(), Some(pepper)),
            Arc::new(oidc),
            configured(&config.server.config.server.auth),
            "Bearer".to_owned(),
        );
        let roles = RoleAuthorizer::new(Arc::new(ScopeAuthorizer), pool.clone());
        let authorizer = TenancyAuthorizer::new(Arc::new(roles), pool.clone());
        let resource = Resource::new("run", "r-1");
        let mut out = Vec::new();
        for (label, token, action) in tokens {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().context("header")?,
            );
            let credentials = Credentials {
                transport: "http",
                peer: None,
                headers: &headers,
                certificate: None,
            };
            let once = || async {
                let principal = authenticate.authenticate(&credentials).await;
                let Ok(principal) = principal else {
                    return false;
                };
                let ctx = RequestContext {
                    principal,
                    tenant_id: TenantId::DEFAULT,
                    namespace_id: NamespaceId::DEFAULT,
                    request_id: None,
                    correlation_id: None,
                    idempotency_key: None,
                    transport: "http",
                };
                authorizer.authorize(&ctx, *action, &resource).await.is_ok()
            };
            let allowed = once().await;
            let ns = per_call_ns(|| async {
                std::hint::black_box(once().await);
            })
            .await;
            out.push((*label, ns, allowed));
        }
        pool.close().await;
        anyhow::Ok(out)
    })
}

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> anyhow::Result<Vec<crate::Line>> {
    let bin = PathBuf::from(std::env::var("DG_ENTERPRISE_BIN").context(
        "DG_ENTERPRISE_BIN: the release decision-gate-enterprise binary (scripts/bench.sh sets it)",
    )?);
    let dir = tempfile::tempdir().context("temp dir")?;
    postgres::ensure_app_role()?;
    let issuer = serve_jwks(jwks().to_string())?;
    let identity = format!(
        "\n[identity]\nresource = \"{AUDIENCE}\"\n\n[[identity.issuers]]\nissuer = \"{issuer}\"\n\
         organisation_id = 1\nalgorithms = [\"EdDSA\"]\njwks_uri = \"{issuer}/jwks\"\n\n\
         [[identity.issuers.rules]]\nclaim = \"groups\"\nequals = \"bench\"\n\
         grant = [\"operator@namespace:1/1\"]\n"
    );
    let db = Database::create(
        &bin,
        dir.path(),
        &format!("dg_bench_authz_{}", std::process::id()),
        &identity,
    )?;
    let key = api_key(&bin, &db, "operator")?;
    let agent = api_key(&bin, &db, "agent")?;
    let jwt = access_token(&issuer)?;

    let measured = in_process(
        &db,
        &[
            (
                "configured bearer token",
                TOKEN.to_owned(),
                Action::ScenarioNext,
            ),
            ("API key", key.clone(), Action::ScenarioNext),
            ("cached OIDC token", jwt.clone(), Action::ScenarioNext),
            (
                "refused (agent key, scenario_define)",
                agent,
                Action::ScenarioDefine,
            ),
        ],
    )?;
    for (label, ns, allowed) in &measured {
        eprintln!(
            "authentication + authorization, {label}: {:.2} µs per call ({})",
            ns / 1000.0,
            if *allowed { "allowed" } else { "refused" }
        );
    }
    anyhow::ensure!(
        measured.iter().take(3).all(|(_, _, allowed)| *allowed) && !measured[3].2,
        "the credentials were not decided as configured: {measured:?}"
    );
    let added_us = measured[1].1.max(measured[2].1) / 1000.0;

    let server = postgres::serve(&bin, &db)?;
    let url = format!("http://{}/mcp", server.addr);
    let credentials = [TOKEN, key.as_str(), jwt.as_str()];
    let (mut key_losses, mut jwt_losses) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut per_sec = [0.0; 3];
        // Rotate the order, so warming up or slowing down favours none of the three.
        for i in 0..3 {
            let which = (i + round) % 3;
            per_sec[which] = mcp::load_as(
                &url,
                "scenario_next",
                CONCURRENCY,
                None,
                Some(credentials[which]),
            )?
            .calls_per_sec;
        }
        eprintln!(
            "round {}: scenario_next on Postgres: {:.0}/s with a configured bearer token, {:.0}/s with an API key, {:.0}/s with an OIDC token",
            round + 1,
            per_sec[0],
            per_sec[1],
            per_sec[2]
        );
        let loss = |x: f64| (per_sec[0] - x) / per_sec[0] * 100.0;
        key_losses.push(loss(per_sec[1]));
        jwt_losses.push(loss(per_sec[2]));
    }
    let (key_loss, jwt_loss) = (crate::median(key_losses), crate::median(jwt_losses));
    eprintln!(
        "throughput lost against a configured bearer token, median of {ROUNDS} rounds: {key_loss:.1} % with an API key, {jwt_loss:.1} % with an OIDC token"
    );
    Ok(vec![
        ("added_us", added_us, "µs", "<=", 20.0),
        ("throughput_cost", key_loss.max(jwt_loss), "%", "<=", 5.0),
    ])
}
