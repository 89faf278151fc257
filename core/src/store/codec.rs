//! What every persistent backend of the storage seams shares: stored documents with checksums,
//! and the page cursors all backends issue, so a cursor means the same thing on any backend.
//!
//! Documents are stored byte for byte as serialised, with the SHA-256 of those bytes; every read
//! checks it and refuses a mismatch as [`StoreError::Corrupt`] (fail closed).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DataShapeRecord, Page, StoreError};
use crate::hashing::{HashAlgorithm, HashDigest};
use crate::ids::ScenarioId;
use crate::run::{JournalEntry, RunHead};
use crate::spec::ScenarioSpec;

fn sha256(text: &str) -> String {
    HashAlgorithm::Sha256.digest(text.as_bytes()).value
}

/// A document and the SHA-256 of its bytes.
///
/// # Errors
/// [`StoreError::Invalid`] when the value cannot be serialised.
pub fn encode<T: Serialize>(value: &T) -> Result<(String, String), StoreError> {
    let json = serde_json::to_string(value).map_err(|e| StoreError::Invalid {
        field: "document",
        message: e.to_string(),
    })?;
    let sha = sha256(&json);
    Ok((json, sha))
}

/// Checks a stored document against its SHA-256 and parses it.
///
/// # Errors
/// [`StoreError::Corrupt`] on a checksum mismatch or an unreadable document.
pub fn decode<T: DeserializeOwned>(what: &str, json: &str, sha: &str) -> Result<T, StoreError> {
    if sha256(json) != sha {
        return Err(StoreError::Corrupt(format!("{what}: checksum mismatch")));
    }
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The checksum of a scenario row: its spec hash and its spec, both covered.
#[must_use]
pub fn scenario_checksum(hash_json: &str, spec_json: &str) -> String {
    sha256(&format!("{hash_json}\n{spec_json}"))
}

/// Checks a scenario row against its checksum and parses it.
///
/// # Errors
/// [`StoreError::Corrupt`] on a checksum mismatch or an unreadable spec or hash.
pub fn decode_scenario(
    hash_json: &str,
    spec_json: &str,
    sha: &str,
) -> Result<(ScenarioSpec, HashDigest), StoreError> {
    if scenario_checksum(hash_json, spec_json) != sha {
        return Err(StoreError::Corrupt("scenario: checksum mismatch".into()));
    }
    let spec = serde_json::from_str(spec_json)
        .map_err(|e| StoreError::Corrupt(format!("scenario: {e}")))?;
    let hash = serde_json::from_str(hash_json)
        .map_err(|e| StoreError::Corrupt(format!("scenario hash: {e}")))?;
    Ok((spec, hash))
}

/// A scenario list row, `(scenario_id, spec_hash json, spec json, checksum)`, checked and read
/// as the summary a list returns.
///
/// # Errors
/// [`StoreError::Corrupt`] as [`decode_scenario`], or when the stored id is not an id.
pub fn scenario_summary(
    namespace_id: crate::ids::NamespaceId,
    (id, hash_json, spec_json, sha): (String, String, String, String),
) -> Result<super::ScenarioSummary, StoreError> {
    let (_, spec_hash) = decode_scenario(&hash_json, &spec_json, &sha)?;
    Ok(super::ScenarioSummary {
        scenario_id: ScenarioId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        namespace_id,
        spec_hash,
    })
}

/// A run's head row joined with the entry row recording a trigger (absent when the join found
/// none): `(head_json, head_sha, entry_json, entry_sha)`.
pub type HeadWithEntryRow = (String, String, Option<String>, Option<String>);

/// Checks and parses what [`super::RunStore::head_and_trigger`] read as one joined row.
///
/// # Errors
/// [`StoreError::Corrupt`] as [`decode`].
pub fn head_with_entry(
    row: Option<HeadWithEntryRow>,
) -> Result<(Option<RunHead>, Option<JournalEntry>), StoreError> {
    let Some((head_json, head_sha, entry_json, entry_sha)) = row else {
        return Ok((None, None));
    };
    let head = decode("run head", &head_json, &head_sha)?;
    let entry = match (entry_json, entry_sha) {
        (Some(json), Some(sha)) => Some(decode("journal entry", &json, &sha)?),
        _ => None,
    };
    Ok((Some(head), entry))
}

fn invalid_cursor() -> StoreError {
    StoreError::Invalid {
        field: "cursor",
        message: "not a cursor issued by this store".to_owned(),
    }
}

/// Parses a scenario cursor: the last scenario id returned.
///
/// # Errors
/// [`StoreError::Invalid`] naming `cursor`.
pub fn parse_scenario_cursor(cursor: &str) -> Result<ScenarioId, StoreError> {
    ScenarioId::new(cursor).map_err(|_| invalid_cursor())
}

/// Builds a page from up to `limit + 1` items in key order: the extra item only says whether
/// another page follows.
pub fn page_from<T>(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_token = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_token }
}

/// The cursor of a schema page: the last (schema_id, version) returned.
#[must_use]
pub fn schema_cursor(record: &DataShapeRecord) -> String {
    serde_json::json!([record.schema_id, record.version]).to_string()
}

/// Parses a schema cursor.
///
/// # Errors
/// [`StoreError::Invalid`] naming `cursor`.
pub fn parse_schema_cursor(cursor: &str) -> Result<(String, String), StoreError> {
    serde_json::from_str::<(String, String)>(cursor).map_err(|_| invalid_cursor())
}
