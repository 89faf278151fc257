//! Data shapes: register, get, list.

use super::*;

impl DecisionGate {
    /// Registers an immutable data shape after checking it is a valid JSON Schema 2020-12
    /// within the size limit.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the schema problem, [`Error::TooLarge`],
    /// [`Error::AlreadyExists`].
    pub async fn register_schema(
        &self,
        ctx: &RequestContext,
        record: DataShapeRecord,
    ) -> Result<DataShapeRecord, Error> {
        let size = serde_json::to_vec(&record.schema).map_or(0, |v| v.len() as u64);
        let usage = vec![
            (UsageMetric::SchemasWritten, 1),
            (UsageMetric::RegistryEntries, 1),
            (UsageMetric::StorageBytes, size),
        ];
        let id = format!("{}@{}", record.schema_id, record.version);
        let request_hash = self.hash_request(&record);
        self.call(
            ctx,
            Action::SchemasRegister,
            Resource::new("schema", id),
            request_hash,
            usage,
            async move |effects| {
                if record.tenant_id != ctx.tenant_id || record.namespace_id != ctx.namespace_id {
                    return Err(Error::invalid(
                        "record.tenant_id",
                        "the record's tenant and namespace must be the request's",
                    ));
                }
                crate::schema::check_data_shape(
                    &record.schema,
                    self.config.limits.max_schema_bytes,
                )
                .map_err(|e| match e {
                    crate::schema::SchemaError::TooLarge { limit, actual } => Error::TooLarge {
                        field: "record.schema".into(),
                        limit,
                        actual,
                    },
                    other => Error::invalid("record.schema", other.to_string()),
                })?;
                self.schemas.register(&record, effects).await?;
                Ok((record, Committed::all_if(self.schemas.owns_effects())))
            },
        )
        .await
    }

    /// Fetches a data shape.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn get_schema(
        &self,
        ctx: &RequestContext,
        schema_id: &SchemaId,
        version: &SchemaVersion,
    ) -> Result<DataShapeRecord, Error> {
        let id = format!("{schema_id}@{version}");
        self.call(
            ctx,
            Action::SchemasGet,
            Resource::new("schema", id.clone()),
            None,
            Vec::new(),
            async move |_| {
                let record = self
                    .schemas
                    .get(ctx.tenant_id, ctx.namespace_id, schema_id, version)
                    .await?;
                Ok((
                    record.ok_or(Error::NotFound { what: "schema", id })?,
                    Committed::NOTHING,
                ))
            },
        )
        .await
    }

    /// Lists data shapes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad cursor or limit.
    pub async fn list_schemas(
        &self,
        ctx: &RequestContext,
        page: PageRequest,
    ) -> Result<Page<DataShapeRecord>, Error> {
        let request_hash = self.hash_request(&page);
        self.call(
            ctx,
            Action::SchemasList,
            Resource::new("namespace", ctx.namespace_id.to_string()),
            request_hash,
            Vec::new(),
            async move |_| {
                self.check_page(page.limit)?;
                self.schemas
                    .list(ctx.tenant_id, ctx.namespace_id, &page)
                    .await
                    .map(|p| (p, Committed::NOTHING))
                    .map_err(Error::from)
            },
        )
        .await
    }
}
