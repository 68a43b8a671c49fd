//! A small HTTP/1.1 client for the CLI's talks with a running server (`bench --serve`, and
//! `models load|unload|ps`): hyper's connection API over TCP, or rustls for `https://`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One connection to the server.
pub type Connection = SendRequest<Full<Bytes>>;

/// A server and how to talk to it.
pub struct Server {
    /// The URL as given, without a trailing `/` or `/v1`.
    pub url: String,
    /// `host:port` for the `Host` header.
    authority: String,
    host: String,
    port: u16,
    /// The path the routes sit under (usually empty).
    base_path: String,
    /// Set for `https://`.
    tls: Option<TlsConnector>,
    api_key: Option<String>,
}

impl Server {
    /// The server at `url`, trusting the certificates in `cacert` (else the Mozilla roots)
    /// for `https://`, sending `api_key` as a bearer token.
    pub fn new(url: &str, cacert: Option<&Path>, api_key: Option<String>) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("`{url}` is not a URL"))?;
        let (tls, default_port) = match uri.scheme_str() {
            Some("http") => (None, 80),
            Some("https") => (Some(tls_connector(cacert)?), 443),
            _ => bail!("`{url}` must start with http:// or https://"),
        };
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            bail!("`{url}` names no host");
        };
        let base_path = uri.path().trim_end_matches('/');
        let base_path = base_path.strip_suffix("/v1").unwrap_or(base_path);
        Ok(Self {
            url: format!(
                "{}://{authority}{base_path}",
                uri.scheme_str().unwrap_or("")
            ),
            authority: authority.to_string(),
            // IPv6 literals come in brackets.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(default_port),
            base_path: base_path.to_string(),
            tls,
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }

    /// Opens a connection (TCP, then TLS for https).
    pub async fn connect(&self) -> Result<Connection> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => handshake(tcp).await,
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .with_context(|| format!("`{}` is not a valid TLS name", self.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {}", self.authority))?;
                handshake(stream).await
            }
        }
    }

    /// A `method` request for `path` (under the server's base path) with a JSON `body`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Request<Full<Bytes>>> {
        let path = format!("{}{path}", self.base_path);
        let mut request = Request::builder()
            .method(method)
            .uri(path.as_str())
            .header(HOST, &self.authority);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if let Some(key) = &self.api_key {
            request = request.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let body = body.map(Value::to_string).unwrap_or_default();
        Ok(request.body(Full::new(Bytes::from(body)))?)
    }

    /// Sends one request on a connection of its own; the JSON answer, or the server's error
    /// message.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut connection = self.connect().await?;
        let endpoint = format!("{method} {}{path}", self.url);
        connection
            .ready()
            .await
            .with_context(|| format!("{endpoint}: the connection closed"))?;
        let response = connection
            .send_request(self.request(method, path, body)?)
            .await
            .with_context(|| endpoint.clone())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{endpoint}: reading the answer"))?
            .to_bytes();
        if !status.is_success() {
            bail!("{endpoint}: {status}: {}", error_message(&bytes));
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{endpoint}: not JSON"))
    }
}

/// An HTTP/1.1 connection over `io`, driven by a task of its own.
async fn handshake<S>(io: S) -> Result<Connection>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        // Its errors reach the request that is waiting on it.
        let _ = connection.await;
    });
    Ok(sender)
}

/// TLS that trusts the certificates in `cacert`, or else the Mozilla roots.
fn tls_connector(cacert: Option<&Path>) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match cacert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading {}", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no PEM certificate", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate of {}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The message of an OpenAI error body, or the body itself.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_server_and_the_base_path() {
        let server = Server::new("http://127.0.0.1:8000/v1/", None, None).unwrap();
        assert_eq!(server.url, "http://127.0.0.1:8000");
        assert_eq!((server.host.as_str(), server.port), ("127.0.0.1", 8000));
        assert_eq!(server.base_path, "");
        let server = Server::new("http://[::1]/api", None, Some(String::new())).unwrap();
        assert_eq!((server.host.as_str(), server.port), ("::1", 80));
        assert_eq!(server.authority, "[::1]");
        assert_eq!(server.base_path, "/api");
        assert_eq!(server.api_key, None);
        assert!(Server::new("ftp://host", None, None).is_err());
        assert!(Server::new("localhost:8000", None, None).is_err());
    }
}
