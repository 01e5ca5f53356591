//! TLS to PostgreSQL, with libpq's connection parameters, over rustls.
//!
//! The PostgreSQL client parses `sslmode` as `disable`, `prefer` or `require` only,
//! and knows none of the certificate parameters. Users copy URLs from libpq tools
//! and managed databases, so [`connector`] takes libpq's parameters out of the URL
//! and applies them itself:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `allow`, `prefer` (default) | when the server offers TLS | only if `sslrootcert` is given (chain) |
//! | `require` | always | only if `sslrootcert` is given (chain) |
//! | `verify-ca` | always | chain |
//! | `verify-full` | always | chain and host name |
//!
//! Roots: `sslrootcert=FILE` (PEM), `sslrootcert=system` (the operating system's
//! store), else `~/.postgresql/root.crt` when it exists, else the system store.
//! `sslcert` and `sslkey` give a client certificate (PEM; the key unencrypted).

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's TLS parameters, as found in the URL.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Verify {
    /// Encryption only: any certificate (libpq's `prefer`/`require` without roots).
    Nothing,
    /// The chain must lead to a trusted root; the name is not checked.
    Chain,
    /// The chain, and the certificate must name the host connected to.
    ChainAndName,
}

/// Splits libpq's TLS parameters off a `postgres://` URL or a `key=value` string,
/// returning the rest (for the PostgreSQL client) and the parameters. Parameters the
/// relay cannot honour are refused by name.
pub(crate) fn split_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        let slot = match key {
            "sslmode" => &mut params.sslmode,
            "sslrootcert" => &mut params.sslrootcert,
            "sslcert" => &mut params.sslcert,
            "sslkey" => &mut params.sslkey,
            "sslpassword"
            | "sslcrl"
            | "sslcrldir"
            | "sslsni"
            | "sslcompression"
            | "ssl_min_protocol_version"
            | "ssl_max_protocol_version"
            | "sslcertmode" => {
                return Err(format!(
                    "`{key}` is not supported (TLS parameters the relay knows: sslmode, \
                     sslrootcert, sslcert, sslkey)"
                ))
            }
            _ => return Ok(false),
        };
        *slot = Some(value);
        Ok(true)
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), params));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(&percent_decode(k)?, percent_decode(v)?)? {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, params))
    } else {
        // `host=… user=… sslmode=…`: values here have no spaces or quotes.
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if take(k, v.to_string())? => {}
                _ => kept.push(word),
            }
        }
        Ok((kept.join(" "), params))
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

impl TlsParams {
    /// The client's mode and how the server certificate is checked.
    pub(crate) fn mode(&self) -> Result<(SslMode, Verify), String> {
        let roots_given = self.sslrootcert.is_some();
        let lenient = if roots_given {
            Verify::Chain
        } else {
            Verify::Nothing
        };
        Ok(match self.sslmode.as_deref().unwrap_or("prefer") {
            "disable" => (SslMode::Disable, Verify::Nothing),
            "allow" | "prefer" => (SslMode::Prefer, lenient),
            "require" => (SslMode::Require, lenient),
            "verify-ca" => (SslMode::Require, Verify::Chain),
            "verify-full" => (SslMode::Require, Verify::ChainAndName),
            other => {
                return Err(format!(
                    "sslmode={other}: expected disable, allow, prefer, require, verify-ca or \
                     verify-full"
                ))
            }
        })
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        let file: Option<PathBuf> = match self.sslrootcert.as_deref() {
            Some("system") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".postgresql/root.crt"))
                .filter(|p| p.exists()),
        };
        match file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(&path)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                    store
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
                if store.is_empty() {
                    return Err(format!(
                        "sslrootcert {}: no PEM certificate in it",
                        path.display()
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = store.add(cert);
                }
                if store.is_empty() {
                    return Err("no trusted root certificates on this system: name a CA \
                                file with sslrootcert=FILE"
                        .into());
                }
            }
        }
        Ok(store)
    }
}

/// The PostgreSQL client's configuration and the TLS connector for `url`.
pub(crate) fn connector(url: &str) -> Result<(postgres::Config, MakeRustlsConnect), String> {
    let (rest, params) = split_params(url)?;
    let (mode, verify) = params.mode()?;
    let mut config: postgres::Config = rest
        .parse()
        .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    config.ssl_mode(mode);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(AnyCertificate(provider.clone())),
        Verify::Chain | Verify::ChainAndName => {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(params.roots()?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("TLS roots: {e}"))?;
            Arc::new(ChainVerifier {
                inner,
                check_name: verify == Verify::ChainAndName,
            })
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let tls = match (&params.sslcert, &params.sslkey) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslcert {cert}: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey {key}: {e} (an unencrypted PEM key is expected)"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("sslcert/sslkey: {e}"))?
        }
        _ => return Err("sslcert and sslkey go together: name both files".into()),
    };
    Ok((config, MakeRustlsConnect::new(tls)))
}

/// Accepts any certificate but still checks the handshake's signatures: encryption
/// against eavesdroppers, as libpq's `require` gives without roots.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The standard (WebPKI) check, with the host name check optional (`verify-ca`).
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, p) = split_params(
            "postgres://u:p@db:5432/sw?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/sw?application_name=x");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca.pem"));

        let (rest, p) = split_params("postgres://db/sw?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://db/sw");
        assert_eq!(p.mode().unwrap(), (SslMode::Require, Verify::Nothing));

        let (rest, p) =
            split_params("host=db user=u sslmode=verify-ca sslrootcert=/ca.pem").unwrap();
        assert_eq!(rest, "host=db user=u");
        assert_eq!(p.mode().unwrap(), (SslMode::Require, Verify::Chain));

        let (rest, p) = split_params("postgres://db/sw").unwrap();
        assert_eq!(rest, "postgres://db/sw");
        assert_eq!(p.mode().unwrap(), (SslMode::Prefer, Verify::Nothing));
    }

    #[test]
    fn modes_follow_libpq() {
        let mode = |m: &str, root: bool| {
            TlsParams {
                sslmode: Some(m.into()),
                sslrootcert: root.then(|| "/ca.pem".into()),
                ..Default::default()
            }
            .mode()
        };
        assert_eq!(mode("disable", false).unwrap().0, SslMode::Disable);
        assert_eq!(
            mode("prefer", true).unwrap(),
            (SslMode::Prefer, Verify::Chain)
        );
        assert_eq!(
            mode("require", true).unwrap(),
            (SslMode::Require, Verify::Chain)
        );
        assert_eq!(
            mode("verify-full", false).unwrap(),
            (SslMode::Require, Verify::ChainAndName)
        );
        let err = mode("verify_full", false).unwrap_err();
        assert!(
            err.contains("sslmode=verify_full") && err.contains("verify-full"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_or_incomplete_parameters_are_refused_by_name() {
        let err = split_params("postgres://db/sw?sslpassword=x").unwrap_err();
        assert!(err.contains("sslpassword"), "{err}");
        let refused = |url: &str| match connector(url) {
            Ok(_) => panic!("{url} accepted"),
            Err(e) => e,
        };
        let err = refused("postgres://db/sw?sslcert=/c.pem");
        assert!(err.contains("sslcert and sslkey"), "{err}");
        let err = refused("postgres://db/sw?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem");
        assert!(err.contains("sslrootcert /nonexistent/ca.pem"), "{err}");
        let err = split_params("postgres://db/sw?sslrootcert=%zz").unwrap_err();
        assert!(err.contains("percent"), "{err}");
    }
}
