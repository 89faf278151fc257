//! A real OpenID provider on loopback: `oidc/provider.mjs` (panva/oidc-provider, pinned in
//! `oidc/package.json`, installed by `scripts/test.sh`), started per test and killed on drop.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// The audience the provider issues tokens for: the server under test.
pub(crate) const AUDIENCE: &str = "https://dg.test/mcp";
/// The client the provider knows.
pub(crate) const CLIENT: (&str, &str) = ("svc", "svc-secret-0123456789");

/// One signing key of the provider.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    pub(crate) private_pem: String,
    pub(crate) public_pem: String,
}

/// A running provider.
pub(crate) struct OidcProvider {
    child: Child,
    pub(crate) issuer: String,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts a provider whose subjects carry `groups` (subject → group names).
    pub(crate) fn start(groups: &Value) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc");
        assert!(
            root.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci --prefix enterprise-system-tests/oidc` (scripts/test.sh does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("provider.json");
        let doc = json!({
            "audience": AUDIENCE,
            "groups": groups,
            "clients": [{ "client_id": CLIENT.0, "client_secret": CLIENT.1 }],
        });
        std::fs::write(&config, doc.to_string()).expect("provider config");
        let mut child = Command::new("node")
            .arg(root.join("provider.mjs"))
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node (install Node.js 20 or later)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let issuer = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the OIDC provider did not start within 30 s");
            if let Some(issuer) = line.strip_prefix("oidc-provider listening on ") {
                break issuer.to_owned();
            }
        };
        Self {
            child,
            issuer,
            _dir: dir,
        }
    }

    fn http() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    /// A client-credentials access token for the service client.
    pub(crate) fn service_token(&self) -> String {
        let answer: Value = Self::http()
            .post(format!("{}/token", self.issuer))
            .basic_auth(CLIENT.0, Some(CLIENT.1))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", AUDIENCE),
                ("scope", "mcp"),
            ])
            .send()
            .expect("token request")
            .json()
            .expect("token response");
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {answer}"))
            .to_owned()
    }

    /// An access token for `user`, by authorization code + PKCE with a scripted login (with a
    /// second factor when `mfa`).
    pub(crate) fn user_token(&self, user: &str, mfa: bool) -> String {
        let answer: Value = Self::http()
            .get(format!(
                "{}/test/login?user={user}&mfa={}",
                self.issuer,
                u8::from(mfa)
            ))
            .send()
            .expect("login")
            .json()
            .expect("token response");
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {answer}"))
            .to_owned()
    }

    /// Puts a new signing key first; the old ones stay published.
    pub(crate) fn rotate(&self) {
        let status = Self::http()
            .post(format!("{}/test/rotate", self.issuer))
            .send()
            .expect("rotate")
            .status();
        assert!(status.is_success(), "rotate: {status}");
    }

    /// Logins from now on claim they happened `seconds` ago.
    pub(crate) fn age_logins(&self, seconds: u64) {
        let status = Self::http()
            .get(format!("{}/test/age?seconds={seconds}", self.issuer))
            .send()
            .expect("age")
            .status();
        assert!(status.is_success(), "age: {status}");
    }

    /// The signing keys, the one in use first.
    pub(crate) fn keys(&self) -> Vec<SigningKey> {
        let keys: Value = Self::http()
            .get(format!("{}/test/keys", self.issuer))
            .send()
            .expect("keys")
            .json()
            .expect("keys JSON");
        keys.as_array()
            .expect("a list")
            .iter()
            .map(|k| SigningKey {
                kid: k["kid"].as_str().expect("kid").to_owned(),
                private_pem: k["pem"].as_str().expect("pem").to_owned(),
                public_pem: k["public"].as_str().expect("public").to_owned(),
            })
            .collect()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
