//! `pods/portforward` through kube-rs's `Api::<Pod>::portforward` (the plugin's path to the
//! agent's gRPC server): echo round trips, several ports and sessions at once, a large
//! transfer, gRPC over the tunnel, and tunnels ending with the client, the container or the
//! double. [`errors`]: what a real cluster refuses and how; [`protocol`]: the wire protocol
//! seen by raw clients.

mod errors;
mod protocol;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream},
    net::TcpListener,
    sync::mpsc,
    task::JoinHandle,
    time::timeout,
};

use clearml_doubles::k8s::KubeDouble;

use super::common::{Env, env, pod};

const DEADLINE: Duration = Duration::from_secs(10);
const PORT: u16 = 9090;

/// A TCP server that sends `greeting`, then echoes; counts the connections it accepted and
/// reports each one's echoed byte count when the client closes it.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: mpsc::UnboundedReceiver<u64>,
    task: JoinHandle<()>,
}

impl Echo {
    async fn start(greeting: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo addr");
        let (tx, closed) = mpsc::unbounded_channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    if sock.write_all(greeting).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = sock.split();
                    let echoed = tokio::io::copy(&mut r, &mut w).await.unwrap_or(0);
                    let _ = tx.send(echoed);
                });
            }
        });
        Self {
            addr,
            accepted,
            closed,
            task,
        }
    }

    /// Waits for a connection to end; returns how many bytes it echoed.
    async fn next_close(&mut self) -> u64 {
        timeout(DEADLINE, self.closed.recv())
            .await
            .expect("the target connection closes in time")
            .expect("echo server running")
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pods(env: &Env) -> Api<Pod> {
    Api::namespaced(env.client.clone(), "default")
}

async fn running_pod(env: &Env, name: &str) {
    pods(env)
        .create(&PostParams::default(), &pod(name, serde_json::json!({})))
        .await
        .expect("pod created");
    env.double
        .set_pod_running("default", name)
        .expect("pod running");
}

/// A running pod `agent` whose `PORT` is served by an echo server.
async fn echo_pod(env: &Env) -> Echo {
    running_pod(env, "agent").await;
    let echo = Echo::start(b"").await;
    env.double
        .set_port_forward_target("default", "agent", PORT, echo.addr);
    echo
}

/// Opens a forward of `ports` and takes every stream.
async fn forward(
    env: &Env,
    name: &str,
    ports: &[u16],
) -> (kube::api::Portforwarder, Vec<DuplexStream>) {
    let mut pf = match pods(env).portforward(name, ports).await {
        Ok(pf) => pf,
        Err(e) => panic!("port-forward to {name} {ports:?}: {e}"),
    };
    let streams = ports
        .iter()
        .map(|p| pf.take_stream(*p).expect("stream per port"))
        .collect();
    (pf, streams)
}

async fn read_n(stream: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    timeout(DEADLINE, stream.read_exact(&mut buf))
        .await
        .expect("data arrives in time")
        .expect("read through the tunnel");
    buf
}

async fn round_trip(stream: &mut DuplexStream, payload: &[u8]) {
    stream.write_all(payload).await.expect("write");
    assert_eq!(read_n(stream, payload.len()).await, payload);
}

/// Reads until the tunnel ends; returns what arrived.
async fn read_to_end(stream: &mut DuplexStream) -> Vec<u8> {
    let mut rest = Vec::new();
    timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("the stream ends in time")
        .expect("clean end of stream");
    rest
}

fn refused_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn kube_client_round_trips_and_both_sides_close() {
    let env = env().await;
    let mut echo = echo_pod(&env).await;

    let (pf, mut streams) = forward(&env, "agent", &[PORT]).await;
    let mut stream = streams.remove(0);
    round_trip(&mut stream, b"ping\n").await;
    round_trip(&mut stream, b"second message").await;

    let record = env
        .double
        .wait_for_request(DEADLINE, |r| r.is("get", "pods/portforward"))
        .await
        .expect("port-forward logged");
    assert_eq!(
        (
            record.method.as_str(),
            record.namespace.as_str(),
            record.name.as_str()
        ),
        ("GET", "default", "agent")
    );
    assert_eq!(record.status, 101);
    assert_eq!(record.params.get("ports").map(String::as_str), Some("9090"));

    // The client closing its stream ends the WebSocket; the target's connection closes.
    drop(stream);
    assert_eq!(echo.next_close().await, 19);
    timeout(DEADLINE, pf.join())
        .await
        .expect("forwarder ends in time")
        .expect("forwarder ends cleanly");
}

#[tokio::test]
async fn several_ports_and_concurrent_sessions_stay_apart() {
    let env = env().await;
    running_pod(&env, "agent").await;
    let a = Echo::start(b"A\n").await;
    let b = Echo::start(b"B\n").await;
    env.double
        .set_port_forward_target("default", "agent", PORT, a.addr);
    env.double
        .set_port_forward_target("default", "agent", PORT + 1, b.addr);

    let (_pf1, mut both) = forward(&env, "agent", &[PORT, PORT + 1]).await;
    let (_pf2, mut single) = forward(&env, "agent", &[PORT + 1]).await;
    assert_eq!(read_n(&mut both[0], 2).await, b"A\n");
    assert_eq!(read_n(&mut both[1], 2).await, b"B\n");
    assert_eq!(read_n(&mut single[0], 2).await, b"B\n");
    for round in 0..20u8 {
        let (x, y, z) = ([b'x', round], [b'y', round], [b'z', round]);
        both[0].write_all(&x).await.expect("write");
        single[0].write_all(&z).await.expect("write");
        both[1].write_all(&y).await.expect("write");
        assert_eq!(read_n(&mut single[0], 2).await, z);
        assert_eq!(read_n(&mut both[1], 2).await, y);
        assert_eq!(read_n(&mut both[0], 2).await, x);
    }
    assert_eq!(env.double.count_requests("get", "pods/portforward"), 2);
}

#[tokio::test]
async fn four_mebibytes_cross_intact_in_both_directions() {
    let env = env().await;
    let mut echo = echo_pod(&env).await;
    let (_pf, mut streams) = forward(&env, "agent", &[PORT]).await;
    let (mut rd, mut wr) = tokio::io::split(streams.remove(0));

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    let writer = async {
        // Odd-sized writes, so frames and reads do not line up with the data's structure.
        for chunk in data.chunks(77_777) {
            wr.write_all(chunk).await.expect("write");
        }
    };
    let reader = async {
        let mut got = vec![0u8; data.len()];
        rd.read_exact(&mut got).await.expect("read");
        got
    };
    let ((), got) = timeout(Duration::from_secs(60), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("transfer completes in time");
    assert!(got == data, "the echoed bytes differ from the sent ones");
    drop((rd, wr));
    assert_eq!(echo.next_close().await, data.len() as u64);
}

#[tokio::test]
async fn grpc_runs_over_the_tunnel_as_the_plugin_uses_it() {
    use tonic::transport::{Endpoint, Server, Uri, server::TcpIncoming};
    use tonic_health::{
        ServingStatus,
        pb::{HealthCheckRequest, health_check_response, health_client::HealthClient},
    };

    let env = env().await;
    running_pod(&env, "agent").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let addr = listener.local_addr().expect("grpc addr");
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("clearml.agent.v1.AgentService", ServingStatus::Serving)
        .await;
    let server = tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    env.double
        .set_port_forward_target("default", "agent", PORT, addr);

    let pods = pods(&env);
    let connector = tower::service_fn(move |_: Uri| {
        let pods = pods.clone();
        async move {
            let mut pf = pods
                .portforward("agent", &[PORT])
                .await
                .map_err(std::io::Error::other)?;
            let stream = pf
                .take_stream(PORT)
                .ok_or_else(|| std::io::Error::other("no stream"))?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    let channel = timeout(
        DEADLINE,
        Endpoint::from_static("http://clearml-agent.grpc").connect_with_connector(connector),
    )
    .await
    .expect("connects in time")
    .expect("gRPC channel over the port-forward");
    let mut client = HealthClient::new(channel);
    let service = "clearml.agent.v1.AgentService".to_string();
    let checked = client
        .check(HealthCheckRequest {
            service: service.clone(),
        })
        .await
        .expect("unary call");
    assert_eq!(
        checked.into_inner().status(),
        health_check_response::ServingStatus::Serving
    );

    // A server stream, with an update pushed while it is open.
    let mut updates = client
        .watch(HealthCheckRequest {
            service: service.clone(),
        })
        .await
        .expect("streaming call")
        .into_inner();
    let first = timeout(DEADLINE, updates.message())
        .await
        .expect("first update in time")
        .expect("stream ok")
        .expect("an update");
    assert_eq!(
        first.status(),
        health_check_response::ServingStatus::Serving
    );
    reporter
        .set_service_status(&service, ServingStatus::NotServing)
        .await;
    let second = timeout(DEADLINE, updates.message())
        .await
        .expect("second update in time")
        .expect("stream ok")
        .expect("an update");
    assert_eq!(
        second.status(),
        health_check_response::ServingStatus::NotServing
    );
    assert_eq!(
        env.double.count_requests("get", "pods/portforward"),
        1,
        "both calls shared one HTTP/2 connection, i.e. one port-forward"
    );
    server.abort();
}

#[tokio::test]
async fn a_stopped_container_closes_its_forwards() {
    let env = env().await;
    let mut echo = echo_pod(&env).await;
    let (_pf, mut streams) = forward(&env, "agent", &[PORT]).await;
    round_trip(&mut streams[0], b"before").await;
    env.double
        .set_pod_oom_killed("default", "agent")
        .expect("container dies");
    assert!(read_to_end(&mut streams[0]).await.is_empty());
    assert_eq!(echo.next_close().await, 6);
}

#[tokio::test]
async fn shutdown_cuts_open_forwards_without_hanging() {
    let env = env().await;
    let mut echo = echo_pod(&env).await;
    let (_pf, mut streams) = forward(&env, "agent", &[PORT]).await;
    round_trip(&mut streams[0], b"open").await;
    let double: KubeDouble = env.double;
    timeout(DEADLINE, double.shutdown())
        .await
        .expect("shutdown does not wait for the tunnel");
    let mut rest = Vec::new();
    let read = timeout(DEADLINE, streams[0].read_to_end(&mut rest))
        .await
        .expect("the client sees the tunnel end");
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    assert_eq!(echo.next_close().await, 4);
}
