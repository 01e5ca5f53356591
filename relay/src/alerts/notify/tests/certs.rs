//! A throwaway CA and a server certificate for 127.0.0.1 and localhost, made with the
//! `openssl` program (as the e2e harness's tests/src/certs.rs does).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

/// A test CA and a server certificate for 127.0.0.1 and localhost, made once with openssl:
/// the CA file and the server's TLS config.
pub(super) fn certs() -> &'static (PathBuf, Arc<ServerConfig>) {
    static CERTS: OnceLock<(PathBuf, Arc<ServerConfig>)> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("stepwatch-notify-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .expect("the openssl program is needed for the TLS tests");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-new", "-days", "3", "-keyout", "ca.key"];
        ca.extend(ec);
        ca.extend(["-out", "ca.pem", "-subj", "/CN=Stepwatch notify test CA"]);
        ca.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        let mut csr = vec!["req", "-new", "-keyout", "server.key"];
        csr.extend(ec);
        csr.extend(["-out", "server.csr", "-subj", "/CN=stepwatch-test-smtp"]);
        openssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ]);
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("server.crt"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        (dir.join("ca.pem"), Arc::new(cfg))
    })
}
