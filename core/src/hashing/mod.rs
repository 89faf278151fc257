//! Canonical JSON (RFC 8785) and content digests.
//!
//! Every hash the engine records — spec hashes, evidence hashes, packet and submission content
//! hashes, tool-call hashes, runpack file and root hashes — is a digest of either raw bytes or the
//! RFC 8785 canonical form of a JSON value. Canonical form sorts object keys by UTF-16 code units
//! and writes floats the way ECMAScript does. Integers that fit `i64`/`u64` are written exactly,
//! where strict RFC 8785 would round those beyond 2^53 through a double: two different integers
//! must never hash alike (ADR 0002).

mod canonical;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// A supported digest algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    /// SHA-256, the default for specs and runpacks.
    #[default]
    Sha256,
    /// BLAKE3 (256-bit output); the audit chain uses it.
    Blake3,
}

impl std::fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
        })
    }
}

/// A digest: the algorithm and the lowercase hex of its output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashDigest {
    /// The algorithm that produced `value`.
    pub algorithm: HashAlgorithm,
    /// Lowercase hex of the digest.
    pub value: String,
}

/// Why a value could not be canonicalised or hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The value cannot be represented as canonical JSON (a non-finite float, a map with
    /// non-string keys, or a serializer error).
    #[error("value cannot be canonicalised: {0}")]
    Canonicalization(String),
    /// The canonical form is larger than the caller's limit.
    #[error("canonical JSON is {actual} bytes; the limit is {limit} bytes")]
    SizeLimitExceeded {
        /// The limit in bytes.
        limit: usize,
        /// The size of the canonical form in bytes.
        actual: usize,
    },
}

/// Lowercase hex of a SHA-256 output, into a fixed buffer: `hex::encode` builds the string a
/// char at a time, and every trigger hashes several values. 32 bytes always fill the 64 digits,
/// so the length check cannot fail, and hex digits are always UTF-8.
fn sha256_hex(output: &[u8]) -> String {
    let mut text = [0u8; 64];
    let _ = hex::encode_to_slice(output, &mut text);
    std::str::from_utf8(&text)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// A digest computed piece by piece, for bytes that arrive in chunks (a file hashed as it is
/// read): the same value as [`HashAlgorithm::digest`] of all the pieces at once.
#[derive(Clone, Debug)]
pub enum StreamDigest {
    /// SHA-256 in progress.
    Sha256(sha2::Sha256),
    /// BLAKE3 in progress.
    Blake3(Box<blake3::Hasher>),
}

impl StreamDigest {
    /// Adds the next piece.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    /// The digest of every piece added.
    #[must_use]
    pub fn finish(self) -> HashDigest {
        match self {
            Self::Sha256(h) => HashDigest {
                algorithm: HashAlgorithm::Sha256,
                value: sha256_hex(&h.finalize()),
            },
            Self::Blake3(h) => HashDigest {
                algorithm: HashAlgorithm::Blake3,
                value: h.finalize().to_hex().to_string(),
            },
        }
    }
}

impl HashAlgorithm {
    /// A digest to feed piece by piece.
    #[must_use]
    pub fn stream(self) -> StreamDigest {
        match self {
            Self::Sha256 => StreamDigest::Sha256(sha2::Sha256::new()),
            Self::Blake3 => StreamDigest::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    /// Digests raw bytes.
    #[must_use]
    pub fn digest(self, bytes: &[u8]) -> HashDigest {
        let value = match self {
            Self::Sha256 => sha256_hex(&sha2::Sha256::digest(bytes)),
            Self::Blake3 => blake3::hash(bytes).to_hex().to_string(),
        };
        HashDigest {
            algorithm: self,
            value,
        }
    }

    /// Digests the canonical JSON of `value`.
    ///
    /// # Errors
    /// [`HashError::Canonicalization`] when `value` has no canonical form.
    pub fn digest_json<T: Serialize + ?Sized>(self, value: &T) -> Result<HashDigest, HashError> {
        // A scratch buffer, dropped once hashed: most values the engine hashes on every trigger
        // (requests, answers, records) fit in 1 KiB, one allocation instead of a doubling
        // series from empty.
        let mut bytes = Vec::with_capacity(1024);
        canonical::write(value, &mut bytes)?;
        Ok(self.digest(&bytes))
    }
}

/// The RFC 8785 canonical JSON bytes of `value`.
///
/// # Errors
/// [`HashError::Canonicalization`] when serde cannot express `value` as JSON (a map with
/// non-string keys, a failing `Serialize` impl).
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, HashError> {
    let mut out = Vec::new();
    canonical::write(value, &mut out)?;
    Ok(out)
}

/// The canonical JSON bytes of `value`, refused when longer than `limit` bytes (the limit itself
/// is allowed).
///
/// # Errors
/// [`HashError::SizeLimitExceeded`] over the limit, or [`HashError::Canonicalization`].
pub fn canonical_json_limited<T: Serialize + ?Sized>(
    value: &T,
    limit: usize,
) -> Result<Vec<u8>, HashError> {
    let bytes = canonical_json(value)?;
    if bytes.len() > limit {
        return Err(HashError::SizeLimitExceeded {
            limit,
            actual: bytes.len(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The canonical form written from a `serde_json::Value` tree: the direct reading of RFC 8785
    /// that the streaming serializer must match byte for byte.
    fn write_canonical(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    out.extend_from_slice(i.to_string().as_bytes());
                } else if let Some(u) = n.as_u64() {
                    out.extend_from_slice(u.to_string().as_bytes());
                } else {
                    let f = n.as_f64().unwrap_or(0.0);
                    out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
                }
            }
            // serde_json escapes exactly what RFC 8785 requires: `"`, `\` and U+0000..U+001F,
            // with the short forms and lowercase `\u00xx`.
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_canonical(item, out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
                out.push(b'{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(key, out);
                    out.push(b':');
                    write_canonical(item, out);
                }
                out.push(b'}');
            }
        }
    }

    fn write_string(s: &str, out: &mut Vec<u8>) {
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }

    fn jcs(text: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        String::from_utf8(canonical_json(&value).unwrap()).unwrap()
    }

    /// RFC 8785 §3.2.2: the sample object, with its canonical form.
    #[test]
    fn rfc8785_sample_object() {
        let input = r#"{
            "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
            "literals": [null, true, false]
        }"#;
        assert_eq!(
            jcs(input),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    /// RFC 8785 §3.2.3: property sorting by UTF-16 code units, which puts the astral-plane key
    /// (a surrogate pair) before U+FB33 even though its UTF-8 bytes sort after.
    #[test]
    fn rfc8785_utf16_property_order() {
        let input = r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#;
        let out = jcs(input);
        let order = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ];
        let positions: Vec<usize> = order.iter().map(|v| out.find(v).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{out}");
    }

    /// RFC 8785 Appendix B: ECMAScript number serialisation of IEEE 754 doubles.
    #[test]
    fn rfc8785_number_samples() {
        let samples: [(u64, &str); 24] = [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, expected) in samples {
            let text = String::from_utf8(canonical_json(&f64::from_bits(bits)).unwrap()).unwrap();
            assert_eq!(text, expected, "bits {bits:016x}");
        }
        // NaN and the infinities have no JSON form at all: serde_json cannot build a number from them.
        for bits in [0x7fffffffffffffff_u64, 0x7ff0000000000000] {
            assert!(serde_json::Number::from_f64(f64::from_bits(bits)).is_none());
        }
    }

    #[test]
    fn golden_sha256_digests() {
        let cases = [
            (
                json!({}),
                "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            ),
            (
                json!([]),
                "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
            ),
            (
                json!(1),
                "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b",
            ),
            (
                json!(true),
                "b5bea41b6c623f7c09f1bf24dcae58ebab3c0cdd90ad966bc43a45b44867e12b",
            ),
            (
                json!(null),
                "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                HashAlgorithm::Sha256.digest_json(&value).unwrap().value,
                expected,
                "{value}"
            );
        }
        assert_eq!(
            HashAlgorithm::Sha256.digest(b"").value,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn key_order_and_float_integers_do_not_change_the_hash() {
        let a = HashAlgorithm::Sha256
            .digest_json(&json!({"b": 1, "a": [1.0, 2]}))
            .unwrap();
        let b = HashAlgorithm::Sha256
            .digest_json(&json!({"a": [1, 2.0], "b": 1.0}))
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn integers_beyond_2_pow_53_are_exact_and_never_collide() {
        assert_eq!(
            canonical_json(&json!(u64::MAX)).unwrap(),
            b"18446744073709551615"
        );
        assert_eq!(
            canonical_json(&json!(i64::MIN)).unwrap(),
            b"-9223372036854775808"
        );
        let a = HashAlgorithm::Sha256
            .digest_json(&json!(9_007_199_254_740_993_u64))
            .unwrap();
        let b = HashAlgorithm::Sha256
            .digest_json(&json!(9_007_199_254_740_992_u64))
            .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn strings_escape_only_what_rfc8785_requires() {
        let text = "\u{7f}/\u{1f}é\u{2028}";
        assert_eq!(
            String::from_utf8(canonical_json(&text).unwrap()).unwrap(),
            "\"\u{7f}/\\u001fé\u{2028}\""
        );
    }

    #[test]
    fn blake3_digest_is_hex_of_blake3() {
        let d = HashAlgorithm::Blake3.digest(b"abc");
        assert_eq!(d.algorithm, HashAlgorithm::Blake3);
        assert_eq!(
            d.value,
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(serde_json::to_value(&d).unwrap()["algorithm"], "blake3");
    }

    #[test]
    fn size_limit_is_inclusive() {
        // `[1,2]` is 5 bytes.
        assert!(canonical_json_limited(&json!([1, 2]), 5).is_ok());
        assert_eq!(
            canonical_json_limited(&json!([1, 2]), 4),
            Err(HashError::SizeLimitExceeded {
                limit: 4,
                actual: 5
            })
        );
    }

    fn oracle<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        write_canonical(&serde_json::to_value(value).unwrap(), &mut out);
        out
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\\u{7f}\u{e9}\u{20ac}\u{1f600}\u{fb33}]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-c\u{e9}\u{1f600}\u{fb33}\r1]{0,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Hashing in pieces gives the digest of the whole, with either algorithm.
        #[test]
        fn a_streamed_digest_equals_the_digest_of_the_whole(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            cut in 0usize..4096,
        ) {
            for algorithm in [HashAlgorithm::Sha256, HashAlgorithm::Blake3] {
                let (head, tail) = bytes.split_at(cut.min(bytes.len()));
                let mut stream = algorithm.stream();
                stream.update(head);
                stream.update(tail);
                prop_assert_eq!(stream.finish(), algorithm.digest(&bytes));
            }
        }

        #[test]
        fn streaming_form_matches_the_value_tree_form(value in any_json()) {
            prop_assert_eq!(canonical_json(&value).unwrap(), oracle(&value));
        }
    }

    /// Typed values reach the serializer through serde's other paths (structs, enum
    /// representations, flattening, map keys that are not strings, options, non-finite floats);
    /// each must give the bytes its `to_value` form gives.
    #[test]
    fn typed_values_match_their_value_tree_form() {
        #[derive(Serialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        enum Tagged {
            Plain { zeta: u8, alpha: Option<i32> },
            Wrapped(Inner),
        }
        #[derive(Serialize)]
        enum External {
            Unit,
            Newtype(f32),
            Tuple(i128, u128),
            Struct { b: char, a: (u8, String) },
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Untagged {
            Number(f64),
            Text(&'static str),
        }
        #[derive(Serialize)]
        struct Inner {
            z: Vec<u8>,
            a: (),
        }
        #[derive(Serialize)]
        struct Outer {
            b_field: Tagged,
            a_field: Vec<External>,
            #[serde(flatten)]
            extra: std::collections::BTreeMap<String, Untagged>,
            numbered: std::collections::BTreeMap<u32, bool>,
            flags: std::collections::BTreeMap<bool, ()>,
            nothing: Option<()>,
            newtype: HashAlgorithm,
        }
        let values = [
            Outer {
                b_field: Tagged::Plain {
                    zeta: 9,
                    alpha: None,
                },
                a_field: vec![
                    External::Unit,
                    External::Newtype(1.5),
                    External::Tuple(-3, 18_446_744_073_709_551_615),
                    External::Struct {
                        b: '\u{1f600}',
                        a: (1, "\u{7}".into()),
                    },
                ],
                extra: [
                    (
                        "a_field".to_owned(),
                        Untagged::Text("a repeated name keeps the last"),
                    ),
                    ("nan".to_owned(), Untagged::Number(f64::NAN)),
                    ("inf".to_owned(), Untagged::Number(f64::NEG_INFINITY)),
                    ("tiny".to_owned(), Untagged::Number(5e-324)),
                ]
                .into_iter()
                .collect(),
                numbered: [(10, true), (9, false)].into_iter().collect(),
                flags: [(true, ()), (false, ())].into_iter().collect(),
                nothing: None,
                newtype: HashAlgorithm::Blake3,
            },
            Outer {
                b_field: Tagged::Wrapped(Inner {
                    z: vec![0, 255],
                    a: (),
                }),
                a_field: Vec::new(),
                extra: std::collections::BTreeMap::new(),
                numbered: std::collections::BTreeMap::new(),
                flags: std::collections::BTreeMap::new(),
                nothing: Some(()),
                newtype: HashAlgorithm::Sha256,
            },
        ];
        for value in &values {
            let streamed = canonical_json(value).unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(oracle(value)).unwrap()
            );
        }
        assert!(canonical_json(&u128::MAX).is_err());
        let float_keys: std::collections::BTreeMap<String, f64> = [("x".to_owned(), 1.0)].into();
        assert_eq!(canonical_json(&float_keys).unwrap(), b"{\"x\":1}");
    }
}
