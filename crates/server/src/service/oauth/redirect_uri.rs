//! Redirect URIs: what a client may register, and the one comparison the authorization
//! endpoint makes (OAuth 2.1 §2.3.1: exact string match; RFC 8252 §7.3: a loopback redirect
//! matches on any port).
//!
//! Registration accepts `https` URIs, and `http` only on the loopback IP literals `127.0.0.1`
//! and `[::1]` (native apps, RFC 8252 §7.3; `localhost` is refused, as §8.3 advises, since a name
//! can resolve elsewhere). No userinfo, no fragment, and the text must already be in the form the
//! WHATWG URL parser writes it (lowercase scheme and host, an explicit `/` path), so that the
//! exact comparison is a comparison of one spelling, never a normalisation at match time.

use url::{Host, Url};

/// Longest redirect URI accepted.
pub const MAX_REDIRECT_URI: usize = 2048;

/// Why a redirect URI cannot be registered.
pub fn check_registrable(text: &str) -> Result<(), &'static str> {
    let url = canonical(text)?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(&url) => Ok(()),
        "http" => Err("an http redirect URI must be on 127.0.0.1 or [::1] (RFC 8252); use https"),
        _ => Err("a redirect URI must be https (or http on a loopback address)"),
    }
}

/// The registered URI that `presented` matches, if any: the same string, or, for an `http`
/// loopback registration, the same URI on another port.
pub fn matching<'a>(registered: &'a [String], presented: &str) -> Option<&'a str> {
    if let Some(exact) = registered.iter().find(|r| r.as_str() == presented) {
        return Some(exact);
    }
    let presented_url = canonical(presented).ok()?;
    if presented_url.scheme() != "http" || !is_loopback_host(&presented_url) {
        return None;
    }
    registered.iter().map(String::as_str).find(|r| {
        Url::parse(r).is_ok_and(|reg| {
            reg.scheme() == "http"
                && is_loopback_host(&reg)
                && reg.host() == presented_url.host()
                && reg.path() == presented_url.path()
                && reg.query() == presented_url.query()
        })
    })
}

fn canonical(text: &str) -> Result<Url, &'static str> {
    if text.len() > MAX_REDIRECT_URI {
        return Err("a redirect URI has at most 2048 characters");
    }
    let url = Url::parse(text).map_err(|_| "a redirect URI must be an absolute URI")?;
    if url.as_str() != text {
        return Err("a redirect URI must be written in canonical form (lowercase scheme and host, a path of at least `/`, no default port)");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("a redirect URI may not carry user information");
    }
    if url.fragment().is_some() {
        return Err("a redirect URI may not have a fragment");
    }
    if url.host().is_none() {
        return Err("a redirect URI needs a host");
    }
    Ok(url)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_takes_https_and_loopback_http_only() {
        for good in [
            "https://app.example/cb",
            "https://app.example:8443/cb?x=1",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:5000/cb",
            "http://[::1]:5000/cb",
        ] {
            assert_eq!(check_registrable(good), Ok(()), "{good}");
        }
        for bad in [
            "http://app.example/cb",
            "http://localhost:5000/cb",
            "https://app.example",
            "HTTPS://app.example/cb",
            "https://App.example/cb",
            "https://user@app.example/cb",
            "https://app.example/cb#frag",
            "https://app.example:443/cb",
            "custom:/cb",
            "/cb",
            "javascript:alert(1)",
        ] {
            assert!(check_registrable(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_relaxes_the_port() {
        let registered = vec![
            "https://app.example/cb".to_owned(),
            "http://127.0.0.1/native".to_owned(),
        ];
        assert!(matching(&registered, "https://app.example/cb").is_some());
        assert!(matching(&registered, "http://127.0.0.1:53211/native").is_some());
        assert!(matching(&registered, "http://127.0.0.1/native").is_some());
        for bad in [
            "https://app.example/cb/",
            "https://APP.example/cb",
            "https://app.example/CB",
            "https://app.example/cb/extra",
            "https://app.example:444/cb",
            "https://user@app.example/cb",
            "https://app.example/cb#x",
            "https://app.example/cb?x=1",
            "http://127.0.0.1:1/other",
            "http://[::1]:5000/native",
            "http://localhost:5000/native",
            "https://127.0.0.1:5000/native",
        ] {
            assert!(matching(&registered, bad).is_none(), "{bad}");
        }
    }
}
