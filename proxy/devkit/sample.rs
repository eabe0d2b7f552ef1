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
use hyper_util::rt::TokioIo;
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

/// Serves the sample product on `listener` until the task is dropped.
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
            let _ = hyper::server::conn::http1::Builder::new()
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
