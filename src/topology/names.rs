//! Kubernetes name rules, checked before any write.
//!
//! The API server validates object names and label values only when an object
//! is written, which is far too late for a mesh change that touches many
//! clusters. These checks mirror `k8s.io/apimachinery/pkg/util/validation` so
//! meshform can refuse a topology up front, and they propose a valid name.

use std::fmt;

/// Longest DNS-1123 label (RFC 1123) and label value.
pub const MAX_LABEL: usize = 63;
/// Longest DNS-1123 subdomain.
pub const MAX_SUBDOMAIN: usize = 253;

/// Which naming rule a name is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Namespaces, Service Accounts, the cluster mesh name (it becomes part of
    /// object names and the Istio cluster id).
    Dns1123Label,
    /// Object names such as Secrets.
    Dns1123Subdomain,
    /// Services: a DNS-1123 label that starts with a letter.
    Dns1035Label,
    /// The value of a label such as `topology.istio.io/network`.
    LabelValue,
}

/// Why a name breaks its rule; rendered as a short clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong {
        len: usize,
        max: usize,
    },
    /// `index` is the character position, counting from 0.
    InvalidChar {
        ch: char,
        index: usize,
    },
    BadStart {
        ch: char,
    },
    BadEnd {
        ch: char,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "it is empty"),
            NameError::TooLong { len, max } => {
                write!(f, "it is {len} characters long, at most {max} are allowed")
            }
            NameError::InvalidChar { ch, index } => {
                write!(f, "it contains {ch:?} at position {}", index + 1)
            }
            NameError::BadStart { ch } => write!(f, "it starts with {ch:?}"),
            NameError::BadEnd { ch } => write!(f, "it ends with {ch:?}"),
        }
    }
}

impl Rule {
    /// The API server's own wording, so users can match it with the errors
    /// they have seen from kubectl or istioctl.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::Dns1123Label => {
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
                 and must start and end with an alphanumeric character"
            }
            Rule::Dns1123Subdomain => {
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
                 and must start and end with an alphanumeric character"
            }
            Rule::Dns1035Label => {
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', \
                 start with an alphabetic character, and end with an alphanumeric character"
            }
            Rule::LabelValue => {
                "a valid label value must be 63 characters or less and consist of alphanumeric characters, \
                 '-', '_' or '.', and must start and end with an alphanumeric character"
            }
        }
    }

    /// Checks `name` against the rule.
    pub fn check(self, name: &str) -> Result<(), NameError> {
        match self {
            Rule::Dns1123Label => check_label(name, |c| c.is_ascii_alphanumeric()),
            Rule::Dns1035Label => check_label(name, |c| c.is_ascii_lowercase()),
            Rule::Dns1123Subdomain => {
                characters(name, MAX_SUBDOMAIN, |c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')
                })?;
                edges(name, |c| c.is_ascii_alphanumeric())?;
                let chars: Vec<char> = name.chars().collect();
                // Every dot-separated part is itself a label: no "..", ".-" or "-.".
                for (index, pair) in chars.windows(2).enumerate() {
                    if pair[0] != pair[1] && pair.contains(&'.') && pair.contains(&'-') || pair == ['.', '.'] {
                        return Err(NameError::InvalidChar {
                            ch: pair[1],
                            index: index + 1,
                        });
                    }
                }
                Ok(())
            }
            Rule::LabelValue => {
                // An empty label value is legal for Kubernetes, but a network
                // with no name would silently merge unrelated clusters.
                characters(name, MAX_LABEL, |c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
                })?;
                edges(name, |c| c.is_ascii_alphanumeric())
            }
        }
    }

    /// A name close to `name` that satisfies the rule, if one can be made.
    pub fn suggest(self, name: &str) -> Option<String> {
        // Transliterate first so that `prod-ü` or a Cyrillic look-alike becomes
        // readable ASCII instead of a run of dashes.
        let ascii = deunicode::deunicode(name);
        let keep = |c: char| match self {
            Rule::LabelValue => c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
            Rule::Dns1123Subdomain => c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.',
            _ => c.is_ascii_lowercase() || c.is_ascii_digit(),
        };
        let mut out = String::with_capacity(ascii.len());
        for c in ascii.chars() {
            let c = if self == Rule::LabelValue {
                c
            } else {
                c.to_ascii_lowercase()
            };
            // A subdomain's dots separate labels: "..", ".-" and "-." would
            // leave an empty label or one that ends in '-'.
            let subdomain = self == Rule::Dns1123Subdomain;
            if keep(c) {
                if subdomain && c == '.' && (out.ends_with('.') || out.ends_with('-')) {
                    out.pop();
                }
                out.push(c);
            } else if !(out.ends_with('-') || subdomain && out.ends_with('.')) {
                out.push('-');
            }
        }
        let max = if self == Rule::Dns1123Subdomain {
            MAX_SUBDOMAIN
        } else {
            MAX_LABEL
        };
        let trim = |s: &str| s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
        let mut out = trim(&out);
        if self == Rule::Dns1035Label {
            // Up to the first letter: "1-2gw" must become "gw", not "2gw".
            out = trim(out.trim_start_matches(|c: char| !c.is_ascii_lowercase()));
        }
        if out.len() > max {
            out.truncate(max);
            out = trim(&out);
        }
        (!out.is_empty() && self.check(&out).is_ok()).then_some(out)
    }
}

/// Not empty, at most `max` characters, each one `allowed`: the checks every
/// rule starts with, reported in that order.
fn characters(name: &str, max: usize, allowed: fn(char) -> bool) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > max {
        return Err(NameError::TooLong { len, max });
    }
    match name.chars().enumerate().find(|(_, ch)| !allowed(*ch)) {
        Some((index, ch)) => Err(NameError::InvalidChar { ch, index }),
        None => Ok(()),
    }
}

fn check_label(name: &str, start_ok: fn(char) -> bool) -> Result<(), NameError> {
    characters(name, MAX_LABEL, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })?;
    let first = name.chars().next().unwrap_or_default();
    if !start_ok(first) {
        return Err(NameError::BadStart { ch: first });
    }
    edges(name, |c| c.is_ascii_alphanumeric())
}

fn edges(name: &str, ok: fn(char) -> bool) -> Result<(), NameError> {
    match (name.chars().next(), name.chars().last()) {
        (Some(ch), _) if !ok(ch) => Err(NameError::BadStart { ch }),
        (_, Some(ch)) if !ok(ch) => Err(NameError::BadEnd { ch }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_label_accepts_and_rejects_like_the_api_server() {
        for ok in ["a", "prod-1", "0abc", &"a".repeat(63)] {
            assert_eq!(Rule::Dns1123Label.check(ok), Ok(()), "{ok}");
        }
        assert_eq!(Rule::Dns1123Label.check(""), Err(NameError::Empty));
        assert_eq!(
            Rule::Dns1123Label.check("gke_gcp"),
            Err(NameError::InvalidChar { ch: '_', index: 3 })
        );
        assert_eq!(Rule::Dns1123Label.check("-a"), Err(NameError::BadStart { ch: '-' }));
        assert_eq!(Rule::Dns1123Label.check("a-"), Err(NameError::BadEnd { ch: '-' }));
        assert_eq!(
            Rule::Dns1123Label.check("Prod"),
            Err(NameError::InvalidChar { ch: 'P', index: 0 })
        );
        assert_eq!(
            Rule::Dns1123Label.check(&"a".repeat(64)),
            Err(NameError::TooLong { len: 64, max: 63 })
        );
        assert!(Rule::Dns1123Label.check("a.b").is_err());
    }

    #[test]
    fn subdomain_allows_dots_between_labels() {
        assert_eq!(Rule::Dns1123Subdomain.check("istio-remote-secret-a.b"), Ok(()));
        assert!(Rule::Dns1123Subdomain.check("a..b").is_err());
        assert!(Rule::Dns1123Subdomain.check(".a").is_err());
        assert_eq!(
            Rule::Dns1123Subdomain.check("istio-remote-secret-gke_x"),
            Err(NameError::InvalidChar { ch: '_', index: 23 })
        );
        assert!(Rule::Dns1123Subdomain.check(&"a".repeat(254)).is_err());
        // Regression: the suggestion kept "..", "-." and ".-" and so was refused.
        for bad in ["a..b", "a-.b", "a._b", "a_.b"] {
            assert_eq!(Rule::Dns1123Subdomain.suggest(bad).as_deref(), Some("a.b"), "{bad}");
        }
    }

    #[test]
    fn dns1035_needs_a_leading_letter() {
        assert_eq!(Rule::Dns1035Label.check("istio-eastwestgateway"), Ok(()));
        assert_eq!(Rule::Dns1035Label.check("1gw"), Err(NameError::BadStart { ch: '1' }));
        assert_eq!(Rule::Dns1035Label.suggest("1-Gw").as_deref(), Some("gw"));
        // Regression: only the leading digits were stripped, leaving "2gw".
        assert_eq!(Rule::Dns1035Label.suggest("1-2gw").as_deref(), Some("gw"));
    }

    #[test]
    fn label_values_allow_upper_case_dots_and_underscores() {
        assert_eq!(Rule::LabelValue.check("Net_1.eu"), Ok(()));
        assert_eq!(
            Rule::LabelValue.check("net/1"),
            Err(NameError::InvalidChar { ch: '/', index: 3 })
        );
        assert_eq!(Rule::LabelValue.check("_x"), Err(NameError::BadStart { ch: '_' }));
        assert_eq!(Rule::LabelValue.check(""), Err(NameError::Empty));
    }

    #[test]
    fn suggestions_fix_kubeconfig_context_names() {
        let s = |n| Rule::Dns1123Label.suggest(n);
        assert_eq!(s("gke_gcp-cluster_region").as_deref(), Some("gke-gcp-cluster-region"));
        assert_eq!(
            s("arn:aws:eks:eu-west-1:123:cluster/prod").as_deref(),
            Some("arn-aws-eks-eu-west-1-123-cluster-prod")
        );
        assert_eq!(s("__Prod__").as_deref(), Some("prod"));
        assert_eq!(s("prod-ü").as_deref(), Some("prod-u"));
        assert_eq!(s("___"), None);
        let long = s(&format!("{}_{}", "a".repeat(62), "b")).unwrap();
        assert_eq!(long, "a".repeat(62));
    }

    #[test]
    fn every_suggestion_passes_its_rule() {
        for rule in [
            Rule::Dns1123Label,
            Rule::Dns1123Subdomain,
            Rule::Dns1035Label,
            Rule::LabelValue,
        ] {
            for name in ["gke_p_r", "A.B", "--x--", "日本", "x".repeat(300).as_str(), "a-.b"] {
                if let Some(s) = rule.suggest(name) {
                    assert_eq!(rule.check(&s), Ok(()), "{rule:?} {name} -> {s}");
                }
            }
        }
    }
}
