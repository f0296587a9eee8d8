//! The mesh's root of trust (`[mesh.trust] mode = "managed"`): reading the
//! root certificate, loading the root's key from where mesh.toml says (a
//! file only its owner reads, or a command that prints it), and issuing each
//! primary's intermediate CA for Istio's plug-in CA Secret `cacerts`.
//!
//! It owns every private key meshform touches. The root's key lives in a
//! [`Signer`] for one apply and is never written, logged or shown; a new
//! intermediate's key exists only in the [`Issued`] handed to the write of
//! its Secret. Errors name paths and programs, never key bytes, a command's
//! arguments or its stderr. Certificates are public: their facts
//! ([`cert_facts`]) go into observations and plans.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use miette::Diagnostic;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::observe::model::{CertFacts, TrustRoot};
use crate::topology::{ManagedTrust, RootKeySource, Topology};

/// A root certificate or key file larger than this is not one.
const MAX_PEM_BYTES: u64 = 256 * 1024;
/// How long the key command may take (a Vault login prompt would hang forever).
const KEY_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Issued intermediates start this far in the past, so that a cluster whose
/// clock is a little behind does not refuse them as not yet valid.
const BACKDATE_SECONDS: i64 = 300;

/// Why the root of trust could not be used; nothing was written.
#[derive(Debug, Error, Diagnostic)]
pub enum TrustError {
    /// The root certificate or key file could not be read.
    #[error("cannot read the root {what} {path}: {reason}")]
    #[diagnostic(
        code(meshform::trust::unreadable),
        help("check `[mesh.trust]` in mesh.toml: paths are relative to mesh.toml")
    )]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The key file may be read by others than its owner (as ssh refuses a key).
    #[error("the root key {path} is readable by its group or others (mode {mode:04o})")]
    #[diagnostic(
        code(meshform::trust::key_permissions),
        help("make it readable by its owner only: chmod 600 {}", path.display())
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    /// The key command failed; its stderr is not shown (it may hold secrets).
    #[error("the root key command {program:?} {reason}")]
    #[diagnostic(
        code(meshform::trust::key_command),
        help("run the command by hand to see its error, then apply again")
    )]
    KeyCommand { program: String, reason: String },
    /// The key, or the certificate, is not one meshform can sign with.
    #[error("the root of trust cannot sign: {0}")]
    #[diagnostic(
        code(meshform::trust::invalid_root),
        help(
            "give a PEM root CA certificate and its private key (PKCS#8, EC or RSA), as made by Istio's plug-in CA guide"
        )
    )]
    Invalid(String),
}

/// The root certificate `trust` names, read from `base_dir` (mesh.toml's):
/// public facts only, for the planner. None in check mode.
pub fn read_root(topology: &Topology, base_dir: &Path) -> Option<TrustRoot> {
    let managed = topology.mesh.trust.managed()?;
    Some(match root_pem(managed, base_dir).and_then(|pem| root_facts(&pem)) {
        Ok(facts) => TrustRoot::Read(facts),
        Err(e) => TrustRoot::Unreadable { detail: e.to_string() },
    })
}

/// The root a rotation moves away from (`previous_root_cert`), read as
/// [`read_root`] reads the root. None unless a rotation is declared.
pub fn read_previous_root(topology: &Topology, base_dir: &Path) -> Option<TrustRoot> {
    let file = topology.mesh.trust.managed()?.previous_root_cert.as_deref()?;
    Some(match pem_file(file, base_dir).and_then(|pem| root_facts(&pem)) {
        Ok(facts) => TrustRoot::Read(facts),
        Err(e) => TrustRoot::Unreadable { detail: e.to_string() },
    })
}

fn root_pem(managed: &ManagedTrust, base_dir: &Path) -> Result<String, TrustError> {
    pem_file(&managed.root_cert, base_dir)
}

fn pem_file(file: &str, base_dir: &Path) -> Result<String, TrustError> {
    let path = base_dir.join(file);
    let fail = |reason: String| TrustError::Unreadable {
        what: "certificate",
        path: path.clone(),
        reason,
    };
    let bytes = read_small(&path).map_err(fail)?;
    String::from_utf8(bytes).map_err(|_| fail("not PEM text".into()))
}

fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("larger than {MAX_PEM_BYTES} bytes"));
    }
    Ok(bytes)
}

/// The first certificate of a PEM bundle, in DER.
fn first_cert(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).find_map(Result::ok)
}

fn root_facts(pem: &str) -> Result<CertFacts, TrustError> {
    let der =
        first_cert(pem).ok_or_else(|| TrustError::Invalid("the root certificate file holds no certificate".into()))?;
    let facts =
        cert_facts(&der, &[]).ok_or_else(|| TrustError::Invalid("the root certificate cannot be parsed".into()))?;
    if !facts.ca {
        return Err(TrustError::Invalid(
            "the root certificate is not a CA certificate (basicConstraints CA:TRUE)".into(),
        ));
    }
    Ok(facts)
}

/// What the planner needs of a certificate: its fingerprint, names, end of
/// validity and which of `roots` (DER) signed it.
pub fn cert_facts(der: &[u8], roots: &[CertificateDer<'_>]) -> Option<CertFacts> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let issued_by = roots.iter().find_map(|root| {
        let (_, parsed) = X509Certificate::from_der(root).ok()?;
        (cert.issuer() == parsed.subject() && cert.verify_signature(Some(parsed.public_key())).is_ok())
            .then(|| crate::objects::sha256_hex(root))
    });
    Some(CertFacts {
        sha256: crate::objects::sha256_hex(der),
        subject: cert.subject().to_string(),
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
        not_after: Timestamp::from_second(cert.validity().not_after.timestamp()).ok()?,
        ca: cert.is_ca(),
        issued_by,
    })
}

/// Facts of the first certificate in `pem`, and which of the certificates in
/// `roots_pem` signed it.
pub fn pem_cert_facts(pem: &str, roots_pem: &str) -> Option<CertFacts> {
    let roots: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(roots_pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    cert_facts(&first_cert(pem)?, &roots)
}

/// The common name meshform gives the intermediate of `cluster`.
pub fn intermediate_name(mesh: &str, cluster: &str) -> String {
    format!("{cluster} intermediate CA ({mesh})")
}

/// The root's certificate and key, for one apply's signing.
pub struct Signer {
    root_pem: String,
    root: CertFacts,
    /// The root a rotation moves away from (`previous_root_cert`): its
    /// certificate only, published beside the root's during a rotation.
    previous: Option<(String, CertFacts)>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer {{ root: sha256:{} }}", self.root.sha256)
    }
}

/// An intermediate CA, ready for the `cacerts` Secret. Not `Debug`: it
/// holds the intermediate's key.
pub struct Issued {
    pub ca_cert: String,
    pub ca_key: SecretString,
    pub cert_chain: String,
    pub root_cert: String,
    pub facts: CertFacts,
}

impl Signer {
    /// Loads the root certificate and key `managed` names; refuses a key file
    /// that others may read and a key that is not the certificate's.
    pub async fn load(managed: &ManagedTrust, base_dir: &Path) -> Result<Signer, TrustError> {
        let root_pem = root_pem(managed, base_dir)?;
        let root = root_facts(&root_pem)?;
        let key = match &managed.root_key {
            RootKeySource::File { path } => read_key_file(&base_dir.join(path))?,
            RootKeySource::Command { program, args } => run_key_command(program, args, base_dir).await?,
        };
        let key = rcgen::KeyPair::from_pem(key.expose_secret())
            .map_err(|_| TrustError::Invalid("the root key is not a PEM private key meshform can read".into()))?;
        let der = first_cert(&root_pem).expect("root_facts found a certificate");
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|_| TrustError::Invalid("the root certificate cannot be parsed".into()))?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != cert.public_key().raw {
            return Err(TrustError::Invalid(
                "the root key does not belong to the root certificate".into(),
            ));
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| TrustError::Invalid(format!("the root certificate cannot be used as an issuer ({e})")))?;
        let previous = match managed.previous_root_cert.as_deref() {
            Some(file) => {
                let pem = pem_file(file, base_dir)?;
                let facts = root_facts(&pem)?;
                Some((pem, facts))
            }
            None => None,
        };
        Ok(Signer {
            root_pem,
            root,
            previous,
            issuer,
        })
    }

    /// SHA-256 of the root a rotation moves away from, if one is declared.
    pub fn previous_root_sha256(&self) -> Option<&str> {
        self.previous.as_ref().map(|(_, facts)| facts.sha256.as_str())
    }

    /// `root-cert.pem` while a rotation trusts both roots: the previous
    /// root, then the root. The same bytes in stages one and two, for istiod
    /// takes in a new intermediate without a restart only when
    /// `root-cert.pem` is byte for byte the one it holds
    /// (pilot/pkg/bootstrap/istio_ca.go, `handleEvent`).
    pub fn both_roots_pem(&self) -> Option<String> {
        let (previous, _) = self.previous.as_ref()?;
        Some(format!("{}\n{}\n", previous.trim_end(), self.root_pem.trim_end()))
    }

    /// SHA-256 of the root certificate: a plan made for another root is refused.
    pub fn root_sha256(&self) -> &str {
        &self.root.sha256
    }

    /// A new intermediate CA named `common_name` (`mesh`, `cluster`), with a
    /// fresh P-256 key, valid for `lifetime_seconds` from now. With
    /// `trust_previous`, its `root-cert.pem` holds the previous root beside
    /// the root ([`Signer::both_roots_pem`]): a rotation's second stage.
    pub fn issue(
        &self,
        mesh: &str,
        cluster: &str,
        lifetime_seconds: u64,
        trust_previous: bool,
        now: Timestamp,
    ) -> Result<Issued, TrustError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let invalid = |e: rcgen::Error| TrustError::Invalid(format!("issuing the intermediate of {cluster}: {e}"));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(invalid)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::OrganizationName, mesh);
        params
            .distinguished_name
            .push(DnType::CommonName, intermediate_name(mesh, cluster));
        // Istio's plug-in CA guide's intermediates: a CA that signs workload
        // certificates only (no further CA below it).
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        let at = |t: Timestamp| time::OffsetDateTime::from_unix_timestamp(t.as_second());
        let start = at(now - jiff::SignedDuration::from_secs(BACKDATE_SECONDS));
        let end = at(now + jiff::SignedDuration::from_secs(lifetime_seconds as i64));
        let (Ok(start), Ok(end)) = (start, end) else {
            return Err(TrustError::Invalid(
                "the intermediate's validity is out of range".into(),
            ));
        };
        // An intermediate never outlives its root: a chain past the root's
        // end verifies nowhere.
        let root_end = at(self.root.not_after).unwrap_or(end);
        params.not_before = start;
        params.not_after = end.min(root_end);
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|_| TrustError::Invalid("no randomness for a serial number".into()))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&key, &self.issuer).map_err(invalid)?;
        let ca_cert = cert.pem();
        let own_root = self.root_pem.trim_end().to_string() + "\n";
        let root_cert = match self.both_roots_pem() {
            Some(both) if trust_previous => both,
            _ => own_root.clone(),
        };
        let roots = [first_cert(&self.root_pem).expect("a root")];
        let facts = cert_facts(cert.der(), &roots)
            .ok_or_else(|| TrustError::Invalid("the issued intermediate cannot be parsed".into()))?;
        Ok(Issued {
            // cert-chain.pem: the intermediate, then its root (the guide's `cat`).
            cert_chain: format!("{ca_cert}{own_root}"),
            ca_cert,
            ca_key: SecretString::from(key.serialize_pem()),
            root_cert,
            facts,
        })
    }
}

/// The key file, refused when its group or others may read it, before it is read.
fn read_key_file(path: &Path) -> Result<SecretString, TrustError> {
    let fail = |reason: String| TrustError::Unreadable {
        what: "key",
        path: path.to_path_buf(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TrustError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let _ = metadata;
    let bytes = read_small(path).map_err(fail)?;
    String::from_utf8(bytes)
        .map(SecretString::from)
        .map_err(|_| fail("not PEM text".into()))
}

/// Runs the key command without a shell, in mesh.toml's directory, with no
/// stdin; keeps its stdout (the key) and drops its stderr unread.
async fn run_key_command(program: &str, args: &[String], dir: &Path) -> Result<SecretString, TrustError> {
    let fail = |reason: String| TrustError::KeyCommand {
        program: program.to_string(),
        reason,
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("could not be started: {}", e.kind())))?;
    let output = tokio::time::timeout(KEY_COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("did not finish within {} s", KEY_COMMAND_TIMEOUT.as_secs())))?
        .map_err(|e| fail(format!("failed: {}", e.kind())))?;
    if !output.status.success() {
        return Err(fail(match output.status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        }));
    }
    if output.stdout.len() as u64 > MAX_PEM_BYTES {
        return Err(fail(format!("printed more than {MAX_PEM_BYTES} bytes")));
    }
    String::from_utf8(output.stdout)
        .map(SecretString::from)
        .map_err(|_| fail("printed something that is not PEM text".into()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn root(dir: &Path, mode: u32) -> ManagedTrust {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "root");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("root.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(mode)).unwrap();
        ManagedTrust {
            root_cert: "root.pem".into(),
            root_key: RootKeySource::File { path: "key.pem".into() },
            previous_root_cert: None,
            intermediate_lifetime_seconds: 3600,
            renew_before_seconds: 60,
        }
    }

    #[tokio::test]
    async fn an_issued_intermediate_is_a_ca_of_the_root_named_for_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let managed = root(dir.path(), 0o600);
        let signer = Signer::load(&managed, dir.path()).await.unwrap();
        let now = Timestamp::now();
        let issued = signer.issue("mesh1", "east", 3600, false, now).unwrap();
        let facts = pem_cert_facts(&issued.ca_cert, &issued.root_cert).unwrap();
        assert_eq!(facts.issued_by.as_deref(), Some(signer.root_sha256()));
        assert!(facts.ca);
        assert_eq!(facts.common_name.as_deref(), Some("east intermediate CA (mesh1)"));
        assert!((facts.not_after.as_second() - now.as_second() - 3600).abs() <= 1);
        assert!(issued.cert_chain.starts_with(&issued.ca_cert) && issued.cert_chain.ends_with(&issued.root_cert));
        // Not the root's: a certificate it did not sign has no issuer among the roots.
        let other = Signer::load(&root(tempfile::tempdir().unwrap().path(), 0o600), dir.path()).await;
        assert!(other.is_ok());
        assert_eq!(
            format!("{signer:?}"),
            format!("Signer {{ root: sha256:{} }}", signer.root_sha256())
        );
    }

    #[tokio::test]
    async fn a_key_file_others_can_read_is_refused_with_the_chmod_that_fixes_it() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let managed = root(dir.path(), mode);
            let error = Signer::load(&managed, dir.path()).await.unwrap_err();
            assert!(matches!(error, TrustError::KeyPermissions { .. }), "{mode:o}: {error}");
            let help = miette::Diagnostic::help(&error).unwrap().to_string();
            assert!(help.contains("chmod 600"), "{help}");
        }
    }

    #[tokio::test]
    async fn a_key_that_is_not_the_roots_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let managed = root(dir.path(), 0o600);
        let stranger = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("key.pem"), stranger.serialize_pem()).unwrap();
        let error = Signer::load(&managed, dir.path()).await.unwrap_err();
        assert!(error.to_string().contains("does not belong"), "{error}");
    }

    #[tokio::test]
    async fn a_key_command_failure_names_the_program_and_status_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut managed = root(dir.path(), 0o600);
        managed.root_key = RootKeySource::Command {
            program: "sh".into(),
            args: vec!["-c".into(), "echo psst-secret >&2; exit 4".into()],
        };
        let error = Signer::load(&managed, dir.path()).await.unwrap_err().to_string();
        assert_eq!(error, "the root key command \"sh\" exited with status 4");
        managed.root_key = RootKeySource::Command {
            program: "sh".into(),
            args: vec!["-c".into(), "cat key.pem".into()],
        };
        assert!(Signer::load(&managed, dir.path()).await.is_ok());
    }
}
