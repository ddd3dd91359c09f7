//! Authentication of the simulator's REST API against docs/cluster-api.md §1.1 (Basic, Bearer JWT,
//! `POST /token`, exemptions, auth before routing).

use crate::util::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const BASIC_REALM: &str = r#"Basic realm="Restricted IPFS Cluster API""#;

/// A one-peer simulator with `admin:secret` configured.
fn auth_sim() -> Sim {
    Sim::start(&["--peers", "1", "--lag", "0", "--basic-auth", "admin:secret"])
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// HMAC-SHA256 over `input` with `key`.
fn hs256(key: &[u8], input: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("any key length works for HMAC");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// A compact JWS with this header and these claims, HMAC-SHA256-signed with `key`.
fn sign_jwt(header: &Value, claims: &Value, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = hs256(key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The header, the claims and the raw signature of a compact JWS.
fn decode_jwt(token: &str) -> (Value, Value, Vec<u8>) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three dot-separated parts: {token}");
    let dec = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .unwrap_or_else(|e| panic!("JWT part is not base64url ({e}): {s}"))
    };
    let header: Value = serde_json::from_slice(&dec(parts[0])).expect("JWT header is JSON");
    let claims: Value = serde_json::from_slice(&dec(parts[1])).expect("JWT claims are JSON");
    (header, claims, dec(parts[2]))
}

fn get_id(sim: &Sim, auth: Option<&str>) -> RawResponse {
    match auth {
        Some(a) => raw(sim.url(0), "GET", "/id", &[("Authorization", a)], b""),
        None => raw(sim.url(0), "GET", "/id", &[], b""),
    }
}

fn assert_unauthorized(r: &RawResponse, message: &str) {
    assert_eq!(r.status, 401, "expected 401 {message:?}, got {} {}", r.status, r.text());
    assert_eq!(r.json(), json!({"code": 401, "message": message}), "401 body");
}

/// Asks the simulator for a token with Basic credentials.
fn get_token(sim: &Sim, user: &str, pass: &str) -> String {
    let r = raw(sim.url(0), "POST", "/token", &[("Authorization", &basic(user, pass))], b"");
    assert_eq!(r.status, 200, "POST /token: {}", r.text());
    let body = r.json();
    let obj = body.as_object().expect("token response is an object");
    assert_eq!(obj.len(), 1, "token response has only `token`: {body}");
    body["token"].as_str().expect("token is a string").to_string()
}

#[test]
fn no_credentials_gives_401_with_bearer_and_basic_challenges() {
    let sim = auth_sim();
    for (method, path) in
        [("GET", "/id"), ("GET", "/version"), ("GET", "/allocations"), ("POST", "/token")]
    {
        let r = raw(sim.url(0), method, path, &[], b"");
        assert_unauthorized(&r, "unauthorized: no auth provided");
        let challenges = r.headers_named("WWW-Authenticate");
        assert_eq!(
            challenges.len(),
            2,
            "{method} {path}: two WWW-Authenticate headers, got {challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer")),
            "{method} {path}: one Bearer challenge, got {challenges:?}"
        );
        assert!(
            challenges.contains(&BASIC_REALM),
            "{method} {path}: one Basic challenge, got {challenges:?}"
        );
    }
}

#[test]
fn wrong_basic_credentials_are_denied() {
    let sim = auth_sim();
    for (user, pass) in [("admin", "wrong"), ("root", "secret"), ("admin", ""), ("", "")] {
        let r = get_id(&sim, Some(&basic(user, pass)));
        assert_unauthorized(&r, "unauthorized: access denied");
        assert_eq!(
            r.headers_named("WWW-Authenticate"),
            vec![BASIC_REALM],
            "wrong Basic {user}:{pass} gets exactly the Basic challenge"
        );
    }
}

#[test]
fn token_request_with_bad_credentials_is_denied() {
    let sim = auth_sim();
    let r = raw(sim.url(0), "POST", "/token", &[("Authorization", &basic("admin", "wrong"))], b"");
    assert_unauthorized(&r, "unauthorized: access denied");
    let forged =
        sign_jwt(&json!({"alg": "HS256", "typ": "JWT"}), &json!({"iss": "admin"}), b"wrong");
    let r = raw(sim.url(0), "POST", "/token", &[("Authorization", &bearer(&forged))], b"");
    assert_unauthorized(&r, "unauthorized: invalid token");
}

#[test]
fn right_basic_credentials_are_accepted() {
    let sim = auth_sim();
    let auth = basic("admin", "secret");
    let r = get_id(&sim, Some(&auth));
    assert_eq!(r.status, 200, "GET /id with Basic: {}", r.text());
    assert_eq!(r.json()["id"], sim.peers[0].id.as_str());
    let r = raw(sim.url(0), "GET", "/version", &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "GET /version with Basic: {}", r.text());
    assert_eq!(r.json(), json!({"version": "1.1.6"}));
}

#[test]
fn token_is_hs256_with_only_the_iss_claim_and_works_as_bearer() {
    let sim = auth_sim();
    let token = get_token(&sim, "admin", "secret");
    let (header, claims, sig) = decode_jwt(&token);
    assert_eq!(header["alg"], "HS256", "JWT header: {header}");
    assert_eq!(claims, json!({"iss": "admin"}), "claims are only iss (no exp)");
    // Signed with the user's password.
    let input = token.rsplit_once('.').unwrap().0;
    assert_eq!(
        sig,
        hs256(b"secret", input.as_bytes()),
        "token is HMAC-SHA256-signed with the password"
    );

    let r = get_id(&sim, Some(&bearer(&token)));
    assert_eq!(r.status, 200, "GET /id with the issued token: {}", r.text());

    // POST /token also accepts Bearer auth.
    let r = raw(sim.url(0), "POST", "/token", &[("Authorization", &bearer(&token))], b"");
    assert_eq!(r.status, 200, "POST /token with Bearer: {}", r.text());
    let (_, claims2, _) = decode_jwt(r.json()["token"].as_str().expect("token string"));
    assert_eq!(claims2, json!({"iss": "admin"}));
}

#[test]
fn token_signed_with_a_wrong_key_is_invalid() {
    let sim = auth_sim();
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let bad_tokens = [
        sign_jwt(&header, &json!({"iss": "admin"}), b"not-the-secret"),
        // A configured user's name but signed with nothing it knows.
        sign_jwt(&header, &json!({"iss": "admin"}), b""),
        // An unknown issuer, even when signed with a real password.
        sign_jwt(&header, &json!({"iss": "mallory"}), b"secret"),
        // A tampered token: claims changed after signing.
        {
            let good = sign_jwt(&header, &json!({"iss": "admin"}), b"secret");
            let parts: Vec<&str> = good.split('.').collect();
            format!(
                "{}.{}.{}",
                parts[0],
                URL_SAFE_NO_PAD.encode(r#"{"iss":"admin","x":1}"#),
                parts[2]
            )
        },
        // Not HMAC-signed at all.
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"iss":"admin"}"#)
        ),
        "garbage".to_string(),
    ];
    for token in bad_tokens {
        let r = get_id(&sim, Some(&bearer(&token)));
        assert_unauthorized(&r, "unauthorized: invalid token");
        let challenges = r.headers_named("WWW-Authenticate");
        assert_eq!(challenges.len(), 1, "one Bearer challenge for {token}: {challenges:?}");
        assert!(challenges[0].starts_with("Bearer realm="), "Bearer challenge: {}", challenges[0]);
        assert!(
            challenges[0].contains(r#"error="invalid_token""#),
            "invalid_token challenge: {}",
            challenges[0]
        );
    }
}

#[test]
fn self_signed_jwt_with_the_password_is_accepted() {
    let sim = auth_sim();
    let token =
        sign_jwt(&json!({"alg": "HS256", "typ": "JWT"}), &json!({"iss": "admin"}), b"secret");
    let r = get_id(&sim, Some(&bearer(&token)));
    assert_eq!(r.status, 200, "self-signed HS256 JWT: {}", r.text());
    let r = raw(sim.url(0), "GET", "/allocations", &[("Authorization", &bearer(&token))], b"");
    assert!(
        r.status == 200 || r.status == 204,
        "GET /allocations with Bearer: {} {}",
        r.status,
        r.text()
    );
}

#[test]
fn every_configured_user_signs_with_their_own_password() {
    let sim = Sim::start(&[
        "--peers",
        "1",
        "--lag",
        "0",
        "--basic-auth",
        "admin:secret",
        "--basic-auth",
        "bob:hunter2",
    ]);
    let header = json!({"alg": "HS256", "typ": "JWT"});
    assert_eq!(get_id(&sim, Some(&basic("bob", "hunter2"))).status, 200);
    assert_eq!(get_id(&sim, Some(&basic("admin", "secret"))).status, 200);
    assert_unauthorized(
        &get_id(&sim, Some(&basic("bob", "secret"))),
        "unauthorized: access denied",
    );

    let bob = sign_jwt(&header, &json!({"iss": "bob"}), b"hunter2");
    assert_eq!(
        get_id(&sim, Some(&bearer(&bob))).status,
        200,
        "bob's JWT signed with bob's password"
    );
    let crossed = sign_jwt(&header, &json!({"iss": "admin"}), b"hunter2");
    assert_unauthorized(&get_id(&sim, Some(&bearer(&crossed))), "unauthorized: invalid token");

    let token = get_token(&sim, "bob", "hunter2");
    assert_eq!(decode_jwt(&token).1, json!({"iss": "bob"}));
    assert_eq!(get_id(&sim, Some(&bearer(&token))).status, 200);
}

#[test]
fn health_and_options_are_exempt() {
    let sim = auth_sim();
    let r = raw(sim.url(0), "GET", "/health", &[], b"");
    assert_eq!(r.status, 204, "GET /health needs no auth: {}", r.text());
    assert!(r.body.is_empty());

    let preflight = [("Origin", "http://example.com"), ("Access-Control-Request-Method", "GET")];
    for path in ["/id", "/pins", "/allocations", "/no/such/route"] {
        let r = raw(sim.url(0), "OPTIONS", path, &preflight, b"");
        assert_ne!(r.status, 401, "OPTIONS {path} (preflight) is exempt: {}", r.text());
        let r = raw(sim.url(0), "OPTIONS", path, &[], b"");
        assert_ne!(r.status, 401, "OPTIONS {path} is exempt: {}", r.text());
    }
    // Only GET /health is exempt, not the other /health routes.
    let r = raw(sim.url(0), "GET", "/health/alerts", &[], b"");
    assert_unauthorized(&r, "unauthorized: no auth provided");
}

#[test]
fn auth_runs_before_routing() {
    let sim = auth_sim();
    for (method, path) in [
        ("GET", "/no/such/route"),
        ("GET", "/pins/ipfs"),
        ("PUT", "/pins/x"),
        ("GET", "/allocations/"),
    ] {
        let r = raw(sim.url(0), method, path, &[], b"");
        assert_unauthorized(&r, "unauthorized: no auth provided");
        let r = raw(sim.url(0), method, path, &[("Authorization", &basic("admin", "nope"))], b"");
        assert_unauthorized(&r, "unauthorized: access denied");
    }
    // With valid credentials the router answers.
    let r = raw(
        sim.url(0),
        "GET",
        "/no/such/route",
        &[("Authorization", &basic("admin", "secret"))],
        b"",
    );
    assert_eq!(r.status, 404, "unknown route with auth: {}", r.text());
    assert_eq!(r.json(), json!({"code": 404, "message": "not found"}));
}

#[test]
fn control_api_is_never_behind_auth() {
    let sim = auth_sim();
    let r = raw(sim.url(0), "GET", "/_sim/state", &[], b"");
    assert_eq!(r.status, 200, "GET /_sim/state without credentials: {}", r.text());
    assert_eq!(r.json()["peers"].as_array().map(Vec::len), Some(1));
}

#[test]
fn token_without_auth_configured_is_unauthorized() {
    let sim = Sim::start(&["--peers", "1", "--lag", "0"]);
    for headers in [vec![], vec![("Authorization", basic("admin", "secret"))]] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = raw(sim.url(0), "POST", "/token", &h, b"");
        assert_unauthorized(&r, "unauthorized");
    }
    // Everything else needs no credentials.
    let r = get_id(&sim, None);
    assert_eq!(r.status, 200, "GET /id without auth configured: {}", r.text());
}
