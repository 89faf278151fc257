//! JSON Schemas for core types that appear in tool arguments. The core does not depend on
//! `schemars`; these describe the wire forms its serde implementations accept, and the
//! `tools/list` snapshot test keeps them honest.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A string identifier: 1..=128 bytes, no control characters.
pub(crate) fn id(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 128,
        "pattern": "^[^\\u0000-\\u001f\\u007f]+$"
    })
}

/// An optional string identifier.
pub(crate) fn optional_id(g: &mut SchemaGenerator) -> Schema {
    let mut schema = id(g);
    schema.insert("type".into(), serde_json::json!(["string", "null"]));
    schema
}

/// A tenant or namespace id: an integer of at least 1.
pub(crate) fn scope_id(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "minimum": 1, "maximum": i64::MAX })
}

/// A caller-supplied time; the server never reads a clock to decide.
pub(crate) fn timestamp(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "required": ["kind", "value"],
        "properties": {
            "kind": { "enum": ["unix_millis", "logical"] },
            "value": { "type": "integer" }
        },
        "additionalProperties": false
    })
}

/// An optional time.
pub(crate) fn optional_timestamp(g: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [timestamp(g), { "type": "null" }] })
}

/// A JSON object whose shape is checked by the service, which names the offending path.
pub(crate) fn object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object" })
}

/// Any JSON value.
pub(crate) fn any(_: &mut SchemaGenerator) -> Schema {
    json_schema!(true)
}

/// A packet or submission payload.
pub(crate) fn payload(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "required": ["kind"],
        "properties": { "kind": { "enum": ["json", "bytes", "external"] } }
    })
}

/// An optional payload.
pub(crate) fn optional_payload(g: &mut SchemaGenerator) -> Schema {
    json_schema!({ "anyOf": [payload(g), { "type": "null" }] })
}

/// Where packets are delivered.
pub(crate) fn dispatch_targets(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["kind"],
            "properties": { "kind": { "enum": ["agent", "session", "external", "channel"] } }
        }
    })
}

/// The kind of a trigger.
pub(crate) fn trigger_kind(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": ["agent_request_next", "tick", "external_event", "backend_event"] })
}

/// A page size.
pub(crate) fn limit(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["integer", "null"], "minimum": 1, "maximum": 1000 })
}
