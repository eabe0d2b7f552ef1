//! One request through curl with everything a test looks at in its answer:
//! the status, the response headers and the body.

use super::{curl, Pki};

/// What curl received.
#[derive(Debug)]
pub struct Reply {
    /// `%{http_code}`: "000" when no HTTP response came.
    pub status: String,
    /// The response headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The response's `x-request-id` (what its audit event is found by).
    pub fn request_id(&self) -> &str {
        self.header("x-request-id")
            .unwrap_or_else(|| panic!("no x-request-id: {self:?}"))
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A request to `url` as client `who` with curl, `args` (method, headers)
/// before the URL.
pub fn fetch(pki: &Pki, who: &str, args: &[&str], url: &str) -> Reply {
    let head = tempfile::NamedTempFile::new_in(pki.dir.path()).expect("temp file");
    let head_path = head.path().to_str().expect("utf-8 path").to_string();
    let mut all = vec!["-D", head_path.as_str(), "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(pki, Some(who), &all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let head = std::fs::read_to_string(head.path()).unwrap_or_default();
    // The last response's headers (curl writes each, 100 Continue included).
    let last = head.rsplit("\r\n\r\n").find(|b| !b.trim().is_empty());
    let headers = last
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    Reply {
        status: status.to_string(),
        headers,
        body: body.to_string(),
    }
}
