//! The operator's signals: the stop request (SIGINT, SIGTERM) and the reload request (SIGHUP).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_requested() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Calls `reload` on every SIGHUP, for the life of the process. From when this returns, a
/// SIGHUP no longer ends the process (its default action). Call it inside the runtime.
pub fn on_hangup(mut reload: impl FnMut() + Send + 'static) {
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload();
        }
    });
}
