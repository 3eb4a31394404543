//! ServiceAccount tokens: JSON Web Tokens the server signs for `serviceaccounts/<name>/token`
//! (TokenRequest, what `kubectl create token` asks for) and accepts as bearer tokens on the
//! secure port, as the service account's user `system:serviceaccount:<namespace>:<name>`.
//!
//! Tokens are signed with `--service-account-signing-key-file` (a PEM PKCS#8 key: ECDSA P-256
//! signs ES256, RSA signs RS256); every API server of a cluster needs the same file to accept
//! the others' tokens. Without one, a server makes a P-256 key of its own at start, and its
//! tokens end with it.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

use crate::secure::User;

/// The shortest lifetime a token may be asked for, in seconds (as Kubernetes).
pub const MIN_EXPIRATION: i64 = 600;
/// The lifetime of a token that does not ask for one.
pub const DEFAULT_EXPIRATION: i64 = 3600;
/// The longest lifetime given (a request for more gets this).
pub const MAX_EXPIRATION: i64 = 48 * 3600;

/// Why the signing key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("--service-account-signing-key-file {}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("cannot make a service account signing key: {0}")]
    Generate(String),
}

enum Key {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// Signs and checks ServiceAccount tokens.
pub struct Signer {
    key: Key,
    issuer: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    /// The service account's uid when the token was made.
    pub uid: String,
}

impl Claims {
    pub fn user(&self) -> User {
        User {
            name: format!("system:serviceaccount:{}:{}", self.namespace, self.name),
            uid: self.uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", self.namespace),
            ],
        }
    }
}

impl Signer {
    /// From a PEM PKCS#8 key file.
    pub fn from_file(path: &Path, issuer: &str) -> Result<Signer, KeyError> {
        let bad = |message: String| KeyError::File { path: path.to_owned(), message };
        let der = PrivateKeyDer::from_pem_file(path).map_err(|e| bad(e.to_string()))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err(bad("the key must be PKCS#8 (BEGIN PRIVATE KEY)".into()));
        };
        let rng = SystemRandom::new();
        let bytes = pkcs8.secret_pkcs8_der();
        let key = match EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            bytes,
            &rng,
        ) {
            Ok(k) => Key::Ecdsa(k),
            Err(_) => Key::Rsa(
                RsaKeyPair::from_pkcs8(bytes)
                    .map_err(|e| bad(format!("neither an ECDSA P-256 nor an RSA key: {e}")))?,
            ),
        };
        Ok(Signer { key, issuer: issuer.to_owned(), rng })
    }

    /// A P-256 key of this process's own.
    pub fn ephemeral(issuer: &str) -> Result<Signer, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(Signer { key: Key::Ecdsa(key), issuer: issuer.to_owned(), rng })
    }

    fn alg(&self) -> &'static str {
        match self.key {
            Key::Ecdsa(_) => "ES256",
            Key::Rsa(_) => "RS256",
        }
    }

    fn public_key(&self) -> &[u8] {
        match &self.key {
            Key::Ecdsa(k) => k.public_key().as_ref(),
            Key::Rsa(k) => k.public_key().as_ref(),
        }
    }

    /// A token for the service account, valid from `now` for `seconds`, for `audiences`
    /// (none: the issuer).
    pub fn issue(
        &self,
        claims: &Claims,
        audiences: &[String],
        now: i64,
        seconds: i64,
    ) -> Result<String, KeyError> {
        let kid = B64
            .encode(&ring::digest::digest(&ring::digest::SHA256, self.public_key()).as_ref()[..16]);
        let header = json!({ "alg": self.alg(), "typ": "JWT", "kid": kid });
        let audiences: Vec<String> =
            if audiences.is_empty() { vec![self.issuer.clone()] } else { audiences.to_vec() };
        let body = json!({
            "iss": self.issuer,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            "aud": audiences,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(seconds),
            "kubernetes.io": {
                "namespace": claims.namespace,
                "serviceaccount": { "name": claims.name, "uid": claims.uid },
            },
        });
        let signing_input =
            format!("{}.{}", B64.encode(header.to_string()), B64.encode(body.to_string()));
        let sig = match &self.key {
            Key::Ecdsa(k) => k
                .sign(&self.rng, signing_input.as_bytes())
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| KeyError::Generate(e.to_string()))?,
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, signing_input.as_bytes(), &mut sig)
                    .map_err(|e| KeyError::Generate(e.to_string()))?;
                sig
            }
        };
        Ok(format!("{signing_input}.{}", B64.encode(sig)))
    }

    /// The claims of a token this server's key signed, for its issuer, not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let mut parts = token.split('.');
        let (header, body, sig) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
        if header["alg"].as_str() != Some(self.alg()) {
            return None;
        }
        let sig = B64.decode(sig).ok()?;
        let signed = format!("{}.{}", token.split('.').next()?, body);
        let algorithm: &dyn signature::VerificationAlgorithm = match self.key {
            Key::Ecdsa(_) => &signature::ECDSA_P256_SHA256_FIXED,
            Key::Rsa(_) => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        signature::UnparsedPublicKey::new(algorithm, self.public_key())
            .verify(signed.as_bytes(), &sig)
            .ok()?;
        let claims: Value = serde_json::from_slice(&B64.decode(body).ok()?).ok()?;
        if claims["iss"].as_str() != Some(self.issuer.as_str()) {
            return None;
        }
        let audiences = claims["aud"].as_array()?;
        if !audiences.iter().any(|a| a.as_str() == Some(self.issuer.as_str())) {
            return None;
        }
        let (exp, nbf) = (claims["exp"].as_i64()?, claims["nbf"].as_i64().unwrap_or(0));
        if now >= exp || now < nbf {
            return None;
        }
        let k = &claims["kubernetes.io"];
        Some(Claims {
            namespace: k["namespace"].as_str()?.to_owned(),
            name: k["serviceaccount"]["name"].as_str()?.to_owned(),
            uid: k["serviceaccount"]["uid"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims { namespace: "team".into(), name: "bot".into(), uid: "u-1".into() }
    }

    #[test]
    fn tokens_verify_until_they_expire_and_not_after_tampering() {
        let signer = Signer::ephemeral("km").expect("key");
        let token = signer.issue(&claims(), &[], 1_000, 600).expect("token");
        assert_eq!(signer.verify(&token, 1_000), Some(claims()));
        assert_eq!(
            signer.verify(&token, 1_599).map(|c| c.user().name),
            Some("system:serviceaccount:team:bot".into())
        );
        assert!(signer.verify(&token, 1_600).is_none(), "expired");
        assert!(signer.verify(&token, 999).is_none(), "not yet valid");
        // Another key's token, a changed body, a token for another audience: refused.
        let other = Signer::ephemeral("km").expect("key");
        assert!(other.verify(&token, 1_000).is_none());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let forged = json!({"iss": "km", "aud": ["km"], "exp": 9_999_999_999i64, "kubernetes.io": {"namespace": "kube-system", "serviceaccount": {"name": "admin"}}});
        parts[1] = B64.encode(forged.to_string());
        assert!(signer.verify(&parts.join("."), 1_000).is_none());
        let elsewhere = signer.issue(&claims(), &["vault".into()], 1_000, 600).expect("token");
        assert!(signer.verify(&elsewhere, 1_000).is_none(), "not for this server");
        assert!(signer.verify("not.a.token", 1_000).is_none());
        assert!(signer.verify("", 1_000).is_none());
    }

    #[test]
    fn key_files_are_read_or_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sa.key");
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("key");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        std::fs::write(&path, pem).expect("write");
        let a = Signer::from_file(&path, "km").expect("key file");
        let b = Signer::from_file(&path, "km").expect("key file");
        let token = a.issue(&claims(), &[], 10, 600).expect("token");
        assert_eq!(
            b.verify(&token, 11),
            Some(claims()),
            "servers sharing the file accept each other's tokens"
        );
        std::fs::write(&path, "nonsense").expect("write");
        let err = Signer::from_file(&path, "km").expect_err("bad file");
        assert!(err.to_string().starts_with("--service-account-signing-key-file "), "{err}");
    }
}
