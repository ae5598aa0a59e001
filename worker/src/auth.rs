//! Bearer-token authentication of every route but `/healthz`.
//!
//! The expected token is kept only as its SHA-256, and a presented token is hashed and
//! compared in constant time ([`subtle`]), so neither the comparison's timing nor the
//! token's length leaks through response times. This module must never log a token.

use std::fmt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::config::MIN_TOKEN_BYTES;
use crate::error::{ApiError, Error, Result};

/// The token clients must present, held as its SHA-256.
#[derive(Clone)]
pub struct BearerToken {
    hash: [u8; 32],
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// A token from its text; at least [`MIN_TOKEN_BYTES`] long after trimming.
    pub fn new(token: &str) -> std::result::Result<Self, usize> {
        let token = token.trim();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(token.len());
        }
        Ok(Self {
            hash: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Reads the token file (a mounted Secret key).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            what: "bearer token",
            path: path.to_owned(),
            source,
        })?;
        Self::new(&text).map_err(|len| Error::TokenTooShort {
            path: path.to_owned(),
            len,
            min: MIN_TOKEN_BYTES,
        })
    }

    /// True when `presented` is the token; constant time in the presented value.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let hash: [u8; 32] = Sha256::digest(presented).into();
        hash.ct_eq(&self.hash).into()
    }

    /// Checks an `Authorization` header value (`Bearer <token>`, scheme
    /// case-insensitive).
    pub fn verify_header(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else { return false };
        let Some((scheme, token)) = split_once_byte(value, b' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer") && self.verify(token.trim_ascii())
    }
}

fn split_once_byte(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|b| *b == sep)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Middleware: 401 JSON unless the request carries the right bearer token. Its state is
/// only the token, so this module knows nothing of the routes.
pub async fn require_token(
    State(token): State<BearerToken>,
    request: Request,
    next: Next,
) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if token.verify_header(header) {
        next.run(request).await
    } else {
        tracing::warn!(path = %request.uri().path(), "request without a valid bearer token");
        ApiError::unauthorized().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    #[test]
    fn accepts_only_the_token() -> std::result::Result<(), usize> {
        let token = BearerToken::new(&format!("  {TOKEN}\n"))?;
        assert!(token.verify(TOKEN.as_bytes()));
        assert!(!token.verify(b"0123456789abcdef0124"));
        assert!(!token.verify(b""));
        assert!(token.verify_header(Some(format!("Bearer {TOKEN}").as_bytes())));
        assert!(token.verify_header(Some(format!("bearer {TOKEN}").as_bytes())));
        assert!(!token.verify_header(Some(format!("Basic {TOKEN}").as_bytes())));
        assert!(!token.verify_header(Some(TOKEN.as_bytes())));
        assert!(!token.verify_header(None));
        Ok(())
    }

    #[test]
    fn refuses_short_tokens() {
        assert_eq!(BearerToken::new(" short \n").err(), Some(5));
    }
}
