//! The operator API's Unix socket: created with mode 0600 from its first moment, never over a
//! live server's socket or a file that is not a socket.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::net::UnixListener;

/// The bound socket; its file is removed when this is dropped (at shutdown).
#[derive(Debug)]
pub struct OperatorSocket {
    path: PathBuf,
}

impl Drop for OperatorSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the operator socket at `path`.
///
/// The socket is bound inside a fresh 0700 directory beside `path`, set to 0600, and only then
/// renamed into place, so there is no moment at which another account could connect to it
/// (binding in place would leave it at the umask's mode until the chmod). A socket left by a
/// server that is gone is replaced; a socket some process still answers on, or a path that is
/// not a socket, is a start-up error.
pub fn bind(path: &Path) -> anyhow::Result<(UnixListener, OperatorSocket)> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "another process serves the operator socket {}; stop it, or give --operator-listen another path",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    }
    let staging = parent.join(format!(".operator-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let result = (|| {
        let inner = staging.join("s");
        let listener = UnixListener::bind(&inner)
            .with_context(|| format!("cannot bind the operator socket in {}", staging.display()))?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)
            .with_context(|| format!("cannot move the operator socket to {}", path.display()))?;
        Ok::<_, anyhow::Error>(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    let listener = result?;
    Ok((
        listener,
        OperatorSocket {
            path: path.to_owned(),
        },
    ))
}
