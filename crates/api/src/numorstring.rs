//! Calico's "number or string" values: ports, port ranges and named ports, IP protocols, DSCP.
//!
//! They appear in JSON either as an integer or as a string, exactly as Calico writes them, and
//! are published in the CRDs as `x-kubernetes-int-or-string`.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a number-or-string value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumOrStringError {
    #[error("port {0} is not in 0..=65535")]
    PortOutOfRange(i64),
    #[error("port range {min}:{max} has its minimum above its maximum")]
    PortRangeReversed { min: u16, max: u16 },
    #[error("{0:?} is not a port, a port range MIN:MAX or a valid port name")]
    BadPort(String),
    #[error("protocol number {0} is not in 0..=255")]
    ProtocolOutOfRange(i64),
    #[error("{0:?} is not a protocol: expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1..=255")]
    BadProtocol(String),
    #[error("DSCP {0} is not in 0..=63")]
    DscpOutOfRange(i64),
    #[error("{0:?} is not a DSCP value: expected 0..=63 or a name such as EF, AF11, CS1, DF")]
    BadDscp(String),
}

/// The CRD schema of every int-or-string field, as Kubernetes expects it.
fn int_or_string_schema() -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": "^.*"
    })
}

/// A Calico port: a single port, an inclusive range `MIN:MAX`, or a named port.
///
/// Calico writes a single port as a JSON number and ranges and names as strings; a single
/// port given as a string (`"80"`) is read as the number 80.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    Number(u16),
    Range { min: u16, max: u16 },
    Named(String),
}

impl Port {
    /// Parses Calico's string form of a port.
    pub fn parse(s: &str) -> Result<Port, NumOrStringError> {
        if let Some((a, b)) = s.split_once(':') {
            let min = parse_port_number(a).ok_or_else(|| NumOrStringError::BadPort(s.into()))?;
            let max = parse_port_number(b).ok_or_else(|| NumOrStringError::BadPort(s.into()))?;
            if min > max {
                return Err(NumOrStringError::PortRangeReversed { min, max });
            }
            return Ok(if min == max {
                Port::Number(min)
            } else {
                Port::Range { min, max }
            });
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return parse_port_number(s)
                .map(Port::Number)
                .ok_or_else(|| NumOrStringError::BadPort(s.into()));
        }
        if is_valid_port_name(s) {
            Ok(Port::Named(s.to_string()))
        } else {
            Err(NumOrStringError::BadPort(s.into()))
        }
    }

    /// Whether this is a named port (resolved against endpoint ports at evaluation time).
    pub fn is_named(&self) -> bool {
        matches!(self, Port::Named(_))
    }

    /// Inclusive numeric range, `None` for a named port.
    pub fn range(&self) -> Option<(u16, u16)> {
        match self {
            Port::Number(p) => Some((*p, *p)),
            Port::Range { min, max } => Some((*min, *max)),
            Port::Named(_) => None,
        }
    }
}

fn parse_port_number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok()
}

/// Calico accepts port names of 1 to 128 characters from `[a-zA-Z0-9_.-]`.
fn is_valid_port_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(p) => write!(f, "{p}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
            Port::Named(n) => f.write_str(n),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Number(p) => s.serialize_u16(*p),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, a range \"MIN:MAX\" or a port name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port::Number)
                    .map_err(|_| E::custom(NumOrStringError::PortOutOfRange(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                Port::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Port {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        int_or_string_schema()
    }
}

/// An IP protocol: a name Calico knows or a protocol number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Number(u8),
    /// One of `TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `UDPLite`, kept as written.
    Name(String),
}

/// Protocol names Calico accepts, with their IANA numbers.
pub const PROTOCOL_NAMES: [(&str, u8); 6] = [
    ("TCP", 6),
    ("UDP", 17),
    ("ICMP", 1),
    ("ICMPv6", 58),
    ("SCTP", 132),
    ("UDPLite", 136),
];

impl Protocol {
    pub fn parse(s: &str) -> Result<Protocol, NumOrStringError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u8>()
                .map(Protocol::Number)
                .map_err(|_| NumOrStringError::BadProtocol(s.into()));
        }
        // Calico's v3 API takes the names exactly as listed (`tcp` is the v1 spelling).
        if PROTOCOL_NAMES.iter().any(|(n, _)| *n == s) {
            Ok(Protocol::Name(s.to_string()))
        } else {
            Err(NumOrStringError::BadProtocol(s.into()))
        }
    }

    /// The IANA protocol number.
    pub fn number(&self) -> u8 {
        match self {
            Protocol::Number(n) => *n,
            Protocol::Name(name) => PROTOCOL_NAMES
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, num)| *num),
        }
    }

    /// Whether rules with this protocol may match on ports. Calico allows ports with TCP, UDP
    /// and SCTP only (not UDPLite, although it has ports on the wire).
    pub fn supports_ports(&self) -> bool {
        matches!(self.number(), 6 | 17 | 132)
    }

    /// Whether this is ICMP (1) or ICMPv6 (58).
    pub fn is_icmp(&self) -> bool {
        matches!(self.number(), 1 | 58)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Number(n) => write!(f, "{n}"),
            Protocol::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            Protocol::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a protocol name or number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(NumOrStringError::ProtocolOutOfRange(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                Protocol::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Protocol {
    fn schema_name() -> Cow<'static, str> {
        "Protocol".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        int_or_string_schema()
    }
}

/// A DSCP value: a number 0..=63 or one of the standard names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dscp {
    Number(u8),
    Name(String),
}

const DSCP_NAMES: [&str; 22] = [
    "DF", "EF", "AF11", "AF12", "AF13", "AF21", "AF22", "AF23", "AF31", "AF32", "AF33", "AF41",
    "AF42", "AF43", "CS0", "CS1", "CS2", "CS3", "CS4", "CS5", "CS6", "CS7",
];

impl Serialize for Dscp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dscp::Number(n) => s.serialize_u8(*n),
            Dscp::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Dscp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dscp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a DSCP number or name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dscp, E> {
                match u8::try_from(v) {
                    Ok(n) if n <= 63 => Ok(Dscp::Number(n)),
                    _ => Err(E::custom(NumOrStringError::DscpOutOfRange(v))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dscp, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dscp, E> {
                if DSCP_NAMES.contains(&v) {
                    Ok(Dscp::Name(v.to_string()))
                } else {
                    Err(E::custom(NumOrStringError::BadDscp(v.into())))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Dscp {
    fn schema_name() -> Cow<'static, str> {
        "Dscp".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        int_or_string_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_in_calico_forms() {
        assert_eq!(Port::parse("80"), Ok(Port::Number(80)));
        assert_eq!(
            Port::parse("1000:2000"),
            Ok(Port::Range {
                min: 1000,
                max: 2000
            })
        );
        assert_eq!(Port::parse("http-alt"), Ok(Port::Named("http-alt".into())));
        assert_eq!(
            Port::parse("2000:1000"),
            Err(NumOrStringError::PortRangeReversed {
                min: 2000,
                max: 1000
            })
        );
        assert!(Port::parse("70000").is_err());
        assert!(Port::parse("1:70000").is_err());
        assert!(Port::parse("bad name").is_err());
        assert!(Port::parse("").is_err());
    }

    #[test]
    fn ports_serialize_numbers_as_numbers_and_ranges_as_strings() {
        let ports: Vec<Port> = serde_json::from_str(r#"[80, "443", "1:2", "dns"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&ports).unwrap(),
            r#"[80,443,"1:2","dns"]"#
        );
        assert!(serde_json::from_str::<Port>("65536").is_err());
        assert!(serde_json::from_str::<Port>("-1").is_err());
    }

    #[test]
    fn protocols_keep_their_written_form() {
        let p: Protocol = serde_json::from_str(r#""UDPLite""#).unwrap();
        assert!(
            !p.supports_ports(),
            "Calico allows ports only with TCP, UDP and SCTP"
        );
        assert!(
            serde_json::from_str::<Protocol>(r#""SCTP""#)
                .unwrap()
                .supports_ports()
        );
        assert!(
            serde_json::from_str::<Protocol>(r#""tcp""#).is_err(),
            "names are case-sensitive"
        );
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""UDPLite""#);
        let n: Protocol = serde_json::from_str("58").unwrap();
        assert!(n.is_icmp());
        assert!(serde_json::from_str::<Protocol>("256").is_err());
        assert!(serde_json::from_str::<Protocol>(r#""GRE""#).is_err());
    }

    #[test]
    fn dscp_accepts_numbers_and_names() {
        assert_eq!(
            serde_json::from_str::<Dscp>("46").unwrap(),
            Dscp::Number(46)
        );
        assert_eq!(
            serde_json::from_str::<Dscp>(r#""EF""#).unwrap(),
            Dscp::Name("EF".into())
        );
        assert!(serde_json::from_str::<Dscp>("64").is_err());
        assert!(serde_json::from_str::<Dscp>(r#""XX""#).is_err());
    }
}
