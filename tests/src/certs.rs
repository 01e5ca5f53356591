//! Throwaway TLS certificates for the PostgreSQL TLS tests, made with `openssl`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A throwaway certificate authority and a server certificate it signed, made with
/// the `openssl` program (Debian's PostgreSQL packages depend on it).
pub struct TestCerts {
    /// The authority's certificate (PEM): what `sslrootcert` names.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM, unencrypted).
    pub key: PathBuf,
}

impl TestCerts {
    /// Makes them in `dir`; the server certificate is valid for `san`
    /// (`subjectAltName`, e.g. `DNS:localhost`).
    pub fn make(dir: &Path, san: &str) -> TestCerts {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stdin(Stdio::null())
                .output()
                .expect(
                    "the openssl program is needed for the TLS tests (apt-get install openssl)",
                );
            assert!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
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
        ca.extend([
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Stepwatch test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        let mut csr = vec!["req", "-new", "-keyout", "server.key"];
        csr.extend(ec);
        csr.extend(["-out", "server.csr", "-subj", "/CN=stepwatch-test-server"]);
        openssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
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
        TestCerts {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }

    /// A self-signed server certificate, its own root, with the subject `CN=localhost`
    /// and the subjectAltName `san` if given: the PostgreSQL manual's quick setup
    /// (`openssl req -x509`, which makes it a CA certificate, and with no `san` at all).
    pub fn self_signed(dir: &Path, san: Option<&str>) -> TestCerts {
        std::fs::create_dir_all(dir).unwrap();
        let mut req = Command::new("openssl");
        req.args([
            "req", "-new", "-x509", "-days", "3", "-nodes", "-newkey", "ec",
        ])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            "/CN=localhost",
        ]);
        if let Some(san) = san {
            req.args(["-addext", &format!("subjectAltName={san}")]);
        }
        let out = req
            .args(["-keyout", "server.key", "-out", "server.crt"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("the openssl program is needed for the TLS tests (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl req -x509: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestCerts {
            ca: dir.join("server.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    }
}
