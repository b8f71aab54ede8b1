//! One upgraded port-forward connection, served as the kubelet's WebSocket port-forward
//! handler and containerd's `PortForward` do.
//!
//! Channels: port `i` of the request uses channel `2i` (data, both ways) and `2i+1` (errors,
//! server to client). Each channel's first frame carries the port (little-endian `u16`). Per
//! port one connection is dialed at once; dial failures and copy errors go to the error channel
//! as text (`error forwarding port P to pod SANDBOX, uid : ...`). When one direction of a
//! port's copy ends, the other gets one second to finish, then the target connection closes;
//! when every port is done the WebSocket closes (`1000`). Incoming frames are read by one loop
//! that waits for each port's target to take its data (backpressure, as Go's pipes give). A
//! container that stops running closes its connections. Shutdown of the double cuts the
//! connection.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use futures::{
    Sink, SinkExt as _, Stream, StreamExt as _,
    future::{self, Either},
};
use serde_json::Value;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    sync::{mpsc, oneshot, watch},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

use super::{handshake::Codec, has_running_container};
use crate::k8s::{deletion::pods_id, state::Shared};

/// How long containerd lets the second direction finish after the first ends.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Go's `io.Copy` buffer: the largest data frame the server sends.
const COPY_BUFFER: usize = 32 * 1024;
/// Frames queued for the socket writer.
const FRAME_QUEUE: usize = 16;

/// Everything a tunnel needs to know about its request.
pub(crate) struct Plan {
    pub shared: Arc<Shared>,
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// The CRI sandbox id (the "pod" in the runtime's error messages).
    pub sandbox: String,
    /// The sandbox's network namespace path (in the runtime's error messages).
    pub netns: String,
    pub ports: Vec<u16>,
    pub codec: Codec,
}

impl Codec {
    fn frame(self, channel: u8, data: &[u8]) -> Message {
        match self {
            Codec::Binary => {
                let mut buf = Vec::with_capacity(data.len() + 1);
                buf.push(channel);
                buf.extend_from_slice(data);
                Message::Binary(buf.into())
            }
            Codec::Base64 => {
                let mut text = String::from(char::from(b'0'.wrapping_add(channel)));
                text.push_str(&STANDARD.encode(data));
                Message::Text(text.into())
            }
        }
    }

    /// A client message as (channel, data); `None` for control, empty or undecodable ones
    /// (which the server skips).
    fn decode(self, msg: Message) -> Option<(u8, Bytes)> {
        let raw: Bytes = match msg {
            Message::Binary(b) => b,
            Message::Text(t) => t.into(),
            _ => return None,
        };
        let (&channel, _) = raw.split_first()?;
        let data = raw.slice(1..);
        match self {
            Codec::Binary => Some((channel, data)),
            Codec::Base64 => {
                let decoded = STANDARD.decode(&data).ok()?;
                Some((channel.wrapping_sub(b'0'), Bytes::from(decoded)))
            }
        }
    }
}

fn data_channel(index: usize) -> u8 {
    (2 * index) as u8
}

fn error_channel(index: usize) -> u8 {
    (2 * index + 1) as u8
}

/// Go's error text for an I/O error (`connection refused`, `broken pipe`, ...).
fn errno_text(e: &io::Error) -> String {
    if e.raw_os_error().is_none() {
        return e.to_string();
    }
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

impl Plan {
    /// The pod as it is now, if it is still the same pod.
    fn pod_now(&self) -> Option<Arc<Value>> {
        self.shared
            .get(pods_id(), &self.namespace, &self.pod)
            .ok()
            .filter(|p| p.pointer("/metadata/uid").and_then(Value::as_str) == Some(&self.uid))
    }

    /// Something can listen in the pod's network namespace.
    fn serving(&self) -> bool {
        self.pod_now().is_some_and(|p| has_running_container(&p))
    }

    fn forward_error(&self, port: u16, cause: &str) -> String {
        format!(
            "error forwarding port {port} to pod {}, uid : failed to execute portforward in \
             network namespace {:?}: {cause}",
            self.sandbox, self.netns
        )
    }

    /// Connects to the pod's `localhost:<port>`: the mapped socket, else `127.0.0.1` then
    /// `[::1]`, as containerd tries IPv4 then IPv6.
    async fn dial(&self, port: u16) -> Result<TcpStream, String> {
        let key = (self.namespace.clone(), self.pod.clone(), port);
        let mapped = self.shared.port_targets.lock().get(&key).copied();
        let (v4, v6) = if !self.serving() {
            let refused = "connection refused".to_string();
            (refused.clone(), refused)
        } else {
            let attempt = |addr: SocketAddr| async move {
                let conn = TcpStream::connect(addr).await?;
                conn.set_nodelay(true)?;
                Ok::<_, io::Error>(conn)
            };
            match mapped {
                Some(addr) => match attempt(addr).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => (errno_text(&e), errno_text(&e)),
                },
                None => {
                    let v4 = match attempt(SocketAddr::from(([127, 0, 0, 1], port))).await {
                        Ok(conn) => return Ok(conn),
                        Err(e) => errno_text(&e),
                    };
                    match attempt(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port))).await {
                        Ok(conn) => return Ok(conn),
                        Err(e) => (v4, errno_text(&e)),
                    }
                }
            }
        };
        Err(format!(
            "failed to connect to localhost:{port} inside namespace {:?}, IPv4: dial tcp4 \
             127.0.0.1:{port}: connect: {v4} IPv6 dial tcp6 [::1]:{port}: connect: {v6} ",
            self.sandbox
        ))
    }
}

/// Serves the tunnel until it ends or the double shuts down (which drops the connection).
pub(crate) async fn run<S>(ws: WebSocketStream<S>, plan: Plan)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stop = plan.shared.stop.subscribe();
    tokio::select! {
        _ = stop.wait_for(|stopping| *stopping) => {
            tracing::debug!(pod = %plan.pod, "port-forward cut by shutdown");
        }
        () = serve(ws, &plan) => {}
    }
}

async fn serve<S>(ws: WebSocketStream<S>, plan: &Plan)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    for (i, port) in plan.ports.iter().enumerate() {
        for channel in [data_channel(i), error_channel(i)] {
            if sink
                .send(plan.codec.frame(channel, &port.to_le_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let (frames_tx, frames_rx) = mpsc::channel::<Message>(FRAME_QUEUE);
    let (gone_tx, gone_rx) = watch::channel(false);
    let mut inbound = Vec::with_capacity(plan.ports.len());
    let mut forwards = Vec::with_capacity(plan.ports.len());
    for (i, &port) in plan.ports.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        inbound.push(tx);
        forwards.push(forward_port(
            plan,
            i,
            port,
            rx,
            frames_tx.clone(),
            gone_rx.clone(),
        ));
    }
    drop(frames_tx);
    let (client_done_tx, client_done_rx) = oneshot::channel::<()>();
    let reader = async {
        read_frames(&mut source, plan.codec, inbound).await;
        drop(client_done_tx);
        future::pending::<()>().await;
    };
    let watcher = async {
        watch_pod(plan, &gone_tx).await;
        future::pending::<()>().await;
    };
    tokio::select! {
        _ = async {
            tokio::join!(
                future::join_all(forwards),
                write_frames(sink, frames_rx, client_done_rx)
            )
        } => {}
        () = reader => {}
        () = watcher => {}
    }
}

/// Routes client frames to the ports' targets; ends with the client's side of the socket
/// (dropping `inbound` ends every port's client-to-target direction).
async fn read_frames<R>(source: &mut R, codec: Codec, inbound: Vec<mpsc::Sender<Bytes>>)
where
    R: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(msg)) = source.next().await {
        if msg.is_close() {
            break;
        }
        let Some((channel, data)) = codec.decode(msg) else {
            continue;
        };
        let index = usize::from(channel / 2);
        // Error channels are write-only and unknown channels are ignored, as the server does.
        if channel % 2 != 0 || data.is_empty() {
            continue;
        }
        if let Some(tx) = inbound.get(index) {
            // A finished port drops its data.
            let _ = tx.send(data).await;
        }
    }
}

/// Writes queued frames until every port is done or the client's side ends, then closes the
/// WebSocket normally (`1000`; after the client's own close frame, the queued reply goes out
/// instead), as the server closes its connection once its read loop ends.
async fn write_frames<W>(
    mut sink: W,
    mut frames: mpsc::Receiver<Message>,
    mut client_done: oneshot::Receiver<()>,
) where
    W: Sink<Message> + Unpin,
{
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => {
                    if sink.send(frame).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = &mut client_done => break,
        }
    }
    drop(frames);
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}

/// Flags `gone` once the pod (this uid) has no running container any more.
async fn watch_pod(plan: &Plan, gone: &watch::Sender<bool>) {
    let mut changes = plan.shared.changes.subscribe();
    loop {
        changes.borrow_and_update();
        if !plan.serving() {
            gone.send_replace(true);
            return;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// One port: dial, copy both ways, report errors on the port's error channel.
async fn forward_port(
    plan: &Plan,
    index: usize,
    port: u16,
    mut inbound: mpsc::Receiver<Bytes>,
    frames: mpsc::Sender<Message>,
    mut gone: watch::Receiver<bool>,
) {
    let result = match plan.dial(port).await {
        Ok(conn) => {
            copy_both(
                conn,
                plan.codec,
                data_channel(index),
                &mut inbound,
                &frames,
                &mut gone,
            )
            .await
        }
        Err(cause) => Err(cause),
    };
    if let Err(cause) = result {
        tracing::debug!(pod = %plan.pod, port, %cause, "port-forward error");
        let message = plan.forward_error(port, &cause);
        let _ = frames
            .send(plan.codec.frame(error_channel(index), message.as_bytes()))
            .await;
    }
}

/// containerd's copy: both directions at once; when the first ends, the second gets
/// [`CLOSE_GRACE`]; the first error wins. Dropping the halves closes the connection.
async fn copy_both(
    conn: TcpStream,
    codec: Codec,
    channel: u8,
    inbound: &mut mpsc::Receiver<Bytes>,
    frames: &mpsc::Sender<Message>,
    gone: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let (local, peer) = (
        conn.local_addr().map_err(|e| errno_text(&e))?,
        conn.peer_addr().map_err(|e| errno_text(&e))?,
    );
    let net = if peer.is_ipv4() { "tcp4" } else { "tcp6" };
    let op_error =
        |op: &str, e: &io::Error| format!("{op} {net} {local}->{peer}: {op}: {}", errno_text(e));
    let (mut rd, mut wr) = conn.into_split();
    let to_pod = async {
        while let Some(data) = inbound.recv().await {
            wr.write_all(&data)
                .await
                .map_err(|e| op_error("write", &e))?;
        }
        Ok::<(), String>(())
    };
    let from_pod = async {
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n = tokio::select! {
                read = rd.read(&mut buf) => read.map_err(|e| op_error("read", &e))?,
                // The container's process is gone: its end of the connection closes.
                _ = gone.wait_for(|g| *g) => 0,
            };
            if n == 0 {
                return Ok(());
            }
            frames
                .send(codec.frame(channel, &buf[..n]))
                .await
                .map_err(|_| "use of closed network connection".to_string())?;
        }
    };
    let (first, second) = match future::select(Box::pin(to_pod), Box::pin(from_pod)).await {
        Either::Left((first, rest)) => (first, tokio::time::timeout(CLOSE_GRACE, rest).await),
        Either::Right((first, rest)) => (first, tokio::time::timeout(CLOSE_GRACE, rest).await),
    };
    first.and(second.unwrap_or(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_both_codecs() {
        for codec in [Codec::Binary, Codec::Base64] {
            let msg = codec.frame(4, b"hello");
            assert_eq!(
                codec.decode(msg),
                Some((4, Bytes::from_static(b"hello"))),
                "{codec:?}"
            );
        }
        assert_eq!(
            Codec::Binary.frame(1, &9090u16.to_le_bytes()),
            Message::Binary(Bytes::from_static(&[1, 0x82, 0x23]))
        );
        assert_eq!(Codec::Base64.frame(2, b"hi"), Message::Text("2aGk=".into()));
        assert_eq!(Codec::Binary.decode(Message::Binary(Bytes::new())), None);
        assert_eq!(Codec::Base64.decode(Message::Text("0!!".into())), None);
    }

    #[test]
    fn io_errors_read_like_go() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(errno_text(&refused), "connection refused");
        let reset = io::Error::from_raw_os_error(104);
        assert_eq!(errno_text(&reset), "connection reset by peer");
    }
}
