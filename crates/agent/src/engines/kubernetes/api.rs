//! The Kubernetes API over HTTP: one `ureq` agent (the cluster's CA when given), the
//! bearer token read from its file on every call (service-account tokens rotate), and the
//! API server's `Status` answers turned into [`ApiError`]s.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A refused or failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The API server answered with an error `Status` (`reason`: NotFound, AlreadyExists,
    /// Invalid, Forbidden …).
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer (connection refused, timeout, TLS) or an unreadable one.
    Transport(String),
}

impl ApiError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            ApiError::Transport(_) => None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Status {
                code,
                reason,
                message,
            } => write!(f, "{code} {reason}: {message}"),
            ApiError::Transport(e) => write!(f, "{e}"),
        }
    }
}

/// A connection to one API server.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    token_file: Option<PathBuf>,
}

impl Api {
    /// `base` is `http(s)://host:port`; `ca_file` a PEM bundle that replaces the built-in
    /// (Mozilla) roots for https.
    pub fn new(
        base: &str,
        token_file: Option<PathBuf>,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<Api> {
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .redirects(0);
        if let Some(ca) = ca_file {
            b = b.tls_config(Arc::new(tls_with_ca(ca)?));
        }
        Ok(Api {
            agent: b.build(),
            base: base.trim_end_matches('/').to_string(),
            token_file,
        })
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<ureq::Request, ApiError> {
        let mut r = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Accept", "application/json");
        for (k, v) in query {
            r = r.query(k, v);
        }
        if let Some(file) = &self.token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|e| ApiError::Transport(format!("token file {}: {e}", file.display())))?;
            r = r.set("Authorization", &format!("Bearer {}", token.trim()));
        }
        Ok(r)
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        json_of(self.request("GET", path, query)?.call())
    }

    /// A GET whose answer is text (a pod's log).
    pub fn get_text(&self, path: &str, query: &[(&str, &str)]) -> Result<String, ApiError> {
        let resp = self.request("GET", path, query)?.call().map_err(error_of)?;
        resp.into_string()
            .map_err(|e| ApiError::Transport(format!("reading the answer: {e}")))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        json_of(self.request("POST", path, &[])?.send_json(body))
    }

    /// A DELETE with `DeleteOptions` as its body.
    pub fn delete(&self, path: &str, options: &Value) -> Result<Value, ApiError> {
        json_of(self.request("DELETE", path, &[])?.send_json(options))
    }
}

fn json_of(r: Result<ureq::Response, ureq::Error>) -> Result<Value, ApiError> {
    let resp = r.map_err(error_of)?;
    resp.into_json()
        .map_err(|e| ApiError::Transport(format!("the API server's answer is not JSON: {e}")))
}

fn error_of(e: ureq::Error) -> ApiError {
    match e {
        ureq::Error::Status(code, resp) => {
            let text = resp.into_string().unwrap_or_default();
            let status: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let field = |k: &str| status.get(k).and_then(Value::as_str).map(String::from);
            ApiError::Status {
                code,
                reason: field("reason").unwrap_or_else(|| format!("HTTP {code}")),
                message: field("message").unwrap_or_else(|| text.chars().take(300).collect()),
            }
        }
        ureq::Error::Transport(t) => ApiError::Transport(t.to_string()),
    }
}

fn tls_with_ca(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .map_err(|e| anyhow::anyhow!("ca_file {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| anyhow::anyhow!("ca_file {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("ca_file {}: {e}", ca.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "ca_file {} holds no certificate",
        ca.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
