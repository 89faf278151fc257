//! Migrations through the binary: concurrent starts apply each migration exactly once, a dry
//! run writes nothing, and a server refuses a schema newer than it knows.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::isolation::{TOKEN_A, auth};
use crate::support::{
    ConfigDir, Enterprise, PgServer, ScratchDb, config, cycle, migrate_and_provision, ok, run,
    run_json,
};

/// The versions a migrate report lists under `key`.
fn versions(report: &Value, key: &str) -> Vec<i64> {
    report[key]
        .as_array()
        .expect("version list")
        .iter()
        .map(|m| m["version"].as_i64().expect("version"))
        .collect()
}

fn applied_rows(db: &ScratchDb) -> Vec<String> {
    db.strings(
        "SELECT version::text || ':' || success::text FROM _sqlx_migrations ORDER BY version",
    )
}

#[test]
fn three_concurrent_migrate_commands_apply_each_migration_once() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let url = db.owner_url();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                run_json(&[
                    "migrate",
                    "--database-url",
                    &url,
                    "--app-role",
                    "dg_app",
                    "--json",
                ])
            })
        })
        .collect();
    let mut applied_by: BTreeMap<i64, usize> = BTreeMap::new();
    let mut known = Vec::new();
    for h in handles {
        let (code, doc) = h.join().expect("migrate thread");
        assert_eq!(code, Some(0), "{doc}");
        let report = &doc["report"];
        assert!(versions(report, "pending").is_empty(), "{doc}");
        for v in versions(report, "applied") {
            *applied_by.entry(v).or_default() += 1;
        }
        let mut all = versions(report, "already_applied");
        all.extend(versions(report, "applied"));
        all.sort_unstable();
        known = all;
    }
    assert!(!known.is_empty());
    let once: BTreeMap<i64, usize> = known.iter().map(|&v| (v, 1)).collect();
    assert_eq!(
        applied_by, once,
        "each version applied by exactly one process"
    );
    let rows = applied_rows(&db);
    assert_eq!(rows.len(), known.len(), "{rows:?}");
    assert!(rows.iter().all(|r| r.ends_with(":true")), "{rows:?}");
}

#[test]
fn three_servers_starting_together_on_an_empty_database_migrate_once_and_serve() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dirs: Vec<ConfigDir> = (0..3)
        .map(|_| ConfigDir::new(&config(&db, "migrate_on_start = true", &auth())))
        .collect();
    let servers: Vec<Enterprise> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|d| s.spawn(|| Enterprise::start(d)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("server start"))
            .collect()
    });
    // Each server says which migrations it applied; together, every version exactly once.
    let mut applied = Vec::new();
    for server in &servers {
        let lines = server.stderr.lock().expect("lines").clone();
        let line = lines
            .iter()
            .find_map(|l| {
                l.strip_prefix("decision-gate-enterprise: migrations applied by this server: ")
            })
            .unwrap_or_else(|| panic!("no migration line: {lines:?}"))
            .to_owned();
        if line != "none" {
            applied.extend(line.split(", ").map(|v| {
                v.split(' ')
                    .next()
                    .expect("version")
                    .parse::<i64>()
                    .expect("number")
            }));
        }
    }
    applied.sort_unstable();
    let rows = applied_rows(&db);
    let recorded: Vec<i64> = rows
        .iter()
        .map(|r| {
            r.split(':')
                .next()
                .expect("version")
                .parse()
                .expect("number")
        })
        .collect();
    assert_eq!(
        applied, recorded,
        "each migration applied by exactly one server"
    );
    assert!(rows.iter().all(|r| r.ends_with(":true")), "{rows:?}");

    // All three serve the same data: defined through one, listed through another.
    ok(&servers[0].call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
    for server in &servers {
        assert_eq!(server.readyz(), 200);
        let list = server.call(
            Some(TOKEN_A),
            "scenarios_list",
            json!({ "tenant_id": 1, "namespace_id": 1 }),
        );
        assert_eq!(ok(&list)["items"][0]["scenario_id"], "cycle", "{list}");
    }
}

#[test]
fn a_dry_run_writes_nothing_and_lists_what_is_pending() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let (code, doc) = run_json(&[
        "migrate",
        "--database-url",
        &db.owner_url(),
        "--dry-run",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["report"]["dry_run"], true);
    assert!(versions(&doc["report"], "applied").is_empty(), "{doc}");
    assert!(!versions(&doc["report"], "pending").is_empty(), "{doc}");
    let tables = db.strings("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'");
    assert!(tables.is_empty(), "a dry run created {tables:?}");

    // After a real run, a dry run finds nothing pending.
    let out = run(&["migrate", "--database-url", &db.owner_url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pending: none"), "{text}");
    let (_, doc) = run_json(&[
        "migrate",
        "--database-url",
        &db.owner_url(),
        "--dry-run",
        "--json",
    ]);
    assert!(versions(&doc["report"], "pending").is_empty(), "{doc}");
}

/// Runs `serve`, which must exit 1 before serving; its stderr.
fn refused_serve(dir: &ConfigDir) -> String {
    let file = dir.file();
    let out = run(&[
        "serve",
        "--config",
        file.to_str().expect("path"),
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("serving MCP"), "{stderr}");
    stderr
}

#[test]
fn serve_refuses_a_newer_schema_and_an_unsafe_role_with_a_clear_message() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dir = ConfigDir::new(&config(&db, "", &auth()));
    migrate_and_provision(&dir);
    db.exec(&[
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from a newer release', true, '\\x00', 0)",
    ]);
    let stderr = refused_serve(&dir);
    assert!(
        stderr.contains("not one this binary understands") && stderr.contains("9999"),
        "{stderr}"
    );

    // The owner (a superuser) as the serving role: refused before serving.
    db.exec(&["DELETE FROM _sqlx_migrations WHERE version = 9999"]);
    let owner = ConfigDir::new(&config(&db, "", &auth()).replace(&db.app_url(), &db.owner_url()));
    let stderr = refused_serve(&owner);
    assert!(
        stderr.contains("unsafe database role") && stderr.contains("superuser"),
        "{stderr}"
    );
}
