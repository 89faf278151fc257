//! The command line without a database: `config check` on the example and on a broken file.

use std::process::Command;

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_decision-gate-enterprise"));
    cmd.env_remove("DECISION_GATE_ENTERPRISE_CONFIG")
        .env_remove("DATABASE_URL");
    cmd
}

#[test]
fn config_check_accepts_the_example_and_names_every_problem_of_a_broken_file() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/enterprise.toml");
    let out = binary()
        .args(["config", "check", "--config", example])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dg_app:***@"),
        "the password is redacted: {text}"
    );
    assert!(
        text.contains("providers: time; tenant 2: env, time;"),
        "each tenant's providers are named: {text}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.toml");
    std::fs::write(
        &file,
        "[database]\nurl = \"postgres://a@b/c\"\nmax_connections = 0\n[server.limits]\nmax_infligt = 1\n",
    )
    .expect("write");
    let out = binary()
        .args(["config", "check", "--json", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let paths: Vec<&str> = doc["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    // Host `b` is off this machine and the URL names no sslmode.
    assert_eq!(paths.len(), 3, "{doc}");
    assert_eq!(paths[0], "database.url", "{doc}");
    assert_eq!(paths[1], "database.max_connections", "{doc}");
    assert!(paths[2].starts_with("server.limits"), "{doc}");
}

#[test]
fn migrate_without_a_url_is_a_usage_error() {
    let out = binary().arg("migrate").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database URL"));
}

#[test]
fn a_plan_file_is_read_within_its_bound_and_with_unknown_keys_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let put = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("write");
        binary()
            .args(["plans", "put", "p", "--file"])
            .arg(&file)
            // Nothing listens on port 1: the file is refused before any connection.
            .args(["--database-url", "postgres://nobody@127.0.0.1:1/none"])
            .output()
            .expect("run")
    };
    // One byte past 64 KiB (a TOML comment, so only the size is wrong).
    let big = format!("#{}\n", "x".repeat(64 * 1024));
    let out = put("big.toml", &big);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("65538 bytes, the largest plan file is 65536"),
        "{err}"
    );
    let out = put("typo.toml", "featurs = [\"grpc\"]\n");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("featurs"), "the unknown key is named: {err}");
}
