//! Certificates for the TLS tests, made with the openssl command line in a
//! scratch directory: a test CA, a server certificate for 127.0.0.1 it
//! signed (valid, or expired), a client certificate, and a CA nobody uses.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{Relay, TempDir};

/// A directory of certificates ([`Certs::new`], [`Certs::expired`]).
pub struct Certs(TempDir);

impl Certs {
    /// `ca.pem`, `server.pem` and `client.pem` (with their keys) signed by
    /// it, and `other.pem`, an unrelated CA the broker does not use.
    pub fn new() -> Certs {
        let certs = Certs::with_ca("certs");
        for name in ["server", "client"] {
            certs.request(name);
            certs.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ]);
        }
        certs.self_signed("other", "/CN=someone else");
        certs
    }

    /// `ca.pem` and `server.pem` (with its key) signed by it, which expired
    /// in January 2020 (`openssl ca` takes explicit dates; `-days` cannot be
    /// negative).
    pub fn expired() -> Certs {
        let certs = Certs::with_ca("certs-expired");
        certs.request("server");
        let dir = certs.0.path();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "01\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = index.txt\nserial = serial\n\
             new_certs_dir = .\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
             [any]\ncommonName = supplied\n",
        )
        .unwrap();
        certs.openssl(&[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            "server.csr",
            "-out",
            "server.pem",
            "-notext",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            "san.ext",
        ]);
        certs
    }

    /// The path of certificate or key `name`, as relay.conf takes it.
    pub fn file(&self, name: &str) -> String {
        self.0.path().join(name).to_string_lossy().into_owned()
    }

    /// mosquitto's lines for a TLS listener with the server certificate.
    pub fn listener(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            self.file("ca.pem"),
            self.file("server.pem"),
            self.file("server.key")
        )
    }

    /// Starts a relay against the TLS listener on `port`, trusting `ca` (a
    /// file of these), with `settings` besides.
    pub fn relay_trusting(&self, ca: &str, port: u16, settings: &[(&str, &str)]) -> Relay {
        let ca = self.file(ca);
        let mut all = vec![("MQTT_TLS", "true"), ("MQTT_CA_FILE", ca.as_str())];
        all.extend_from_slice(settings);
        Relay::start(port, &all)
    }

    /// A test CA (`ca.key`, `ca.pem`), and `san.ext` naming 127.0.0.1 and
    /// localhost for the certificates it signs.
    fn with_ca(tag: &str) -> Certs {
        let certs = Certs(TempDir::new(tag));
        certs.self_signed("ca", "/CN=ms500 test CA");
        std::fs::write(
            certs.0.path().join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        certs
    }

    /// A self-signed certificate `name.pem` with its key `name.key`.
    fn self_signed(&self, name: &str, subject: &str) {
        self.new_key(
            name,
            &["-x509", "-days", "2", "-out", &format!("{name}.pem")],
            subject,
        );
    }

    /// A key `name.key` and a request `name.csr` for it.
    fn request(&self, name: &str) {
        let subject = format!("/CN={name}");
        self.new_key(name, &["-out", &format!("{name}.csr")], &subject);
    }

    /// `openssl req` making the key `name.key` for `subject`, and what `args` say.
    fn new_key(&self, name: &str, args: &[&str], subject: &str) {
        let key = format!("{name}.key");
        let mut all = vec![
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-subj", subject,
        ];
        all.extend_from_slice(args);
        self.openssl(&all);
    }

    fn openssl(&self, args: &[&str]) {
        openssl(self.0.path(), args);
    }
}

/// Runs the openssl CLI in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl command line");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
