//! The policy settings of FelixConfiguration: failsafe ports and what happens to traffic from
//! workloads to the host. Felix's precedence: a `FELIX_<FIELD>` environment variable (e.g.
//! `FELIX_DEFAULTENDPOINTTOHOSTACTION=ACCEPT`, as Calico's manifests set) wins over the
//! `node.<nodename>` FelixConfiguration, which wins over the global `default`; a field set
//! nowhere keeps Calico's default. An empty variable counts as unset. (Felix's config file,
//! between the environment and the datastore, does not exist in calico-rs.)
//!
//! Absent and empty are different: `failsafeInboundHostPorts: []` disables the inbound
//! failsafe ports, an absent field keeps Calico's defaults. That is why this reads the stored
//! JSON document, not the typed resource (whose empty list is indistinguishable from absent).

use ipnet::IpNet;
use serde_json::Value;

use crate::model::{Failsafe, FailsafePort, Protocol};

/// Felix's `DefaultEndpointToHostAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointToHostAction {
    /// Drop whatever the workload's egress policy says (Calico's default).
    #[default]
    Drop,
    /// After the workload's egress policy, hand the packet back to the host's own rules.
    Return,
    /// After the workload's egress policy, accept.
    Accept,
}

/// Felix's default `interfacePrefix`.
pub const DEFAULT_INTERFACE_PREFIX: &str = calico_api::names::WORKLOAD_IFACE_PREFIX;

/// What the policy dataplane takes from FelixConfiguration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixPolicySettings {
    /// Failsafe ports (Calico's defaults unless configured).
    pub failsafe: Failsafe,
    /// Traffic from workloads to the host.
    pub endpoint_to_host: EndpointToHostAction,
    /// Prefixes of workload interface names (`interfacePrefix`, default `cali`): traffic on
    /// such an interface that has no endpoint is dropped.
    pub interface_prefixes: Vec<String>,
}

impl Default for FelixPolicySettings {
    fn default() -> Self {
        FelixPolicySettings {
            failsafe: Failsafe::default(),
            endpoint_to_host: EndpointToHostAction::default(),
            interface_prefixes: vec![DEFAULT_INTERFACE_PREFIX.to_owned()],
        }
    }
}

/// Felix's `interfacePrefix` value: one prefix or a comma-separated list (`cali,tap`). Each
/// must be 1 to 15 characters (an interface name has at most 15) without `*`, space or `/`.
pub fn parse_interface_prefixes(value: &str) -> Result<Vec<String>, String> {
    let out: Vec<String> = value.split(',').map(|p| p.trim().to_owned()).collect();
    for p in &out {
        if p.is_empty() {
            return Err(format!(
                "{value:?} has an empty prefix, which would match every interface"
            ));
        }
        if p.len() > 15 || p.contains(['*', ' ', '/']) {
            return Err(format!(
                "{p:?} is not the start of an interface name (1-15 characters, no '*', ' ' or '/')"
            ));
        }
    }
    Ok(out)
}

/// A FelixConfiguration field (or Felix environment variable) that does not convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixConfigError {
    /// Resource name (`default`, `node.<name>`), or [`ENVIRONMENT`].
    pub name: String,
    /// Field path, or the variable's name.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

/// [`FelixConfigError::name`] of a refused environment variable.
pub const ENVIRONMENT: &str = "environment";

impl std::fmt::Display for FelixConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name == ENVIRONMENT {
            write!(f, "environment variable {}: {}", self.field, self.reason)
        } else {
            write!(
                f,
                "FelixConfiguration {}: {}: {}",
                self.name, self.field, self.reason
            )
        }
    }
}

impl std::error::Error for FelixConfigError {}

/// The settings for `node` from the process environment and the stored FelixConfiguration
/// documents (any number, in any order; only `default` and `node.<node>` matter).
pub fn settings_for(docs: &[Value], node: &str) -> Result<FelixPolicySettings, FelixConfigError> {
    settings_with_env(&|k: &str| std::env::var(k).ok(), docs, node)
}

/// [`settings_for`] with `env` for the process environment.
pub fn settings_with_env(
    env: &dyn Fn(&str) -> Option<String>,
    docs: &[Value],
    node: &str,
) -> Result<FelixPolicySettings, FelixConfigError> {
    let by_name = |want: &str| {
        docs.iter()
            .find(|d| d.pointer("/metadata/name").and_then(Value::as_str) == Some(want))
    };
    let mut out = FelixPolicySettings::default();
    // Global first, the node's own resource last: its fields win.
    for name in ["default".to_string(), format!("node.{node}")] {
        let Some(doc) = by_name(&name) else { continue };
        let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(v) = spec.get("failsafeInboundHostPorts") {
            out.failsafe.inbound = ports(&name, "spec.failsafeInboundHostPorts", v)?;
        }
        if let Some(v) = spec.get("failsafeOutboundHostPorts") {
            out.failsafe.outbound = ports(&name, "spec.failsafeOutboundHostPorts", v)?;
        }
        match spec.get("interfacePrefix") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => {
                out.interface_prefixes = parse_interface_prefixes(s)
                    .map_err(|reason| err(&name, "spec.interfacePrefix", reason))?;
            }
            Some(other) => {
                return Err(err(
                    &name,
                    "spec.interfacePrefix",
                    format!("expected a string, got {other}"),
                ));
            }
        }
        match spec.get("defaultEndpointToHostAction") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => {
                out.endpoint_to_host = endpoint_to_host(s).ok_or_else(|| {
                    err(
                        &name,
                        "spec.defaultEndpointToHostAction",
                        format!("{s:?} is not Drop, Return or Accept"),
                    )
                })?
            }
            Some(other) => {
                return Err(err(
                    &name,
                    "spec.defaultEndpointToHostAction",
                    format!("expected a string, got {other}"),
                ));
            }
        }
    }
    apply_env(env, &mut out)?;
    Ok(out)
}

/// The environment's values, over whatever the resources set.
fn apply_env(
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut FelixPolicySettings,
) -> Result<(), FelixConfigError> {
    let var = |name: &'static str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(|v| (name, v))
    };
    if let Some((name, v)) = var("FELIX_FAILSAFEINBOUNDHOSTPORTS") {
        out.failsafe.inbound = env_ports(name, &v)?;
    }
    if let Some((name, v)) = var("FELIX_FAILSAFEOUTBOUNDHOSTPORTS") {
        out.failsafe.outbound = env_ports(name, &v)?;
    }
    if let Some((name, v)) = var("FELIX_INTERFACEPREFIX") {
        out.interface_prefixes =
            parse_interface_prefixes(&v).map_err(|reason| err(ENVIRONMENT, name, reason))?;
    }
    if let Some((name, v)) = var("FELIX_DEFAULTENDPOINTTOHOSTACTION") {
        out.endpoint_to_host = endpoint_to_host(&v).ok_or_else(|| {
            err(
                ENVIRONMENT,
                name,
                format!("{v:?} is not Drop, Return or Accept"),
            )
        })?;
    }
    Ok(())
}

/// `Drop`, `Return` or `Accept`, in any case (Felix's manifests write `ACCEPT`).
fn endpoint_to_host(s: &str) -> Option<EndpointToHostAction> {
    match s.to_ascii_lowercase().as_str() {
        "drop" => Some(EndpointToHostAction::Drop),
        "return" => Some(EndpointToHostAction::Return),
        "accept" => Some(EndpointToHostAction::Accept),
        _ => None,
    }
}

/// Felix's environment form of the failsafe ports: `none`, or a comma-separated list of
/// `port`, `protocol:port` or `protocol:net:port` (`tcp:22,udp:68,tcp:10.0.0.0/8:179`;
/// an IPv6 net keeps its colons: `tcp:fd00::/64:22`).
fn env_ports(name: &str, value: &str) -> Result<Vec<FailsafePort>, FelixConfigError> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim) {
        let bad = |why: &str| err(ENVIRONMENT, name, format!("{item:?} {why}"));
        let (rest, port) = match item.rsplit_once(':') {
            Some((rest, port)) => (Some(rest), port),
            None => (None, item),
        };
        let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            bad("has no port 1-65535 (expected protocol:port or protocol:net:port)")
        })?;
        let (protocol, net) = match rest {
            None => (None, None),
            Some(rest) => match rest.split_once(':') {
                Some((p, n)) => (Some(p), Some(n)),
                None => (Some(rest), None),
            },
        };
        let protocol = match protocol.map(str::to_ascii_lowercase).as_deref() {
            None | Some("tcp") => Protocol::TCP,
            Some("udp") => Protocol::UDP,
            Some("sctp") => Protocol::SCTP,
            Some(_) => return Err(bad("has a protocol other than tcp, udp or sctp")),
        };
        let net = match net {
            None => None,
            Some(n) => Some(parse_net(n).ok_or_else(|| bad("has a net that is not a CIDR"))?),
        };
        out.push(FailsafePort {
            protocol,
            port,
            net,
        });
    }
    Ok(out)
}

fn err(name: &str, field: &str, reason: impl Into<String>) -> FelixConfigError {
    FelixConfigError {
        name: name.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A list of `{protocol, port, net}`; protocol defaults to TCP, net to any.
fn ports(name: &str, field: &str, v: &Value) -> Result<Vec<FailsafePort>, FelixConfigError> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        other => return Err(err(name, field, format!("expected a list, got {other}"))),
    };
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let at = |sub: &str| format!("{field}[{i}]{sub}");
        let port = p
            .get("port")
            .and_then(Value::as_u64)
            .filter(|n| (1..=65535).contains(n))
            .ok_or_else(|| err(name, &at(".port"), "a port 1-65535 is required"))?
            as u16;
        let protocol = match p.get("protocol").and_then(Value::as_str) {
            None | Some("") => Protocol::TCP,
            Some(text) => match text.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::TCP,
                "udp" => Protocol::UDP,
                "sctp" => Protocol::SCTP,
                _ => {
                    return Err(err(
                        name,
                        &at(".protocol"),
                        format!("{text:?} is not TCP, UDP or SCTP"),
                    ));
                }
            },
        };
        let net = match p.get("net").and_then(Value::as_str) {
            None | Some("") => None,
            Some(text) => Some(parse_net(text).ok_or_else(|| {
                err(
                    name,
                    &at(".net"),
                    format!("{text:?} is not a CIDR or address"),
                )
            })?),
        };
        out.push(FailsafePort {
            protocol,
            port,
            net,
        });
    }
    Ok(out)
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fc(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
               "metadata": {"name": name}, "spec": spec})
    }

    fn with_env(
        vars: &[(&str, &str)],
        docs: &[Value],
    ) -> Result<FelixPolicySettings, FelixConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings_with_env(
            &move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            docs,
            "n1",
        )
    }

    #[test]
    fn the_environment_wins_over_both_resources() {
        let docs = [
            fc("default", json!({"defaultEndpointToHostAction": "Drop"})),
            fc(
                "node.n1",
                json!({"defaultEndpointToHostAction": "Return",
                                  "failsafeInboundHostPorts": [{"port": 22}]}),
            ),
        ];
        let s = with_env(
            &[
                ("FELIX_DEFAULTENDPOINTTOHOSTACTION", "ACCEPT"),
                (
                    "FELIX_FAILSAFEINBOUNDHOSTPORTS",
                    "tcp:22, udp:68,sctp:10.0.0.0/8:179,tcp:fd00::/64:9",
                ),
                ("FELIX_FAILSAFEOUTBOUNDHOSTPORTS", "none"),
                ("FELIX_INTERFACEPREFIX", "cali,tap"),
            ],
            &docs,
        )
        .expect("valid");
        assert_eq!(s.endpoint_to_host, EndpointToHostAction::Accept);
        let inbound: Vec<(Protocol, u16, Option<String>)> = s
            .failsafe
            .inbound
            .iter()
            .map(|p| (p.protocol, p.port, p.net.map(|n| n.to_string())))
            .collect();
        assert_eq!(
            inbound,
            vec![
                (Protocol::TCP, 22, None),
                (Protocol::UDP, 68, None),
                (Protocol::SCTP, 179, Some("10.0.0.0/8".into())),
                (Protocol::TCP, 9, Some("fd00::/64".into())),
            ]
        );
        assert!(s.failsafe.outbound.is_empty(), "none disables");
        assert_eq!(s.interface_prefixes, vec!["cali", "tap"]);
        // Unset or empty: the resources decide.
        let s = with_env(&[("FELIX_DEFAULTENDPOINTTOHOSTACTION", " ")], &docs).expect("valid");
        assert_eq!(s.endpoint_to_host, EndpointToHostAction::Return);
        assert_eq!(s.failsafe.inbound.len(), 1);
    }

    #[test]
    fn a_bad_environment_value_is_refused_naming_the_variable() {
        for (var, value, reason) in [
            (
                "FELIX_DEFAULTENDPOINTTOHOSTACTION",
                "allow",
                "\"allow\" is not Drop, Return or Accept",
            ),
            (
                "FELIX_FAILSAFEINBOUNDHOSTPORTS",
                "tcp:22,tcp:x",
                "\"tcp:x\" has no port 1-65535",
            ),
            (
                "FELIX_FAILSAFEOUTBOUNDHOSTPORTS",
                "icmp:22",
                "\"icmp:22\" has a protocol other than tcp",
            ),
            (
                "FELIX_FAILSAFEINBOUNDHOSTPORTS",
                "tcp:10.0.0.0/33:22",
                "has a net that is not a CIDR",
            ),
            ("FELIX_INTERFACEPREFIX", "cali,", "has an empty prefix"),
        ] {
            let e = with_env(&[(var, value)], &[]).expect_err(value);
            assert_eq!(e.name, ENVIRONMENT);
            assert_eq!(e.field, var);
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("environment variable {var}: ")) && text.contains(reason),
                "{text}"
            );
        }
    }

    #[test]
    fn nothing_configured_keeps_calicos_defaults() {
        let s = settings_for(&[fc("default", json!({"logSeverityScreen": "Info"}))], "n1").unwrap();
        assert_eq!(s, FelixPolicySettings::default());
        assert!(s.failsafe.inbound.iter().any(|p| p.port == 22));
        assert_eq!(s.endpoint_to_host, EndpointToHostAction::Drop);
    }

    #[test]
    fn default_replaces_the_lists_and_empty_disables() {
        let docs = [fc(
            "default",
            json!({
                "failsafeInboundHostPorts": [{"port": 2222}, {"protocol": "UDP", "port": 53, "net": "10.0.0.0/8"}],
                "failsafeOutboundHostPorts": [],
                "defaultEndpointToHostAction": "ACCEPT"
            }),
        )];
        let s = settings_for(&docs, "n1").unwrap();
        assert_eq!(
            s.failsafe.inbound,
            vec![
                FailsafePort {
                    protocol: Protocol::TCP,
                    port: 2222,
                    net: None
                },
                FailsafePort {
                    protocol: Protocol::UDP,
                    port: 53,
                    net: Some("10.0.0.0/8".parse().unwrap())
                },
            ]
        );
        assert!(
            s.failsafe.outbound.is_empty(),
            "[] disables outbound failsafe"
        );
        assert_eq!(s.endpoint_to_host, EndpointToHostAction::Accept);
    }

    #[test]
    fn the_nodes_resource_wins_field_by_field() {
        let docs = [
            fc(
                "node.n1",
                json!({"failsafeInboundHostPorts": [{"port": 7}]}),
            ),
            fc(
                "default",
                json!({"failsafeInboundHostPorts": [{"port": 9}], "defaultEndpointToHostAction": "Return"}),
            ),
            fc("node.n2", json!({"defaultEndpointToHostAction": "Accept"})),
        ];
        let s = settings_for(&docs, "n1").unwrap();
        assert_eq!(s.failsafe.inbound.len(), 1);
        assert_eq!(s.failsafe.inbound[0].port, 7);
        assert_eq!(s.failsafe.outbound, Failsafe::default().outbound);
        assert_eq!(s.endpoint_to_host, EndpointToHostAction::Return);
        let s = settings_for(&docs, "n2").unwrap();
        assert_eq!(s.failsafe.inbound[0].port, 9);
        assert_eq!(s.endpoint_to_host, EndpointToHostAction::Accept);
    }

    #[test]
    fn bad_fields_are_named() {
        let e = settings_for(
            &[fc("default", json!({"failsafeInboundHostPorts": [{"port": 22}, {"protocol": "icmp", "port": 1}]}))],
            "n1",
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.failsafeInboundHostPorts[1].protocol");
        let e = settings_for(
            &[fc(
                "node.n1",
                json!({"failsafeOutboundHostPorts": [{"port": 0}]}),
            )],
            "n1",
        )
        .unwrap_err();
        assert_eq!(
            (e.name.as_str(), e.field.as_str()),
            ("node.n1", "spec.failsafeOutboundHostPorts[0].port")
        );
        let e = settings_for(
            &[fc(
                "default",
                json!({"defaultEndpointToHostAction": "Reject"}),
            )],
            "n1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("defaultEndpointToHostAction"), "{e}");
        let e = settings_for(
            &[fc(
                "default",
                json!({"failsafeInboundHostPorts": [{"port": 22, "net": "nope"}]}),
            )],
            "n1",
        )
        .unwrap_err();
        assert!(e.field.ends_with(".net"));
    }

    #[test]
    fn interface_prefix_is_a_list_and_bad_prefixes_are_refused() {
        let s = settings_for(&[], "n1").unwrap();
        assert_eq!(s.interface_prefixes, vec!["cali".to_string()]);
        let docs = [
            fc("default", json!({"interfacePrefix": "cali, tap"})),
            fc("node.n2", json!({"interfacePrefix": "veth"})),
        ];
        assert_eq!(
            settings_for(&docs, "n1").unwrap().interface_prefixes,
            vec!["cali".to_string(), "tap".to_string()]
        );
        assert_eq!(
            settings_for(&docs, "n2").unwrap().interface_prefixes,
            vec!["veth".to_string()]
        );
        for bad in ["cali,", "cali*", "a-very-long-prefix", "ca li"] {
            let e = settings_for(&[fc("default", json!({ "interfacePrefix": bad }))], "n1")
                .unwrap_err();
            assert_eq!(e.field, "spec.interfacePrefix", "{bad}: {e}");
        }
        let e = settings_for(&[fc("default", json!({"interfacePrefix": 5}))], "n1").unwrap_err();
        assert!(e.reason.contains("expected a string"), "{e}");
    }
}
