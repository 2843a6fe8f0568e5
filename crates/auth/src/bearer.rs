//! The credential of an `Authorization: Bearer …` header (RFC 6750 §2.1), read one way by the
//! server's request resolution and by the resource-server layer.

/// The token of the request's one `Authorization` header if it uses the `Bearer` scheme (any
/// case) with a non-empty token. `values` are every `Authorization` header of the request, as
/// bytes: more than one is refused (`None`), as is a value that is not visible ASCII (what
/// `http::HeaderValue::to_str` accepts), so that two readers never disagree on which credential
/// a request carries.
pub fn bearer_token<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<&'a str> {
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    if !value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
    {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_start_matches(' ');
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a>(values: &[&'a str]) -> Option<&'a str> {
        bearer_token(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn exactly_one_bearer_header_with_a_token() {
        assert_eq!(read(&[]), None);
        assert_eq!(read(&["Bearer abc"]), Some("abc"));
        assert_eq!(read(&["bearer  abc"]), Some("abc"));
        assert_eq!(read(&["BEARER abc"]), Some("abc"));
        assert_eq!(read(&["Basic abc"]), None);
        assert_eq!(read(&["Bearer "]), None);
        assert_eq!(read(&["Bearer"]), None);
        assert_eq!(read(&["Bearer a", "Bearer b"]), None);
        assert_eq!(read(&["Bearer ab\u{e9}"]), None);
    }
}
