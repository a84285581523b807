//! Delegation as CNI does it: run another plugin from CNI_PATH with our environment (with
//! CNI_COMMAND set) and our stdin, and read its result or its error object.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::env::CniEnv;
use crate::plugin::find_in_path;

#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("IPAM plugin {name:?} not found in CNI_PATH {path}")]
    NotFound { name: String, path: String },
    #[error("IPAM plugin {name:?} must be a plain binary name")]
    BadName { name: String },
    #[error("running IPAM plugin {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("IPAM plugin {name} failed (code {code}): {msg}")]
    Plugin {
        name: String,
        code: u32,
        msg: String,
    },
    #[error("IPAM plugin {name} printed invalid JSON: {source}")]
    Output {
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Runs `name` with `command`; `Ok(None)` when it printed nothing (DEL).
pub async fn exec(
    name: &str,
    env: &CniEnv,
    stdin: &[u8],
    command: &str,
) -> Result<Option<serde_json::Value>, DelegateError> {
    if name.contains('/') || name.is_empty() {
        return Err(DelegateError::BadName { name: name.into() });
    }
    let bin = find_in_path(name, &env.path).ok_or_else(|| DelegateError::NotFound {
        name: name.into(),
        path: env
            .path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    })?;
    let spawn = |source| DelegateError::Spawn {
        name: name.into(),
        source,
    };
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(spawn)?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).await.map_err(spawn)?;
    }
    let out = child.wait_with_output().await.map_err(spawn)?;
    if !out.status.success() {
        // Older plugins print the error without `cniVersion`: read it leniently.
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let (code, msg) = match (v["code"].as_u64(), v["msg"].as_str()) {
            (Some(code), Some(msg)) => {
                let details = v["details"].as_str().unwrap_or_default();
                let msg = if details.is_empty() {
                    msg.to_owned()
                } else {
                    format!("{msg}: {details}")
                };
                (u32::try_from(code).unwrap_or(u32::MAX), msg)
            }
            _ => (0, String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        };
        return Err(DelegateError::Plugin {
            name: name.into(),
            code,
            msg,
        });
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout)
        .map(Some)
        .map_err(|source| DelegateError::Output {
            name: name.into(),
            source,
        })
}
