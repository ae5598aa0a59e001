//! The real nodes' network plumbing that runs in the test process: a thread with its own
//! async runtime (so the relays work whatever the test's runtime is doing, even a blocking
//! `kubectl` call), sockets opened inside a node's network namespace, the API server relay
//! and the egress proxy.
//!
//! - **API relay** (the one test-only stand-in for kube-proxy): in each node's network
//!   namespace, the `kubernetes` Service's ClusterIP is a local address and a listener on
//!   its port 443 forwards every connection to the API server on this machine's loopback.
//!   The kubelet uses it, and so do Pods with the in-cluster configuration unchanged
//!   (`KUBERNETES_SERVICE_HOST`/`_PORT` point there).
//! - **Egress proxy**: the API server's `--egress-selector-config-file` sends its traffic to
//!   kubelets (logs, exec, port-forward) as HTTP CONNECT over a unix socket. The proxy only
//!   connects to a known node's kubelet port, from inside that node's network namespace;
//!   anything else gets 403. The API server never dials a node address from the machine's
//!   own network.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The kubelet's port on every node.
pub const KUBELET_PORT: u16 = 10250;

/// How long the egress proxy waits for a kubelet connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest CONNECT request head the egress proxy reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// A thread running a small async runtime for the relays; stopping it (on drop) ends every
/// task and closes their sockets.
#[derive(Debug)]
pub(crate) struct NetRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NetRuntime {
    pub(crate) fn start() -> io::Result<Self> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("hostplug-realnode-net".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("hostplug-realnode-net")
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("the network thread ended at start"))??;
        Ok(NetRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a new thread that has joined the network namespace `netns`: sockets it
/// creates stay in that namespace. The calling thread is never moved.
pub(crate) fn in_netns<T, F>(netns: Arc<File>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    thread::Builder::new()
        .name("hostplug-netns".into())
        .spawn(move || {
            setns(&*netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("the network-namespace thread panicked"))?
}

/// [`in_netns`] without blocking the async runtime.
async fn in_netns_async<T, F>(netns: Arc<File>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    thread::Builder::new()
        .name("hostplug-netns".into())
        .spawn(move || {
            let _ = tx.send(in_netns(netns, f));
        })?;
    rx.await
        .map_err(|_| io::Error::other("the network-namespace thread ended"))?
}

/// Starts the API relay of one node: a listener on `listen` inside `netns` whose
/// connections go to `upstream` (the API server on this machine's loopback).
pub(crate) fn start_api_relay(
    runtime: &NetRuntime,
    netns: Arc<File>,
    listen: SocketAddrV4,
    upstream: SocketAddr,
) -> io::Result<JoinHandle<()>> {
    let listener = in_netns(netns, move || {
        let l = std::net::TcpListener::bind(listen)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let _guard = runtime.handle().enter();
    let listener = TcpListener::from_std(listener)?;
    Ok(runtime.handle().spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(async move {
                match TcpStream::connect(upstream).await {
                    Ok(mut out) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                    Err(e) => tracing::warn!(%upstream, error = %e, "API relay: cannot reach the API server"),
                }
            });
        }
    }))
}

/// Where the egress proxy may connect: each node's address and name to its network
/// namespace and kubelet address.
#[derive(Debug, Default, Clone)]
pub(crate) struct EgressTable {
    nodes: Arc<RwLock<HashMap<String, (Arc<File>, Ipv4Addr)>>>,
}

impl EgressTable {
    /// Lets the proxy reach node `name` at `ip` (also asked for by name) in `netns`.
    pub(crate) fn insert(&self, name: &str, ip: Ipv4Addr, netns: Arc<File>) {
        let mut nodes = self
            .nodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        nodes.insert(name.to_owned(), (netns.clone(), ip));
        nodes.insert(ip.to_string(), (netns, ip));
    }

    /// Forgets node `name` at `ip` (it stopped; its namespace file is closed).
    pub(crate) fn remove(&self, name: &str, ip: Ipv4Addr) {
        let mut nodes = self
            .nodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        nodes.remove(name);
        nodes.remove(&ip.to_string());
    }

    fn lookup(&self, host: &str) -> Option<(Arc<File>, Ipv4Addr)> {
        self.nodes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(host)
            .cloned()
    }
}

/// Starts the egress proxy on unix socket `path`.
pub(crate) fn start_egress_proxy(
    runtime: &NetRuntime,
    path: &Path,
    table: EgressTable,
) -> io::Result<JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let _guard = runtime.handle().enter();
    let listener = UnixListener::bind(path)?;
    Ok(runtime.handle().spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let table = table.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_connect(stream, &table).await {
                    tracing::debug!(error = %e, "egress proxy connection ended");
                }
            });
        }
    }))
}

/// One HTTP CONNECT exchange, then bytes both ways.
async fn serve_connect(mut client: tokio::net::UnixStream, table: &EgressTable) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = find(&head, b"\r\n\r\n") {
            break pos + 4;
        }
        if head.len() > MAX_REQUEST_HEAD {
            return reply(&mut client, "431 Request Header Fields Too Large").await;
        }
    };
    let request_line =
        String::from_utf8_lossy(&head[..find(&head, b"\r\n").unwrap_or(0)]).into_owned();
    let mut parts = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        return reply(&mut client, "405 Method Not Allowed").await;
    };
    let Some((host, port)) = target.rsplit_once(':') else {
        return reply(&mut client, "400 Bad Request").await;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port.parse::<u16>().ok() != Some(KUBELET_PORT) {
        tracing::warn!(target, "egress proxy: refused (not a kubelet port)");
        return reply(&mut client, "403 Forbidden").await;
    }
    let Some((netns, ip)) = table.lookup(host) else {
        tracing::warn!(target, "egress proxy: refused (not a real node)");
        return reply(&mut client, "403 Forbidden").await;
    };
    let addr = SocketAddr::from((ip, KUBELET_PORT));
    let upstream = in_netns_async(netns, move || {
        let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await;
    let mut upstream = match upstream.and_then(TcpStream::from_std) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(target, error = %e, "egress proxy: kubelet unreachable");
            return reply(&mut client, "502 Bad Gateway").await;
        }
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    if end < head.len() {
        upstream.write_all(&head[end..]).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn reply(client: &mut tokio::net::UnixStream, status: &str) -> io::Result<()> {
    client
        .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_egress_proxy_refuses_what_is_not_a_node_kubelet() {
        let runtime = NetRuntime::start().expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("egress.sock");
        let table = EgressTable::default();
        let _task = start_egress_proxy(&runtime, &path, table).expect("proxy");
        for (request, status) in [
            ("CONNECT 127.0.0.1:10250 HTTP/1.1\r\n\r\n", "403"),
            ("CONNECT 10.200.0.1:22 HTTP/1.1\r\n\r\n", "403"),
            ("GET / HTTP/1.1\r\n\r\n", "405"),
        ] {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connect");
            s.write_all(request.as_bytes()).expect("write");
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("read");
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{request:?} got {answer:?}"
            );
        }
    }
}
