//! Built-in providers: answers from the trigger time and a controlled environment, structured
//! error codes, and capability contracts enforced at define time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use decision_gate_core::evidence::{EvidenceContext, EvidenceQuery, EvidenceValue};
use decision_gate_core::providers::{EnvConfig, EnvProvider, TimeConfig, TimeProvider};
use decision_gate_core::{
    DecisionGate, DecisionOutcome, EvidenceProvider, EvidenceResult, Timestamp,
};
use serde_json::{Value, json};

use crate::support::*;

fn context(time: Timestamp) -> EvidenceContext {
    EvidenceContext {
        tenant_id: ctx().tenant_id,
        namespace_id: ctx().namespace_id,
        run_id: id("r"),
        scenario_id: id("s"),
        stage_id: id("one"),
        trigger_id: id("t"),
        trigger_time: time,
        correlation_id: None,
    }
}

async fn ask(
    provider: &dyn EvidenceProvider,
    check: &str,
    params: Value,
    time: Timestamp,
) -> EvidenceResult {
    let query = EvidenceQuery {
        provider_id: provider.contract().provider_id.clone(),
        check_id: id(check),
        params: Some(params),
    };
    provider
        .query(&query, &context(time))
        .await
        .expect("built-ins answer with results, not failures")
}

fn value(result: &EvidenceResult) -> Option<Value> {
    match &result.value {
        Some(EvidenceValue::Json(v)) => Some(v.clone()),
        _ => None,
    }
}

fn code(result: &EvidenceResult) -> Option<&str> {
    result.error.as_ref().map(|e| e.code.as_str())
}

#[tokio::test]
async fn time_answers_from_the_trigger_time_only() {
    let time = TimeProvider::new(TimeConfig::default());
    let at = Timestamp::UnixMillis(1_700_000_000_000);
    let now = ask(&time, "now", json!({}), at).await;
    assert_eq!(value(&now), Some(json!(1_700_000_000_000_i64)));
    let anchor = now.evidence_anchor.unwrap();
    assert_eq!(
        (anchor.anchor_type.as_str(), anchor.anchor_value.as_str()),
        (
            "trigger_time_unix_millis",
            r#"{"trigger_time":1700000000000}"#
        )
    );
    assert_eq!(
        value(
            &ask(
                &time,
                "after",
                json!({"timestamp": 1_699_999_999_999_i64}),
                at
            )
            .await
        ),
        Some(json!(true))
    );
    assert_eq!(
        value(
            &ask(
                &time,
                "after",
                json!({"timestamp": 1_700_000_000_000_i64}),
                at
            )
            .await
        ),
        Some(json!(false)),
        "strictly after"
    );
    assert_eq!(
        value(
            &ask(
                &time,
                "before",
                json!({"timestamp": "2023-11-14T22:13:20.001Z"}),
                at
            )
            .await
        ),
        Some(json!(true))
    );
    assert_eq!(
        value(
            &ask(
                &time,
                "before",
                json!({"timestamp": "2023-11-14T22:13:20Z"}),
                at
            )
            .await
        ),
        Some(json!(false))
    );

    let tick = Timestamp::Logical(u64::MAX);
    assert_eq!(
        value(&ask(&time, "now", json!({}), tick).await),
        Some(json!(u64::MAX)),
        "exact, even above i64::MAX"
    );
    assert_eq!(
        code(
            &ask(
                &time,
                "after",
                json!({"timestamp": "2024-01-01T00:00:00Z"}),
                Timestamp::Logical(5)
            )
            .await
        ),
        Some("timestamp_kind_mismatch")
    );
    assert_eq!(
        code(&ask(&time, "after", json!({"timestamp": "yesterday"}), at).await),
        Some("params_invalid")
    );
    assert_eq!(
        code(&ask(&time, "after", json!({}), at).await),
        Some("params_missing")
    );
    let strict = TimeProvider::new(TimeConfig {
        allow_logical: false,
    });
    assert_eq!(
        code(&ask(&strict, "now", json!({}), Timestamp::Logical(1)).await),
        Some("logical_time_disallowed")
    );
}

fn env(config: EnvConfig) -> EnvProvider {
    EnvProvider::new(config)
}

#[tokio::test]
async fn env_reads_only_allowed_keys_and_overrides_are_deterministic() {
    let overrides: BTreeMap<String, String> = [
        ("REGION".to_owned(), "eu-west".to_owned()),
        ("BIG".to_owned(), "x".repeat(20)),
    ]
    .into();
    let provider = env(EnvConfig {
        overrides: Some(overrides),
        allowlist: None,
        denylist: ["SECRET".to_owned()].into(),
        max_value_bytes: 10,
        ..EnvConfig::default()
    });
    let at = Timestamp::Logical(1);
    let region = ask(&provider, "get", json!({"key": "REGION"}), at).await;
    assert_eq!(value(&region), Some(json!("eu-west")));
    assert_eq!(
        region.evidence_anchor.unwrap().anchor_value,
        r#"{"key":"REGION"}"#
    );
    let unset = ask(&provider, "get", json!({"key": "PATH"}), at).await;
    assert!(
        unset.value.is_none() && unset.error.is_none(),
        "with overrides the process environment is never read"
    );
    assert_eq!(
        code(&ask(&provider, "get", json!({"key": "SECRET"}), at).await),
        Some("key_denied")
    );
    assert_eq!(
        code(&ask(&provider, "get", json!({"key": "BIG"}), at).await),
        Some("value_too_large")
    );
    assert_eq!(
        code(&ask(&provider, "get", json!({"key": "A=B"}), at).await),
        Some("params_invalid")
    );

    let default = env(EnvConfig::default());
    assert_eq!(
        code(&ask(&default, "get", json!({"key": "PATH"}), at).await),
        Some("key_denied"),
        "nothing is readable by default"
    );
    let allow = env(EnvConfig {
        allowlist: Some(BTreeSet::from(["HOME".to_owned()])),
        ..EnvConfig::default()
    });
    assert_eq!(
        code(&ask(&allow, "get", json!({"key": "PATH"}), at).await),
        Some("key_denied")
    );
}

fn time_spec(check: &str, params: Value, comparator: &str, expected: Value) -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "one", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}], "advance_to": {"kind": "terminal"}}],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "time", "check_id": check, "params": params},
                        "comparator": comparator, "expected": expected}]
    })
}

fn gate_with_builtins() -> DecisionGate {
    let overrides = Some([("MODE".to_owned(), "release".to_owned())].into());
    DecisionGate::builder()
        .provider(Arc::new(TimeProvider::new(TimeConfig::default())))
        .unwrap()
        .provider(Arc::new(EnvProvider::new(EnvConfig {
            overrides,
            allowlist: Some(["MODE".to_owned()].into()),
            ..EnvConfig::default()
        })))
        .unwrap()
        .build()
}

#[tokio::test]
async fn a_deadline_gate_passes_once_the_trigger_time_is_after_it() {
    let gate = gate_with_builtins();
    define(
        &gate,
        &time_spec("after", json!({"timestamp": 100}), "equals", json!(true)),
    )
    .await;
    start(&gate, "s", "r").await;
    assert!(matches!(
        next(&gate, "s", "r", "early", 100)
            .await
            .unwrap()
            .decision
            .outcome,
        DecisionOutcome::Hold { .. }
    ));
    assert!(matches!(
        next(&gate, "s", "r", "late", 101)
            .await
            .unwrap()
            .decision
            .outcome,
        DecisionOutcome::Complete { .. }
    ));
}

#[tokio::test]
async fn contracts_refuse_bad_params_and_comparators_at_define_time() {
    let gate = gate_with_builtins();
    let refused = |spec: Value| {
        let gate = &gate;
        async move {
            gate.define_scenario_json(&ctx(), &spec.to_string())
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let err = refused(time_spec("after", json!({}), "equals", json!(true))).await;
    assert!(
        err.contains("conditions[0].query.params") && err.contains("timestamp"),
        "{err}"
    );
    let err = refused(time_spec(
        "after",
        json!({"timestamp": 1, "zone": "utc"}),
        "equals",
        json!(true),
    ))
    .await;
    assert!(err.contains("conditions[0].query.params"), "{err}");
    let err = refused(time_spec("now", json!({}), "lex_greater_than", json!("1"))).await;
    assert!(
        err.contains("conditions[0].comparator") && err.contains("lex_greater_than"),
        "{err}"
    );
    let err = refused(time_spec("tomorrow", json!({}), "equals", json!(1))).await;
    assert!(err.contains("conditions[0].query.check_id"), "{err}");
    let mut env_spec = time_spec("get", json!({"key": ""}), "equals", json!("release"));
    env_spec["conditions"][0]["query"]["provider_id"] = json!("env");
    let err = refused(env_spec.clone()).await;
    assert!(
        err.contains("conditions[0].query.params"),
        "an empty key breaks the schema: {err}"
    );
    env_spec["conditions"][0]["query"]["params"] = json!({"key": "MODE"});
    gate.define_scenario_json(&ctx(), &env_spec.to_string())
        .await
        .expect("a spec within both contracts");
    start(&gate, "s", "r").await;
    assert!(matches!(
        next(&gate, "s", "r", "t", 1)
            .await
            .unwrap()
            .decision
            .outcome,
        DecisionOutcome::Complete { .. }
    ));
}

mod json_files {
    use decision_gate_core::providers::{JsonConfig, JsonProvider};
    use serde_json::json;

    use super::*;

    fn provider(root: &std::path::Path, allow_yaml: bool, max_bytes: u64) -> JsonProvider {
        JsonProvider::new(JsonConfig {
            root: root.to_path_buf(),
            root_id: "repo".into(),
            max_bytes,
            allow_yaml,
        })
        .unwrap()
    }

    fn params(file: &str, jsonpath: Option<&str>) -> Value {
        match jsonpath {
            Some(p) => json!({"file": file, "jsonpath": p}),
            None => json!({"file": file}),
        }
    }

    #[tokio::test]
    async fn selects_values_from_json_and_yaml_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("ci")).unwrap();
        std::fs::write(
            root.join("ci/report.json"),
            r#"{"build": {"status": "passed"}, "items": [{"id": 1}, {"id": 2}]}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("ci/review.yaml"),
            "approvals: 2\nreviewers: [ana, bo]\n",
        )
        .unwrap();
        let p = provider(&root, true, 1024);
        let at = Timestamp::Logical(1);
        let status = ask(
            &p,
            "path",
            params("ci/report.json", Some("$.build.status")),
            at,
        )
        .await;
        assert_eq!(value(&status), Some(json!("passed")));
        let anchor = status.evidence_anchor.as_ref().unwrap();
        assert_eq!(
            (anchor.anchor_type.as_str(), anchor.anchor_value.as_str()),
            (
                "file_path_rooted",
                r#"{"path":"ci/report.json","root_id":"repo"}"#
            )
        );
        assert_eq!(
            status.evidence_ref.unwrap().uri,
            "dg+file://repo/ci/report.json"
        );
        assert_eq!(
            value(
                &ask(
                    &p,
                    "path",
                    params("ci/report.json", Some("$.items[*].id")),
                    at
                )
                .await
            ),
            Some(json!([1, 2])),
            "several matches form an array"
        );
        let absent = ask(&p, "path", params("ci/report.json", Some("$.nope")), at).await;
        assert!(
            absent.value.is_none() && absent.error.is_none(),
            "no match is no value"
        );
        assert_eq!(
            value(
                &ask(
                    &p,
                    "path",
                    params("ci/review.yaml", Some("$.approvals")),
                    at
                )
                .await
            ),
            Some(json!(2))
        );
        assert_eq!(
            value(&ask(&p, "path", params("ci/review.yaml", None), at).await),
            Some(json!({"approvals": 2, "reviewers": ["ana", "bo"]}))
        );
    }

    #[tokio::test]
    async fn every_failure_has_a_stable_code() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("bad.json"), "{not json").unwrap();
        std::fs::write(root.join("bad.yml"), "a: [unclosed").unwrap();
        std::fs::write(root.join("ok.yml"), "a: 1").unwrap();
        std::fs::write(root.join("big.json"), format!("\"{}\"", "x".repeat(64))).unwrap();
        std::fs::write(dir.path().join("outside.json"), "{}").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.json"), root.join("link.json"))
            .unwrap();
        let p = provider(&root, true, 32);
        let at = Timestamp::Logical(1);
        let cases = [
            (params("../outside.json", None), "path_invalid"),
            (params("/etc/hostname", None), "absolute_path_forbidden"),
            (params("link.json", None), "path_outside_root"),
            (params("missing.json", None), "file_not_found"),
            (params("big.json", None), "size_limit_exceeded"),
            (params("bad.json", None), "invalid_json"),
            (params("bad.yml", None), "invalid_yaml"),
            (params("ok.yml", Some("$[")), "invalid_jsonpath"),
            (json!({"jsonpath": "$"}), "params_missing"),
        ];
        for (params, expected) in cases {
            assert_eq!(
                code(&ask(&p, "path", params.clone(), at).await),
                Some(expected),
                "{params}"
            );
        }
        let no_yaml = provider(&root, false, 1024);
        assert_eq!(
            code(&ask(&no_yaml, "path", params("ok.yml", None), at).await),
            Some("yaml_disabled")
        );
    }

    #[test]
    fn configuration_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config = |root_id: &str, root: std::path::PathBuf| JsonConfig {
            root,
            root_id: root_id.into(),
            max_bytes: 1,
            allow_yaml: true,
        };
        assert_eq!(
            JsonProvider::new(config("Bad Id", dir.path().into()))
                .unwrap_err()
                .field,
            "root_id"
        );
        assert_eq!(
            JsonProvider::new(config("ok", dir.path().join("missing")))
                .unwrap_err()
                .field,
            "root"
        );
        assert!(JsonProvider::new(config("ok", dir.path().into())).is_ok());
    }
}

mod http_urls {
    use std::net::SocketAddr;
    use std::time::Duration;

    use decision_gate_core::providers::{HttpConfig, HttpProvider, is_public_address};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A loopback HTTP/1.1 server: `/ok` answers "hello", `/redirect` a 302, `/big` 2000 bytes,
    /// `/slow` nothing for two seconds. It serves until the test ends.
    async fn server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (head, body) = match path.as_str() {
                        "/ok" => ("200 OK", "hello".to_owned()),
                        "/redirect" => ("302 Found\r\nLocation: /ok", String::new()),
                        "/big" => ("200 OK", "x".repeat(2000)),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            ("200 OK", String::new())
                        }
                        _ => ("404 Not Found", String::new()),
                    };
                    let response = format!(
                        "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn local(config: HttpConfig) -> HttpProvider {
        HttpProvider::new(HttpConfig {
            allow_http: true,
            allow_private_addresses: true,
            ..config
        })
        .unwrap()
    }

    #[tokio::test]
    async fn answers_status_and_body_digest_and_refuses_redirects_size_and_slowness() {
        let addr = server().await;
        let at = Timestamp::Logical(1);
        let url = |path: &str| json!({"url": format!("http://{addr}{path}")});
        let p = local(HttpConfig {
            timeout_ms: 500,
            max_response_bytes: 1000,
            ..HttpConfig::default()
        });
        let ok = ask(&p, "status", url("/ok"), at).await;
        assert_eq!(value(&ok), Some(json!(200)));
        assert_eq!(ok.evidence_ref.unwrap().uri, format!("http://{addr}/ok"));
        assert_eq!(
            value(&ask(&p, "status", url("/missing"), at).await),
            Some(json!(404))
        );
        let digest = value(&ask(&p, "body_hash", url("/ok"), at).await).unwrap();
        assert_eq!(
            digest,
            serde_json::to_value(decision_gate_core::HashAlgorithm::Sha256.digest(b"hello"))
                .unwrap()
        );
        assert_eq!(
            code(&ask(&p, "status", url("/redirect"), at).await),
            Some("redirect_refused")
        );
        assert_eq!(
            code(&ask(&p, "body_hash", url("/big"), at).await),
            Some("response_too_large")
        );
        assert_eq!(
            code(&ask(&p, "status", url("/slow"), at).await),
            Some("timeout")
        );
    }

    #[tokio::test]
    async fn refuses_plain_http_private_addresses_and_other_hosts_without_connecting() {
        let addr = server().await;
        let at = Timestamp::Logical(1);
        let strict = HttpProvider::new(HttpConfig::default()).unwrap();
        let refused = |url: String| {
            let strict = &strict;
            async move { ask(strict, "status", json!({ "url": url }), at).await }
        };
        assert_eq!(
            code(&refused(format!("http://{addr}/ok")).await),
            Some("scheme_forbidden")
        );
        for url in [
            format!("https://{addr}/ok"),
            "https://10.0.0.1/".to_owned(),
            "https://192.168.1.1/".to_owned(),
            "https://169.254.169.254/latest/meta-data".to_owned(),
            "https://[::1]/".to_owned(),
            "https://[fe80::1]/".to_owned(),
            "https://[::ffff:127.0.0.1]/".to_owned(),
            format!("https://localhost:{}/ok", addr.port()),
        ] {
            assert_eq!(
                code(&refused(url.clone()).await),
                Some("address_forbidden"),
                "{url}"
            );
        }
        let only = HttpProvider::new(HttpConfig {
            allowed_hosts: Some(["example.org".to_owned()].into()),
            ..HttpConfig::default()
        })
        .unwrap();
        assert_eq!(
            code(
                &ask(
                    &only,
                    "status",
                    json!({"url": "https://elsewhere.invalid/"}),
                    at
                )
                .await
            ),
            Some("host_not_allowed")
        );
        assert_eq!(
            code(&ask(&strict, "status", json!({"url": "not a url"}), at).await),
            Some("params_invalid")
        );
    }

    #[test]
    fn public_addresses_are_told_apart() {
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "64:ff9b::101:101",
            "2002:808:808::",
        ] {
            assert!(is_public_address(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public_address(private.parse().unwrap()), "{private}");
        }
    }
}
