//! A real OTLP receiver for the span tests, both transports on one port:
//! OTLP/HTTP (`POST /v1/traces`, binary protobuf, HTTP/1.1) and OTLP/gRPC
//! (`TraceService/Export` over h2c). It decodes each
//! `ExportTraceServiceRequest` with the official `opentelemetry-proto`
//! types and keeps every span, flattened for assertions;
//! [`OtlpReceiver::start_tls`] serves both over TLS instead. [`Mode::Hang`]
//! accepts exports and never answers them (a stuck collector); dropping the
//! receiver closes it (a dead one).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::Value;

/// How the receiver answers exports.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Answer,
    /// Reads the export, then never answers.
    Hang,
}

/// One received span, ids as lowercase hex ("" for no parent).
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    /// 2 server, 3 client (the proto's `SpanKind`).
    pub kind: i32,
    pub name: String,
    pub flags: u32,
    pub attributes: BTreeMap<String, Value>,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub start: u64,
    pub end: u64,
    /// The resource's and the scope's attributes and names.
    pub resource: BTreeMap<String, Value>,
    pub scope: String,
}

impl Span {
    pub fn attr(&self, key: &str) -> Value {
        self.attributes.get(key).cloned().unwrap_or(Value::Null)
    }
}

type Spans = Arc<(Mutex<Vec<Span>>, Condvar)>;

pub struct OtlpReceiver {
    pub addr: SocketAddr,
    tls: bool,
    spans: Spans,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    pub fn start(mode: Mode) -> OtlpReceiver {
        OtlpReceiver::start_with(mode, None)
    }

    /// Over TLS with `pki`'s server certificate (`localhost`), offering
    /// HTTP/2 and HTTP/1.1; its endpoints are then `https://localhost:…`.
    pub fn start_tls(mode: Mode, pki: &super::Pki) -> OtlpReceiver {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(pki.path("server.pem"))
            .expect("server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(pki.path("server-key.pem"))
            .expect("server-key.pem");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        OtlpReceiver::start_with(mode, Some(Arc::new(config)))
    }

    fn start_with(mode: Mode, tls: Option<Arc<rustls::ServerConfig>>) -> OtlpReceiver {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let spans: Spans = Arc::default();
        let tls_on = tls.is_some();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let kept = spans.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(listener, kept, mode, tls, stopped));
        });
        OtlpReceiver {
            addr,
            tls: tls_on,
            spans,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The `tracing.otlp.endpoint` for http/protobuf.
    pub fn endpoint(&self) -> String {
        format!("{}/v1/traces", self.grpc_endpoint())
    }

    /// The `tracing.otlp.endpoint` for grpc.
    pub fn grpc_endpoint(&self) -> String {
        match self.tls {
            true => format!("https://localhost:{}", self.addr.port()),
            false => format!("http://{}", self.addr),
        }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.0.lock().expect("lock").clone()
    }

    /// Waits (up to 20 s) until a received span satisfies `pred`; returns
    /// every span received by then.
    pub fn wait_for(&self, pred: impl Fn(&Span) -> bool) -> Vec<Span> {
        let (m, c) = &*self.spans;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut spans = m.lock().expect("lock");
        while !spans.iter().any(&pred) {
            let now = Instant::now();
            assert!(now < deadline, "no such span among {:#?}", *spans);
            spans = c.wait_timeout(spans, deadline - now).expect("lock").0;
        }
        spans.clone()
    }

    /// The spans of trace `trace_id` (hex), once `n` of them have arrived.
    pub fn wait_trace(&self, trace_id: &str, n: usize) -> Vec<Span> {
        let (m, c) = &*self.spans;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut spans = m.lock().expect("lock");
        loop {
            let of: Vec<Span> = spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            if of.len() >= n {
                return of;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "{} of {n} spans of {trace_id}: {:#?}",
                of.len(),
                *spans
            );
            spans = c.wait_timeout(spans, deadline - now).expect("lock").0;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: StdListener,
    spans: Spans,
    mode: Mode,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let spans = spans.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                None => connection(tcp, spans, mode).await,
                Some(tls) => {
                    if let Ok(stream) = tls.accept(tcp).await {
                        connection(stream, spans, mode).await;
                    }
                }
            }
        });
    }
    // Every open connection is closed with the receiver.
    connections.abort_all();
}

/// Serves one connection, HTTP/1.1 or HTTP/2 (h2c or ALPN).
async fn connection<IO>(io: IO, spans: Spans, mode: Mode)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| export(req, spans.clone(), mode));
    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
}

/// The gRPC method of OTLP/gRPC's trace export.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

type Reply = hyper::Response<BoxBody<Bytes, std::convert::Infallible>>;

async fn export(
    req: hyper::Request<hyper::body::Incoming>,
    spans: Spans,
    mode: Mode,
) -> Result<Reply, std::convert::Infallible> {
    let grpc = req.uri().path() == GRPC_EXPORT;
    if !(grpc || req.uri().path() == "/v1/traces") || req.method() != http::Method::POST {
        return Ok(reply(404, "text/plain", Bytes::new()));
    }
    let Ok(body) = req.into_body().collect().await else {
        return Ok(reply(400, "text/plain", Bytes::new()));
    };
    let body = body.to_bytes();
    // A gRPC message is framed: a compression flag and a 4-byte length.
    let message = if grpc {
        body.get(5..).unwrap_or_default()
    } else {
        &body[..]
    };
    let Ok(export) = ExportTraceServiceRequest::decode(message) else {
        return Ok(reply(400, "text/plain", Bytes::new()));
    };
    if mode == Mode::Hang {
        std::future::pending::<()>().await;
    }
    let (m, c) = &*spans;
    m.lock().expect("lock").extend(flatten(export));
    c.notify_all();
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    if !grpc {
        return Ok(reply(200, "application/x-protobuf", Bytes::from(answer)));
    }
    let mut framed = vec![0u8];
    framed.extend(u32::try_from(answer.len()).expect("small").to_be_bytes());
    framed.extend(answer);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(framed)).with_trailers(async { Some(Ok(trailers)) });
    let mut r = hyper::Response::new(body.boxed());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(r)
}

fn reply(status: u16, content_type: &'static str, body: Bytes) -> Reply {
    let mut r = hyper::Response::new(Full::new(body).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let resource = rs
            .resource
            .map(|r| attributes(r.attributes))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            let scope = ss.scope.map(|s| s.name).unwrap_or_default();
            for s in ss.spans {
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    kind: s.kind,
                    name: s.name,
                    flags: s.flags,
                    attributes: attributes(s.attributes),
                    status: s.status.map_or(0, |st| st.code),
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    resource: resource.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    out
}

fn attributes(kvs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    kvs.into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value.and_then(|v| v.value).map_or(Value::Null, json),
            )
        })
        .collect()
}

fn json(v: Any) -> Value {
    match v {
        Any::StringValue(s) => Value::String(s),
        Any::BoolValue(b) => Value::Bool(b),
        Any::IntValue(i) => Value::from(i),
        Any::DoubleValue(d) => Value::from(d),
        Any::ArrayValue(a) => Value::Array(
            a.values
                .into_iter()
                .map(|v| v.value.map_or(Value::Null, json))
                .collect(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
