//! The CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`) and the pod identity in `CNI_ARGS`. Pure: the variables come in
//! through a lookup function.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("{var} is not set")]
    Missing { var: &'static str },
    #[error("CNI_COMMAND {0:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION")]
    Command(String),
    #[error("CNI_ARGS: {pair:?} is not KEY=VALUE")]
    ArgsPair { pair: String },
    #[error("CNI_ARGS: unknown key {key:?} (set IgnoreUnknown=1 to ignore)")]
    ArgsUnknown { key: String },
    #[error("CNI_IFNAME {0:?} is not a valid interface name")]
    Ifname(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, EnvError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => return Err(EnvError::Command(other.to_owned())),
        })
    }
}

/// CNI_ARGS keys we understand: the pod identity containerd and CRI-O pass, and `IP` (the CNI
/// convention `calico-ipam` honours: assign exactly these comma-separated addresses). Pod
/// labels, annotations and service account come from the Kubernetes API ([`crate::k8s`]).
const KNOWN_ARGS: &[&str] = &[
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "IP",
];

/// Parses `K=V;K=V`. Unknown keys are an error unless `IgnoreUnknown` is true-ish.
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>, EnvError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| EnvError::ArgsPair {
            pair: pair.to_owned(),
        })?;
        out.insert(k.to_owned(), v.to_owned());
    }
    let ignore = out
        .get("IgnoreUnknown")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
    if !ignore && let Some(k) = out.keys().find(|k| !KNOWN_ARGS.contains(&k.as_str())) {
        return Err(EnvError::ArgsUnknown { key: k.clone() });
    }
    Ok(out)
}

/// The runtime's call, as far as the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: BTreeMap<String, String>,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// What each command needs: ADD/CHECK need container id, netns and ifname; DEL container
    /// id and ifname (the netns may be gone); STATUS, GC and VERSION nothing.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<CniEnv, EnvError> {
        let command =
            Command::parse(&var("CNI_COMMAND").ok_or(EnvError::Missing { var: "CNI_COMMAND" })?)?;
        let needs = |name: &'static str| -> Result<String, EnvError> {
            var(name)
                .filter(|v| !v.is_empty())
                .ok_or(EnvError::Missing { var: name })
        };
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = if per_container {
            needs("CNI_CONTAINERID")?
        } else {
            var("CNI_CONTAINERID").unwrap_or_default()
        };
        let netns = if matches!(command, Command::Add | Command::Check) {
            Some(PathBuf::from(needs("CNI_NETNS")?))
        } else {
            var("CNI_NETNS")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let ifname = if per_container {
            needs("CNI_IFNAME")?
        } else {
            var("CNI_IFNAME").unwrap_or_default()
        };
        if per_container
            && (ifname.len() > 15
                || ifname.contains(['/', ' ', ':'])
                || ifname == "."
                || ifname == "..")
        {
            return Err(EnvError::Ifname(ifname));
        }
        let args = parse_args(&var("CNI_ARGS").unwrap_or_default())?;
        let path = var("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    pub fn from_process() -> Result<CniEnv, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The pod, when CNI_ARGS names one (Kubernetes); otherwise the endpoint is keyed by
    /// container id.
    pub fn pod(&self) -> Option<PodRef> {
        let ns = self
            .args
            .get("K8S_POD_NAMESPACE")
            .filter(|v| !v.is_empty())?;
        let name = self.args.get("K8S_POD_NAME").filter(|v| !v.is_empty())?;
        Some(PodRef {
            namespace: ns.clone(),
            name: name.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv, EnvError> {
        let m: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn containerd_style_add() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u1",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ])
        .unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.path.len(), 2);
        let pod = e.pod().unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("default", "web-0")
        );
    }

    #[test]
    fn missing_variables_are_named() {
        assert_eq!(
            env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "eth0")
            ]),
            Err(EnvError::Missing { var: "CNI_NETNS" })
        );
        // DEL without a namespace is fine.
        assert!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "eth0")
            ])
            .is_ok()
        );
        assert!(env(&[("CNI_COMMAND", "STATUS")]).is_ok());
        assert_eq!(
            env(&[("CNI_COMMAND", "FOO")]),
            Err(EnvError::Command("FOO".into()))
        );
    }

    #[test]
    fn unknown_args_need_ignore_unknown() {
        assert_eq!(
            parse_args("FOO=1"),
            Err(EnvError::ArgsUnknown { key: "FOO".into() })
        );
        assert!(parse_args("IgnoreUnknown=true;FOO=1").is_ok());
        assert_eq!(
            parse_args("K8S_POD_NAME"),
            Err(EnvError::ArgsPair {
                pair: "K8S_POD_NAME".into()
            })
        );
    }

    #[test]
    fn bad_ifname_is_rejected() {
        assert!(matches!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "a"),
                ("CNI_IFNAME", "a/b")
            ]),
            Err(EnvError::Ifname(_))
        ));
    }
}
