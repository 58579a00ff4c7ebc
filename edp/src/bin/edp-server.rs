//! A user-level enhanced echo server: `edp-server LISTEN-ADDR`.
//!
//! Prints `listening ADDR`, then one line per served connection (`enhanced PEER conn=ID key=KEYID`
//! or `plain PEER`), and echoes every connection's bytes back until the client closes.

use edp::net::{Accepted, EdpListener};
use std::io::Write;
use tokio::io::AsyncWriteExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: edp-server LISTEN-ADDR (e.g. 0.0.0.0:7000)");
        std::process::exit(2);
    };
    let addr = addr.parse().map_err(std::io::Error::other)?;
    let mut listener = EdpListener::bind(addr, Default::default()).await?;
    say(format!("listening {}", listener.local_addr()));
    loop {
        let (accepted, peer) = listener.accept().await?;
        let mut stream = match accepted {
            Accepted::Enhanced(session, stream) => {
                let key = edp::identity::hex(&session.key_id());
                say(format!(
                    "enhanced {peer} conn={} key={key}",
                    session.conn_id
                ));
                stream
            }
            Accepted::Plain(stream) => {
                say(format!("plain {peer}"));
                stream
            }
        };
        tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(&mut stream);
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
            let _ = wr.shutdown().await;
        });
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
