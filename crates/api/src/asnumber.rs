//! BGP AS numbers as Calico reads and writes them: a plain number (`64512`) or the dotted
//! 4-byte form (`1.10` meaning 1 * 65536 + 10). Calico always writes a plain JSON number.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsNumberError {
    #[error(
        "{0:?} is not an AS number: expected 0..=4294967295 or the dotted form HIGH.LOW (each 0..=65535)"
    )]
    Invalid(String),
}

/// A 4-byte BGP AS number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct AsNumber(pub u32);

impl AsNumber {
    /// The dotted `HIGH.LOW` notation (RFC 5396 "asdot+").
    pub fn to_dotted(self) -> String {
        format!("{}.{}", self.0 >> 16, self.0 & 0xffff)
    }
}

impl FromStr for AsNumber {
    type Err = AsNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AsNumberError::Invalid(s.to_string());
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        match s.split_once('.') {
            Some((hi, lo)) => {
                if !digits(hi) || !digits(lo) {
                    return Err(bad());
                }
                let hi: u16 = hi.parse().map_err(|_| bad())?;
                let lo: u16 = lo.parse().map_err(|_| bad())?;
                Ok(AsNumber((u32::from(hi) << 16) | u32::from(lo)))
            }
            None if digits(s) => s.parse().map(AsNumber).map_err(|_| bad()),
            None => Err(bad()),
        }
    }
}

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u32> for AsNumber {
    fn from(v: u32) -> Self {
        AsNumber(v)
    }
}

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AsNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number (64512 or dotted 1.10)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(AsNumberError::Invalid(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AsNumber, E> {
                u32::try_from(v)
                    .map(AsNumber)
                    .map_err(|_| E::custom(AsNumberError::Invalid(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AsNumber, E> {
                // YAML reads `1.10` as the float 1.1, losing the digits the user wrote.
                Err(E::custom(format!(
                    "{v} is not an AS number; write the dotted form in quotes, e.g. \"1.10\""
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AsNumber, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for AsNumber {
    fn schema_name() -> Cow<'static, str> {
        "AsNumber".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "format": "int32"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dotted_form_is_high_times_65536_plus_low() {
        assert_eq!("1.10".parse::<AsNumber>(), Ok(AsNumber(65546)));
        assert_eq!("65535.65535".parse::<AsNumber>(), Ok(AsNumber(u32::MAX)));
        assert_eq!("64512".parse::<AsNumber>(), Ok(AsNumber(64512)));
        for bad in [
            "",
            "1.",
            ".1",
            "65536.0",
            "1.65536",
            "4294967296",
            "-1",
            "a.b",
            "1.2.3",
        ] {
            assert!(bad.parse::<AsNumber>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn json_accepts_number_and_strings_and_writes_a_number() {
        let v: Vec<AsNumber> = serde_json::from_str(r#"[64512, "64513", "1.10"]"#).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "[64512,64513,65546]");
        assert!(serde_json::from_str::<AsNumber>("4294967296").is_err());
        let e = serde_json::from_str::<AsNumber>("1.1").unwrap_err();
        assert!(e.to_string().contains("in quotes"), "{e}");
    }

    proptest! {
        #[test]
        fn plain_and_dotted_forms_round_trip(n in any::<u32>()) {
            let a = AsNumber(n);
            prop_assert_eq!(a.to_string().parse::<AsNumber>(), Ok(a));
            prop_assert_eq!(a.to_dotted().parse::<AsNumber>(), Ok(a));
        }
    }
}
