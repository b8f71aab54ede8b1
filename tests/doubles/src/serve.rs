//! Runs an axum router on `127.0.0.1:0` in the current tokio runtime, for the doubles.

use std::net::SocketAddr;

use axum::Router;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// A running HTTP server; dropping it stops the server.
#[derive(Debug)]
pub struct Served {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

/// Binds `127.0.0.1:0` and serves `router` until the returned handle is shut down or dropped.
pub async fn serve(router: Router) -> std::io::Result<Served> {
    serve_on(router, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Like [`serve`], on a chosen address (port 0 picks a free port).
pub async fn serve_on(router: Router, addr: SocketAddr) -> std::io::Result<Served> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(error) = server.await {
            tracing::warn!(%error, "double server stopped with an error");
        }
    });
    Ok(Served {
        addr,
        shutdown: Some(tx),
        join: Some(join),
    })
}

impl Served {
    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}
