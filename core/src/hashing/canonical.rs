//! A `serde::Serializer` that writes RFC 8785 canonical JSON straight from the value, without
//! building a `serde_json::Value` tree first: the engine hashes several values on every trigger,
//! and the tree's allocations were most of that cost.
//!
//! The bytes are exactly those of the value's `serde_json::to_value` form written canonically
//! (the property test in the parent module holds the two together): object members are written
//! as they come and reordered, at the object's close, only when their names did not arrive
//! sorted by UTF-16 code units; a repeated name keeps its last value, integers are written
//! exactly, floats the ECMAScript way, and a non-finite float becomes `null`, as `to_value`
//! makes it.

use std::borrow::Cow;
use std::ops::Range;

use serde::ser::{self, Serialize};

use super::HashError;

/// Appends the canonical form of `value` to `out`.
pub(super) fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), HashError> {
    let mut buffer = Buffer {
        bytes: std::mem::take(out),
        scratch: Vec::new(),
        // Enough for the objects the engine hashes (nested a few deep, a dozen members each)
        // without growing; more only grows it.
        members: Vec::with_capacity(32),
    };
    let result = value.serialize(Canonical { out: &mut buffer });
    *out = buffer.bytes;
    result.map_err(|e| HashError::Canonicalization(e.0))
}

/// The output and the working space every object of one value shares: objects close strictly
/// inside out, so one member stack and one reordering buffer serve them all, and a value
/// costs a few allocations rather than several per object.
struct Buffer {
    bytes: Vec<u8>,
    /// Where an object's members are copied while it reorders them.
    scratch: Vec<u8>,
    /// The members of every open object, innermost last: each member's name and where its
    /// `"name":value` bytes lie in `bytes`.
    members: Vec<(Cow<'static, str>, Range<usize>)>,
}

/// Why a value has no canonical form.
#[derive(Debug)]
pub(super) struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly what RFC 8785 requires: `"`, `\` and U+0000..U+001F, with the
    // short forms and lowercase `\u00xx`. Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_integer(n: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn write_float(f: f64, out: &mut Vec<u8>) {
    if f.is_finite() {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

struct Canonical<'a> {
    out: &'a mut Buffer,
}

impl<'a> ser::Serializer for Canonical<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Array<'a>;
    type SerializeTuple = Array<'a>;
    type SerializeTupleStruct = Array<'a>;
    type SerializeTupleVariant = Array<'a>;
    type SerializeMap = Object<'a>;
    type SerializeStruct = Object<'a>;
    type SerializeStructVariant = Object<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .bytes
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        write_integer(v, &mut self.out.bytes);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        match (i64::try_from(v), u64::try_from(v)) {
            (Ok(i), _) => self.serialize_i64(i),
            (_, Ok(u)) => self.serialize_u64(u),
            _ => Err(Error("number out of range".to_owned())),
        }
    }

    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        write_integer(v, &mut self.out.bytes);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        u64::try_from(v)
            .map_err(|_| Error("number out of range".to_owned()))
            .and_then(|u| self.serialize_u64(u))
    }

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        write_float(f64::from(v), &mut self.out.bytes);
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        write_float(v, &mut self.out.bytes);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_string(v.encode_utf8(&mut [0; 4]), &mut self.out.bytes);
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_string(v, &mut self.out.bytes);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        use ser::SerializeSeq as _;
        let mut array = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            array.serialize_element(byte)?;
        }
        array.end()
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.bytes.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        // An object with one member needs no sorting.
        self.out.bytes.push(b'{');
        write_string(variant, &mut self.out.bytes);
        self.out.bytes.push(b':');
        value.serialize(Canonical {
            out: &mut *self.out,
        })?;
        self.out.bytes.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Array<'a>, Error> {
        self.out.bytes.push(b'[');
        Ok(Array {
            out: self.out,
            first: true,
            close: b"]",
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Array<'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Array<'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Array<'a>, Error> {
        self.out.bytes.push(b'{');
        write_string(variant, &mut self.out.bytes);
        self.out.bytes.extend_from_slice(b":[");
        Ok(Array {
            out: self.out,
            first: true,
            close: b"]}",
        })
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Object<'a>, Error> {
        Ok(Object::new(self.out, b"}"))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Object<'a>, Error> {
        Ok(Object::new(self.out, b"}"))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Object<'a>, Error> {
        self.out.bytes.push(b'{');
        write_string(variant, &mut self.out.bytes);
        self.out.bytes.push(b':');
        Ok(Object::new(self.out, b"}}"))
    }
}

/// An array being written; elements go straight to the output.
struct Array<'a> {
    out: &'a mut Buffer,
    first: bool,
    close: &'static [u8],
}

impl Array<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        if !std::mem::replace(&mut self.first, false) {
            self.out.bytes.push(b',');
        }
        value.serialize(Canonical {
            out: &mut *self.out,
        })
    }

    fn close(self) -> Result<(), Error> {
        self.out.bytes.extend_from_slice(self.close);
        Ok(())
    }
}

impl ser::SerializeSeq for Array<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTuple for Array<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTupleStruct for Array<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeTupleVariant for Array<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// An object being written. Members go straight to the output, each `"name":value`; while
/// their names arrive in canonical order (as a struct declared in that order sends them) that
/// is already the canonical form. A name out of order (or repeated) is noted, and the members
/// are reordered once, at the close.
struct Object<'a> {
    out: &'a mut Buffer,
    close: &'static [u8],
    /// Where the members start in the output: just after the `{`.
    body: usize,
    /// Where this object's members start on the shared member stack.
    base: usize,
    in_order: bool,
    key: Option<String>,
}

impl<'a> Object<'a> {
    fn new(out: &'a mut Buffer, close: &'static [u8]) -> Self {
        out.bytes.push(b'{');
        Self {
            body: out.bytes.len(),
            base: out.members.len(),
            out,
            close,
            in_order: true,
            key: None,
        }
    }

    fn member<T: Serialize + ?Sized>(
        &mut self,
        name: Cow<'static, str>,
        value: &T,
    ) -> Result<(), Error> {
        if let Some((last, _)) = self.out.members[self.base..].last() {
            self.in_order &= member_order(last, &name).is_lt();
            self.out.bytes.push(b',');
        }
        let start = self.out.bytes.len();
        write_string(&name, &mut self.out.bytes);
        self.out.bytes.push(b':');
        value.serialize(Canonical {
            out: &mut *self.out,
        })?;
        let end = self.out.bytes.len();
        self.out.members.push((name, start..end));
        Ok(())
    }

    fn close(self) -> Result<(), Error> {
        let Buffer {
            bytes,
            scratch,
            members,
        } = &mut *self.out;
        if !self.in_order {
            scratch.clear();
            scratch.extend_from_slice(&bytes[self.body..]);
            bytes.truncate(self.body);
            let mine = &mut members[self.base..];
            // Stable, so of two members with one name the later stays later; it is the one kept.
            mine.sort_by(|(a, _), (b, _)| member_order(a, b));
            let mut first = true;
            for (i, (name, range)) in mine.iter().enumerate() {
                if mine.get(i + 1).is_some_and(|(next, _)| next == name) {
                    continue;
                }
                if !std::mem::replace(&mut first, false) {
                    bytes.push(b',');
                }
                bytes.extend_from_slice(&scratch[range.start - self.body..range.end - self.body]);
            }
        }
        members.truncate(self.base);
        bytes.extend_from_slice(self.close);
        Ok(())
    }
}

/// RFC 8785 orders member names by their UTF-16 code units. UTF-8 byte order is code point
/// order, which agrees with it except where the first differing characters are one above
/// U+FFFF (lead byte `F0`..`F4`, a surrogate pair in UTF-16) and one in U+E000..U+FFFF (lead
/// byte `EE` or `EF`); only a difference between two such lead bytes needs transcoding.
fn member_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    match x.iter().zip(y).find(|(p, q)| p != q) {
        None => x.len().cmp(&y.len()),
        Some((p, q)) if *p >= 0xEE && *q >= 0xEE => a.encode_utf16().cmp(b.encode_utf16()),
        Some((p, q)) => p.cmp(q),
    }
}

impl ser::SerializeMap for Object<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key = Some(key.serialize(MemberName)?);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let name = self
            .key
            .take()
            .ok_or_else(|| Error("a map value without its key".to_owned()))?;
        self.member(Cow::Owned(name), value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStruct for Object<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(Cow::Borrowed(name), value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Object<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.member(Cow::Borrowed(name), value)
    }

    fn end(self) -> Result<(), Error> {
        self.close()
    }
}

/// A map key as a member name: strings, and the scalars `serde_json` turns into strings.
struct MemberName;

fn key_must_be_a_string() -> Error {
    Error("key must be a string".to_owned())
}

impl ser::Serializer for MemberName {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = ser::Impossible<String, Error>;
    type SerializeTuple = ser::Impossible<String, Error>;
    type SerializeTupleStruct = ser::Impossible<String, Error>;
    type SerializeTupleVariant = ser::Impossible<String, Error>;
    type SerializeMap = ser::Impossible<String, Error>;
    type SerializeStruct = ser::Impossible<String, Error>;
    type SerializeStructVariant = ser::Impossible<String, Error>;

    fn serialize_str(self, v: &str) -> Result<String, Error> {
        Ok(v.to_owned())
    }

    fn serialize_char(self, v: char) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_bool(self, v: bool) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i8(self, v: i8) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i16(self, v: i16) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i32(self, v: i32) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_i64(self, v: i64) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u8(self, v: u8) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u16(self, v: u16) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u32(self, v: u32) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_u64(self, v: u64) -> Result<String, Error> {
        Ok(v.to_string())
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<String, Error> {
        Ok(variant.to_owned())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, Error> {
        value.serialize(self)
    }

    fn serialize_f32(self, _: f32) -> Result<String, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_f64(self, _: f64) -> Result<String, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<String, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_none(self) -> Result<String, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<String, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit(self) -> Result<String, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<String, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_must_be_a_string())
    }
}
