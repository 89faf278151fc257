//! Timestamps. The engine never reads a clock: every time comes from the request.

use serde::{Deserialize, Serialize};

/// A point in time as the caller counts it: wall-clock milliseconds or a logical counter.
///
/// A run fixes its kind when it starts; a trigger of the other kind is rejected, because the
/// two cannot be compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "value",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Timestamp {
    /// Milliseconds since the Unix epoch.
    UnixMillis(i64),
    /// A logical clock value.
    Logical(u64),
}

/// The kind of a [`Timestamp`], for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampKind {
    /// [`Timestamp::UnixMillis`].
    UnixMillis,
    /// [`Timestamp::Logical`].
    Logical,
}

impl std::fmt::Display for TimestampKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UnixMillis => "unix_millis",
            Self::Logical => "logical",
        })
    }
}

impl Timestamp {
    /// The kind of this timestamp.
    #[must_use]
    pub fn kind(self) -> TimestampKind {
        match self {
            Self::UnixMillis(_) => TimestampKind::UnixMillis,
            Self::Logical(_) => TimestampKind::Logical,
        }
    }

    /// This time plus `millis`, or `None` on overflow. For a logical clock one millisecond is one
    /// tick.
    #[must_use]
    pub fn checked_add_millis(self, millis: u64) -> Option<Self> {
        match self {
            Self::UnixMillis(t) => i64::try_from(millis)
                .ok()
                .and_then(|m| t.checked_add(m))
                .map(Self::UnixMillis),
            Self::Logical(t) => t.checked_add(millis).map(Self::Logical),
        }
    }

    /// Whether `self >= other`, or `None` when the kinds differ.
    #[must_use]
    pub fn at_or_after(self, other: Self) -> Option<bool> {
        match (self, other) {
            (Self::UnixMillis(a), Self::UnixMillis(b)) => Some(a >= b),
            (Self::Logical(a), Self::Logical(b)) => Some(a >= b),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_adjacently_tagged() {
        let t = Timestamp::Logical(5);
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"kind":"logical","value":5}"#
        );
        let u: Timestamp = serde_json::from_str(r#"{"kind":"unix_millis","value":-3}"#).unwrap();
        assert_eq!(u, Timestamp::UnixMillis(-3));
        assert!(
            serde_json::from_str::<Timestamp>(r#"{"kind":"logical","value":1,"x":1}"#).is_err()
        );
    }

    #[test]
    fn arithmetic_and_ordering_respect_kinds() {
        assert_eq!(Timestamp::Logical(u64::MAX).checked_add_millis(1), None);
        assert_eq!(Timestamp::UnixMillis(1).checked_add_millis(u64::MAX), None);
        assert_eq!(
            Timestamp::Logical(10).at_or_after(Timestamp::Logical(10)),
            Some(true)
        );
        assert_eq!(
            Timestamp::Logical(9).at_or_after(Timestamp::Logical(10)),
            Some(false)
        );
        assert_eq!(
            Timestamp::Logical(9).at_or_after(Timestamp::UnixMillis(1)),
            None
        );
    }
}
