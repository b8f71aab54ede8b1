//! Pure syntax checks for the Kubernetes values the agent writes into pods, mirroring the
//! kube-apiserver's own rules, so a bad value is refused at config load with its field path
//! instead of failing later at pod creation.

use std::sync::LazyLock;

use regex::Regex;

fn re(pattern: &str) -> Regex {
    // NB: the patterns are literals in this file; a bad one is a programming error caught by tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("invalid built-in regex {pattern}: {e}"))
}

static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
});
static ENV_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"));
static DNS_LABEL: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static LABEL_NAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"));
static PIP_CLAUSE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\s*(===|~=|==|!=|<=|>=|<|>)\s*[0-9A-Za-z][0-9A-Za-z.*+!_-]*\s*$"));

/// A pip version specifier set (PEP 440 clauses joined by commas: `>=1.9,<4`, `==3.0.3`), the
/// part of a requirement after the package name. Anything else (a bare version, a package name,
/// shell syntax) is refused, so the value can go into a shell script in single quotes.
pub fn pip_version_specifier(spec: &str) -> Result<(), String> {
    if spec.len() <= 200 && spec.split(',').all(|clause| PIP_CLAUSE.is_match(clause)) {
        Ok(())
    } else {
        Err(format!(
            "{spec:?} is not a pip version specifier (comparison clauses such as \">=1.9\" joined by commas)"
        ))
    }
}

/// A Kubernetes resource quantity (`1Gi`, `500m`, `2`, `1e3`).
pub fn quantity(value: &str) -> Result<(), String> {
    if QUANTITY.is_match(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid quantity {value:?}: must match the Kubernetes quantity syntax (e.g. 512Mi, 2Gi, 500m, 4)"
        ))
    }
}

/// An environment variable name as the API server accepts it.
pub fn env_name(name: &str) -> Result<(), String> {
    if ENV_NAME.is_match(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid environment variable name {name:?}: must consist of letters, digits, '_', '-' or '.', and must not start with a digit"
        ))
    }
}

/// A DNS-1123 label (namespace, service, container and volume names).
pub fn dns_label(name: &str) -> Result<(), String> {
    if name.len() <= 63 && DNS_LABEL.is_match(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: must be a lowercase RFC 1123 label (a-z, 0-9, '-', at most 63 characters, starting and ending alphanumeric)"
        ))
    }
}

/// A DNS-1123 subdomain (pod and ConfigMap names).
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(|part| DNS_LABEL.is_match(part))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: must be a lowercase RFC 1123 subdomain (at most 253 characters)"
        ))
    }
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters.
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| dns_subdomain(p).is_ok());
    if prefix_ok && !name.is_empty() && name.len() <= 63 && LABEL_NAME.is_match(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid key {key:?}: must be an optional DNS subdomain prefix and '/', then at most 63 characters of letters, digits, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

/// A label value: empty, or at most 63 characters of letters, digits, `-`, `_`, `.`, starting and
/// ending alphanumeric.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || (value.len() <= 63 && LABEL_NAME.is_match(value)) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: at most 63 characters of letters, digits, '-', '_' or '.', starting and ending alphanumeric"
        ))
    }
}

/// Makes any string a valid label value: invalid characters become `-`, the ends are trimmed to
/// alphanumerics, and the result is cut to 63 characters.
pub fn to_label_value(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out: String = mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(63)
        .collect();
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for ok in [
            "1Gi", "32Gi", "500m", "2", "0.5", "1e3", "1.5Gi", "+1", ".5",
        ] {
            assert!(quantity(ok).is_ok(), "{ok} should be valid");
        }
        for bad in ["12 GiB", "1GB", "Gi", "", "1.2.3", "-", "abc", "1Gi "] {
            assert!(quantity(bad).is_err(), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn env_names_reject_leading_digits_and_spaces() {
        for ok in ["MY_ENV", "VLLM_SKIP_P2P_CHECK", "a.b-c", "_X"] {
            assert!(env_name(ok).is_ok(), "{ok}");
        }
        for bad in ["1ABC", "MY ENV", "", "A=B", "é"] {
            assert!(env_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn qualified_names_allow_an_optional_dns_prefix() {
        for ok in [
            "team",
            "nvidia.com/gpu",
            "app.kubernetes.io/name",
            "a_b.c-d",
        ] {
            assert!(qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/x", "Bad_Prefix/x", "x/", "-x", &"a".repeat(64)] {
            assert!(qualified_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_values_are_sanitised_to_valid_ones() {
        let cases = [
            ("GPUs_with_shared_memory", "GPUs_with_shared_memory"),
            ("my queue!", "my-queue"),
            ("__x__", "x"),
            ("ünï", "n"),
        ];
        for (raw, want) in cases {
            let got = to_label_value(raw);
            assert_eq!(got, want, "{raw}");
            assert!(label_value(&got).is_ok());
        }
        assert_eq!(to_label_value(&"a".repeat(80)).len(), 63);
    }

    #[test]
    fn pip_version_specifiers() {
        for ok in [
            ">=1.9,<4",
            "==3.0.3",
            "~=3.0",
            "!=2.0.1, >=1.9",
            "===1.9.2",
            "==3.*",
            ">=4.0.0rc0",
        ] {
            assert!(pip_version_specifier(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1.9.2",
            "clearml-agent==1.9",
            ">=1.9,",
            "== 1.9'; rm -rf /",
            ">=1.9 <4",
            "==$(id)",
            "latest",
        ] {
            assert!(pip_version_specifier(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_names() {
        assert!(dns_label("clearml-id-abc").is_ok());
        assert!(dns_label("Bad").is_err());
        assert!(dns_subdomain("a.b-c").is_ok());
        assert!(dns_subdomain("a..b").is_err());
    }
}
