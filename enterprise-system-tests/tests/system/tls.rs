//! A Postgres that accepts only TLS: the enterprise binary migrates and serves through it with
//! the server's certificate verified against the configured root, and fails closed without
//! TLS or against a certificate it cannot verify.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use decision_gate_system_tests::pki::Ca;
use serde_json::json;

use crate::cluster::Cluster;
use crate::isolation::{TOKEN_A, auth};
use crate::support::{
    ConfigDir, Enterprise, ScratchDb, config, cycle, migrate_and_provision, ok, run,
};

/// A private cluster whose TCP clients must use TLS, with a server certificate `ca` issued.
fn tls_only_cluster(ca: &Ca) -> Cluster {
    Cluster::start_with(|data| {
        let server = ca.server();
        std::fs::write(data.join("server.crt"), server.cert).expect("write cert");
        let key = data.join("server.key");
        std::fs::write(&key, server.key).expect("write key");
        // Postgres refuses a key that others can read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).expect("write conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba");
    })
}

fn with_query(url: &str, query: &str) -> String {
    format!("{url}?{query}")
}

fn verify_full(root: &Path) -> String {
    format!(
        "sslmode=verify-full&sslrootcert={}",
        root.to_str().expect("utf-8 path")
    )
}

#[test]
fn a_tls_only_postgres_is_reached_only_over_verified_tls() {
    let ca = Ca::new("database CA");
    let certs = tempfile::tempdir().expect("tempdir");
    let trusted = certs.path().join("ca.pem");
    let untrusted = certs.path().join("rogue.pem");
    std::fs::write(&trusted, ca.pem()).expect("write CA");
    std::fs::write(&untrusted, Ca::new("rogue CA").pem()).expect("write rogue CA");
    let cluster = tls_only_cluster(&ca);
    let db = ScratchDb::create(&cluster.server());

    let plain = run(&[
        "migrate",
        "--database-url",
        &with_query(&db.owner_url(), "sslmode=disable"),
    ]);
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        !plain.status.success(),
        "a connection without TLS was accepted"
    );
    assert!(
        stderr.contains("no encryption"),
        "refusal names the missing encryption: {stderr}"
    );

    let forged = run(&[
        "migrate",
        "--database-url",
        &with_query(&db.owner_url(), &verify_full(&untrusted)),
    ]);
    let stderr = String::from_utf8_lossy(&forged.stderr);
    assert!(
        !forged.status.success(),
        "a certificate from an untrusted CA was accepted"
    );
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "refusal names the certificate: {stderr}"
    );
    assert_eq!(
        db.strings("SELECT count(*)::text FROM pg_tables WHERE tablename = 'runs'"),
        ["0"],
        "nothing was migrated through a refused connection"
    );

    // The server and its administration commands, every URL verified against the right CA.
    let text = config(&db, "", &auth())
        .replace(
            &db.app_url(),
            &with_query(&db.app_url(), &verify_full(&trusted)),
        )
        .replace(
            &db.owner_url(),
            &with_query(&db.owner_url(), &verify_full(&trusted)),
        );
    assert_eq!(text.matches("verify-full").count(), 2, "{text}");
    let dir = ConfigDir::new(&text);
    migrate_and_provision(&dir);
    let server = Enterprise::start(&dir);
    assert_eq!(server.readyz(), 200);
    ok(&server.call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
    let encrypted = db.strings(
        "SELECT count(*)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.usename = 'dg_app' AND s.ssl",
    );
    assert_ne!(encrypted, ["0"], "the server's connections use TLS");
}

#[test]
fn a_database_off_this_host_without_a_chosen_sslmode_is_refused_before_connecting() {
    // Nothing listens at db.invalid: the refusal must come from the check, not a timeout.
    let out = run(&[
        "migrate",
        "--database-url",
        "postgres://owner:secret@db.invalid:5432/dg",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sslmode=verify-full"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is never repeated: {stderr}"
    );
}
