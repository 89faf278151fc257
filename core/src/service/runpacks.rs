//! Runpacks: export through the runpack store, and verification of stored runpacks.

use super::*;

/// The answer to `export_runpack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportResult {
    /// Where the runpack is stored; `export_id` is derived from its root hash.
    pub key: RunpackKey,
    /// Its manifest.
    pub manifest: RunpackManifest,
    /// The stored manifest's URI, when this call wrote it (`None` when the same export was
    /// already stored).
    pub uri: Option<String>,
    /// The verification of the stored runpack, when asked for.
    pub report: Option<VerifyReport>,
}

impl DecisionGate {
    /// Exports a run as a runpack through the runpack store: the artifacts first, the manifest
    /// (and its signature) last, so a reader never finds a manifest whose files are missing. The
    /// export id is derived from the revision and root hash, and a stored export is never
    /// overwritten: exporting unchanged content again returns the stored export.
    ///
    /// With `verify`, the stored runpack is read back and verified in the same call (one
    /// authorization, one audit event): once the export is stored, a failure to read it back
    /// is a failed check in the report, never an error.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown run, [`Error::Unavailable`] when the store fails,
    /// [`Error::Corrupt`] when the run does not match its spec.
    pub async fn export_runpack(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        run_id: &RunId,
        generated_at: Timestamp,
        verify: Option<&VerifyOptions>,
    ) -> Result<ExportResult, Error> {
        let usage = vec![(UsageMetric::RunpackExports, 1)];
        let resource = Resource::new("run", run_id.to_string());
        self.call(
            ctx,
            Action::RunpackExport,
            resource,
            None,
            usage,
            async move |effects| {
                let key = Self::run_key(ctx, run_id);
                let head = self.load_head(&key, scenario_id).await?;
                let plan = self
                    .plan(
                        ctx.tenant_id,
                        ctx.namespace_id,
                        scenario_id,
                        Some(&head.spec_hash),
                    )
                    .await?;
                let mut entries = Vec::new();
                self.for_each_entry(&key, head.revision, |e| entries.push(e.clone()))
                    .await?;
                let input = runpack::ExportInput {
                    spec: plan.spec(),
                    head: &head,
                    entries: &entries,
                    generated_at,
                    config: &self.config,
                    signer: self.signer.as_ref(),
                };
                let pack = runpack::export(&input).map_err(|e| Error::Corrupt(e.to_string()))?;
                let root = &pack.manifest.integrity.root_hash.value;
                let export_id = format!("rev{}-{}", head.revision, &root[..root.len().min(16)]);
                let key = RunpackKey {
                    run: key,
                    export_id,
                };
                // Exports are immutable: the same content exported again returns the stored one.
                if let Some(bytes) = self.runpacks.get_file(&key, runpack::MANIFEST_PATH).await? {
                    let manifest = serde_json::from_slice(&bytes).map_err(|e| {
                        Error::Corrupt(format!("stored manifest of {}: {e}", key.export_id))
                    })?;
                    let report = self.verify_stored(&key, verify).await;
                    return Ok((
                        ExportResult {
                            key,
                            manifest,
                            uri: None,
                            report,
                        },
                        Committed::NOTHING,
                    ));
                }
                // The export is metered before its files are written: a quota refuses it while
                // nothing is written, and a written export is never uncounted (a failed write
                // stays counted; a retry with the same idempotency key is not counted again).
                self.usage.record(&effects.usage).await?;
                let last = [runpack::SIGNATURE_PATH, runpack::MANIFEST_PATH];
                for (path, bytes) in pack
                    .files
                    .iter()
                    .filter(|(p, _)| !last.contains(&p.as_str()))
                {
                    self.runpacks.put_file(&key, path, bytes).await?;
                }
                let mut uri = None;
                for path in last {
                    if let Some(bytes) = pack.files.get(path) {
                        uri = Some(self.runpacks.put_file(&key, path, bytes).await?);
                    }
                }
                let report = self.verify_stored(&key, verify).await;
                Ok((
                    ExportResult {
                        key,
                        manifest: pack.manifest,
                        uri,
                        report,
                    },
                    Committed::USAGE_RECORDED,
                ))
            },
        )
        .await
    }

    /// Verifies a stored runpack of a run in the caller's scope.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no such runpack is stored, [`Error::Unavailable`] when the store
    /// fails. A runpack that fails verification is a report with failures, not an error.
    pub async fn verify_runpack(
        &self,
        ctx: &RequestContext,
        run_id: &RunId,
        export_id: &str,
        options: &VerifyOptions,
    ) -> Result<VerifyReport, Error> {
        let resource = Resource::new("runpack", format!("{run_id}/{export_id}"));
        self.call(
            ctx,
            Action::RunpackVerify,
            resource,
            None,
            Vec::new(),
            async move |_| {
                let key = RunpackKey {
                    run: Self::run_key(ctx, run_id),
                    export_id: export_id.to_owned(),
                };
                let files = self.stored_files(&key).await?;
                if files.is_empty() {
                    return Err(Error::NotFound {
                        what: "runpack",
                        id: format!("{run_id}/{export_id}"),
                    });
                }
                Ok((
                    runpack::verify(&runpack::files_reader(&files), options),
                    Committed::NOTHING,
                ))
            },
        )
        .await
    }

    /// Every file of a stored runpack.
    async fn stored_files(&self, key: &RunpackKey) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        let mut files = BTreeMap::new();
        for path in self.runpacks.list_files(key).await? {
            if let Some(bytes) = self.runpacks.get_file(key, &path).await? {
                files.insert(path, bytes);
            }
        }
        Ok(files)
    }

    /// Verifies a runpack this call just stored, when asked: a store that cannot read it back
    /// leaves files missing, which the report names as failed checks.
    async fn verify_stored(
        &self,
        key: &RunpackKey,
        options: Option<&VerifyOptions>,
    ) -> Option<VerifyReport> {
        let options = options?;
        let files = self.stored_files(key).await.unwrap_or_else(|e| {
            tracing::warn!(export_id = %key.export_id, "reading back a stored runpack: {e}");
            BTreeMap::new()
        });
        Some(runpack::verify(&runpack::files_reader(&files), options))
    }
}
