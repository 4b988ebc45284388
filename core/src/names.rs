//! Kubernetes naming rules and the names of the objects an installation
//! generates: `<name>` for the StatefulSet and its headless Service,
//! `vantiq-<name>-<type>[-<n>]` for everything else.

/// Longest installation name: the StatefulSet controller labels each pod with
/// `controller-revision-hash: <name>-<10 characters>`, a label value of at
/// most 63 characters.
pub const MAX_INSTALLATION_NAME: usize = 52;

/// The name of generated ConfigMap `index` (one per distinct file `path`).
pub fn configmap(installation: &str, index: usize) -> String {
    format!("vantiq-{installation}-configmap-{index}")
}

/// The name of generated Secret `index`: one per distinct `path` whose files
/// have `dataSource: secret`, and one for all `asSecret` environment
/// variables, numbered from 0 in order of their first config entry (Vantiq's
/// rule, `vantiq-<name>-<type>[-<n>]`).
pub fn secret(installation: &str, index: usize) -> String {
    format!("vantiq-{installation}-secret-{index}")
}

/// The default name of the Service for inbound port `index`.
pub fn port_service(installation: &str, index: usize) -> String {
    format!("vantiq-{installation}-service-{index}")
}

/// The name of the Ingress for inbound port `index`.
pub fn ingress(installation: &str, index: usize) -> String {
    format!("vantiq-{installation}-ingress-{index}")
}

/// RFC 1123 label: at most 63 lower-case alphanumerics or '-', starting and
/// ending alphanumeric (namespaces, most names).
pub fn is_dns1123_label(value: &str) -> bool {
    value.len() <= 63 && is_dns_part(value)
}

/// Lower-case alphanumerics or '-', starting and ending alphanumeric, of any
/// length: a label without the 63 limit, as a subdomain's parts are checked.
fn is_dns_part(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

/// RFC 1035 label: an RFC 1123 label that starts with a letter (Service names).
pub fn is_dns1035_label(value: &str) -> bool {
    is_dns1123_label(value) && value.as_bytes()[0].is_ascii_lowercase()
}

/// RFC 1123 subdomain as Kubernetes checks it (`IsDNS1123Subdomain`):
/// dot-separated parts of lower-case alphanumerics or '-', each starting and
/// ending alphanumeric, at most 253 characters in all; a part may be longer
/// than 63 (Kubernetes does not limit it). ConfigMap, Secret, ServiceAccount,
/// PersistentVolumeClaim names; Ingress and host-alias host names.
pub fn is_dns1123_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(is_dns_part)
}

/// Whether `value` is an IP address as the API server reads one: an IPv6
/// literal, or dotted-decimal IPv4 where, as in Kubernetes'
/// `netutils.ParseIPSloppy`, octets may have leading zeros (`010.0.0.1`).
pub fn is_ip_literal(value: &str) -> bool {
    if value.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let octets: Vec<&str> = value.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|octet| {
            !octet.is_empty()
                && octet.bytes().all(|b| b.is_ascii_digit())
                && octet.trim_start_matches('0').len() <= 3
                && octet.parse::<u32>().is_ok_and(|n| n <= 255)
        })
}

/// An Ingress rule's host (Kubernetes `validateIngressRules`): a DNS-1123
/// subdomain, or `*.` followed by one, at most 253 characters in all, and
/// never an IP address (`192.0.2.10` reads as a subdomain but the API server
/// refuses it: "must be a DNS name, not an IP address"). The cluster's
/// `ingressDefaultNode` follows the same rule, since it becomes that host.
pub fn is_ingress_host(value: &str) -> bool {
    let bare = value.strip_prefix("*.").unwrap_or(value);
    value.len() <= 253 && is_dns1123_subdomain(bare) && !is_ip_literal(value)
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' or '.',
/// starting and ending alphanumeric.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value.as_bytes()[0].is_ascii_alphanumeric()
            && value.as_bytes()[value.len() - 1].is_ascii_alphanumeric())
}

/// A qualified name (label and annotation keys): `[prefix/]name`, the prefix a
/// DNS subdomain, the name at most 63 alphanumerics, '-', '_' or '.', starting
/// and ending alphanumeric.
pub fn is_qualified_name(value: &str) -> bool {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

/// An IANA service name (container port names): at most 15 lower-case
/// alphanumerics or '-', at least one letter, no leading, trailing or double '-'.
pub fn is_port_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 15
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value.bytes().any(|b| b.is_ascii_lowercase())
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--")
}

/// A ConfigMap or Secret key (Kubernetes `IsConfigMapKey`): alphanumerics,
/// '-', '_' or '.', at most 253, not `.`, not starting with `..`.
pub fn is_config_key(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value != "."
        && !value.starts_with("..")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// An environment variable name we accept: letters, digits, '_', '-' or '.',
/// not starting with a digit (Kubernetes' long-standing rule), and also a
/// Secret key ([`is_config_key`]: at most 253, not starting with `..`), so
/// that `asSecret` variables can be keyed by name.
pub fn is_env_name(value: &str) -> bool {
    is_config_key(value) && !value.as_bytes()[0].is_ascii_digit()
}

/// Whether `value` is an install file's placeholder: `<`, upper-case
/// letters, digits and `_`, `>` (`<CLUSTER_NAME>`), the form
/// `deploy/check.sh` requires of every value an administrator fills. A
/// component configured with one was installed without filling it.
pub fn is_placeholder(value: &str) -> bool {
    value
        .trim()
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .is_some_and(|inner| {
            !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_rules() {
        assert!(is_dns1123_label("a-0"));
        assert!(is_dns1123_label("0a"));
        assert!(!is_dns1123_label("A"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1035_label("a0"));
        assert!(!is_dns1035_label("0a"));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
        // As Kubernetes: a part of a subdomain may exceed 63 characters.
        assert!(is_dns1123_subdomain(&"a".repeat(64)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        for host in ["a.example", "*.example.com", "node-1", "1.2.3", "1.2.3.4.5"] {
            assert!(is_ingress_host(host), "{host}");
        }
        let long = format!(
            "*.{}",
            vec!["a".repeat(63); 4].join(".").get(..252).unwrap()
        );
        for host in [
            "192.0.2.10",
            "010.0.0.1",
            "0.0.0.0",
            "::1",
            "Node",
            "*",
            "a.*.b",
            &long,
        ] {
            assert!(!is_ingress_host(host), "{host}");
        }
    }

    #[test]
    fn keys_and_values() {
        assert!(is_qualified_name("example.com/my_key.1"));
        assert!(is_qualified_name("app"));
        assert!(!is_qualified_name("/app"));
        assert!(!is_qualified_name("Example.com/x"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
        assert!(is_port_name("http-2"));
        assert!(!is_port_name("80"));
        assert!(!is_port_name("a--b"));
        assert!(is_config_key("server.config"));
        assert!(!is_config_key(".."));
        assert!(!is_config_key("..a"));
        assert!(is_config_key("a..b"));
        assert!(!is_config_key(&"a".repeat(254)));
        assert!(!is_env_name("..A"));
        assert!(!is_env_name(&"A".repeat(254)));
        assert!(is_env_name(".A"));
        assert!(is_env_name("JAVA_OPTS"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A=B"));
    }
}
