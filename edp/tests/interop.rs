//! EDP over real sockets: enhanced client and server find each other; against unenhanced servers
//! (echo, HTTP-like, silent) the client falls back and the server sees one empty, closed
//! connection. The same scenarios run once more inside a fresh network namespace.

use edp::edp::{ClientConfig, ServerConfig};
use edp::net::{connect, Accepted, Connected, EdpListener, Fallback};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
const LIMIT: Duration = Duration::from_secs(10);

/// What an unenhanced test server saw on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    bytes: Vec<u8>,
    /// The connection ended with an orderly close (read returned 0), not an error.
    closed_cleanly: bool,
}

type Log = Arc<Mutex<Vec<Seen>>>;

#[derive(Debug, Clone, Copy)]
enum Plain {
    /// Echoes until the client closes.
    Echo,
    /// Answers a request with 200, a connection without a request with 400.
    Http,
    /// Reads, never writes and never closes.
    Silent,
}

async fn spawn_plain(ip: IpAddr, kind: Plain) -> (SocketAddr, Log) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let task_log = log.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve_plain(stream, kind, task_log.clone()));
        }
    });
    (addr, log)
}

async fn serve_plain(mut stream: TcpStream, kind: Plain, log: Log) {
    let mut seen = Seen {
        bytes: Vec::new(),
        closed_cleanly: false,
    };
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                seen.closed_cleanly = true;
                break;
            }
            Ok(n) => {
                seen.bytes.extend_from_slice(&buf[..n]);
                match kind {
                    Plain::Echo => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    Plain::Http if seen.bytes.ends_with(b"\r\n\r\n") => {
                        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello").await;
                        seen.closed_cleanly = true;
                        break;
                    }
                    Plain::Http | Plain::Silent => {}
                }
            }
            Err(_) => break,
        }
    }
    let empty = seen.bytes.is_empty();
    log.lock().unwrap().push(seen);
    match kind {
        Plain::Http if empty => {
            let _ = stream.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").await;
        }
        // Never answers, never closes: the socket lives until the test's runtime ends.
        Plain::Silent => std::future::pending().await,
        _ => {}
    }
    let _ = stream.shutdown().await;
}

async fn roundtrip(mut s: impl AsyncRead + AsyncWrite + Unpin, data: &[u8]) -> Vec<u8> {
    s.write_all(data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    reply
}

async fn enhanced_pair(ip: IpAddr) {
    let mut listener = EdpListener::bind((ip, 0).into(), ServerConfig::default())
        .await
        .unwrap();
    let addr = listener.local_addr();
    let server = tokio::spawn(async move {
        let (accepted, _) = listener.accept().await.unwrap();
        let Accepted::Enhanced(session, stream) = accepted else {
            panic!("server: expected an enhanced connection, got {accepted:?}");
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        tokio::io::copy(&mut rd, &mut wr).await.unwrap();
        wr.shutdown().await.unwrap();
        let stats = listener.stats();
        let probes = stats
            .probes_answered
            .load(std::sync::atomic::Ordering::Relaxed);
        (session, probes)
    });
    let connected = connect(addr, ClientConfig::default()).await.unwrap();
    let Connected::Enhanced(session, stream) = connected else {
        panic!("client: expected enhanced, got {connected:?}");
    };
    assert_eq!(
        roundtrip(stream, b"ping over the main connection").await,
        b"ping over the main connection"
    );
    let (server_session, probes) = server.await.unwrap();
    assert_eq!(session.conn_id, server_session.conn_id);
    assert_eq!(
        session.key_id(),
        server_session.key_id(),
        "both ends derived the same key"
    );
    assert_eq!(probes, 1);
}

/// Runs the client against an unenhanced server; returns the fallback reason and checks that the
/// server saw the probe as an empty, cleanly closed connection and the plain one as normal use.
async fn against_plain(ip: IpAddr, kind: Plain) -> (Fallback, Duration) {
    let (addr, log) = spawn_plain(ip, kind).await;
    let started = Instant::now();
    let connected = connect(addr, ClientConfig::default()).await.unwrap();
    let elapsed = started.elapsed();
    let Connected::Plain(stream, reason) = connected else {
        panic!("{kind:?}: expected plain, got {connected:?}");
    };
    let request: &[u8] = match kind {
        Plain::Http => b"GET / HTTP/1.0\r\n\r\n",
        _ => b"plain data",
    };
    match kind {
        Plain::Echo => assert_eq!(roundtrip(stream, request).await, request),
        Plain::Http => assert_eq!(
            roundtrip(stream, request).await,
            b"HTTP/1.0 200 OK\r\n\r\nhello"
        ),
        Plain::Silent => {
            let mut stream = stream;
            stream.write_all(request).await.unwrap();
            stream.shutdown().await.unwrap();
        }
    }
    // Wait until the server logged both connections.
    let deadline = Instant::now() + LIMIT;
    while log.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{kind:?}: server connections: {seen:?}");
    let probe = Seen {
        bytes: vec![],
        closed_cleanly: true,
    };
    assert!(
        seen.contains(&probe),
        "{kind:?}: the probe must look like an empty closed connection: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.bytes == request),
        "{kind:?}: {seen:?}"
    );
    (reason, elapsed)
}

async fn fallback_scenarios(ip: IpAddr) {
    let (reason, _) = against_plain(ip, Plain::Echo).await;
    assert!(
        matches!(reason, Fallback::ClosedEarly { received: 0 }),
        "{reason:?}"
    );
    let (reason, _) = against_plain(ip, Plain::Http).await;
    assert!(matches!(reason, Fallback::UnexpectedData), "{reason:?}");
    let (reason, elapsed) = against_plain(ip, Plain::Silent).await;
    assert!(matches!(reason, Fallback::ProbeTimeout(_)), "{reason:?}");
    // Loopback connects in microseconds, so the wait is the 200 ms floor.
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(async {
        tokio::time::timeout(LIMIT, f)
            .await
            .expect("test timed out")
    })
}

#[test]
fn enhanced_client_and_server_initialise_over_loopback() {
    run(enhanced_pair(LOOPBACK));
}

#[test]
fn client_falls_back_against_unenhanced_servers() {
    run(fallback_scenarios(LOOPBACK));
}

#[test]
fn plain_clients_pass_through_an_enhanced_server_untouched() {
    run(async {
        let config = ServerConfig {
            classify_timeout: Duration::from_millis(100),
            ..Default::default()
        };
        let mut listener = EdpListener::bind((LOOPBACK, 0).into(), config)
            .await
            .unwrap();
        let addr = listener.local_addr();
        // A client that talks first.
        let client = tokio::spawn(async move {
            roundtrip(
                TcpStream::connect(addr).await.unwrap(),
                b"GET / HTTP/1.0\r\n\r\n",
            )
            .await
        });
        let (accepted, _) = listener.accept().await.unwrap();
        let Accepted::Plain(stream) = accepted else {
            panic!("{accepted:?}")
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        tokio::io::copy(&mut rd, &mut wr).await.unwrap();
        wr.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap(), b"GET / HTTP/1.0\r\n\r\n");
        // A client that waits for the server to speak first.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let Accepted::Plain(mut stream) = accepted else {
            panic!("{accepted:?}")
        };
        stream.write_all(b"220 welcome\r\n").await.unwrap();
        let mut banner = [0u8; 13];
        silent.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"220 welcome\r\n");
    });
}

#[test]
fn refused_connection_is_reported_as_an_error() {
    run(async {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = connect(addr, ClientConfig::default()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn helper_binaries_detect_each_other() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut server = Command::new(env!("CARGO_BIN_EXE_edp-server"))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server by its pid whatever happens below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let server = Reap(server);
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening ").expect(&first).to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_edp-client"))
        .args([&addr, "hi there"])
        .output()
        .unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    let mut out_lines = out.lines();
    let status = out_lines.next().unwrap();
    assert!(status.starts_with("enhanced conn="), "{out}");
    assert_eq!(out_lines.next(), Some("reply hi there"));
    let served = lines.next().unwrap().unwrap();
    let key = status.split("key=").nth(1).unwrap();
    assert!(
        served.starts_with("enhanced ") && served.ends_with(&format!("key={key}")),
        "{served}"
    );
    drop(server);
}

/// Enters a fresh network namespace on this thread (so nothing is left behind when it ends), with
/// loopback up and a documentation address on it.
fn enter_test_namespace() -> IpAddr {
    // SAFETY: unshare only changes this thread's namespace; no memory is involved.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed (needs root): {}",
        std::io::Error::last_os_error()
    );
    for args in [
        &["link", "set", "lo", "up"][..],
        &["addr", "add", "192.0.2.1/24", "dev", "lo"],
    ] {
        let status = std::process::Command::new("ip")
            .args(args)
            .status()
            .expect("running ip(8)");
        assert!(status.success(), "ip {args:?} failed");
    }
    "192.0.2.1".parse().unwrap()
}

#[test]
fn scenarios_in_a_network_namespace() {
    std::thread::spawn(|| {
        let ip = enter_test_namespace();
        run(async {
            enhanced_pair(ip).await;
            fallback_scenarios(ip).await;
        });
    })
    .join()
    .unwrap();
}
