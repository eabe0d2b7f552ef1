//! The two OTLP transports, each sending one encoded
//! `ExportTraceServiceRequest`: OTLP/HTTP over hyper's client (rustls with
//! aws-lc-rs), OTLP/gRPC as a unary `TraceService/Export` call over tonic
//! (the transport the official `opentelemetry-otlp` exporter uses);
//! meshgate hands them bytes rather than the SDK's span data (`wire.rs`
//! says why).
//!
//! Of the collector's answer at most [`MAX_ANSWER`] bytes are read, with
//! either transport: an `ExportTraceServiceResponse` is a few bytes (a
//! partial success's message a line), and the status is all meshgate
//! looks at. A longer answer fails the export and its connection is
//! closed unread. (opentelemetry-http's hyper client, used before, read
//! up to 4 MiB of every answer into memory: a hostile collector answering
//! each export with an endless body cost the sidecar some 45 MB.)

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{Buf, BufMut, Bytes};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use http_body_util::{BodyExt, Full};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TRACES_HEADERS};

use super::config::{OtlpConfig, Protocol};

/// Where and how exports go.
pub(super) enum Sender {
    Http {
        client: Box<HttpClient>,
        endpoint: http::Uri,
        headers: HeaderMap,
    },
    Grpc {
        client: tonic::client::Grpc<tonic::transport::Channel>,
        metadata: MetadataMap,
    },
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
type HttpClient = hyper_util::client::legacy::Client<HttpsConnector, Full<Bytes>>;

/// The most of a collector's answer that is read (see the module's docs).
pub(super) const MAX_ANSWER: usize = 4 * 1024;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl Sender {
    /// The transport of `config.protocol`, its headers the file's over
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` over `OTEL_EXPORTER_OTLP_HEADERS`.
    /// Must run on a Tokio runtime (the gRPC channel connects lazily).
    pub(super) fn new(config: &OtlpConfig) -> Result<Sender, String> {
        let headers = headers(&config.headers)?;
        match config.protocol {
            Protocol::HttpProtobuf => Ok(Sender::Http {
                client: Box::new(http_client(config.ca.as_deref())?),
                endpoint: (config.endpoint.parse()).map_err(|e| format!("endpoint: {e}"))?,
                headers,
            }),
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| format!("endpoint: {e}"))?
                    .timeout(config.timeout);
                if config.endpoint.starts_with("https:") {
                    use opentelemetry_otlp::tonic_types::transport::{
                        Certificate, ClientTlsConfig,
                    };
                    let mut tls = ClientTlsConfig::new().with_native_roots();
                    if let Some(ca) = &config.ca {
                        let pem = crate::base::paths::read_file_bytes(ca)
                            .map_err(|e| format!("ca: {}: {e}", ca.display()))?;
                        tls = tls.ca_certificate(Certificate::from_pem(pem));
                    }
                    endpoint = endpoint.tls_config(tls).map_err(|e| format!("ca: {e}"))?;
                }
                Ok(Sender::Grpc {
                    client: tonic::client::Grpc::new(endpoint.connect_lazy())
                        .max_decoding_message_size(MAX_ANSWER),
                    metadata: MetadataMap::from_headers(headers),
                })
            }
        }
    }

    /// Sends one export; an error says why it was not accepted.
    pub(super) async fn send(&self, body: Bytes) -> Result<(), String> {
        match self {
            Sender::Http {
                client,
                endpoint,
                headers,
            } => {
                let mut req = http::Request::post(endpoint.clone())
                    .header(CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(body))
                    .map_err(|e| e.to_string())?;
                req.headers_mut().extend(headers.clone());
                let resp = client.request(req).await.map_err(|e| e.to_string())?;
                match resp.status() {
                    s if s.is_success() => read_answer(resp.into_body()).await,
                    // Its body is not read: dropped, it closes the connection.
                    s => Err(format!("the collector answered {s}")),
                }
            }
            Sender::Grpc { client, metadata } => {
                let mut client = client.clone();
                client.ready().await.map_err(|e| e.to_string())?;
                let mut req = tonic::Request::new(body);
                *req.metadata_mut() = metadata.clone();
                let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
                client
                    .unary::<_, (), _>(req, path, Encoded)
                    .await
                    .map(drop)
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            }
        }
    }
}

/// Reads an OTLP/HTTP answer's body to its end and drops it, or fails as
/// soon as it passes [`MAX_ANSWER`] bytes (the response, dropped unread,
/// closes its connection). Its time is the export's `timeout`.
async fn read_answer(mut body: hyper::body::Incoming) -> Result<(), String> {
    let too_long = || format!("the collector's answer passed {MAX_ANSWER} bytes; not read further");
    if http_body::Body::size_hint(&body).lower() > MAX_ANSWER as u64 {
        return Err(too_long());
    }
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the collector's answer: {e}"))?;
        read = read.saturating_add(frame.data_ref().map_or(0, Buf::remaining));
        if read > MAX_ANSWER {
            return Err(too_long());
        }
    }
    Ok(())
}

/// OTLP/HTTP over hyper with rustls (aws-lc-rs, the system's roots and
/// `ca`): the crypto provider of the rest of meshgate. Each export is
/// bounded by the exporter's `timeout`.
fn http_client(ca: Option<&Path>) -> Result<HttpClient, String> {
    let roots = crate::base::fetch::roots(ca).map_err(|e| format!("ca: {e}"))?;
    let tls = crate::base::fetch::client_config(roots)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// The export headers: the environment's (`k=v,k2=v2`, values
/// percent-decoded, as OpenTelemetry specifies), then the file's, which win.
fn headers(file: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for var in [
        OTEL_EXPORTER_OTLP_HEADERS,
        OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    ] {
        let Ok(list) = std::env::var(var) else {
            continue;
        };
        for (k, v) in list.split(',').filter_map(|kv| kv.split_once('=')) {
            let v = percent_decode(v.trim());
            insert(&mut map, k.trim(), &v).map_err(|e| format!("{var}: {e}"))?;
        }
    }
    for (k, v) in file {
        insert(&mut map, k, v).map_err(|e| format!("headers: {e}"))?;
    }
    Ok(map)
}

fn insert(map: &mut HeaderMap, k: &str, v: &str) -> Result<(), String> {
    let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("`{k}`: {e}"))?;
    let value = HeaderValue::from_str(v).map_err(|e| format!("`{k}`: {e}"))?;
    map.insert(name, value);
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b.get(i + 1..i + 3))
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC codec of an already encoded request; the answer (an
/// `ExportTraceServiceResponse`) is not read beyond its status.
#[derive(Debug, Clone, Copy)]
struct Encoded;

impl tonic::codec::Codec for Encoded {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Encoded;
    type Decoder = Encoded;

    fn encoder(&mut self) -> Encoded {
        Encoded
    }

    fn decoder(&mut self) -> Encoded {
        Encoded
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Encoded {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn header_values_from_the_environment_are_percent_decoded() {
        assert_eq!(percent_decode("Basic%20abc%3D"), "Basic abc=");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
