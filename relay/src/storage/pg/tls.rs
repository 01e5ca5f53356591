//! TLS to PostgreSQL, with libpq's connection parameters, over rustls.
//!
//! The PostgreSQL client parses `sslmode` as `disable`, `prefer` or `require` only,
//! and knows none of the certificate parameters. Users copy URLs from libpq tools
//! and managed databases, so [`connector`] takes libpq's parameters out of the URL
//! and applies them itself, with libpq's rules:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | – |
//! | `allow`, `prefer` (default) | when the server offers TLS | chain, if there is a root file |
//! | `require` | always | chain, if there is a root file |
//! | `verify-ca` | always | chain (a root file is required) |
//! | `verify-full` | always | chain and host name |
//!
//! The root file is `sslrootcert=FILE` (PEM), else `~/.postgresql/root.crt` when it
//! exists. `sslrootcert=system` trusts the operating system's store, and then only
//! with `verify-full`: any public CA would do otherwise. A self-signed server
//! certificate listed in the root file is trusted as itself (the PostgreSQL manual's
//! quick setup). `sslcert` and `sslkey` give a client certificate (PEM; the key
//! unencrypted).

use super::conninfo::ConnInfo;
use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's TLS parameters, as found in the connection string.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TlsParams {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verify {
    /// Encryption only: any certificate (libpq's `prefer`/`require` without roots).
    Nothing,
    /// The chain must lead to a root in this file; the name is not checked.
    Chain(PathBuf),
    /// The chain must lead to a root in this file, or the system's store (`None`), and
    /// the certificate must name the host connected to.
    ChainAndName(Option<PathBuf>),
}

/// TLS parameters the relay does not honour; refused by name rather than ignored.
const UNSUPPORTED: &[&str] = &[
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "sslcertmode",
    "sslkeylogfile",
];

/// Takes libpq's TLS parameters out of a connection string; returns the rest (for the
/// PostgreSQL client) and the parameters.
pub(crate) fn split_params(conn: &str) -> Result<(String, TlsParams), String> {
    let mut info = ConnInfo::parse(conn)?;
    if let Some(key) = info.keys().find(|k| UNSUPPORTED.contains(k)) {
        return Err(format!(
            "`{key}` is not supported (TLS parameters the relay knows: sslmode, \
             sslrootcert, sslcert, sslkey)"
        ));
    }
    let params = TlsParams {
        sslmode: info.take("sslmode"),
        sslrootcert: info.take("sslrootcert"),
        sslcert: info.take("sslcert"),
        sslkey: info.take("sslkey"),
    };
    Ok((info.render(), params))
}

impl TlsParams {
    /// The client's mode and how the server certificate is checked. `default_root` is
    /// libpq's `~/.postgresql/root.crt`, when it exists.
    pub(crate) fn mode(&self, default_root: Option<PathBuf>) -> Result<(SslMode, Verify), String> {
        let system = self.sslrootcert.as_deref() == Some("system");
        let file = match self.sslrootcert.as_deref() {
            Some("system") => None,
            Some(path) => Some(PathBuf::from(path)),
            None => default_root,
        };
        let mode = self
            .sslmode
            .as_deref()
            .unwrap_or(if system { "verify-full" } else { "prefer" });
        if system && mode != "verify-full" {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full (not {mode}): with the \
                 system's CAs, any public certificate would pass without the name check"
            ));
        }
        let lenient = || file.clone().map_or(Verify::Nothing, Verify::Chain);
        let roots_needed = || {
            format!(
                "sslmode={mode} needs the CA that signed the server's certificate: \
                 sslrootcert=FILE (or ~/.postgresql/root.crt), or sslrootcert=system \
                 with verify-full for a public CA"
            )
        };
        Ok(match mode {
            "disable" => (SslMode::Disable, Verify::Nothing),
            "allow" | "prefer" => (SslMode::Prefer, lenient()),
            "require" => (SslMode::Require, lenient()),
            "verify-ca" => (
                SslMode::Require,
                Verify::Chain(file.ok_or_else(roots_needed)?),
            ),
            "verify-full" => {
                if !system && file.is_none() {
                    return Err(roots_needed());
                }
                (SslMode::Require, Verify::ChainAndName(file))
            }
            other => {
                return Err(format!(
                    "sslmode={other}: expected disable, allow, prefer, require, verify-ca or \
                     verify-full"
                ))
            }
        })
    }
}

/// The certificates of a PEM file.
fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "sslrootcert {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The PostgreSQL client's configuration and the TLS connector for `conn`.
pub(crate) fn connector(conn: &str) -> Result<(postgres::Config, MakeRustlsConnect), String> {
    let (rest, params) = split_params(conn)?;
    let default_root = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
        .filter(|p| p.is_file());
    let (mode, verify) = params.mode(default_root)?;
    let mut config: postgres::Config = rest
        .parse()
        .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
    config.ssl_mode(mode);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let check = match verify {
        Verify::Nothing => Check::Nothing,
        Verify::Chain(file) => Check::chain(Some(&file), false, &provider)?,
        Verify::ChainAndName(file) => Check::chain(file.as_ref(), true, &provider)?,
    };
    let verifier = Arc::new(Verifier {
        provider: provider.clone(),
        check,
    });
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

/// The server certificate check that `sslmode` asks for. The handshake's signatures
/// are checked in every case.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    check: Check,
}

#[derive(Debug)]
enum Check {
    /// Any certificate: encryption against eavesdroppers, as libpq's `require` gives
    /// without roots.
    Nothing,
    /// The standard (WebPKI) chain check, with the host name check optional
    /// (`verify-ca`), and self-signed server certificates among the roots trusted as
    /// themselves.
    Chain {
        webpki: Arc<WebPkiServerVerifier>,
        /// The root file's certificates, for the self-signed case.
        pinned: Vec<CertificateDer<'static>>,
        check_name: bool,
    },
}

impl Check {
    /// Roots from `file`, or the system's store when `None`.
    fn chain(
        file: Option<&PathBuf>,
        check_name: bool,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Check, String> {
        let mut store = RootCertStore::empty();
        let mut pinned = Vec::new();
        match file {
            Some(path) => {
                for cert in read_certs(path)? {
                    // A self-signed server certificate is its own root: the chain
                    // check refuses it as an end entity, so it is also pinned.
                    let _ = store.add(cert.clone());
                    pinned.push(cert);
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = store.add(cert);
                }
            }
        }
        if store.is_empty() {
            return Err(format!(
                "sslrootcert {}: no usable certificate in it",
                file.map_or("system".into(), |f| f.display().to_string())
            ));
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
            .build()
            .map_err(|e| format!("TLS roots: {e}"))?;
        Ok(Check::Chain {
            webpki,
            pinned,
            check_name,
        })
    }
}

/// libpq's rule for certificates without a subjectAltName: the subject's common name
/// (CN) must be the host (case aside), or a `*.` wildcard for its first label. A
/// certificate with a subjectAltName is judged by that alone.
fn common_name_matches(cert: &CertificateDer<'_>, server_name: &ServerName<'_>) -> bool {
    use x509_cert::der::{oid::ObjectIdentifier, Decode};
    const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
    const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    let Ok(cert) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let tbs = &cert.tbs_certificate;
    let has_san = tbs
        .extensions
        .iter()
        .flatten()
        .any(|e| e.extn_id == SUBJECT_ALT_NAME);
    if has_san {
        return false;
    }
    let host = server_name.to_str().to_ascii_lowercase();
    tbs.subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == COMMON_NAME)
        .filter_map(|atv| std::str::from_utf8(atv.value.value()).ok())
        .any(|cn| cn_names_host(cn, &host))
}

/// Whether a CN names the (lower-case) host: equal but for case, or `*.rest` for a
/// host whose first label is followed by exactly `rest`.
fn cn_names_host(cn: &str, host: &str) -> bool {
    let cn = cn.to_ascii_lowercase();
    match cn.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => cn == host,
    }
}

/// `cert` must name `server_name`: in its subjectAltName, or, without one, its CN.
fn check_name(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
) -> Result<(), rustls::Error> {
    if common_name_matches(cert, server_name) {
        return Ok(());
    }
    let cert = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
    cert.verify_is_valid_for_subject_name(server_name)
        .map_err(|e| {
            rustls::Error::InvalidCertificate(match e {
                webpki::Error::CertNotValidForName(c) => CertificateError::NotValidForNameContext {
                    expected: c.expected,
                    presented: c.presented,
                },
                _ => CertificateError::NotValidForName,
            })
        })
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Check::Chain {
            webpki,
            pinned,
            check_name: name,
        } = &self.check
        else {
            return Ok(ServerCertVerified::assertion());
        };
        if pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) {
            if *name {
                check_name(end_entity, server_name)?;
            }
            return Ok(ServerCertVerified::assertion());
        }
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // The chain checked out; only the name did not.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !name || common_name_matches(end_entity, server_name) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(url: &str, default_root: Option<&str>) -> Result<(SslMode, Verify), String> {
        split_params(url)?.1.mode(default_root.map(PathBuf::from))
    }

    #[test]
    fn libpq_parameters_are_taken_out_of_urls_and_key_value_strings() {
        let (rest, p) = split_params(
            "postgres://u:p@db:5432/sw?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/sw?application_name=x");
        assert_eq!(p.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        // A `?` in the password does not hide the mode (nor weaken it).
        let (rest, p) = split_params("postgres://u:pa?ss@db/sw?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://u:pa?ss@db/sw");
        assert_eq!(p.sslmode.as_deref(), Some("require"));
        let (rest, p) =
            split_params("host=db user=u sslmode = verify-ca sslrootcert='/c a.pem'").unwrap();
        assert_eq!(rest, "host='db' user='u'");
        assert_eq!(p.sslrootcert.as_deref(), Some("/c a.pem"));
    }

    #[test]
    fn modes_follow_libpq() {
        let chain = |f: &str| Verify::Chain(PathBuf::from(f));
        assert_eq!(
            mode_of("postgres://db/sw", None).unwrap(),
            (SslMode::Prefer, Verify::Nothing)
        );
        assert_eq!(
            mode_of("postgres://db/sw?sslmode=disable", None).unwrap().0,
            SslMode::Disable
        );
        assert_eq!(
            mode_of("postgres://db/sw?sslmode=require", None).unwrap(),
            (SslMode::Require, Verify::Nothing)
        );
        // With a root file (named, or libpq's default one) require checks the chain.
        assert_eq!(
            mode_of("postgres://db/sw?sslmode=require&sslrootcert=/ca.pem", None).unwrap(),
            (SslMode::Require, chain("/ca.pem"))
        );
        assert_eq!(
            mode_of("postgres://db/sw?sslmode=require", Some("/home/root.crt")).unwrap(),
            (SslMode::Require, chain("/home/root.crt"))
        );
        assert_eq!(
            mode_of("postgres://db/sw?sslmode=verify-ca", Some("/home/root.crt")).unwrap(),
            (SslMode::Require, chain("/home/root.crt"))
        );
        assert_eq!(
            mode_of(
                "postgres://db/sw?sslmode=verify-full&sslrootcert=/ca.pem",
                None
            )
            .unwrap(),
            (
                SslMode::Require,
                Verify::ChainAndName(Some(PathBuf::from("/ca.pem")))
            )
        );
        // The system's CAs: verify-full, the default with them, and nothing weaker.
        assert_eq!(
            mode_of("postgres://db/sw?sslrootcert=system", None).unwrap(),
            (SslMode::Require, Verify::ChainAndName(None))
        );
        for weak in ["require", "verify-ca", "prefer"] {
            let err = mode_of(
                &format!("postgres://db/sw?sslrootcert=system&sslmode={weak}"),
                None,
            )
            .unwrap_err();
            assert!(err.contains("needs sslmode=verify-full"), "{err}");
        }
        // verify-* without any root file is refused, as libpq does.
        for strict in ["verify-ca", "verify-full"] {
            let err = mode_of(&format!("postgres://db/sw?sslmode={strict}"), None).unwrap_err();
            assert!(err.contains("sslrootcert=FILE"), "{err}");
        }
        let err = mode_of("postgres://db/sw?sslmode=verify_full", None).unwrap_err();
        assert!(
            err.contains("sslmode=verify_full") && err.contains("verify-full"),
            "{err}"
        );
    }

    #[test]
    fn a_common_name_names_its_host_or_one_label_under_a_wildcard() {
        assert!(cn_names_host("DB.Example.com", "db.example.com"));
        assert!(cn_names_host("*.example.com", "db.example.com"));
        assert!(!cn_names_host("*.example.com", "example.com"));
        assert!(!cn_names_host("*.example.com", "a.db.example.com"));
        assert!(!cn_names_host("db.example.com", "db.example.co"));
        assert!(cn_names_host("127.0.0.1", "127.0.0.1"));
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
    }
}
