//! Twilio request signatures (`X-Twilio-Signature`), framework-free.
//!
//! The signature is `base64(HMAC-SHA1(auth token, URL + name1 + value1 + ...))`
//! over the full URL Twilio requested and the POST parameters sorted by name.
//! For JSON bodies Twilio adds `bodySHA256=<hex SHA-256 of the body>` to the URL
//! and signs the URL alone.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header Twilio puts its signature in.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";
/// The query parameter that carries the body hash of JSON requests.
pub const BODY_SHA256_PARAM: &str = "bodySHA256";

/// Computes the signature Twilio sends for a request to `url` with form
/// parameters `params` (pass none for JSON bodies). Public so tests and tools
/// can sign requests.
pub fn compute_signature<K, V>(auth_token: &str, url: &str, params: &[(K, V)]) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    // Repeated names keep all values, ordered by value (as Twilio's helpers do).
    sorted.sort_unstable();
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) else {
        unreachable!("HMAC-SHA1 takes keys of any length")
    };
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The hex SHA-256 of a body, as Twilio puts it in `bodySHA256`.
pub fn body_sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `X-Twilio-Signature` header (or not ASCII).
    #[error("missing X-Twilio-Signature header")]
    Missing,
    /// The signature does not match the URL and parameters.
    #[error("X-Twilio-Signature does not match")]
    Mismatch,
    /// The body's SHA-256 does not match the URL's `bodySHA256`.
    #[error("the body does not match bodySHA256")]
    BodyHashMismatch,
}

/// Checks `signature` for a form-encoded request to `url` with `params`. The URL
/// is tried as given and with its default port toggled (`:443` for https, `:80`
/// for http), as Twilio may sign either. Constant-time comparison.
pub fn validate_form_signature<K, V>(
    auth_token: &str,
    signature: &str,
    url: &str,
    params: &[(K, V)],
) -> Result<(), SignatureError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let matches = url_variants(url)
        .iter()
        .any(|u| constant_time_eq(&compute_signature(auth_token, u, params), signature));
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks a request with a JSON (or other non-form) body: the signature covers
/// the URL alone, and the body's SHA-256 must equal the URL's `bodySHA256`.
pub fn validate_body_signature(
    auth_token: &str,
    signature: &str,
    url: &str,
    body: &[u8],
) -> Result<(), SignatureError> {
    validate_form_signature::<&str, &str>(auth_token, signature, url, &[])?;
    let expected = query_param(url, BODY_SHA256_PARAM).ok_or(SignatureError::BodyHashMismatch)?;
    if constant_time_eq(&body_sha256_hex(body), &expected.to_ascii_lowercase()) {
        Ok(())
    } else {
        Err(SignatureError::BodyHashMismatch)
    }
}

/// Whether the URL carries `bodySHA256` (the JSON-body signing variant).
pub fn has_body_sha256(url: &str) -> bool {
    query_param(url, BODY_SHA256_PARAM).is_some()
}

/// The first value of query parameter `name` in `url`, decoded.
pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `url` as given, plus the same URL with the scheme's default port added (when
/// absent) or removed (when present). Works on the raw string so nothing else in
/// the URL is normalized.
pub(crate) fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    // The port is after the last ':' that is not inside an IPv6 literal.
    let after_bracket = host_port.rfind(']').map_or(0, |i| i + 1);
    let port_colon = host_port[after_bracket..]
        .rfind(':')
        .map(|i| i + after_bracket);
    let toggled = match port_colon {
        Some(i) if &host_port[i + 1..] == default_port => {
            format!("{}{}", &authority[..host_start], &host_port[..i])
        }
        Some(_) => return out,
        None => format!("{authority}:{default_port}"),
    };
    out.push(format!("{scheme}://{toggled}{tail}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_port_variants() {
        assert_eq!(
            url_variants("https://a.example/x?y=1"),
            vec!["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            url_variants("https://u:p@a.example:443/x"),
            vec!["https://u:p@a.example:443/x", "https://u:p@a.example/x"]
        );
        assert_eq!(
            url_variants("http://a.example"),
            vec!["http://a.example", "http://a.example:80"]
        );
        assert_eq!(
            url_variants("https://a.example:8443/x"),
            vec!["https://a.example:8443/x"]
        );
        assert_eq!(
            url_variants("https://[::1]/x"),
            vec!["https://[::1]/x", "https://[::1]:443/x"]
        );
    }
}
