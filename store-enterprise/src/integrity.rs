//! The integrity scan: what the constraints should make impossible, checked on the data itself,
//! for databases that were changed by hand (a superuser with foreign keys switched off, a
//! dropped constraint, a restore gone wrong). It also lists tenant tables whose row-level
//! security is not enabled and forced.
//!
//! The scan reads every tenant's rows, so it needs a role that bypasses row-level security
//! (the migration owner or a superuser); with any other role it refuses rather than report a
//! clean database it could not see.

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;

use crate::error::PgError;

/// What kind of problem a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A tenant table's `tenant_id` allows NULL, or a row has none.
    NullTenantId,
    /// A row refers to a parent that exists only in another tenant, or its document names
    /// another tenant than its row.
    CrossTenantReference,
    /// A row refers to a parent that exists in no tenant.
    OrphanedRow,
    /// A run's journal revisions are not exactly 1..=head revision.
    JournalGap,
}

/// One problem found by [`integrity_scan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The kind.
    pub kind: FindingKind,
    /// The table holding the bad row.
    pub table: String,
    /// The row's key, `/`-separated in key order (`-` for a whole-table finding).
    pub key: String,
    /// What is wrong, in words.
    pub detail: String,
}

/// A reference from a child table to its parent: the child's key columns (for reporting), the
/// referring columns besides `tenant_id`, and the parent's matching columns.
struct Reference {
    child: &'static str,
    child_key: &'static [&'static str],
    parent: &'static str,
    columns: &'static [(&'static str, &'static str)],
    what: &'static str,
}

/// Every reference between tenant tables, including the one the seams leave unenforced (a run
/// head's scenario).
const REFERENCES: &[Reference] = &[
    Reference {
        child: "namespaces",
        child_key: &["tenant_id", "namespace_id"],
        parent: "tenants",
        columns: &[],
        what: "tenant",
    },
    Reference {
        child: "scenarios",
        child_key: &["tenant_id", "namespace_id", "scenario_id"],
        parent: "namespaces",
        columns: &[("namespace_id", "namespace_id")],
        what: "namespace",
    },
    Reference {
        child: "runs",
        child_key: &["tenant_id", "namespace_id", "run_id"],
        parent: "namespaces",
        columns: &[("namespace_id", "namespace_id")],
        what: "namespace",
    },
    Reference {
        child: "runs",
        child_key: &["tenant_id", "namespace_id", "run_id"],
        parent: "scenarios",
        columns: &[
            ("namespace_id", "namespace_id"),
            ("scenario_id", "scenario_id"),
        ],
        what: "scenario",
    },
    Reference {
        child: "run_entries",
        child_key: &["tenant_id", "namespace_id", "run_id", "revision"],
        parent: "runs",
        columns: &[("namespace_id", "namespace_id"), ("run_id", "run_id")],
        what: "run head",
    },
    Reference {
        child: "data_shapes",
        child_key: &["tenant_id", "namespace_id", "schema_id", "version"],
        parent: "namespaces",
        columns: &[("namespace_id", "namespace_id")],
        what: "namespace",
    },
    Reference {
        child: "usage_events",
        child_key: &["tenant_id", "idempotency_key"],
        parent: "namespaces",
        columns: &[("namespace_id", "namespace_id")],
        what: "namespace",
    },
    Reference {
        child: "audit_events",
        child_key: &["tenant_id", "event_id"],
        parent: "namespaces",
        columns: &[("namespace_id", "namespace_id")],
        what: "namespace",
    },
];

/// Tables whose JSON document names the row's tenant, and where.
const DOCUMENT_TENANTS: &[(&str, &[&str], &str)] = &[
    (
        "runs",
        &["tenant_id", "namespace_id", "run_id"],
        "(head_json::jsonb #>> '{key,tenant_id}')",
    ),
    (
        "data_shapes",
        &["tenant_id", "namespace_id", "schema_id", "version"],
        "(record_json::jsonb ->> 'tenant_id')",
    ),
    (
        "audit_events",
        &["tenant_id", "event_id"],
        "(event_json::jsonb ->> 'tenant_id')",
    ),
];

fn key_expr(alias: &str, columns: &[&str]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| format!("coalesce({alias}.{c}::text, 'NULL')"))
        .collect();
    format!("concat_ws('/', {})", parts.join(", "))
}

/// Scans the database for null tenant ids, cross-tenant references, orphaned rows and journal
/// gaps. An empty result means a clean database.
///
/// # Errors
/// [`PgError::Invalid`] when the pool's role cannot see every tenant's rows;
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn integrity_scan(owner_pool: &PgPool) -> Result<Vec<Finding>, PgError> {
    let (sees_all,): (bool,) = sqlx::query_as(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(owner_pool)
    .await?;
    if !sees_all {
        return Err(PgError::Invalid {
            field: "role",
            message: "the integrity scan needs a role that bypasses row-level security (the \
                      migration owner with BYPASSRLS, or a superuser); any other role sees no \
                      rows and would report a clean database"
                .to_owned(),
        });
    }
    let mut findings = null_tenant_ids(owner_pool).await?;
    for r in REFERENCES {
        findings.extend(broken_references(owner_pool, r).await?);
    }
    for (table, key, tenant) in DOCUMENT_TENANTS {
        findings.extend(document_tenants(owner_pool, table, key, tenant).await?);
    }
    findings.extend(journal_gaps(owner_pool).await?);
    findings.extend(tenant_orphans(owner_pool).await?);
    Ok(findings)
}

/// `tenant_id` columns that allow NULL, and rows that hold one.
async fn null_tenant_ids(pool: &PgPool) -> Result<Vec<Finding>, PgError> {
    let nullable: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
            AND a.attname = 'tenant_id' AND NOT a.attisdropped AND NOT a.attnotnull
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let mut findings = Vec::new();
    for (table,) in nullable {
        findings.push(Finding {
            kind: FindingKind::NullTenantId,
            table: table.clone(),
            key: "-".to_owned(),
            detail: "column tenant_id allows NULL".to_owned(),
        });
        let (rows,): (i64,) = sqlx::query_as(&format!(
            "SELECT count(*) FROM \"{}\" WHERE tenant_id IS NULL",
            table.replace('"', "\"\"")
        ))
        .fetch_one(pool)
        .await?;
        if rows > 0 {
            findings.push(Finding {
                kind: FindingKind::NullTenantId,
                table,
                key: "-".to_owned(),
                detail: format!("{rows} row(s) have no tenant_id"),
            });
        }
    }
    Ok(findings)
}

/// Rows of `r.child` whose parent is missing in their own tenant: a cross-tenant reference when
/// another tenant has it, an orphan when none does.
async fn broken_references(pool: &PgPool, r: &Reference) -> Result<Vec<Finding>, PgError> {
    let same: String = r
        .columns
        .iter()
        .map(|(c, p)| format!(" AND p.{p} = c.{c}"))
        .collect();
    let elsewhere = if r.columns.is_empty() {
        "NULL::text".to_owned()
    } else {
        let cond: Vec<String> = r
            .columns
            .iter()
            .map(|(c, p)| format!("o.{p} = c.{c}"))
            .collect();
        format!(
            "(SELECT string_agg(DISTINCT o.tenant_id::text, ', ') FROM {} o WHERE {} \
             AND o.tenant_id IS DISTINCT FROM c.tenant_id)",
            r.parent,
            cond.join(" AND ")
        )
    };
    let sql = format!(
        "SELECT {key}, {elsewhere} FROM {child} c
          WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.tenant_id = c.tenant_id{same})
          ORDER BY 1",
        key = key_expr("c", r.child_key),
        child = r.child,
        parent = r.parent,
    );
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(&sql).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(key, others)| match others {
            Some(tenants) => Finding {
                kind: FindingKind::CrossTenantReference,
                table: r.child.to_owned(),
                key,
                detail: format!(
                    "its {} is missing in its own tenant but exists in tenant(s) {tenants}",
                    r.what
                ),
            },
            None => Finding {
                kind: FindingKind::OrphanedRow,
                table: r.child.to_owned(),
                key,
                detail: format!("its {} does not exist", r.what),
            },
        })
        .collect())
}

/// Rows whose stored document names another tenant than the row.
async fn document_tenants(
    pool: &PgPool,
    table: &str,
    key: &[&str],
    tenant: &str,
) -> Result<Vec<Finding>, PgError> {
    let sql = format!(
        "SELECT {key}, {tenant} FROM {table} c
          WHERE {tenant} IS DISTINCT FROM c.tenant_id::text ORDER BY 1",
        key = key_expr("c", key),
    );
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(&sql).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(key, doc)| Finding {
            kind: FindingKind::CrossTenantReference,
            table: table.to_owned(),
            key,
            detail: format!(
                "its document belongs to tenant {}",
                doc.as_deref().unwrap_or("(none)")
            ),
        })
        .collect())
}

/// Runs whose entries are not exactly revisions 1..=head revision.
async fn journal_gaps(pool: &PgPool) -> Result<Vec<Finding>, PgError> {
    let rows: Vec<(String, i64, i64, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT {key}, r.revision, count(e.revision), max(e.revision)
           FROM runs r
           LEFT JOIN run_entries e ON e.tenant_id = r.tenant_id
                AND e.namespace_id = r.namespace_id AND e.run_id = r.run_id
          GROUP BY r.tenant_id, r.namespace_id, r.run_id, r.revision
         HAVING count(e.revision) <> r.revision OR max(e.revision) IS DISTINCT FROM r.revision
             OR min(e.revision) IS DISTINCT FROM 1
          ORDER BY 1",
        key = key_expr("r", &["tenant_id", "namespace_id", "run_id"]),
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, head, count, max)| Finding {
            kind: FindingKind::JournalGap,
            table: "run_entries".to_owned(),
            key,
            detail: format!(
                "head is at revision {head} but the journal holds {count} entr{} up to revision {}",
                if count == 1 { "y" } else { "ies" },
                max.map_or_else(|| "none".to_owned(), |m| m.to_string())
            ),
        })
        .collect())
}

/// Tenants whose organisation is missing.
async fn tenant_orphans(pool: &PgPool) -> Result<Vec<Finding>, PgError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT t.tenant_id::text FROM tenants t
          WHERE NOT EXISTS (SELECT 1 FROM organisations o WHERE o.organisation_id = t.organisation_id)
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key,)| Finding {
            kind: FindingKind::OrphanedRow,
            table: "tenants".to_owned(),
            key,
            detail: "its organisation does not exist".to_owned(),
        })
        .collect())
}

/// The tenant tables (every table of the current schema with a `tenant_id` column), by name.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn tenant_tables(pool: &PgPool) -> Result<Vec<String>, PgError> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!("{TENANT_TABLES} ORDER BY 1"))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// The tenant tables whose row-level security is not both enabled and forced.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn tables_without_forced_rls(pool: &PgPool) -> Result<Vec<String>, PgError> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "{TENANT_TABLES} AND NOT (c.relrowsecurity AND c.relforcerowsecurity) ORDER BY 1"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

const TENANT_TABLES: &str = "SELECT c.relname::text FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
        AND EXISTS (SELECT 1 FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)";
