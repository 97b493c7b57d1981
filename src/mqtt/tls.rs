//! Broker TLS (`MQTT_TLS`): the rustls client configuration from the
//! configured PEM files, ring only. Built on the main thread at start and at
//! SIGHUP (a bad file is a configuration error), and again by each link
//! thread before a new connection ([`Reread`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::Config;
use crate::error::Error;
use crate::ops::files;

/// Where the system's CA bundle lives on Debian-like gateways, unless `SSL_CERT_FILE` says otherwise.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The rumqttc transport (the device link) for the client configuration
/// the publish link uses too ([`client_config`]): plain TCP without one.
pub fn transport(tls: Option<Arc<ClientConfig>>) -> Transport {
    match tls {
        None => Transport::tcp(),
        Some(tls) => Transport::tls_with_config(TlsConfiguration::Rustls(tls)),
    }
}

/// The rustls client configuration when `MQTT_TLS` is on (None when off).
pub fn client_config(config: &Config) -> Result<Option<Arc<ClientConfig>>, Error> {
    if !config.mqtt_tls {
        return Ok(None);
    }
    let (ca_key, ca_path) = match &config.mqtt_ca_file {
        None => {
            let path = std::env::var_os("SSL_CERT_FILE").unwrap_or_else(|| SYSTEM_BUNDLE.into());
            (
                "MQTT_CA_FILE is empty and the system CA bundle",
                PathBuf::from(path),
            )
        }
        Some(path) => ("MQTT_CA_FILE", path.clone()),
    };
    let ca_pem = read(ca_key, &ca_path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| setup(ca_key, &ca_path, &format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| setup(ca_key, &ca_path, &format!("unusable certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(setup(ca_key, &ca_path, "holds no certificate"));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::setup_because("TLS", e))?
        .with_root_certificates(roots);
    let client_config = if let (Some(cert_path), Some(key_path)) =
        (&config.mqtt_client_cert, &config.mqtt_client_key)
    {
        let cert_pem = read("MQTT_CLIENT_CERT", cert_path)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup("MQTT_CLIENT_CERT", cert_path, &format!("bad PEM: {e}")))?;
        if certs.is_empty() {
            return Err(setup("MQTT_CLIENT_CERT", cert_path, "holds no certificate"));
        }
        let key_pem = read("MQTT_CLIENT_KEY", key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            setup(
                "MQTT_CLIENT_KEY",
                key_path,
                &format!("no usable private key: {e}"),
            )
        })?;
        builder.with_client_auth_cert(certs, key).map_err(|e| {
            setup(
                "MQTT_CLIENT_CERT",
                cert_path,
                &format!("does not fit the key: {e}"),
            )
        })?
    } else {
        builder.with_no_client_auth()
    };
    Ok(Some(Arc::new(client_config)))
}

/// The file's bytes, read the trusted way ([`files::read_trusted`]): a
/// FIFO planted as the CA file must not hang the relay, nor a symlink or
/// file another user planted decide whom it trusts.
fn read(key: &str, path: &Path) -> Result<Vec<u8>, Error> {
    files::read_trusted(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            setup(key, path, "is not a regular file: not read")
        } else {
            Error::setup_because(format!("{key} {}: cannot be read", path.display()), e)
        }
    })
}

fn setup(key: &str, path: &Path, what: &str) -> Error {
    Error::setup(format!("{key} {}: {what}", path.display()))
}

/// The TLS files read again before each new connection (both links), so a
/// renewed certificate or CA needs no signal and a SIGHUP's new files apply
/// at the next connection. A file that cannot be used then keeps the
/// configuration read last, with one warning per distinct problem.
#[derive(Default)]
pub struct Reread {
    problem: Option<String>,
}

impl Reread {
    /// The client configuration for the next connection: `config`'s files
    /// as they are now, else `previous`.
    pub fn next(
        &mut self,
        config: &Config,
        previous: Option<Arc<ClientConfig>>,
    ) -> Option<Arc<ClientConfig>> {
        match client_config(config) {
            Ok(fresh) => {
                if self.problem.take().is_some() {
                    log::info!("TLS files usable again");
                }
                fresh
            }
            Err(e) => {
                let problem = e.to_string();
                if self.problem.as_ref() != Some(&problem) {
                    log::warn!("{problem}: connecting with the TLS files read before");
                    self.problem = Some(problem);
                }
                previous
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, "test").expect("a test configuration")
    }

    #[test]
    fn an_unusable_file_keeps_the_configuration_read_before_and_is_said_once() {
        let mut reread = Reread::default();
        let broken = config("MQTT_TLS = true\nMQTT_CA_FILE = /nonexistent/ca.pem\n");
        assert!(reread.next(&broken, None).is_none());
        let problem = reread.problem.clone().expect("remembered");
        assert!(problem.contains("MQTT_CA_FILE"), "{problem}");
        // Again: the same problem, nothing new to say.
        assert!(reread.next(&broken, None).is_none());
        assert_eq!(reread.problem.as_ref(), Some(&problem));
        // TLS off: plain TCP, and the problem is over.
        assert!(reread.next(&config(""), None).is_none());
        assert!(reread.problem.is_none());
    }
}
