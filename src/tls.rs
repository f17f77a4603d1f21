//! TLS: rustls server configuration from the operator's PEM files or from a local development
//! CA generated on first start (rcgen) and reused afterwards. Private keys never leave `certs/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("no private key in {0}")]
    NoKey(PathBuf),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(
        "cannot add names to the generated certificate: the development CA's key {0} is \
         missing (remove the certificate directory to start over with a new CA)"
    )]
    CaKeyMissing(PathBuf),
}

/// File names inside the certificate directory.
pub const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";

/// Paths of a development CA and server certificate, created if missing.
pub struct DevCertificates {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// Loads the development CA and server certificate from `dir`, generating them on first use.
/// The server certificate names localhost, 127.0.0.1, ::1 and `names` (DNS names or IP
/// addresses); when one of `names` is missing from it, it is issued again by the same CA (the
/// CA clients trust does not change).
pub fn dev_certificates(dir: &Path, names: &[String]) -> Result<DevCertificates, TlsError> {
    let paths = DevCertificates {
        ca_cert: dir.join(CA_CERT),
        server_cert: dir.join(SERVER_CERT),
        server_key: dir.join(SERVER_KEY),
    };
    // IP addresses as the certificate reader writes them back.
    let names: Vec<String> = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => n.to_ascii_lowercase(),
        })
        .collect();
    let names = names.as_slice();
    let ca_key_path = dir.join(CA_KEY);
    let complete =
        paths.ca_cert.exists() && paths.server_cert.exists() && paths.server_key.exists();
    if complete
        && names
            .iter()
            .all(|n| certificate_names(&paths.server_cert).contains(n))
    {
        return Ok(paths);
    }
    std::fs::create_dir_all(dir).map_err(|e| TlsError::Write(dir.to_path_buf(), e))?;

    // The CA: the one made before (its key, and the same name and validity, sign as it did),
    // or a new one. A complete set without the CA's key cannot get a name added: replacing
    // the CA would break every client that trusts it.
    let reuse = paths.ca_cert.exists();
    if reuse && !ca_key_path.exists() {
        return Err(TlsError::CaKeyMissing(ca_key_path));
    }
    let ca_key = if reuse {
        let pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|e| TlsError::Read(ca_key_path.clone(), e))?;
        KeyPair::from_pem(&pem)?
    } else {
        KeyPair::generate()?
    };
    let mut ca_params = CertificateParams::default();
    let mut ca_name = DistinguishedName::new();
    ca_name.push(DnType::CommonName, "ingest-emulator development CA");
    ca_name.push(DnType::OrganizationName, "ingest-emulator");
    ca_params.distinguished_name = ca_name;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let ca = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params.subject_alt_names.push(SanType::IpAddress(
        "127.0.0.1".parse().expect("IPv4 literal"),
    ));
    params
        .subject_alt_names
        .push(SanType::IpAddress("::1".parse().expect("IPv6 literal")));
    for name in names {
        let san = match name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "localhost");
    params.distinguished_name = name;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    let server = params.signed_by(&server_key, &ca, &ca_key)?;

    if !reuse {
        write_private(&ca_key_path, &ca_key.serialize_pem())?;
    }
    let ca_pem = if reuse {
        std::fs::read_to_string(&paths.ca_cert)
            .map_err(|e| TlsError::Read(paths.ca_cert.clone(), e))?
    } else {
        ca.pem()
    };
    // The new key and certificate are written aside, then each moved in at once (a rename):
    // neither is ever half written.
    let key_new = dir.join(format!("{SERVER_KEY}.new"));
    let cert_new = dir.join(format!("{SERVER_CERT}.new"));
    write_private(&key_new, &server_key.serialize_pem())?;
    write(&cert_new, &(server.pem() + &ca_pem))?;
    std::fs::rename(&key_new, &paths.server_key)
        .map_err(|e| TlsError::Write(paths.server_key.clone(), e))?;
    std::fs::rename(&cert_new, &paths.server_cert)
        .map_err(|e| TlsError::Write(paths.server_cert.clone(), e))?;
    // The CA certificate last: its presence marks a complete set.
    if !reuse {
        write(&paths.ca_cert, &ca.pem())?;
    }
    Ok(paths)
}

/// The DNS names and IP addresses (lower case, as text) of the first certificate in `path`.
fn certificate_names(path: &Path) -> Vec<String> {
    let Ok(pem) = std::fs::read(path) else {
        return Vec::new();
    };
    let Some(Ok(der)) = rustls_pemfile::certs(&mut pem.as_slice()).next() else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|e| TlsError::Write(path.to_path_buf(), e))
}

fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| TlsError::Write(path.to_path_buf(), e))?;
    }
    Ok(())
}

/// A rustls server configuration (HTTP/2 and HTTP/1.1 by ALPN) from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Read(cert.to_path_buf(), e))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read(cert.to_path_buf(), e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Read(key.to_path_buf(), e))?;
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| TlsError::Read(key.to_path_buf(), e))?
        .ok_or_else(|| TlsError::NoKey(key.to_path_buf()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are added under the same CA; without the CA's key they are refused, and the CA
    /// clients trust stays as it was.
    #[test]
    fn names_are_added_under_the_same_ca_or_refused_without_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = dev_certificates(dir.path(), &[]).unwrap();
        let ca = std::fs::read(&first.ca_cert).unwrap();
        dev_certificates(dir.path(), &["ingest".into(), "10.1.2.3".into()]).unwrap();
        assert_eq!(std::fs::read(&first.ca_cert).unwrap(), ca);
        let names = certificate_names(&first.server_cert);
        for name in ["localhost", "127.0.0.1", "::1", "ingest", "10.1.2.3"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        // Already there: nothing to do, even without the key.
        std::fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        dev_certificates(dir.path(), &["INGEST".into()]).unwrap();
        let refused = dev_certificates(dir.path(), &["other".into()]);
        assert!(
            matches!(refused, Err(TlsError::CaKeyMissing(_))),
            "{:?}",
            refused.err()
        );
        assert_eq!(std::fs::read(&first.ca_cert).unwrap(), ca, "the CA stays");
        server_config(&first.server_cert, &first.server_key).expect("a matching pair");
    }
}
