//! A user-level EDP client: `edp-client SERVER-ADDR [MESSAGE]`.
//!
//! Prints `enhanced conn=ID key=KEYID` or `plain REASON`, then sends MESSAGE (if any), half-closes,
//! and prints `reply TEXT` with everything the server sent back before closing.

use edp::net::{connect, Connected};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: edp-client SERVER-ADDR [MESSAGE]");
        std::process::exit(2);
    };
    let message = args.next().unwrap_or_default();
    let addr = addr.parse().map_err(std::io::Error::other)?;
    let reply = match connect(addr, Default::default()).await? {
        Connected::Enhanced(session, stream) => {
            let key = edp::identity::hex(&session.key_id());
            println!("enhanced conn={} key={key}", session.conn_id);
            exchange(stream, &message).await?
        }
        Connected::Plain(stream, reason) => {
            println!("plain {reason:?}");
            exchange(stream, &message).await?
        }
    };
    println!("reply {}", String::from_utf8_lossy(&reply));
    Ok(())
}

async fn exchange(
    mut s: impl AsyncRead + AsyncWrite + Unpin,
    message: &str,
) -> std::io::Result<Vec<u8>> {
    s.write_all(message.as_bytes()).await?;
    s.shutdown().await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    Ok(reply)
}
