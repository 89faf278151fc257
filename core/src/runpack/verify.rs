//! Offline verification of a runpack: integrity, cross-checks between the logs, hashes against
//! values, sequence numbers, anchors, the optional signature, and (on request) replay.

use std::path::PathBuf;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::confine::{check_normal, confined};
use crate::disclosure::PacketRecord;
use crate::evidence::EvidenceValue;
use crate::hashing::{HashAlgorithm, HashDigest, canonical_json};
use crate::run::{DecisionRecord, GateEvalRecord, SubmissionRecord, ToolCallRecord, TriggerRecord};
use crate::spec::ScenarioSpec;

use super::{
    ARTIFACTS, MANIFEST_PATH, MAX_ARTIFACT_BYTES, MAX_MANIFEST_FILES, MAX_RUNPACK_BYTES,
    ManifestSignature, RunpackManifest, SIGNATURE_PATH,
};

/// Reads a runpack's files: `Ok(None)` when absent, `Err` when unreadable or refused.
pub trait Reader {
    /// Reads the file at `path` (relative to the runpack root).
    ///
    /// # Errors
    /// Why the file cannot be read.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String>;

    /// The digest of the file at `path` and its size: `Ok(None)` when absent. The verifier
    /// asks for this for every file it does not parse; a reader of large files hashes as it
    /// reads, so memory does not grow with the file.
    ///
    /// # Errors
    /// Why the file cannot be read.
    fn digest(
        &self,
        path: &str,
        algorithm: HashAlgorithm,
    ) -> Result<Option<(HashDigest, usize)>, String> {
        Ok(self
            .read(path)?
            .map(|bytes| (algorithm.digest(&bytes), bytes.len())))
    }
}

impl<F: Fn(&str) -> Result<Option<Vec<u8>>, String>> Reader for F {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        self(path)
    }
}

/// Reads a runpack from a directory, refusing absolute paths, `..`, symlinks, anything but a
/// regular file (a FIFO would block the reader forever, a device never end) and files over
/// [`MAX_ARTIFACT_BYTES`].
#[derive(Clone, Debug)]
pub struct DirReader {
    root: PathBuf,
}

impl DirReader {
    /// A reader rooted at `root`.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl DirReader {
    /// Opens a regular file of the runpack, with its size: `None` when absent.
    fn open(&self, path: &str) -> Result<Option<(std::fs::File, u64)>, String> {
        let full = confined(&self.root, path).map_err(|e| e.to_string())?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        // Opened without blocking (a FIFO would wait for a writer) and without following a
        // symlink swapped in after `confined` looked; what it is, is asked of the open file.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(
            &mut options,
            libc::O_NONBLOCK | libc::O_NOFOLLOW,
        );
        let file = match options.open(&full) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".to_owned());
        }
        if meta.len() > MAX_ARTIFACT_BYTES as u64 {
            return Err(too_large(&meta.len().to_string()));
        }
        Ok(Some((file, meta.len())))
    }
}

fn too_large(size: &str) -> String {
    format!("artifact too large: {size} bytes; the limit is {MAX_ARTIFACT_BYTES} bytes")
}

impl Reader for DirReader {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        use std::io::Read as _;
        let Some((file, len)) = self.open(path)? else {
            return Ok(None);
        };
        // Bounded even if the file grows after the size was read.
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(MAX_ARTIFACT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        if bytes.len() > MAX_ARTIFACT_BYTES {
            return Err(too_large(&format!("over {MAX_ARTIFACT_BYTES}")));
        }
        Ok(Some(bytes))
    }

    /// Hashed as it is read, 64 KiB at a time: memory does not grow with the file.
    fn digest(
        &self,
        path: &str,
        algorithm: HashAlgorithm,
    ) -> Result<Option<(HashDigest, usize)>, String> {
        use std::io::Read as _;
        let Some((file, _)) = self.open(path)? else {
            return Ok(None);
        };
        let mut file = file.take(MAX_ARTIFACT_BYTES as u64 + 1);
        let mut digest = algorithm.stream();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            let n = file.read(&mut buffer).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            total += n;
            if total > MAX_ARTIFACT_BYTES {
                return Err(too_large(&format!("over {MAX_ARTIFACT_BYTES}")));
            }
            digest.update(&buffer[..n]);
        }
        Ok(Some((digest.finish(), total)))
    }
}

/// What to check beyond integrity.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Re-run every recorded trigger through the engine from the recorded evidence.
    pub replay: bool,
    /// When not empty, the manifest must be signed by one of these keys.
    pub trusted_keys: Vec<VerifyingKey>,
}

/// One failed check: which check, on which artifact and entry, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The check (`file_hash`, `root_hash`, `spec_hash`, `sequence`, `replay`, ...).
    pub check: String,
    /// The artifact (a path in the runpack).
    pub artifact: String,
    /// The entry inside it (`decision-3`, `trigger t2`, `gate g1 (trigger t2)`), if any.
    pub entry: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.entry {
            Some(entry) => write!(
                f,
                "{}: {} [{entry}]: {}",
                self.check, self.artifact, self.message
            ),
            None => write!(f, "{}: {}: {}", self.check, self.artifact, self.message),
        }
    }
}

/// The verification result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Files read and hashed.
    pub checked_files: u64,
    /// Every failed check; empty when the runpack verifies.
    pub failures: Vec<Failure>,
    /// Whether replay ran.
    pub replayed: bool,
}

impl VerifyReport {
    /// Whether every check passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The reference report shape: `{checked_files, errors, status}`.
    #[must_use]
    pub fn reference_json(&self) -> serde_json::Value {
        serde_json::json!({
            "checked_files": self.checked_files,
            "errors": self.failures.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "status": if self.passed() { "pass" } else { "fail" },
        })
    }
}

/// Collects failures while checking.
pub(crate) struct Checks {
    pub(crate) failures: Vec<Failure>,
}

impl Checks {
    pub(crate) fn fail(
        &mut self,
        check: &str,
        artifact: &str,
        entry: Option<String>,
        message: impl Into<String>,
    ) {
        self.failures.push(Failure {
            check: check.into(),
            artifact: artifact.into(),
            entry,
            message: message.into(),
        });
    }
}

/// Verifies the runpack `reader` holds: its manifest, the optional signature, and every check
/// of [`verify_manifest`].
#[must_use]
pub fn verify(reader: &impl Reader, options: &VerifyOptions) -> VerifyReport {
    let mut checks = Checks {
        failures: Vec::new(),
    };
    let manifest_bytes = match reader.read(MANIFEST_PATH) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            checks.fail("manifest", MANIFEST_PATH, None, "missing");
            return VerifyReport {
                checked_files: 0,
                failures: checks.failures,
                replayed: false,
            };
        }
        Err(e) => {
            checks.fail("manifest", MANIFEST_PATH, None, e);
            return VerifyReport {
                checked_files: 0,
                failures: checks.failures,
                replayed: false,
            };
        }
    };
    let manifest: RunpackManifest = match serde_json::from_slice(&manifest_bytes) {
        Ok(m) => m,
        Err(e) => {
            checks.fail(
                "manifest",
                MANIFEST_PATH,
                None,
                format!("invalid manifest: {e}"),
            );
            return VerifyReport {
                checked_files: 0,
                failures: checks.failures,
                replayed: false,
            };
        }
    };
    check_signature(reader, &manifest_bytes, options, &mut checks);
    let mut report = verify_manifest(reader, &manifest, options);
    checks.failures.append(&mut report.failures);
    report.failures = checks.failures;
    report
}

fn check_signature(
    reader: &impl Reader,
    manifest_bytes: &[u8],
    options: &VerifyOptions,
    checks: &mut Checks,
) {
    let signature = match reader.read(SIGNATURE_PATH) {
        Ok(None) if options.trusted_keys.is_empty() => return,
        Ok(None) => {
            return checks.fail(
                "signature",
                SIGNATURE_PATH,
                None,
                "a signature is required and the runpack has none",
            );
        }
        Ok(Some(bytes)) => bytes,
        Err(e) => return checks.fail("signature", SIGNATURE_PATH, None, e),
    };
    let parsed = serde_json::from_slice::<ManifestSignature>(&signature)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            if s.scheme != "ed25519" {
                return Err(format!("unsupported scheme {}", s.scheme));
            }
            let key: [u8; 32] = hex::decode(&s.public_key)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or("public_key is not 32 bytes of hex")?;
            let sig: [u8; 64] = hex::decode(&s.signature)
                .ok()
                .and_then(|k| k.try_into().ok())
                .ok_or("signature is not 64 bytes of hex")?;
            let key = VerifyingKey::from_bytes(&key).map_err(|e| e.to_string())?;
            Ok((key, Signature::from_bytes(&sig)))
        });
    match parsed {
        Err(e) => checks.fail("signature", SIGNATURE_PATH, None, e),
        Ok((key, sig)) => {
            if key.verify_strict(manifest_bytes, &sig).is_err() {
                checks.fail(
                    "signature",
                    MANIFEST_PATH,
                    None,
                    "the signature does not match the manifest bytes",
                );
            } else if !options.trusted_keys.is_empty() && !options.trusted_keys.contains(&key) {
                checks.fail(
                    "signature",
                    SIGNATURE_PATH,
                    None,
                    format!("signed by an untrusted key {}", hex::encode(key.as_bytes())),
                );
            }
        }
    }
}

/// The digest of an evidence value or a JSON document, as the engine computes it.
fn value_digest(alg: HashAlgorithm, value: &EvidenceValue) -> Option<HashDigest> {
    match value {
        EvidenceValue::Json(v) => alg.digest_json(v).ok(),
        EvidenceValue::Bytes(b) => Some(alg.digest(b)),
    }
}

fn parse<T: DeserializeOwned>(
    bytes: Option<&Vec<u8>>,
    path: &str,
    checks: &mut Checks,
) -> Option<T> {
    let bytes = bytes?;
    serde_json::from_slice(bytes)
        .map_err(|e| {
            checks.fail(
                "parse",
                path,
                None,
                format!("invalid JSON for this artifact: {e}"),
            )
        })
        .ok()
}

/// The parsed logs of a runpack.
pub(crate) struct Logs {
    pub(crate) spec: ScenarioSpec,
    pub(crate) triggers: Vec<TriggerRecord>,
    pub(crate) gate_evals: Vec<GateEvalRecord>,
    pub(crate) decisions: Vec<DecisionRecord>,
    pub(crate) packets: Vec<PacketRecord>,
}

/// Verifies a runpack against a given manifest: every file hash and the root, the manifest's
/// artifact list, the spec hash, ids against the logs, sequence numbers, evidence, packet and
/// submission hashes against their values, the anchor policy and, on request, replay.
#[must_use]
pub fn verify_manifest(
    reader: &impl Reader,
    manifest: &RunpackManifest,
    options: &VerifyOptions,
) -> VerifyReport {
    let mut checks = Checks {
        failures: Vec::new(),
    };
    let mut checked_files = 0;
    if manifest.manifest_version != "v1" {
        checks.fail(
            "manifest",
            MANIFEST_PATH,
            None,
            format!(
                "unsupported manifest version: {}",
                manifest.manifest_version
            ),
        );
        return VerifyReport {
            checked_files,
            failures: checks.failures,
            replayed: false,
        };
    }
    let alg = manifest.hash_algorithm;
    let listed_files = manifest.integrity.file_hashes.len();
    if listed_files > MAX_MANIFEST_FILES {
        checks.fail(
            "manifest",
            MANIFEST_PATH,
            None,
            format!(
                "integrity.file_hashes lists {listed_files} files; the limit is {MAX_MANIFEST_FILES}"
            ),
        );
        return VerifyReport {
            checked_files,
            failures: checks.failures,
            replayed: false,
        };
    }

    // Integrity: every listed file, then the root. Each file is read once: a path in another
    // form than its normal one, or listed twice, is refused unread.
    let mut contents = std::collections::BTreeMap::new();
    let mut read_bytes = 0usize;
    let mut seen = std::collections::BTreeSet::new();
    for entry in &manifest.integrity.file_hashes {
        if let Err(refusal) = check_normal(&entry.path) {
            checks.fail("manifest", &entry.path, None, refusal.to_string());
            continue;
        }
        if !seen.insert(entry.path.as_str()) {
            checks.fail("manifest", &entry.path, None, "listed more than once");
            continue;
        }
        // The logs are parsed below, so they are read whole (within the caps); any other file
        // is only hashed, as it is read.
        let parsed = ARTIFACTS.iter().any(|(path, _)| *path == entry.path);
        let found = if parsed {
            reader
                .read(&entry.path)
                .map(|bytes| bytes.map(|b| (alg.digest(&b), b.len(), Some(b))))
        } else {
            reader
                .digest(&entry.path, alg)
                .map(|d| d.map(|(digest, len)| (digest, len, None)))
        };
        match found {
            Ok(Some((digest, len, bytes))) => {
                checked_files += 1;
                read_bytes = read_bytes.saturating_add(len);
                if read_bytes > MAX_RUNPACK_BYTES {
                    checks.fail(
                        "file_hash",
                        &entry.path,
                        None,
                        format!(
                            "the runpack's files exceed {MAX_RUNPACK_BYTES} bytes together; nothing further is read"
                        ),
                    );
                    break;
                }
                if entry.hash.algorithm != alg {
                    checks.fail(
                        "hash_algorithm",
                        &entry.path,
                        None,
                        format!(
                            "hashed with {}, the manifest says {alg}",
                            entry.hash.algorithm
                        ),
                    );
                }
                if digest != entry.hash {
                    checks.fail("file_hash", &entry.path, None, "hash mismatch");
                }
                if let Some(bytes) = bytes {
                    contents.insert(entry.path.clone(), bytes);
                }
            }
            Ok(None) => checks.fail(
                "file_hash",
                &entry.path,
                None,
                "artifact read failed: missing",
            ),
            Err(e) => checks.fail(
                "file_hash",
                &entry.path,
                None,
                format!("artifact read failed: {e}"),
            ),
        }
    }
    match canonical_json(&manifest.integrity.file_hashes) {
        Ok(bytes) if alg.digest(&bytes) == manifest.integrity.root_hash => {}
        _ => checks.fail("root_hash", MANIFEST_PATH, None, "root hash mismatch"),
    }
    let listed: std::collections::BTreeMap<&str, &HashDigest> = manifest
        .integrity
        .file_hashes
        .iter()
        .map(|f| (f.path.as_str(), &f.hash))
        .collect();
    for a in &manifest.artifacts {
        if listed.get(a.path.as_str()) != Some(&&a.hash) {
            checks.fail(
                "manifest",
                &a.path,
                None,
                "artifact entry has no matching file hash",
            );
        }
    }
    for (path, _) in ARTIFACTS {
        if !listed.contains_key(path) {
            checks.fail("manifest", path, None, "required artifact is not listed");
        }
    }

    // The logs.
    let [
        spec_p,
        triggers_p,
        gates_p,
        decisions_p,
        packets_p,
        submissions_p,
        calls_p,
    ] = ARTIFACTS.map(|(p, _)| p);
    let spec: Option<ScenarioSpec> = parse(contents.get(spec_p), spec_p, &mut checks);
    let triggers: Option<Vec<TriggerRecord>> =
        parse(contents.get(triggers_p), triggers_p, &mut checks);
    let gate_evals: Option<Vec<GateEvalRecord>> =
        parse(contents.get(gates_p), gates_p, &mut checks);
    let decisions: Option<Vec<DecisionRecord>> =
        parse(contents.get(decisions_p), decisions_p, &mut checks);
    let packets: Option<Vec<PacketRecord>> = parse(contents.get(packets_p), packets_p, &mut checks);
    let submissions: Option<Vec<SubmissionRecord>> =
        parse(contents.get(submissions_p), submissions_p, &mut checks);
    let calls: Option<Vec<ToolCallRecord>> = parse(contents.get(calls_p), calls_p, &mut checks);

    if let Some(bytes) = contents.get(spec_p)
        && alg.digest(bytes) != manifest.spec_hash
    {
        checks.fail(
            "spec_hash",
            spec_p,
            None,
            "the manifest's spec_hash does not match the spec artifact",
        );
    }
    if let Some(spec) = &spec
        && spec.scenario_id != manifest.scenario_id
    {
        checks.fail(
            "ids",
            spec_p,
            None,
            format!(
                "scenario {} is not the manifest's {}",
                spec.scenario_id, manifest.scenario_id
            ),
        );
    }
    if let Some(triggers) = &triggers {
        for (i, t) in triggers.iter().enumerate() {
            let entry = || Some(format!("trigger {}", t.event.trigger_id));
            if t.seq != i as u64 + 1 {
                checks.fail(
                    "sequence",
                    triggers_p,
                    entry(),
                    format!("seq {} at position {}", t.seq, i + 1),
                );
            }
            let e = &t.event;
            if e.run_id != manifest.run_id
                || e.tenant_id != manifest.tenant_id
                || e.namespace_id != manifest.namespace_id
            {
                checks.fail(
                    "ids",
                    triggers_p,
                    entry(),
                    "the trigger belongs to another run, tenant or namespace",
                );
            }
        }
    }
    if let Some(decisions) = &decisions {
        let mut seen = std::collections::BTreeSet::new();
        for (i, d) in decisions.iter().enumerate() {
            let entry = Some(d.decision_id.to_string());
            if d.seq != i as u64 + 1 || d.decision_id.as_str() != format!("decision-{}", d.seq) {
                checks.fail(
                    "sequence",
                    decisions_p,
                    entry.clone(),
                    format!(
                        "decision {} has seq {} at position {}",
                        d.decision_id,
                        d.seq,
                        i + 1
                    ),
                );
            }
            if !seen.insert(d.trigger_id.clone()) {
                checks.fail(
                    "duplicate",
                    decisions_p,
                    entry,
                    format!("duplicate decision for trigger {}", d.trigger_id),
                );
            }
        }
    }
    if let Some(calls) = &calls {
        for (i, c) in calls.iter().enumerate() {
            if c.call_id != format!("call-{}", i + 1) {
                checks.fail(
                    "sequence",
                    calls_p,
                    Some(c.call_id.clone()),
                    format!("at position {}", i + 1),
                );
            }
        }
    }
    if let Some(gate_evals) = &gate_evals {
        for g in gate_evals {
            for e in &g.evidence {
                let entry = || {
                    Some(format!(
                        "condition {} of gate {} (trigger {})",
                        e.condition_id, g.evaluation.gate_id, g.trigger_id
                    ))
                };
                match (&e.result.value, &e.result.evidence_hash) {
                    (Some(value), Some(hash))
                        if value_digest(alg, value).as_ref() != Some(hash) =>
                    {
                        checks.fail(
                            "evidence_hash",
                            gates_p,
                            entry(),
                            "the evidence hash does not match the value",
                        );
                    }
                    (Some(_), None) => checks.fail(
                        "evidence_hash",
                        gates_p,
                        entry(),
                        "a value without its hash",
                    ),
                    _ => {}
                }
                if let (Some(policy), Some(spec), None) =
                    (&manifest.anchor_policy, &spec, &e.result.error)
                {
                    let Some(condition) = spec
                        .conditions
                        .iter()
                        .find(|c| c.condition_id == e.condition_id)
                    else {
                        checks.fail(
                            "anchor",
                            gates_p,
                            entry(),
                            "condition missing from scenario spec",
                        );
                        continue;
                    };
                    if let Some(p) = policy
                        .providers
                        .iter()
                        .find(|p| p.provider_id == condition.query.provider_id)
                        && let Err(message) = p.requirement.check(e.result.evidence_anchor.as_ref())
                    {
                        checks.fail(
                            "anchor",
                            gates_p,
                            entry(),
                            format!("anchor invalid: {message}"),
                        );
                    }
                }
            }
        }
    }
    if let Some(packets) = &packets {
        for p in packets {
            let entry = Some(format!(
                "packet {} ({})",
                p.envelope.packet_id, p.decision_id
            ));
            if p.payload.content_hash(alg).ok().as_ref() != Some(&p.envelope.content_hash) {
                checks.fail(
                    "content_hash",
                    packets_p,
                    entry.clone(),
                    "the content hash does not match the payload",
                );
            }
            if p.envelope.run_id != manifest.run_id
                || p.envelope.scenario_id != manifest.scenario_id
            {
                checks.fail(
                    "ids",
                    packets_p,
                    entry,
                    "the packet belongs to another run or scenario",
                );
            }
        }
    }
    if let Some(submissions) = &submissions {
        for s in submissions {
            let entry = Some(format!("submission {}", s.submission_id));
            if s.payload.content_hash(alg).ok().as_ref() != Some(&s.content_hash) {
                checks.fail(
                    "content_hash",
                    submissions_p,
                    entry.clone(),
                    "the content hash does not match the payload",
                );
            }
            if s.run_id != manifest.run_id {
                checks.fail(
                    "ids",
                    submissions_p,
                    entry,
                    "the submission belongs to another run",
                );
            }
        }
    }

    let replayed = options.replay;
    if replayed {
        match (spec, triggers, gate_evals, decisions, packets) {
            (Some(spec), Some(triggers), Some(gate_evals), Some(decisions), Some(packets)) => {
                let logs = Logs {
                    spec,
                    triggers,
                    gate_evals,
                    decisions,
                    packets,
                };
                super::replay::replay(&logs, &manifest.replay_config(), &mut checks);
            }
            _ => checks.fail(
                "replay",
                MANIFEST_PATH,
                None,
                "cannot replay: a log is missing or unreadable",
            ),
        }
    }
    VerifyReport {
        checked_files,
        failures: checks.failures,
        replayed,
    }
}
