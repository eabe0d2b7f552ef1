//! A client's request trailers never reach the upstream. Trailers on a
//! request would pass every header the sidecar strips or sets (an
//! `x-meshgate-principal` of the client's choosing, a method override), and
//! a gRPC server takes a second HEADERS block on a request stream for a
//! protocol error that closes the connection every consumer's calls share.
//! The upstream here is the `h2` crate's server (h2c), recording what each
//! stream brought; the clients are hyper's, over HTTP/2 and over HTTP/1.1
//! with a chunked body.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

/// What one stream brought to the upstream: its body and its trailers.
#[derive(Debug, Clone, Default)]
struct Arrived {
    body: Vec<u8>,
    trailers: Option<http::HeaderMap>,
}

/// An h2c upstream answering 200 `ok` to every stream once its body
/// ended, on a thread of its own; what each stream brought, in `arrived`.
struct RecordingUpstream {
    addr: std::net::SocketAddr,
    arrived: Arc<Mutex<Vec<Arrived>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RecordingUpstream {
    fn start() -> RecordingUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let record = arrived.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    while let Ok((tcp, _)) = listener.accept().await {
                        tokio::spawn(serve(tcp, record.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
        });
        RecordingUpstream {
            addr,
            arrived,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Target for RecordingUpstream {
    fn target_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(tcp: tokio::net::TcpStream, arrived: Arc<Mutex<Vec<Arrived>>>) {
    let Ok(mut conn) = h2::server::handshake(tcp).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let arrived = arrived.clone();
        tokio::spawn(async move {
            let mut body = req.into_body();
            let mut seen = Arrived::default();
            while let Some(Ok(data)) = body.data().await {
                seen.body.extend_from_slice(&data);
                let _ = body.flow_control().release_capacity(data.len());
            }
            seen.trailers = body.trailers().await.ok().flatten();
            arrived.lock().expect("lock").push(seen);
            let head = http::Response::builder()
                .status(200)
                .body(())
                .expect("head");
            if let Ok(mut stream) = respond.send_response(head, false) {
                let _ = stream.send_data(Bytes::from_static(b"ok"), true);
            }
        });
    }
}

/// Trailers a client could hope the upstream takes for the sidecar's word.
fn spoofing_trailers() -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert(
        "x-meshgate-principal",
        http::HeaderValue::from_static("spiffe://mesh.local/ns/admin/sa/root"),
    );
    t.insert(
        "x-http-method-override",
        http::HeaderValue::from_static("DELETE"),
    );
    t.insert("x-forwarded-user", http::HeaderValue::from_static("admin"));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_the_upstream() {
    let pki = Pki::new();
    let up = RecordingUpstream::start();
    let mg = Meshgate::builder(&pki, &up)
        .extra("upstream_protocol: h2c\n")
        .start();
    let body = || {
        let trailers = spoofing_trailers();
        Full::new(Bytes::from_static(b"the body"))
            .with_trailers(std::future::ready(Some(Ok(trailers))))
    };

    // HTTP/2: HEADERS, DATA, then a HEADERS block of trailers.
    let mut h2 = h2_sender(&pki, "reporting", mg.data).await;
    h2.ready().await.expect("sidecar connection");
    let req = http::Request::post(mg.url("/orders"))
        .body(body())
        .expect("request");
    let resp = h2.send_request(req).await.expect("the sidecar answers");
    assert_eq!(resp.status(), 200);
    let answer = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&answer[..], b"ok");

    // HTTP/1.1: a chunked body whose last chunk carries trailer fields.
    let tls = tls_connect(&pki, "reporting", mg.data).await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("http handshake");
    tokio::spawn(conn);
    h1.ready().await.expect("sidecar connection");
    let req = http::Request::post("/orders")
        .header("host", "localhost")
        .header("transfer-encoding", "chunked")
        .header("te", "trailers")
        .header(
            "trailer",
            "x-meshgate-principal, x-http-method-override, x-forwarded-user",
        )
        .body(body())
        .expect("request");
    let resp = h1.send_request(req).await.expect("the sidecar answers");
    assert_eq!(resp.status(), 200);
    let answer = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&answer[..], b"ok");

    let arrived = up.arrived.lock().expect("lock").clone();
    assert_eq!(arrived.len(), 2, "{arrived:?}");
    for a in &arrived {
        // The body whole, and no trailers at all.
        assert_eq!(a.body, b"the body", "{arrived:?}");
        assert!(a.trailers.is_none(), "trailers reached the upstream: {a:?}");
    }
}
