//! Test certificates.

use std::path::PathBuf;

/// A self-signed certificate for `localhost` and 127.0.0.1 in a fresh directory named after
/// `name` and the process: the certificate and key PEM files.
pub fn self_signed(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("activity-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("rcgen makes a certificate");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("cert written");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key written");
    (cert, key)
}
