//! The parameters of the authorization request and of the pages' forms: each at most once,
//! except the consent form's repeated `grant`.

use std::collections::HashMap;

use zeroize::Zeroizing;

/// The authorization request's parameters, carried through the pages.
const REQUEST_PARAMS: [&str; 11] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "prompt",
    "max_age",
    "nonce",
];
/// Most distinct parameters a request or form may carry (the repeated one not counted).
const MAX_PARAMS: usize = 24;
/// Most values of the one repeatable parameter (the consent form's ticked `grant`s): a client may
/// ask for many scopes (each `tools:call:<name>` is one), so this is not [`MAX_PARAMS`]; the
/// input's size bounds it too.
const MAX_REPEATED: usize = 512;
/// Longest query or form accepted.
pub(super) const MAX_INPUT: usize = 16 * 1024;

/// Parameters of a query or form, each at most once (except those in `repeatable`).
pub(super) struct Params {
    single: HashMap<String, Zeroizing<String>>,
    pub(super) repeated: Vec<String>,
}

impl Params {
    pub(super) fn parse(input: &[u8], repeatable: Option<&str>) -> Result<Params, &'static str> {
        if input.len() > MAX_INPUT {
            return Err("The request is too large.");
        }
        let mut single = HashMap::new();
        let mut repeated = Vec::new();
        for (name, value) in form_urlencoded::parse(input) {
            if Some(name.as_ref()) == repeatable {
                if repeated.len() >= MAX_REPEATED {
                    return Err("The request has too many parameters.");
                }
                repeated.push(value.into_owned());
                continue;
            }
            if single.len() >= MAX_PARAMS {
                return Err("The request has too many parameters.");
            }
            if single
                .insert(name.into_owned(), Zeroizing::new(value.into_owned()))
                .is_some()
            {
                return Err("A parameter of the request is repeated.");
            }
        }
        Ok(Params { single, repeated })
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.single
            .get(name)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The authorization request's parameters, to carry in hidden fields.
    pub(super) fn request_fields(&self) -> Vec<(&'static str, &str)> {
        REQUEST_PARAMS
            .iter()
            .filter_map(|name| self.get(name).map(|v| (*name, v)))
            .collect()
    }
}
