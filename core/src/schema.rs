//! Data shapes: JSON Schema (draft 2020-12) documents, checked against the meta-schema when
//! registered and compiled once for validating payloads.

use serde_json::Value;

/// The default limit on a schema's size (compact JSON bytes, inclusive).
pub const DEFAULT_MAX_SCHEMA_BYTES: usize = 1024 * 1024;

/// Why a schema or an instance was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The document is not a valid JSON Schema 2020-12.
    #[error("not a valid JSON Schema 2020-12 at '{path}': {message}")]
    InvalidSchema {
        /// JSON Pointer into the schema.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The document is larger than the limit.
    #[error("schema is {actual} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
        /// The schema's compact size.
        actual: usize,
    },
    /// An instance does not match the schema.
    #[error("does not match the schema at '{path}': {message}")]
    Mismatch {
        /// JSON Pointer into the instance.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Checks `schema` against the 2020-12 meta-schema and compiles it.
///
/// # Errors
/// [`SchemaError::InvalidSchema`] naming where the schema is wrong.
pub fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, SchemaError> {
    let invalid = |e: jsonschema::ValidationError<'_>| SchemaError::InvalidSchema {
        path: e.instance_path().to_string(),
        message: e.to_string(),
    };
    jsonschema::draft202012::meta::validate(schema).map_err(invalid)?;
    jsonschema::draft202012::new(schema).map_err(invalid)
}

/// Checks a data shape for registration: its size, then its validity.
///
/// # Errors
/// [`SchemaError::TooLarge`] or [`SchemaError::InvalidSchema`].
pub fn check_data_shape(schema: &Value, max_bytes: usize) -> Result<(), SchemaError> {
    let actual = serde_json::to_vec(schema)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if actual > max_bytes {
        return Err(SchemaError::TooLarge {
            limit: max_bytes,
            actual,
        });
    }
    compile_schema(schema).map(drop)
}

/// Validates `instance` against `schema`.
///
/// # Errors
/// [`SchemaError::InvalidSchema`] when the schema itself is invalid, [`SchemaError::Mismatch`]
/// naming the first place the instance breaks it.
pub fn validate_instance(schema: &Value, instance: &Value) -> Result<(), SchemaError> {
    let validator = compile_schema(schema)?;
    match validator.iter_errors(instance).next() {
        None => Ok(()),
        Some(e) => Err(SchemaError::Mismatch {
            path: e.instance_path().to_string(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_are_checked_against_the_2020_12_meta_schema() {
        assert!(
            compile_schema(&json!({"type": "object", "properties": {"a": {"type": "integer"}}}))
                .is_ok()
        );
        let err = compile_schema(&json!({"type": "no-such-type"})).unwrap_err();
        assert!(matches!(err, SchemaError::InvalidSchema { .. }), "{err}");
        // `prefixItems` is 2020-12 vocabulary: an array there is valid only in 2020-12.
        assert!(compile_schema(&json!({"prefixItems": [{"type": "string"}]})).is_ok());
    }

    #[test]
    fn instances_are_validated_with_the_failing_path() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}});
        assert!(validate_instance(&schema, &json!({"n": 3})).is_ok());
        let err = validate_instance(&schema, &json!({"n": 4})).unwrap_err();
        assert!(
            matches!(&err, SchemaError::Mismatch { path, .. } if path == "/n"),
            "{err}"
        );
    }

    #[test]
    fn size_limit_is_inclusive() {
        let schema = json!({"type": "string"});
        let size = serde_json::to_vec(&schema).unwrap().len();
        assert!(check_data_shape(&schema, size).is_ok());
        assert_eq!(
            check_data_shape(&schema, size - 1),
            Err(SchemaError::TooLarge {
                limit: size - 1,
                actual: size
            })
        );
    }
}
