//! Basic and Bearer (JWT, HMAC) authentication as the cluster's REST API does it
//! (docs/cluster-api.md §1.1).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};

/// The outcome of checking one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Auth is off, or the request is exempt.
    Open,
    /// Authenticated as this user.
    User(String),
    NoAuth,
    BadBasic,
    BadToken,
}

/// Configured users (`--basic-auth user:pass`).
#[derive(Debug, Clone, Default)]
pub struct Users(pub Vec<(String, String)>);

impl Users {
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    fn password(&self, user: &str) -> Option<&str> {
        self.0.iter().find(|(u, _)| u == user).map(|(_, p)| p.as_str())
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&str>) -> Verdict {
        if !self.enabled() {
            return Verdict::Open;
        }
        let Some(h) = authorization else { return Verdict::NoAuth };
        if let Some(b) = strip_scheme(h, "Basic") {
            let decoded = STANDARD.decode(b.trim()).ok().and_then(|d| String::from_utf8(d).ok());
            if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':'))
                && self.password(u) == Some(p)
            {
                return Verdict::User(u.to_string());
            }
            return Verdict::BadBasic;
        }
        if let Some(t) = strip_scheme(h, "Bearer") {
            return match self.verify_jwt(t.trim()) {
                Some(u) => Verdict::User(u),
                None => Verdict::BadToken,
            };
        }
        Verdict::NoAuth
    }

    /// Verifies an HMAC-signed JWT whose `iss` is a configured user, keyed by that user's password.
    fn verify_jwt(&self, token: &str) -> Option<String> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let iss = claims.get("iss")?.as_str()?;
        let key = self.password(iss)?;
        let signing_input = format!("{h}.{c}");
        macro_rules! verify {
            ($d:ty) => {
                Hmac::<$d>::new_from_slice(key.as_bytes()).is_ok_and(|mut m| {
                    m.update(signing_input.as_bytes());
                    m.verify_slice(&sig).is_ok()
                })
            };
        }
        let ok = match header.get("alg")?.as_str()? {
            "HS256" => verify!(sha2::Sha256),
            "HS384" => verify!(sha2::Sha384),
            "HS512" => verify!(sha2::Sha512),
            _ => false,
        };
        ok.then(|| iss.to_string())
    }

    /// `POST /token`: an HS256 JWT with only `iss`, signed with the user's password.
    pub fn issue_token(&self, user: &str) -> Option<String> {
        let key = self.password(user)?;
        Some(sign_jwt(user, key))
    }
}

/// Signs `{"iss":user}` with HS256.
pub fn sign_jwt(user: &str, key: &str) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let c = URL_SAFE_NO_PAD.encode(serde_json::json!({ "iss": user }).to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn strip_scheme<'a>(h: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = h.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer() {
        let users = Users(vec![("admin".into(), "secret".into())]);
        let basic = format!("Basic {}", STANDARD.encode("admin:secret"));
        assert_eq!(users.check(Some(&basic)), Verdict::User("admin".into()));
        let wrong = format!("Basic {}", STANDARD.encode("admin:nope"));
        assert_eq!(users.check(Some(&wrong)), Verdict::BadBasic);
        let token = users.issue_token("admin").unwrap();
        assert_eq!(users.check(Some(&format!("Bearer {token}"))), Verdict::User("admin".into()));
        let forged = sign_jwt("admin", "other");
        assert_eq!(users.check(Some(&format!("Bearer {forged}"))), Verdict::BadToken);
        assert_eq!(users.check(None), Verdict::NoAuth);
        assert_eq!(Users::default().check(None), Verdict::Open);
    }
}
