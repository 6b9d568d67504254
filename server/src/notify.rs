//! systemd's readiness protocol (`sd_notify`, `Type=notify`): when the service manager gave the
//! node a `NOTIFY_SOCKET`, the node says `READY=1` once it serves (its state restored, every
//! listener bound and accepting) and `STOPPING=1` when it begins a deliberate shutdown, each with
//! a `STATUS=` line for `systemctl status`. Without the variable nothing is sent. A failed send
//! is logged, never fatal: the node serves either way.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` assignments) to `$NOTIFY_SOCKET`, if set;
/// returns whether it was sent. A name starting with `@` is an abstract socket.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_bytes();
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), &path),
        }
    });
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(%e, socket = ?path, "cannot notify the service manager");
            false
        }
    }
}

/// `READY=1`: the node serves.
pub fn ready(status: &str) {
    notify(&format!(
        "READY=1\nSTATUS={status}\nMAINPID={}",
        std::process::id()
    ));
}

/// `STOPPING=1`: a deliberate shutdown has begun.
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=shutting down: answering what was read");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_socket_nothing_is_sent() {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!notify("READY=1"));
        }
    }
}
