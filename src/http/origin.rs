//! Credentials stay on their origin.
//!
//! - Vendor requests follow redirects only within the origin (scheme, host, port) they were
//!   sent to: a redirect elsewhere — another host or port, or https → http — is not followed,
//!   so neither the credentials (reqwest strips only `Authorization` and `Cookie`, not a
//!   custom header such as Revel's `API-AUTHENTICATION`) nor a re-sent body leave it; the
//!   request fails naming the `Location`. No `Referer` is sent.
//! - OAuth 2.0 token requests follow no redirect at all (their form body holds the client
//!   secret, the password or the refresh token).
//! - A base URL named by a vendor (SAP Concur's `geolocation`) is used only when a
//!   [`HostPolicy`] allows it.

use std::fmt;

use url::Url;

/// At most this many same-origin redirects are followed for one request.
const MAX_REDIRECTS: usize = 10;

/// Why a redirect was not followed.
#[derive(Debug, thiserror::Error)]
#[error("redirect to {location} leaves {origin}; not followed, so no credential goes there")]
pub struct RedirectRefused {
    /// Where the vendor redirected to.
    pub location: String,
    /// The origin of the request.
    pub origin: String,
}

/// The redirect policy of vendor requests: same origin only, at most ten hops.
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.follow();
        };
        if attempt.url().origin() != first.origin() {
            let error = RedirectRefused {
                location: attempt.url().to_string(),
                origin: first.origin().ascii_serialization(),
            };
            return attempt.error(error);
        }
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        attempt.follow()
    })
}

/// The redirect that made `e`, if a [`RedirectRefused`] did.
pub fn refused_redirect(e: &reqwest::Error) -> Option<&RedirectRefused> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<RedirectRefused>() {
            return Some(refused);
        }
        source = s.source();
    }
    None
}

/// Which vendor-named base URLs may be used: host patterns (https only) or full origins.
#[derive(Clone, PartialEq, Eq)]
pub struct HostPolicy {
    entries: Vec<Entry>,
}

#[derive(Clone, PartialEq, Eq)]
enum Entry {
    /// `*.example.com`: any subdomain of `example.com`, https only.
    Suffix(String),
    /// `api.example.com`: that host, https only.
    Host(String),
    /// `http://127.0.0.1:8080`: exactly that origin (any scheme).
    Origin(url::Origin),
}

impl HostPolicy {
    /// Reads the entries of `allowed_hosts`; an error names the entry that is neither a host
    /// pattern nor an origin.
    pub fn parse(entries: &[String]) -> Result<HostPolicy, String> {
        let entries = entries
            .iter()
            .map(|e| {
                let text = e.trim().to_ascii_lowercase();
                if text.contains("://") {
                    let url = Url::parse(&text)
                        .map_err(|err| format!("allowed host {e:?} is not an origin: {err}"))?;
                    if url.host_str().is_none() || !matches!(url.scheme(), "https" | "http") {
                        return Err(format!("allowed host {e:?} is not an http(s) origin"));
                    }
                    return Ok(Entry::Origin(url.origin()));
                }
                let host = text.strip_prefix("*.").unwrap_or(&text);
                let valid = !host.is_empty()
                    && host.split('.').all(|label| {
                        !label.is_empty()
                            && label
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-')
                    });
                if !valid {
                    return Err(format!(
                        "allowed host {e:?} is neither a host name, `*.` and a domain, nor an origin"
                    ));
                }
                Ok(if text.starts_with("*.") {
                    Entry::Suffix(format!(".{host}"))
                } else {
                    Entry::Host(host.to_string())
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(HostPolicy { entries })
    }

    /// Whether `url` may be used: an error says why not.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        let origin = url.origin();
        if self
            .entries
            .iter()
            .any(|e| matches!(e, Entry::Origin(o) if *o == origin))
        {
            return Ok(());
        }
        if url.scheme() != "https" {
            return Err(format!("{} is not https", origin.ascii_serialization()));
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let allowed = self.entries.iter().any(|e| match e {
            Entry::Suffix(suffix) => host.ends_with(suffix.as_str()),
            Entry::Host(h) => *h == host,
            Entry::Origin(_) => false,
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "host {host} is not among the allowed hosts ({self})"
            ))
        }
    }
}

impl fmt::Display for HostPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self
            .entries
            .iter()
            .map(|e| match e {
                Entry::Suffix(s) => format!("*{s}"),
                Entry::Host(h) => h.clone(),
                Entry::Origin(o) => o.ascii_serialization(),
            })
            .collect();
        f.write_str(&shown.join(", "))
    }
}

impl fmt::Debug for HostPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostPolicy({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> HostPolicy {
        HostPolicy::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn concur_hosts_over_https_only() {
        let p = policy(&["*.concursolutions.com"]);
        for ok in [
            "https://us.api.concursolutions.com",
            "https://EU2.API.concursolutions.com/",
            "https://us-impl.api.concursolutions.com:443",
        ] {
            assert_eq!(p.check(&url(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "http://us.api.concursolutions.com",
            "https://concursolutions.com",
            "https://evilconcursolutions.com",
            "https://us.api.concursolutions.com.evil.example",
            "https://127.0.0.1:8443",
        ] {
            assert!(p.check(&url(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_allow_exactly_themselves() {
        let p = policy(&["http://127.0.0.1:8080", "api.example.com"]);
        assert_eq!(p.check(&url("http://127.0.0.1:8080/x")), Ok(()));
        assert!(p.check(&url("http://127.0.0.1:8081")).is_err());
        assert!(p.check(&url("https://127.0.0.1:8080")).is_err());
        assert_eq!(p.check(&url("https://api.example.com")), Ok(()));
        assert!(p.check(&url("https://x.api.example.com")).is_err());
        assert!(p.check(&url("http://api.example.com")).is_err());
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["", "*.", "ftp://x.example", "exa mple.com", "a..b"] {
            let e = HostPolicy::parse(&[bad.to_string()]).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
