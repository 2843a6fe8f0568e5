//! `--operator-listen`: where the operator API is served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// One place the operator API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorEndpoint {
    /// A Unix socket (mode 0600); `None`: `<data-dir>/operator.sock`.
    Unix(Option<PathBuf>),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

/// Every place the operator API listens; empty when turned off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorListen(pub Vec<OperatorEndpoint>);

/// The socket's file name in the data directory.
pub const OPERATOR_SOCKET: &str = "operator.sock";

impl OperatorEndpoint {
    /// The socket path of a Unix endpoint, the default resolved against `data_dir`.
    pub fn socket_path(&self, data_dir: &Path) -> Option<PathBuf> {
        match self {
            OperatorEndpoint::Unix(Some(path)) => Some(path.clone()),
            OperatorEndpoint::Unix(None) => Some(data_dir.join(OPERATOR_SOCKET)),
            OperatorEndpoint::Tcp(_) => None,
        }
    }
}

/// Parses `--operator-listen`: a comma-separated list of `unix` (the default socket in the data
/// directory), `unix:PATH`, and loopback `ADDRESS:PORT`; or `off`.
///
/// A TCP address that is not loopback is refused: the listener speaks plain HTTP and operator
/// keys are bearer secrets, so on any other interface they would cross the network in clear
/// text. Put a TLS-terminating proxy on the same host in front of a loopback port instead.
pub fn parse_operator_listen(text: &str) -> Result<OperatorListen, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(OperatorListen(Vec::new()));
    }
    let mut endpoints = Vec::new();
    for part in text.split(',').map(str::trim) {
        let endpoint = if part == "unix" {
            OperatorEndpoint::Unix(None)
        } else if let Some(path) = part.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path".into());
            }
            OperatorEndpoint::Unix(Some(PathBuf::from(path)))
        } else {
            let addr: SocketAddr = part.parse().map_err(|_| {
                format!("`{part}`: expected `unix`, `unix:PATH`, a loopback ADDRESS:PORT, or `off`")
            })?;
            if !addr.ip().is_loopback() {
                return Err(format!(
                    "`{part}` is not a loopback address: the operator API speaks plain HTTP and \
                     its keys are bearer secrets, so it listens on loopback or a Unix socket only \
                     (put a TLS proxy on this host in front of a loopback port)"
                ));
            }
            OperatorEndpoint::Tcp(addr)
        };
        if endpoints.contains(&endpoint) {
            return Err(format!("`{part}` is given twice"));
        }
        endpoints.push(endpoint);
    }
    Ok(OperatorListen(endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_loopback_and_off_parse_and_other_addresses_are_refused() {
        assert_eq!(
            parse_operator_listen("unix").unwrap().0,
            [OperatorEndpoint::Unix(None)]
        );
        assert_eq!(
            parse_operator_listen("unix,127.0.0.1:9091,unix:/run/b.sock")
                .unwrap()
                .0,
            [
                OperatorEndpoint::Unix(None),
                OperatorEndpoint::Tcp("127.0.0.1:9091".parse().unwrap()),
                OperatorEndpoint::Unix(Some("/run/b.sock".into())),
            ]
        );
        assert!(parse_operator_listen("[::1]:9091").is_ok());
        assert!(parse_operator_listen("off").unwrap().0.is_empty());
        for bad in [
            "0.0.0.0:9091",
            "192.168.1.2:9091",
            "[::]:9091",
            "unix:",
            "x",
            "unix,unix",
        ] {
            assert!(parse_operator_listen(bad).is_err(), "{bad}");
        }
    }
}
