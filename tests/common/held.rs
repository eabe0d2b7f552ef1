//! An upstream that holds every request until the test lets it go: a
//! request in flight for exactly as long as the test needs, without a
//! timer. Stopped (every held request answered) on drop.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::Semaphore;

use super::Target;

pub struct HeldUpstream {
    pub addr: SocketAddr,
    arrivals: Mutex<mpsc::Receiver<String>>,
    gate: Arc<Semaphore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HeldUpstream {
    pub fn start() -> HeldUpstream {
        let std_listener = StdListener::bind("127.0.0.1:0").expect("bind upstream");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let (arrivals_tx, arrivals) = mpsc::channel();
        let gate = Arc::new(Semaphore::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let held = gate.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(std_listener, arrivals_tx, held, stop_rx));
        });
        HeldUpstream {
            addr,
            arrivals: Mutex::new(arrivals),
            gate,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Waits (up to 20 s) until a request arrived; returns its target.
    pub fn wait_arrival(&self) -> String {
        self.arrivals
            .lock()
            .expect("lock")
            .recv_timeout(Duration::from_secs(20))
            .expect("a request reached the upstream")
    }

    /// Lets `n` held requests (or the next ones to arrive) be answered.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

impl Target for HeldUpstream {
    fn target_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HeldUpstream {
    fn drop(&mut self) {
        // Closed: every held request is answered at once.
        self.gate.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts until `stop`; each request reports its target, waits for a
/// permit of `gate` (or its closing) and answers
/// `{"upstream_path": "<target>"}`.
async fn serve(
    std_listener: StdListener,
    arrivals: mpsc::Sender<String>,
    gate: Arc<Semaphore>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
    let arrivals = Arc::new(Mutex::new(arrivals));
    let accept = async {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (arrivals, gate) = (arrivals.clone(), gate.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let target = req.uri().to_string();
                    let _ = arrivals.lock().map(|tx| tx.send(target.clone()));
                    let gate = gate.clone();
                    async move {
                        if let Ok(permit) = gate.acquire().await {
                            permit.forget();
                        }
                        let body = serde_json::json!({ "upstream_path": target }).to_string();
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    };
    tokio::select! {
        _ = accept => {},
        _ = stop => {},
    }
}
