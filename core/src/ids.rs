//! Identifiers.
//!
//! String identifiers are opaque, but not unbounded: every one is non-empty, at most
//! [`MAX_ID_BYTES`] bytes of UTF-8 and free of control characters (DESIGN.md §4.1). They are
//! checked when they are built or deserialised, so an invalid id cannot exist in memory and a
//! deserialisation error names the JSON path of the bad id.
//!
//! Tenant and namespace ids are non-zero integers that fit a signed 64-bit column, because every
//! SQL backend stores them as `BIGINT`.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The longest identifier accepted, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 128;

/// Why a value is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The identifier is the empty string.
    #[error("id must not be empty")]
    Empty,
    /// The identifier is longer than [`MAX_ID_BYTES`].
    #[error("id is {actual} bytes long; the limit is {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
        /// The length of the rejected id.
        actual: usize,
    },
    /// The identifier contains a control character.
    #[error("id contains the control character U+{0:04X}")]
    ControlCharacter(u32),
    /// A numeric id is zero.
    #[error("id must be at least 1")]
    Zero,
    /// A numeric id does not fit a signed 64-bit integer.
    #[error("id must be at most {max}", max = i64::MAX)]
    OutOfRange,
}

fn check_string_id(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong {
            max: MAX_ID_BYTES,
            actual: value.len(),
        });
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(IdError::ControlCharacter(u32::from(c)));
    }
    Ok(())
}

/// The text of a string id: shared, because ids are copied far more often than they are
/// built (a trigger copies a few dozen into its journal entry, its answer and its audit
/// record), and a copy of a shared string is a reference count, not an allocation.
type IdText = Arc<str>;

/// Reads a string id's text and checks it, so a deserialisation error names the bad id's path.
struct IdVisitor;

impl serde::de::Visitor<'_> for IdVisitor {
    type Value = IdText;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<IdText, E> {
        check_string_id(value).map_err(E::custom)?;
        Ok(IdText::from(value))
    }
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(IdText);

        // Written as the string it holds, without the copy `#[serde(into = "String")]` makes:
        // every trigger serialises a few dozen ids (hashes, answer, audit).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        // Read from a borrowed string where the format allows it: one allocation, the shared
        // text, instead of an owned `String` and then its copy.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(IdVisitor).map(Self)
            }
        }

        impl $name {
            /// Builds the id, checking the identifier rules of this module.
            ///
            /// # Errors
            /// [`IdError`] when the value is empty, too long or holds a control character.
            pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
                let value = value.as_ref();
                check_string_id(value)?;
                Ok(Self(IdText::from(value)))
            }

            /// The id as a string slice.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.as_ref().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A scenario, unique within one (tenant, namespace).
    ScenarioId
);
string_id!(
    /// The author's version label of a scenario spec.
    SpecVersion
);
string_id!(
    /// A run of a scenario, unique within one (tenant, namespace).
    RunId
);
string_id!(
    /// A stage of a scenario.
    StageId
);
string_id!(
    /// A gate, unique across all stages of a scenario.
    GateId
);
string_id!(
    /// A condition of a scenario.
    ConditionId
);
string_id!(
    /// A packet, unique across all stages of a scenario.
    PacketId
);
string_id!(
    /// An evidence provider.
    ProviderId
);
string_id!(
    /// A check offered by an evidence provider.
    CheckId
);
string_id!(
    /// A trigger; a run decides each trigger id once.
    TriggerId
);
string_id!(
    /// A decision, `decision-{seq}`.
    DecisionId
);

impl DecisionId {
    /// The id of a run's decision number `seq`, `decision-{seq}`: valid by construction (ASCII,
    /// at most 29 bytes), so building it cannot fail.
    #[must_use]
    pub fn for_seq(seq: u64) -> Self {
        Self(IdText::from(format!("decision-{seq}")))
    }
}
string_id!(
    /// A caller-chosen id that ties together the records of one logical request.
    CorrelationId
);
string_id!(
    /// A data-shape schema.
    SchemaId
);
string_id!(
    /// A version of a data-shape schema.
    SchemaVersion
);
string_id!(
    /// A policy named by a scenario.
    PolicyId
);
string_id!(
    /// A submission attached to a run.
    SubmissionId
);

macro_rules! numeric_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "u64", into = "u64")]
        pub struct $name(NonZeroU64);

        impl $name {
            /// Id 1, the one an unconfigured server uses.
            pub const DEFAULT: Self = Self(NonZeroU64::MIN);

            /// Builds the id.
            ///
            /// # Errors
            /// [`IdError::Zero`] for 0 and [`IdError::OutOfRange`] above `i64::MAX`.
            pub fn new(value: u64) -> Result<Self, IdError> {
                if value > i64::MAX.unsigned_abs() {
                    return Err(IdError::OutOfRange);
                }
                NonZeroU64::new(value).map(Self).ok_or(IdError::Zero)
            }

            /// The id as an integer.
            #[must_use]
            pub fn get(self) -> u64 {
                self.0.get()
            }

            /// The id as the signed integer SQL backends store.
            #[must_use]
            pub fn as_i64(self) -> i64 {
                // `new` guarantees the value fits.
                i64::try_from(self.0.get()).unwrap_or(i64::MAX)
            }
        }

        impl TryFrom<u64> for $name {
            type Error = IdError;
            fn try_from(value: u64) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for u64 {
            fn from(id: $name) -> u64 {
                id.get()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

numeric_id!(
    /// A tenant: the unit of isolation and billing.
    TenantId
);
numeric_id!(
    /// A namespace inside a tenant.
    NamespaceId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_ids_enforce_length_emptiness_and_control_characters() {
        assert!(RunId::new("run-1").is_ok());
        assert_eq!(RunId::new(""), Err(IdError::Empty));
        assert!(
            RunId::new("é".repeat(64)).is_ok(),
            "128 bytes is the limit, inclusive"
        );
        assert_eq!(
            RunId::new("a".repeat(129)),
            Err(IdError::TooLong {
                max: 128,
                actual: 129
            })
        );
        assert_eq!(RunId::new("a\nb"), Err(IdError::ControlCharacter(0x0a)));
        assert_eq!(RunId::new("a\u{7f}"), Err(IdError::ControlCharacter(0x7f)));
    }

    #[test]
    fn numeric_ids_are_nonzero_and_fit_bigint() {
        assert_eq!(TenantId::new(0), Err(IdError::Zero));
        assert_eq!(TenantId::new(u64::MAX), Err(IdError::OutOfRange));
        assert_eq!(
            TenantId::new(i64::MAX as u64).map(TenantId::as_i64),
            Ok(i64::MAX)
        );
        let err = serde_json::from_str::<NamespaceId>("0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1"), "{err}");
    }

    #[test]
    fn ids_serialise_as_plain_values() {
        let id = ScenarioId::new("s").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"s\"");
        assert_eq!(
            serde_json::to_string(&TenantId::new(7).unwrap()).unwrap(),
            "7"
        );
    }
}
