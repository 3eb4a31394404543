//! The secure port: HTTPS with rustls (ring provider); users from client certificates signed
//! by a `--client-ca-file` authority (Common Name: the user, Organizations: the groups) and
//! from bearer tokens of a kube-apiserver `--token-auth-file` (CSV: `token,user,uid[,"g1,g2"]`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use crate::error::ApiError;

/// Why the secure port's TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("parsing certificates in {}: {source}", path.display())]
    Certificates { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("reading the key in {}: {source}", path.display())]
    Key { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
    #[error("TLS certificate of {} and key of {}: {source}", cert.display(), key.display())]
    CertificateAndKey { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("--client-ca-file {}: {message}", path.display())]
    ClientCa { path: PathBuf, message: String },
}

/// A rustls server config from PEM files; with `client_ca`, client certificates signed by its
/// authorities are verified (and optional: token users need none).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsConfigError::Read { path: cert.to_owned(), source })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::Certificates { path: cert.to_owned(), source })?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|source| TlsConfigError::Key { path: key.to_owned(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Versions)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let bad = |message: String| TlsConfigError::ClientCa { path: path.to_owned(), message };
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                roots.add(ca.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no certificate".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, private_key).map_err(|source| {
        TlsConfigError::CertificateAndKey { cert: cert.to_owned(), key: key.to_owned(), source }
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands out connections after their TLS handshake; the
/// handshakes run concurrently, off the accept loop.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("accept on the secure port: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, conn_tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = conn_tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {addr}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop never ends while the receiver lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The user of a connection's verified client certificate, if it presented one.
#[derive(Debug, Clone, Default)]
pub struct Peer(pub Option<User>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Peer {
        let (_, session) = stream.io().get_ref();
        Peer(session.peer_certificates().and_then(|chain| chain.first()).and_then(certificate_user))
    }
}

/// The user a certificate names: Common Name, Organizations as groups.
pub fn certificate_user(cert: &CertificateDer<'_>) -> Option<User> {
    use x509_cert::der::Decode as _;
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    let (mut name, mut groups) = (None, Vec::new());
    for rdn in cert.tbs_certificate().subject().iter_rdn() {
        for atv in rdn.iter() {
            let text = atv
                .value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    atv.value.decode_as::<PrintableStringRef<'_>>().map(|s| s.as_str().to_owned())
                });
            let Ok(text) = text else { continue };
            match atv.oid.to_string().as_str() {
                "2.5.4.3" => name = Some(text),
                "2.5.4.10" => groups.push(text),
                _ => {}
            }
        }
    }
    let name = name.filter(|n| !n.is_empty())?;
    Some(User { name, uid: String::new(), groups })
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Bearer tokens from a token-auth file.
#[derive(Debug, Clone, Default)]
pub struct Tokens(HashMap<String, User>);

impl Tokens {
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 || fields[0].is_empty() {
                return Err(format!("line {}: want token,user,uid[,groups]", n + 1));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let user = User { name: fields[1].clone(), uid: fields[2].clone(), groups };
            tokens.insert(fields[0].clone(), user);
        }
        Ok(Tokens(tokens))
    }

    pub fn user(&self, token: &str) -> Option<&User> {
        self.0.get(token)
    }
}

/// CSV fields, with double-quoted fields that may hold commas.
fn split_csv(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields.into_iter().map(|f| f.trim().to_owned()).collect()
}

/// How the secure port tells who a request is from.
#[derive(Debug, Clone, Default)]
pub struct Authn {
    pub tokens: Option<Tokens>,
    pub client_certificates: bool,
    /// Checks ServiceAccount tokens (the JSON Web Tokens of TokenRequests).
    pub service_accounts: Option<Arc<crate::satoken::Signer>>,
}

/// Middleware: the request's user is its connection's verified client certificate's, else its
/// bearer token's (a token that is not known is a 401, as is a request with neither when the
/// port has tokens or client certificates to check); the user joins `system:authenticated`.
/// Health endpoints stay anonymous, as kube-apiserver's do.
pub async fn authenticate(
    State(authn): State<Arc<Authn>>,
    mut request: Request,
    next: Next,
) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/livez" | "/readyz") {
        return next.run(request).await;
    }
    let from_cert =
        request.extensions().get::<axum::extract::ConnectInfo<Peer>>().and_then(|c| c.0.0.clone());
    let token = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let user = match (from_cert, token) {
        (Some(user), _) => Some(user),
        (None, Some(t)) => {
            authn.tokens.as_ref().and_then(|tokens| tokens.user(t)).cloned().or_else(|| {
                let signer = authn.service_accounts.as_ref()?;
                signer.verify(t, crate::object::unix_now()).map(|claims| claims.user())
            })
        }
        (None, None) if authn.tokens.is_none() && !authn.client_certificates => {
            return next.run(request).await;
        }
        (None, None) => None,
    };
    match user {
        Some(mut user) => {
            tracing::debug!(user = %user.name, "authenticated");
            if !user.groups.iter().any(|g| g == crate::rbac::AUTHENTICATED) {
                user.groups.push(crate::rbac::AUTHENTICATED.into());
            }
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None => ApiError::Unauthorized("Unauthorized".into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file() {
        let tokens = Tokens::parse("# comment\nabc,admin,1,\"system:masters,dev\"\nxyz, bob ,2\n")
            .expect("parses");
        let admin = tokens.user("abc").expect("admin");
        assert_eq!(admin.name, "admin");
        assert_eq!(admin.groups, ["system:masters", "dev"]);
        assert_eq!(tokens.user("xyz").map(|u| u.name.as_str()), Some("bob"));
        assert!(tokens.user("nope").is_none());
        assert!(Tokens::parse("only,two\n").is_err());
    }

    #[test]
    fn tls_files_that_do_not_work_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = server_config(&missing, &missing, None).expect_err("no such file");
        assert!(matches!(err, TlsConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let err = server_config(&empty, &empty, None).expect_err("no key");
        assert!(matches!(err, TlsConfigError::Key { .. }), "{err:?}");
        assert!(err.to_string().starts_with("reading the key in "), "{err}");
    }
}
