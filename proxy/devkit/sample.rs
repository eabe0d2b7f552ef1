//! The demo's sample data product: a small "sales orders" JSON API on loopback.
//! It stands in for a domain team's own server behind the sidecar, and serves
//! both versions of the product: 2 at `/orders` (an array of orders, each
//! with its customer's e-mail and phone), the deprecated 1 at `/v1/orders`
//! (the array in an envelope).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::transport::listener::Acceptor;

/// The product's data, serialized once.
struct Orders {
    all: Bytes,
    /// The list as version 1 (`/v1/orders`) answers it.
    all_v1: Bytes,
    by_id: Vec<(String, Bytes)>,
}

fn orders() -> Orders {
    let rows: Vec<Value> = [
        (
            "SO-1001",
            "Northwind Traders",
            "EMEA",
            1289.50,
            "shipped",
            "buying@northwind.example",
            "+44 20 7946 0958",
        ),
        (
            "SO-1002",
            "Contoso Ltd",
            "NA",
            342.00,
            "open",
            "orders@contoso.example",
            "+1 425 555 0143",
        ),
        (
            "SO-1003",
            "Fabrikam Inc",
            "NA",
            5120.75,
            "invoiced",
            "ap@fabrikam.example",
            "+1 206 555 0187",
        ),
        (
            "SO-1004",
            "Tailspin Toys",
            "APAC",
            89.99,
            "open",
            "hello@tailspin.example",
            "+61 2 5550 1234",
        ),
        (
            "SO-1005",
            "Wide World Importers",
            "EMEA",
            2310.00,
            "shipped",
            "purchasing@wwi.example",
            "+49 30 5550 9876",
        ),
        (
            "SO-1006",
            "Adventure Works",
            "LATAM",
            760.25,
            "cancelled",
            "compras@adventure.example",
            "+55 11 5550 4321",
        ),
    ]
    .iter()
    .enumerate()
    .map(
        |(i, (id, customer, region, amount, status, email, phone))| {
            json!({
                "id": id,
                "customer": customer,
                "region": region,
                "amount": amount,
                "currency": "EUR",
                "status": status,
                "placed_at": format!("2026-11-{:02}T09:{:02}:00Z", 10 + i, 5 * i),
                "customer_email": email,
                "customer_phone": phone,
            })
        },
    )
    .collect();
    let by_id = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_string(),
                Bytes::from(r.to_string()),
            )
        })
        .collect();
    // Version 2 answers the records themselves, which field masking
    // reads (a wrapping object's members would be fields of their own).
    let all = Value::Array(rows.clone()).to_string();
    let all_v1 = json!({ "product": "sales.orders.v1", "orders": rows }).to_string();
    Orders {
        all: Bytes::from(all),
        all_v1: Bytes::from(all_v1),
        by_id,
    }
}

/// Serves the sample product on `listener` until the task is dropped:
/// HTTP/1.1, or HTTP/2 with prior knowledge (h2c), as each connection
/// begins (a sidecar's `upstream_protocol: http1 | h2c`).
pub async fn serve(listener: TcpListener) {
    let data = Arc::new(orders());
    let mut listener = Acceptor::new(listener, "sample");
    loop {
        let (tcp, _) = listener.accept().await;
        let _ = tcp.set_nodelay(true);
        let data = data.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let data = data.clone();
                async move { Ok::<_, Infallible>(route(&data, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn route<B>(data: &Orders, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(br#"{"error":"method_not_allowed"}"#),
        );
    }
    let path = req.uri().path();
    if path == "/orders" {
        return json_response(StatusCode::OK, data.all.clone());
    }
    if path == "/v1/orders" {
        return json_response(StatusCode::OK, data.all_v1.clone());
    }
    if path == "/healthz" {
        return json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#));
    }
    // Version 1 has the same rows.
    let one = path
        .strip_prefix("/orders/")
        .or_else(|| path.strip_prefix("/v1/orders/"));
    if let Some(id) = one {
        if let Some((_, body)) = data.by_id.iter().find(|(k, _)| k == id) {
            return json_response(StatusCode::OK, body.clone());
        }
    }
    json_response(
        StatusCode::NOT_FOUND,
        Bytes::from_static(br#"{"error":"not_found"}"#),
    )
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_list_is_about_one_and_a_half_kilobytes_of_json() {
        let o = orders();
        let v: Value = serde_json::from_slice(&o.all).expect("valid JSON");
        assert_eq!(v.as_array().map(|a| a.len()), Some(6));
        assert!(v[0]["customer_email"].is_string() && v[0]["customer_phone"].is_string());
        assert!(
            (1300..=2000).contains(&o.all.len()),
            "{} bytes",
            o.all.len()
        );
        let req = Request::get("/orders/SO-1003").body(()).expect("request");
        assert_eq!(route(&o, &req).status(), StatusCode::OK);
        let req = Request::get("/orders/SO-9").body(()).expect("request");
        assert_eq!(route(&o, &req).status(), StatusCode::NOT_FOUND);
    }

    /// The sample product answers HTTP/1.1 and h2c (prior knowledge) on
    /// one port: a sidecar with either `upstream_protocol` can sit in front.
    #[tokio::test]
    async fn the_product_speaks_http1_and_h2c_on_one_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let req = Request::get("/orders")
            .header(header::HOST, "sample")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let resp = h1.send_request(req).await.expect("h1 response");
        assert_eq!(
            (resp.version(), resp.status()),
            (http::Version::HTTP_11, StatusCode::OK)
        );
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(conn);
        let mut h2 = h2.ready().await.expect("h2 ready");
        let req = Request::get(format!("http://{addr}/orders"))
            .body(())
            .expect("request");
        let (resp, _) = h2.send_request(req, true).expect("h2 request");
        let resp = resp.await.expect("h2 response");
        assert_eq!(
            (resp.version(), resp.status()),
            (http::Version::HTTP_2, StatusCode::OK)
        );
        let mut body = resp.into_body();
        let mut read = Vec::new();
        while let Some(data) = body.data().await {
            read.extend_from_slice(&data.expect("data"));
        }
        assert_eq!(read, orders().all);
        server.abort();
    }

    #[test]
    fn version_1_answers_under_v1() {
        let o = orders();
        let req = Request::get("/v1/orders").body(()).expect("request");
        let resp = route(&o, &req);
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = serde_json::from_slice(&o.all_v1).expect("valid JSON");
        assert_eq!(v["product"], "sales.orders.v1");
        assert_eq!(v["orders"].as_array().map(|a| a.len()), Some(6));
        let req = Request::get("/v1/orders/SO-1003")
            .body(())
            .expect("request");
        assert_eq!(route(&o, &req).status(), StatusCode::OK);
        let req = Request::get("/v1/orders/SO-9").body(()).expect("request");
        assert_eq!(route(&o, &req).status(), StatusCode::NOT_FOUND);
    }
}
