//! NATS JWTs (`alg: ed25519-nkey`): signing the user JWT and the authorization response,
//! and verifying the server's authorization request. Hand-rolled because no crate models
//! the callout claims in non-operator mode (see the reference notes).

use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha512_256};

const HEADER: &[u8] = br#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// A NATS JWT that cannot be used. Messages never contain the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NatsJwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed JWT")]
    Malformed,
    /// Not an ed25519-nkey JWT.
    #[error("unsupported JWT algorithm")]
    Algorithm,
    /// The `iss` is not a server nkey, or the signature does not verify with it.
    #[error("bad signature")]
    Signature,
    /// Signing failed (a broken key).
    #[error("cannot sign: {0}")]
    Sign(String),
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Signs `claims` with `signer`, filling in `iss`, `iat` and `jti` as NATS expects.
pub(crate) fn encode(mut claims: Value, signer: &KeyPair) -> Result<String, NatsJwtError> {
    claims["iss"] = json!(signer.public_key());
    claims["iat"] = json!(now());
    claims["jti"] = json!("");
    let unsigned = serde_json::to_vec(&claims).map_err(|e| NatsJwtError::Sign(e.to_string()))?;
    claims["jti"] = json!(BASE32_NOPAD.encode(&Sha512_256::digest(&unsigned)));
    let payload = serde_json::to_vec(&claims).map_err(|e| NatsJwtError::Sign(e.to_string()))?;
    let signing_input = format!("{}.{}", BASE64URL_NOPAD.encode(HEADER), BASE64URL_NOPAD.encode(&payload));
    let signature = signer.sign(signing_input.as_bytes()).map_err(|e| NatsJwtError::Sign(e.to_string()))?;
    Ok(format!("{signing_input}.{}", BASE64URL_NOPAD.encode(&signature)))
}

/// Decodes a JWT signed by the server nkey named in its own `iss`, and verifies it.
pub(crate) fn decode_server_signed(token: &str) -> Result<Value, NatsJwtError> {
    let mut parts = token.trim().split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(NatsJwtError::Malformed);
    };
    let decode =
        |part: &str| BASE64URL_NOPAD.decode(part.trim_end_matches('=').as_bytes()).map_err(|_| NatsJwtError::Malformed);
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|_| NatsJwtError::Malformed)?;
    if !matches!(header["alg"].as_str(), Some("ed25519-nkey" | "ed25519")) {
        return Err(NatsJwtError::Algorithm);
    }
    let claims: Value = serde_json::from_slice(&decode(payload)?).map_err(|_| NatsJwtError::Malformed)?;
    let issuer = claims["iss"].as_str().filter(|iss| iss.starts_with('N')).ok_or(NatsJwtError::Signature)?;
    let key = KeyPair::from_public_key(issuer).map_err(|_| NatsJwtError::Signature)?;
    let signing_input = &token.trim()[..token.trim().rfind('.').unwrap_or(0)];
    key.verify(signing_input.as_bytes(), &decode(signature)?).map_err(|_| NatsJwtError::Signature)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_signed(claims: Value, server: &KeyPair) -> String {
        // A server-signed JWT is the same format with an `N` key.
        encode(claims, server).expect("sign")
    }

    #[test]
    fn signed_by_the_named_server_verifies() {
        let server = KeyPair::new_server();
        let token = server_signed(json!({"aud": "nats-authorization-request"}), &server);
        let claims = decode_server_signed(&token).expect("valid");
        assert_eq!(claims["iss"], server.public_key());
        assert_eq!(claims["jti"].as_str().map(str::len), Some(52));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let server = KeyPair::new_server();
        let token = server_signed(json!({"aud": "x"}), &server);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = BASE64URL_NOPAD.encode(br#"{"aud":"x","iss":"NAAA"}"#);
        parts[1] = &forged;
        assert_eq!(decode_server_signed(&parts.join(".")), Err(NatsJwtError::Signature));
        assert_eq!(decode_server_signed("a.b"), Err(NatsJwtError::Malformed));
        assert_eq!(decode_server_signed(""), Err(NatsJwtError::Malformed));
        let account_signed = encode(json!({}), &KeyPair::new_account()).expect("sign");
        assert_eq!(decode_server_signed(&account_signed), Err(NatsJwtError::Signature), "iss must be a server key");
    }
}
