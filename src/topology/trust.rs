//! `[mesh.trust]` resolved: where the mesh's root of trust comes from and
//! how long the intermediates meshform issues live.
//!
//! Paths and the key command are taken as written; nothing here reads a
//! file or runs a command (apply does, `crate::trust`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::diagnostic::{Code, Problem, quoted};
use super::file::{TrustMode, TrustSection};

/// A year: what the plug-in CA guide's sample intermediates are given, and a
/// yearly renewal is one a team notices.
pub const DEFAULT_INTERMEDIATE_LIFETIME: u64 = 365 * 24 * 3600;
/// 30 days: weekly scheduled runs get four chances to renew.
pub const DEFAULT_RENEW_BEFORE: u64 = 30 * 24 * 3600;
/// An intermediate must outlive the workload certificates it signs (24 h by
/// default in Istio) by some margin.
pub const MIN_INTERMEDIATE_LIFETIME: u64 = 3600;
/// Ten years, Istio's self-signed root's lifetime: an intermediate should not outlive it.
pub const MAX_INTERMEDIATE_LIFETIME: u64 = 10 * 366 * 24 * 3600;

/// The root of trust, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Trust {
    /// Only check that the clusters share a root (`root_of_trust`).
    #[default]
    Check,
    /// meshform issues every primary's intermediate CA from this root.
    Managed(ManagedTrust),
}

impl Trust {
    pub fn is_check(&self) -> bool {
        matches!(self, Trust::Check)
    }

    pub fn managed(&self) -> Option<&ManagedTrust> {
        match self {
            Trust::Check => None,
            Trust::Managed(managed) => Some(managed),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManagedTrust {
    /// The root certificate's PEM file, as written (relative to mesh.toml).
    pub root_cert: String,
    pub root_key: RootKeySource,
    /// The root being rotated away from (`previous_root_cert`, as written):
    /// while set, apply moves the mesh onto `root_cert` in three stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_root_cert: Option<String>,
    pub intermediate_lifetime_seconds: u64,
    pub renew_before_seconds: u64,
}

/// Where the root's private key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum RootKeySource {
    /// A PEM file only its owner may read, as written (relative to mesh.toml).
    File { path: String },
    /// A program that prints the key. Its arguments may carry a credential
    /// (a token, a role): they are kept out of every serialised form, the
    /// topology JSON and its hash included.
    Command {
        program: String,
        #[serde(skip)]
        #[schemars(skip)]
        args: Vec<String>,
    },
}

/// Resolves `[mesh.trust]`, reporting what is missing or out of range.
pub(super) fn resolve(
    section: Option<&TrustSection>,
    problems: &mut Vec<Problem>,
    at: &dyn Fn(&str) -> std::ops::Range<usize>,
) -> Trust {
    let Some(section) = section else {
        return Trust::Check;
    };
    let mode = section.mode.unwrap_or_default();
    if mode == TrustMode::Check {
        // Settings that only managed mode reads would be silently ignored.
        for (key, set) in [
            ("root_cert", section.root_cert.is_some()),
            ("root_key", section.root_key.is_some()),
            ("previous_root_cert", section.previous_root_cert.is_some()),
            ("root_key_command", section.root_key_command.is_some()),
            ("intermediate_lifetime", section.intermediate_lifetime.is_some()),
            ("renew_before", section.renew_before.is_some()),
        ] {
            if set {
                let path = format!("mesh.trust.{key}");
                problems.push(
                    Problem::error(Code::InvalidValue, format!("`{key}` is only read with mode = \"managed\""))
                        .at(&path)
                        .label(at(&path), "ignored in mode \"check\"")
                        .help("set `mode = \"managed\"` in [mesh.trust] for meshform to keep the root of trust, or remove the key"),
                );
            }
        }
        return Trust::Check;
    }
    let mut ok = true;
    let root_cert = match section.root_cert.as_deref().map(str::trim) {
        Some(path) if !path.is_empty() => path.to_string(),
        _ => {
            ok = false;
            problems.push(
                Problem::error(
                    Code::MissingKey,
                    "managed trust needs the root certificate: `root_cert`",
                )
                .at("mesh.trust.root_cert")
                .label(at("mesh.trust.root_cert"), "no root certificate file")
                .help("set `root_cert = \"ca/root-cert.pem\"`: the PEM file of the mesh's root CA certificate"),
            );
            String::new()
        }
    };
    let root_key = match (&section.root_key, &section.root_key_command) {
        (Some(path), None) if !path.trim().is_empty() => Some(RootKeySource::File {
            path: path.trim().to_string(),
        }),
        (None, Some(argv)) if argv.first().is_some_and(|p| !p.trim().is_empty()) => Some(RootKeySource::Command {
            program: argv[0].clone(),
            args: argv[1..].to_vec(),
        }),
        (Some(_), Some(_)) => {
            problems.push(
                Problem::error(Code::InvalidValue, "`root_key` and `root_key_command` are both set")
                    .at("mesh.trust.root_key_command")
                    .label(at("mesh.trust.root_key"), "a key file")
                    .label(at("mesh.trust.root_key_command"), "and a command")
                    .help("keep one: the key file, or the command that prints the key"),
            );
            None
        }
        (None, Some(_)) => {
            problems.push(
                Problem::error(Code::InvalidValue, "`root_key_command` names no program")
                    .at("mesh.trust.root_key_command")
                    .label(at("mesh.trust.root_key_command"), "the first element is the program to run")
                    .help("write the program and its arguments, e.g. [\"vault\", \"kv\", \"get\", \"-field=key\", \"secret/mesh-root\"]"),
            );
            None
        }
        _ => {
            problems.push(
                Problem::error(Code::MissingKey, "managed trust needs the root's key: `root_key` or `root_key_command`")
                    .at("mesh.trust.root_key")
                    .label(at("mesh.trust"), "no key source")
                    .help("set `root_key = \"ca/root-key.pem\"` (a file only you can read: chmod 600), or `root_key_command` to a program that prints the key"),
            );
            None
        }
    };
    let previous_root_cert = match section.previous_root_cert.as_deref().map(str::trim) {
        None => None,
        Some(path) if path.is_empty() || path == root_cert => {
            ok = false;
            let path_key = "mesh.trust.previous_root_cert";
            problems.push(
                Problem::error(Code::InvalidValue, "`previous_root_cert` is not another root's certificate")
                    .at(path_key)
                    .label(at(path_key), "the root being rotated away from")
                    .label(at("mesh.trust.root_cert"), "the root being rotated onto")
                    .help("set `previous_root_cert` to the old root's PEM file and `root_cert`/`root_key` to the new root's, or remove `previous_root_cert` once the rotation is complete"),
            );
            None
        }
        Some(path) => Some(path.to_string()),
    };
    let lifetime = duration(
        section.intermediate_lifetime.as_deref(),
        "mesh.trust.intermediate_lifetime",
        DEFAULT_INTERMEDIATE_LIFETIME,
        MIN_INTERMEDIATE_LIFETIME..=MAX_INTERMEDIATE_LIFETIME,
        "an intermediate lives from 1 hour to 10 years",
        problems,
        at,
    );
    let renew = duration(
        section.renew_before.as_deref(),
        "mesh.trust.renew_before",
        DEFAULT_RENEW_BEFORE.min(lifetime.unwrap_or(DEFAULT_INTERMEDIATE_LIFETIME) / 2),
        60..=MAX_INTERMEDIATE_LIFETIME,
        "renew from 1 minute to 10 years ahead",
        problems,
        at,
    );
    if let (Some(lifetime), Some(renew)) = (lifetime, renew)
        && renew >= lifetime
    {
        ok = false;
        let path = "mesh.trust.renew_before";
        problems.push(
            Problem::error(Code::InvalidValue, "`renew_before` is not shorter than `intermediate_lifetime`")
                .at(path)
                .label(at(path), "every run would renew every intermediate")
                .help("renew well before the end of the lifetime, e.g. intermediate_lifetime = \"8760h\", renew_before = \"720h\""),
        );
    }
    match (ok, root_key, lifetime, renew) {
        (true, Some(root_key), Some(lifetime), Some(renew)) => Trust::Managed(ManagedTrust {
            root_cert,
            root_key,
            previous_root_cert,
            intermediate_lifetime_seconds: lifetime,
            renew_before_seconds: renew,
        }),
        // Errors were reported: the topology is not returned.
        _ => Trust::Check,
    }
}

fn duration(
    text: Option<&str>,
    path: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    limits: &str,
    problems: &mut Vec<Problem>,
    at: &dyn Fn(&str) -> std::ops::Range<usize>,
) -> Option<u64> {
    let Some(text) = text else {
        return Some(default);
    };
    match super::duration_seconds(text) {
        Some(s) if s >= 0 && range.contains(&(s as u64)) => Some(s as u64),
        Some(_) => {
            problems.push(
                Problem::error(Code::InvalidValue, format!("{} is out of range", quoted(text)))
                    .at(path)
                    .label(at(path), limits.to_string())
                    .help("use a duration such as \"8760h\" or \"720h\""),
            );
            None
        }
        None => {
            problems.push(
                Problem::error(Code::InvalidValue, format!("{} is not a duration", quoted(text)))
                    .at(path)
                    .label(at(path), "expected a duration such as \"720h\"")
                    .help("write hours, minutes or days: \"8760h\", \"90m\", \"30d\""),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::*;

    const BASE: &str = "[mesh]\nname = \"m\"\n[[cluster]]\nname = \"a\"\n";

    fn trust(extra: &str) -> Result<Trust, Vec<(Code, Option<String>)>> {
        let text = format!("{BASE}[mesh.trust]\n{extra}");
        check("t", text.as_bytes())
            .into_result()
            .map(|(t, _)| t.mesh.trust)
            .map_err(|p| p.problems.iter().map(|p| (p.code, p.path.clone())).collect())
    }

    #[test]
    fn check_is_the_default_and_managed_resolves_with_defaults() {
        let (t, _) = check("t", BASE.as_bytes()).into_result().unwrap();
        assert_eq!(t.mesh.trust, Trust::Check);
        let managed = trust("mode = \"managed\"\nroot_cert = \"r.pem\"\nroot_key = \"k.pem\"\n").unwrap();
        assert_eq!(
            managed,
            Trust::Managed(ManagedTrust {
                root_cert: "r.pem".into(),
                root_key: RootKeySource::File { path: "k.pem".into() },
                previous_root_cert: None,
                intermediate_lifetime_seconds: DEFAULT_INTERMEDIATE_LIFETIME,
                renew_before_seconds: DEFAULT_RENEW_BEFORE,
            })
        );
    }

    #[test]
    fn a_key_command_keeps_its_arguments_out_of_the_json() {
        let managed = trust(
            "mode = \"managed\"\nroot_cert = \"r.pem\"\nroot_key_command = [\"vault\", \"--token=s3cr3t\"]\nintermediate_lifetime = \"48h\"\nrenew_before = \"24h\"\n",
        )
        .unwrap();
        let Trust::Managed(m) = &managed else { panic!() };
        assert_eq!(
            m.root_key,
            RootKeySource::Command {
                program: "vault".into(),
                args: vec!["--token=s3cr3t".into()]
            }
        );
        assert_eq!(m.renew_before_seconds, 86_400);
        let json = serde_json::to_string(&managed).unwrap();
        assert!(!json.contains("s3cr3t"), "{json}");
    }

    #[test]
    fn managed_trust_problems_point_at_their_key() {
        let cases = [
            (
                "mode = \"managed\"\nroot_key = \"k\"\n",
                Code::MissingKey,
                "mesh.trust.root_cert",
            ),
            (
                "mode = \"managed\"\nroot_cert = \"r\"\n",
                Code::MissingKey,
                "mesh.trust.root_key",
            ),
            (
                "mode = \"managed\"\nroot_cert = \"r\"\nroot_key = \"k\"\nroot_key_command = [\"x\"]\n",
                Code::InvalidValue,
                "mesh.trust.root_key_command",
            ),
            (
                "mode = \"managed\"\nroot_cert = \"r\"\nroot_key = \"k\"\nintermediate_lifetime = \"10m\"\n",
                Code::InvalidValue,
                "mesh.trust.intermediate_lifetime",
            ),
            (
                "mode = \"managed\"\nroot_cert = \"r\"\nroot_key = \"k\"\nintermediate_lifetime = \"48h\"\nrenew_before = \"48h\"\n",
                Code::InvalidValue,
                "mesh.trust.renew_before",
            ),
            ("root_cert = \"r\"\n", Code::InvalidValue, "mesh.trust.root_cert"),
            (
                "mode = \"managed\"\nroot_cert = \"r\"\nroot_key = \"k\"\nprevious_root_cert = \"r\"\n",
                Code::InvalidValue,
                "mesh.trust.previous_root_cert",
            ),
            (
                "previous_root_cert = \"old\"\n",
                Code::InvalidValue,
                "mesh.trust.previous_root_cert",
            ),
        ];
        for (extra, code, path) in cases {
            let problems = trust(extra).unwrap_err();
            assert_eq!(problems, [(code, Some(path.to_string()))], "{extra}");
        }
    }
}
