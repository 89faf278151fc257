//! Runpacks: a run exported as a self-contained bundle that anyone can verify offline and
//! replay.
//!
//! The layout is the reference one (manifest v1): `manifest.json` plus seven artifacts under
//! `artifacts/`, each the canonical JSON of one log, and a verifier report. Two optional
//! extensions keep reference verifiers working: an `engine` field in the manifest (the settings
//! replay needs) and a detached ed25519 signature over the manifest bytes in `manifest.sig`.

mod replay;
mod stores;
mod verify;

use std::collections::BTreeMap;

use ed25519_dalek::Signer as _;
use serde::{Deserialize, Serialize};

use crate::engine::{AnchorRequirement, EngineConfig, Limits};
use crate::evidence::TrustRequirement;
use crate::hashing::{HashAlgorithm, HashDigest, canonical_json};
use crate::ids::{NamespaceId, ProviderId, RunId, ScenarioId, TenantId};
use crate::ret::LogicMode;
use crate::run::{EntryBody, JournalEntry, RunHead};
use crate::spec::ScenarioSpec;
use crate::time::Timestamp;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use stores::{FsRunpackStore, MemoryRunpackStore};
pub use verify::{
    DirReader, Failure, Reader, VerifyOptions, VerifyReport, verify, verify_manifest,
};

/// The manifest's file name in a runpack.
pub const MANIFEST_PATH: &str = "manifest.json";
/// The detached signature's file name.
pub const SIGNATURE_PATH: &str = "manifest.sig";
/// The largest artifact the verifier reads.
pub const MAX_ARTIFACT_BYTES: usize = 16 * 1024 * 1024;
/// The most files a manifest may list (a runpack has seven artifacts; room for what later
/// versions add).
pub const MAX_MANIFEST_FILES: usize = 64;
/// The most bytes the verifier reads from one runpack, all its files together.
pub const MAX_RUNPACK_BYTES: usize = 8 * MAX_ARTIFACT_BYTES;

/// The artifacts, in manifest order.
pub(crate) const ARTIFACTS: [(&str, ArtifactKind); 7] = [
    ("artifacts/scenario_spec.json", ArtifactKind::ScenarioSpec),
    ("artifacts/triggers.json", ArtifactKind::TriggerLog),
    ("artifacts/gate_evals.json", ArtifactKind::GateEvalLog),
    ("artifacts/decisions.json", ArtifactKind::DecisionLog),
    ("artifacts/packets.json", ArtifactKind::PacketLog),
    ("artifacts/submissions.json", ArtifactKind::SubmissionLog),
    ("artifacts/tool_calls.json", ArtifactKind::ToolTranscript),
];
pub(crate) const REPORT_PATH: &str = "artifacts/verifier_report.json";

/// What an artifact holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// The scenario spec.
    ScenarioSpec,
    /// Every trigger.
    TriggerLog,
    /// Every gate evaluation with its evidence.
    GateEvalLog,
    /// Every decision.
    DecisionLog,
    /// Every issued packet.
    PacketLog,
    /// Every submission.
    SubmissionLog,
    /// The tool-call transcript.
    ToolTranscript,
    /// The export-time verification report.
    VerifierReport,
    /// Reserved by the reference format.
    DispatchLog,
    /// Reserved by the reference format.
    EvidenceLog,
    /// Reserved by the reference format.
    Custom,
}

/// How the runpack expects to be verified (informational).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifierMode {
    /// Everything needed is inside the runpack.
    #[default]
    OfflineStrict,
    /// Some evidence must be fetched.
    OfflineWithFetch,
}

/// One file's digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// The file's path inside the runpack.
    pub path: String,
    /// The digest of its bytes.
    pub hash: HashDigest,
}

/// The integrity section: every file's digest and the root over them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    /// One digest per file, in artifact order.
    pub file_hashes: Vec<FileHash>,
    /// The digest of the canonical JSON of `file_hashes`.
    pub root_hash: HashDigest,
}

/// One artifact entry of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactEntry {
    /// Equal to `path`.
    pub artifact_id: String,
    /// What it holds.
    pub kind: ArtifactKind,
    /// Where it is.
    pub path: String,
    /// Always `application/json`.
    pub content_type: String,
    /// The digest of its bytes.
    pub hash: HashDigest,
    /// Whether a verifier must find it.
    pub required: bool,
}

/// The anchor policy a run was decided under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorPolicy {
    /// Requirements per provider.
    pub providers: Vec<ProviderAnchor>,
}

/// One provider's anchor requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderAnchor {
    /// The provider.
    pub provider_id: ProviderId,
    /// What it requires.
    pub requirement: AnchorRequirement,
}

/// The engine settings a decision depends on, so a verifier can replay it (an optional
/// extension of manifest v1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSettings {
    /// Three-valued logic for And/Or.
    pub logic_mode: LogicMode,
    /// The global trust requirement.
    pub trust: TrustRequirement,
    /// Per-provider trust requirements.
    pub provider_trust: BTreeMap<ProviderId, TrustRequirement>,
    /// Size limits.
    pub limits: Limits,
}

/// The runpack manifest, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunpackManifest {
    /// Always `v1`.
    pub manifest_version: String,
    /// When the runpack was exported, by the caller's clock.
    pub generated_at: Timestamp,
    /// The scenario.
    pub scenario_id: ScenarioId,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The namespace.
    pub namespace_id: NamespaceId,
    /// The run.
    pub run_id: RunId,
    /// The digest of the scenario spec.
    pub spec_hash: HashDigest,
    /// The digest algorithm of every hash in the runpack.
    pub hash_algorithm: HashAlgorithm,
    /// How to verify.
    pub verifier_mode: VerifierMode,
    /// The anchor policy, when one applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_policy: Option<AnchorPolicy>,
    /// Reference security context (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<serde_json::Value>,
    /// Engine settings for replay (extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineSettings>,
    /// File digests and their root.
    pub integrity: Integrity,
    /// The artifacts.
    pub artifacts: Vec<ArtifactEntry>,
}

impl RunpackManifest {
    /// The engine configuration to replay with: the recorded settings, or the defaults.
    #[must_use]
    pub fn replay_config(&self) -> EngineConfig {
        let mut config = EngineConfig {
            hash_algorithm: self.hash_algorithm,
            ..EngineConfig::default()
        };
        if let Some(e) = &self.engine {
            config.logic_mode = e.logic_mode;
            config.trust = e.trust;
            config.provider_trust = e.provider_trust.clone();
            config.limits = e.limits.clone();
        }
        if let Some(policy) = &self.anchor_policy {
            config.anchor_policy = policy
                .providers
                .iter()
                .map(|p| (p.provider_id.clone(), p.requirement.clone()))
                .collect();
        }
        config
    }
}

/// A detached ed25519 signature over the manifest's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    /// Always `ed25519`.
    pub scheme: String,
    /// Hex of the 32-byte public key.
    pub public_key: String,
    /// Hex of the 64-byte signature.
    pub signature: String,
}

/// An exported runpack: every file by path, and the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runpack {
    /// The manifest.
    pub manifest: RunpackManifest,
    /// Every file, including `manifest.json` (and `manifest.sig` when signed).
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why a runpack could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunpackError {
    /// The run's records could not be serialised.
    #[error("runpack serialisation failed: {0}")]
    Serialize(String),
    /// The run does not match the spec it names.
    #[error("run state does not match its spec: {0}")]
    Mismatch(String),
}

/// The run's logs, laid out as the reference artifacts.
#[derive(Default)]
struct Logs {
    triggers: Vec<serde_json::Value>,
    gate_evals: Vec<serde_json::Value>,
    decisions: Vec<serde_json::Value>,
    packets: Vec<serde_json::Value>,
    submissions: Vec<serde_json::Value>,
    tool_calls: Vec<serde_json::Value>,
}

fn to_value<T: Serialize>(value: &T) -> Result<serde_json::Value, RunpackError> {
    serde_json::to_value(value).map_err(|e| RunpackError::Serialize(e.to_string()))
}

impl Logs {
    fn from_entries(entries: &[JournalEntry]) -> Result<Self, RunpackError> {
        let mut logs = Self::default();
        for entry in entries {
            match &entry.body {
                EntryBody::Trigger(t) => {
                    logs.triggers.push(to_value(&t.trigger)?);
                    for g in &t.gate_evals {
                        logs.gate_evals.push(to_value(g)?);
                    }
                    logs.decisions.push(to_value(&t.decision)?);
                    for p in &t.packets {
                        logs.packets.push(to_value(p)?);
                    }
                    if let Some(call) = &t.tool_call {
                        logs.tool_calls.push(to_value(call)?);
                    }
                }
                EntryBody::Submission(s) => {
                    logs.submissions.push(to_value(&s.submission)?);
                    logs.tool_calls.push(to_value(&s.tool_call)?);
                }
            }
        }
        Ok(logs)
    }
}

/// What to export.
pub struct ExportInput<'a> {
    /// The run's spec.
    pub spec: &'a ScenarioSpec,
    /// The run's head.
    pub head: &'a RunHead,
    /// The run's whole journal, in revision order.
    pub entries: &'a [JournalEntry],
    /// The export time, by the caller's clock.
    pub generated_at: Timestamp,
    /// The engine configuration the run was decided under.
    pub config: &'a EngineConfig,
    /// When set, the manifest is signed with this key.
    pub signer: Option<&'a SigningKey>,
}

fn canonical(value: &impl Serialize) -> Result<Vec<u8>, RunpackError> {
    canonical_json(value).map_err(|e| RunpackError::Serialize(e.to_string()))
}

/// Builds the runpack of a run: the seven artifacts, a manifest over them, an export-time
/// verification report, and (optionally) a signature.
///
/// # Errors
/// [`RunpackError`] when the spec does not hash to the run's spec hash or a record cannot be
/// serialised.
pub fn export(input: &ExportInput<'_>) -> Result<Runpack, RunpackError> {
    // The run's own algorithm, which a configuration change must not rewrite.
    let alg = input.head.spec_hash.algorithm;
    let spec_bytes = canonical(input.spec)?;
    let spec_hash = alg.digest(&spec_bytes);
    if spec_hash != input.head.spec_hash {
        return Err(RunpackError::Mismatch(
            "the spec does not hash to the run's spec hash".into(),
        ));
    }
    let logs = Logs::from_entries(input.entries)?;
    let contents = [
        spec_bytes,
        canonical(&logs.triggers)?,
        canonical(&logs.gate_evals)?,
        canonical(&logs.decisions)?,
        canonical(&logs.packets)?,
        canonical(&logs.submissions)?,
        canonical(&logs.tool_calls)?,
    ];
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut artifacts = Vec::new();
    for ((path, kind), bytes) in ARTIFACTS.iter().zip(contents) {
        artifacts.push(artifact_entry(path, *kind, alg.digest(&bytes)));
        files.insert((*path).to_owned(), bytes);
    }
    let c = input.config;
    let mut manifest = RunpackManifest {
        manifest_version: "v1".into(),
        generated_at: input.generated_at,
        scenario_id: input.head.scenario_id.clone(),
        tenant_id: input.head.key.tenant_id,
        namespace_id: input.head.key.namespace_id,
        run_id: input.head.key.run_id.clone(),
        spec_hash,
        hash_algorithm: alg,
        verifier_mode: VerifierMode::OfflineStrict,
        anchor_policy: (!c.anchor_policy.is_empty()).then(|| AnchorPolicy {
            providers: c
                .anchor_policy
                .iter()
                .map(|(id, r)| ProviderAnchor {
                    provider_id: id.clone(),
                    requirement: r.clone(),
                })
                .collect(),
        }),
        security: None,
        engine: Some(EngineSettings {
            logic_mode: c.logic_mode,
            trust: c.trust,
            provider_trust: c.provider_trust.clone(),
            limits: c.limits.clone(),
        }),
        integrity: Integrity {
            file_hashes: Vec::new(),
            root_hash: alg.digest(b""),
        },
        artifacts,
    };
    seal(&mut manifest)?;

    // Verify what was built (without the signature, which does not exist yet), and ship the
    // report as the eighth artifact.
    let report = verify::verify_manifest(
        &files_reader(&files),
        &manifest,
        &VerifyOptions {
            replay: true,
            ..VerifyOptions::default()
        },
    );
    if !report.passed() {
        let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
        return Err(RunpackError::Mismatch(format!(
            "the run fails its own verification: {}",
            failures.join("; ")
        )));
    }
    let report_bytes = canonical(&report.reference_json())?;
    manifest.artifacts.push(artifact_entry(
        REPORT_PATH,
        ArtifactKind::VerifierReport,
        alg.digest(&report_bytes),
    ));
    files.insert(REPORT_PATH.to_owned(), report_bytes);
    seal(&mut manifest)?;

    let manifest_bytes = canonical(&manifest)?;
    if let Some(key) = input.signer {
        let signature = ManifestSignature {
            scheme: "ed25519".into(),
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(key.sign(&manifest_bytes).to_bytes()),
        };
        files.insert(SIGNATURE_PATH.to_owned(), canonical(&signature)?);
    }
    files.insert(MANIFEST_PATH.to_owned(), manifest_bytes);
    Ok(Runpack { manifest, files })
}

fn artifact_entry(path: &str, kind: ArtifactKind, hash: HashDigest) -> ArtifactEntry {
    ArtifactEntry {
        artifact_id: path.to_owned(),
        kind,
        path: path.to_owned(),
        content_type: "application/json".into(),
        hash,
        required: true,
    }
}

/// Recomputes the integrity section from the artifact entries.
fn seal(manifest: &mut RunpackManifest) -> Result<(), RunpackError> {
    let alg = manifest.hash_algorithm;
    manifest.integrity.file_hashes = manifest
        .artifacts
        .iter()
        .map(|a| FileHash {
            path: a.path.clone(),
            hash: a.hash.clone(),
        })
        .collect();
    manifest.integrity.root_hash = alg.digest(&canonical(&manifest.integrity.file_hashes)?);
    Ok(())
}

/// A [`Reader`] over the files of an in-memory runpack.
pub fn files_reader(files: &BTreeMap<String, Vec<u8>>) -> impl Reader + '_ {
    move |path: &str| Ok(files.get(path).cloned())
}
