//! The bearer token every call carries.

use std::str::FromStr;

/// A Vantiq access token (a worker token with the profile
/// `k8sWorker__system`, or a user's session token). Its `Debug` never shows
/// it; the client puts it only in the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a token as issued by `POST /api/v1/resources/tokens` or
    /// `GET /authenticate`.
    pub fn new(token: impl Into<String>) -> Self {
        AccessToken(token.into())
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl FromStr for AccessToken {
    type Err = String;

    /// Trims surrounding whitespace (a token read from a file or a Secret
    /// often ends in a newline); an empty token is refused.
    fn from_str(token: &str) -> Result<Self, Self::Err> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the access token is empty".into());
        }
        Ok(AccessToken(token.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_in_debug_output_and_is_trimmed() {
        let token: AccessToken = " t0ps3cret\n".parse().unwrap();
        assert_eq!(token.expose(), "t0ps3cret");
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
        assert!("  ".parse::<AccessToken>().is_err());
    }
}
