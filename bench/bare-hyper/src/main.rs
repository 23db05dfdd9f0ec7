//! bare-hyper LISTEN BYTES: answers every HTTP/1.1 request on LISTEN (e.g.
//! 127.0.0.1:0) with 200, `content-type: application/json`, `cache-control: no-store`
//! and a fixed JSON object of exactly BYTES bytes. Prints the bound address on stdout.
//!
//! The anchor for bench/api-token.sh. Deliberately plain: hyper parses every request
//! and writes a full response (status line, headers with date and content-length,
//! body), keep-alive on, TCP_NODELAY like upkeep's listener, tokio multi-thread
//! runtime with its default worker count. No pre-rendered responses, no pipelining
//! tricks, nothing upkeep could not do as well.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A JSON object of exactly `n` bytes (at least 12): `{"pad":"xxx...x"}`.
fn body_of(n: usize) -> Bytes {
    const FRAME: usize = r#"{"pad":""}"#.len();
    let n = n.max(FRAME);
    let mut s = String::with_capacity(n);
    s.push_str(r#"{"pad":""#);
    s.extend(std::iter::repeat_n('x', n - FRAME));
    s.push_str(r#""}"#);
    debug_assert_eq!(s.len(), n);
    Bytes::from(s)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(size)) = (args.next(), args.next()) else {
        eprintln!("usage: bare-hyper LISTEN BYTES   (e.g. bare-hyper 127.0.0.1:0 900)");
        std::process::exit(2);
    };
    let Ok(size) = size.parse::<usize>() else {
        eprintln!("bare-hyper: BYTES must be a number, not {size:?}");
        std::process::exit(2);
    };
    let body = body_of(size);
    let listener = TcpListener::bind(&listen).await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bare-hyper: accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let mut resp = Response::new(Full::new(body.clone()));
                let h = resp.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
