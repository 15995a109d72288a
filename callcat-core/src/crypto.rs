//! Field encryption at rest: [`FieldCipher`] seals personal values (phone numbers,
//! names, prompts, analyses, transcript texts, ...) with AES-256-GCM under a key per
//! owner (HKDF-SHA256 from a master key), and computes a keyed blind index
//! (HMAC-SHA256) for equality look-ups. Which fields of which record are sealed is
//! said by [`seal_call`], [`seal_window`] and [`seal_transcript`].
//!
//! Ciphertexts are versioned and name their key: `cc1.<key id>.<base64url(nonce ‖
//! ciphertext ‖ tag)>`. The cipher holds a key ring: the first key encrypts, every
//! key decrypts, so master keys rotate without rewriting old rows at once
//! ([`FieldCipher::needs_reencryption`] says which values to rewrite). The owner and
//! the field name are bound in as associated data, so a value moved to another
//! owner or field fails to decrypt.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, ErrorKind, Result};
use crate::ids::Owner;

mod records;

pub use records::*;

const PREFIX: &str = "cc1";
const NONCE_LEN: usize = 12;

/// A 256-bit master key with its id. `Debug` never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    id: u32,
    bytes: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey {{ id: {}, bytes: <redacted> }}", self.id)
    }
}

impl MasterKey {
    /// A key from raw bytes.
    pub fn new(id: u32, bytes: [u8; 32]) -> Self {
        MasterKey { id, bytes }
    }

    /// A key from standard base64 (what `CALLCAT_MASTER_KEY` holds); it must decode
    /// to exactly 32 bytes.
    pub fn from_base64(id: u32, b64: &str) -> Result<Self> {
        let raw = STANDARD.decode(b64.trim()).map_err(|_| {
            Error::validation("CALLCAT_MASTER_KEY", "the master key is not valid base64")
        })?;
        let bytes: [u8; 32] = raw.try_into().map_err(|v: Vec<u8>| {
            Error::validation(
                "CALLCAT_MASTER_KEY",
                format!("the master key must be 32 bytes, not {}", v.len()),
            )
        })?;
        Ok(MasterKey { id, bytes })
    }

    /// The key's id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// Encrypts and decrypts fields, and computes blind indexes. `Debug` shows key ids only.
#[derive(Clone)]
pub struct FieldCipher {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldCipher")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub(crate) fn crypto(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Crypto, msg)
}

impl FieldCipher {
    /// A cipher over a key ring; the first key is current (encrypts), all decrypt.
    /// Key ids must be unique.
    pub fn new(keys: Vec<MasterKey>) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::validation(
                "CALLCAT_MASTER_KEY",
                "at least one master key is needed",
            ));
        }
        let mut ids: Vec<u32> = keys.iter().map(|k| k.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != keys.len() {
            return Err(Error::validation(
                "CALLCAT_MASTER_KEY",
                "master key ids must be unique",
            ));
        }
        Ok(FieldCipher { keys })
    }

    /// The id of the key new values are sealed with.
    pub fn current_key_id(&self) -> u32 {
        self.keys[0].id
    }

    fn key(&self, id: u32) -> Result<&MasterKey> {
        self.keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| crypto(format!("no master key with id {id} is configured")))
    }

    fn owner_cipher(key: &MasterKey, owner: &Owner) -> Result<Aes256Gcm> {
        let hk = Hkdf::<Sha256>::new(Some(b"callcat-field-v1"), &key.bytes);
        let mut okm = [0u8; 32];
        hk.expand(owner.key().as_bytes(), &mut okm)
            .map_err(|_| crypto("key derivation failed"))?;
        Aes256Gcm::new_from_slice(&okm).map_err(|_| crypto("bad derived key length"))
    }

    fn aad(owner: &Owner, field: &str) -> Vec<u8> {
        format!("{}\u{0}{field}", owner.key()).into_bytes()
    }

    /// Seals `plaintext` for `owner`'s `field` under the current key.
    pub fn encrypt(&self, owner: &Owner, field: &str, plaintext: &str) -> Result<String> {
        OwnerCipher::new(self, owner).encrypt(field, plaintext)
    }

    fn parse(sealed: &str) -> Result<(u32, Vec<u8>)> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(prefix), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(crypto("not a sealed value"));
        };
        if prefix != PREFIX {
            return Err(crypto(format!("unknown ciphertext version {prefix:?}")));
        }
        let id: u32 = id.parse().map_err(|_| crypto("malformed key id"))?;
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| crypto("malformed ciphertext encoding"))?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(crypto("ciphertext too short"));
        }
        Ok((id, blob))
    }

    /// Opens a value sealed for `owner`'s `field`. Tampering, a wrong owner or field,
    /// or an unknown key is an `ErrorKind::Crypto` error, never garbage.
    pub fn decrypt(&self, owner: &Owner, field: &str, sealed: &str) -> Result<String> {
        OwnerCipher::new(self, owner).decrypt(field, sealed)
    }

    /// The ids of the ring's keys, current first.
    pub fn key_ids(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// Whether `id` is a key of this ring.
    pub fn has_key(&self, id: u32) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Whether a sealed value was made with an older key and should be rewritten.
    pub fn needs_reencryption(&self, sealed: &str) -> bool {
        Self::parse(sealed)
            .map(|(id, _)| id != self.current_key_id())
            .unwrap_or(false)
    }

    /// The id of the key a sealed value (`cc1.<id>.…`) was made with; `None` for
    /// anything else (a plain value).
    pub fn sealed_key_id(value: &str) -> Option<u32> {
        value.strip_prefix("cc1.")?.split('.').next()?.parse().ok()
    }

    /// The id of the key a blind index (`bi<id>.…`) was made with.
    pub fn blind_index_key_id(index: &str) -> Option<u32> {
        index.strip_prefix("bi")?.split('.').next()?.parse().ok()
    }

    fn index_with(key: &MasterKey, value: &str) -> String {
        let hk = Hkdf::<Sha256>::new(Some(b"callcat-blind-index-v1"), &key.bytes);
        let mut k = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(b"blind-index", &mut k);
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&k).unwrap_or_else(|_| unreachable_hmac());
        mac.update(value.as_bytes());
        format!(
            "bi{}.{}",
            key.id,
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// The blind index of `value` under the current key (store it beside the sealed value).
    pub fn blind_index(&self, value: &str) -> String {
        Self::index_with(&self.keys[0], value)
    }

    /// The blind index under every key in the ring, for look-ups that must also find
    /// rows written before a rotation.
    pub fn blind_indexes(&self, value: &str) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| Self::index_with(k, value))
            .collect()
    }
}

/// A ring's keys derived for one owner on first use, so sealing or opening the
/// many fields of one record derives each key once rather than once per field.
pub(crate) struct OwnerCipher<'a> {
    ring: &'a FieldCipher,
    owner: &'a Owner,
    derived: Vec<(u32, Aes256Gcm)>,
}

impl<'a> OwnerCipher<'a> {
    pub(crate) fn new(ring: &'a FieldCipher, owner: &'a Owner) -> Self {
        OwnerCipher {
            ring,
            owner,
            derived: Vec::new(),
        }
    }

    fn derived(&mut self, id: u32) -> Result<&Aes256Gcm> {
        let i = match self.derived.iter().position(|(k, _)| *k == id) {
            Some(i) => i,
            None => {
                let c = FieldCipher::owner_cipher(self.ring.key(id)?, self.owner)?;
                self.derived.push((id, c));
                self.derived.len() - 1
            }
        };
        Ok(&self.derived[i].1)
    }

    /// Seals `plaintext` for the owner's `field` under the ring's current key.
    pub(crate) fn encrypt(&mut self, field: &str, plaintext: &str) -> Result<String> {
        let id = self.ring.current_key_id();
        let aad = FieldCipher::aad(self.owner, field);
        let cipher = self.derived(id)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| crypto("encryption failed"))?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{PREFIX}.{id}.{}", URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Opens a value sealed for the owner's `field` (see [`FieldCipher::decrypt`]).
    pub(crate) fn decrypt(&mut self, field: &str, sealed: &str) -> Result<String> {
        let (id, blob) = FieldCipher::parse(sealed)?;
        let aad = FieldCipher::aad(self.owner, field);
        let cipher = self.derived(id)?;
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let pt = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| {
                crypto(
                    "the value failed authentication (tampered, or sealed for another owner or field)",
                )
            })?;
        String::from_utf8(pt).map_err(|_| crypto("decrypted value is not UTF-8"))
    }
}

#[cold]
fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot happen.
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32])
        .unwrap_or_else(|_| panic!("HMAC rejected a 32-byte key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: u32, b: u8) -> MasterKey {
        MasterKey::new(id, [b; 32])
    }

    fn alice() -> Owner {
        Owner::new("acme", "alice")
    }

    #[test]
    fn round_trips_with_fresh_nonces() {
        let c = FieldCipher::new(vec![k(1, 7)]).expect("cipher");
        let a = c.encrypt(&alice(), "phone", "+14155552671").expect("seal");
        let b = c.encrypt(&alice(), "phone", "+14155552671").expect("seal");
        assert_ne!(a, b, "a fresh nonce per value");
        assert!(!a.contains("4155552671"));
        assert!(a.starts_with("cc1.1."));
        assert_eq!(
            c.decrypt(&alice(), "phone", &a).expect("open"),
            "+14155552671"
        );
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_the_new_one() {
        let old = FieldCipher::new(vec![k(1, 7)]).expect("cipher");
        let sealed_v1 = old
            .encrypt(&alice(), "phone", "+14155552671")
            .expect("seal");
        let rotated = FieldCipher::new(vec![k(2, 9), k(1, 7)]).expect("cipher");
        assert_eq!(
            rotated
                .decrypt(&alice(), "phone", &sealed_v1)
                .expect("old key still reads"),
            "+14155552671"
        );
        assert!(rotated.needs_reencryption(&sealed_v1));
        let sealed_v2 = rotated
            .encrypt(&alice(), "phone", "+14155552671")
            .expect("seal");
        assert!(sealed_v2.starts_with("cc1.2."));
        assert!(!rotated.needs_reencryption(&sealed_v2));
        let err = old
            .decrypt(&alice(), "phone", &sealed_v2)
            .expect_err("key 2 unknown to the old ring");
        assert_eq!(err.kind(), ErrorKind::Crypto);
        assert!(rotated.blind_indexes("+1").contains(&old.blind_index("+1")));
    }

    #[test]
    fn tampering_and_misuse_are_typed_errors() {
        let c = FieldCipher::new(vec![k(1, 7)]).expect("cipher");
        let sealed = c.encrypt(&alice(), "phone", "+14155552671").expect("seal");
        let (head, body) = sealed.rsplit_once('.').expect("dot");
        let mut bytes = URL_SAFE_NO_PAD.decode(body).expect("b64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        for bad in [
            tampered.as_str(),
            "cc1.1.",
            "cc1.x.AAAA",
            "cc2.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "plain text",
            "cc1.1.!!!",
        ] {
            let e = c.decrypt(&alice(), "phone", bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::Crypto, "{bad}: {e}");
        }
        let other_owner = c
            .decrypt(&Owner::new("acme", "bob"), "phone", &sealed)
            .expect_err("other owner");
        assert_eq!(other_owner.kind(), ErrorKind::Crypto);
        let other_field = c
            .decrypt(&alice(), "recording_url", &sealed)
            .expect_err("other field");
        assert_eq!(other_field.kind(), ErrorKind::Crypto);
    }

    #[test]
    fn blind_index_is_deterministic_keyed_and_not_the_plaintext() {
        let c = FieldCipher::new(vec![k(1, 7)]).expect("cipher");
        let d = FieldCipher::new(vec![k(1, 8)]).expect("cipher");
        assert_eq!(c.blind_index("+14155552671"), c.blind_index("+14155552671"));
        assert_ne!(c.blind_index("+14155552671"), c.blind_index("+14155552672"));
        assert_ne!(c.blind_index("+14155552671"), d.blind_index("+14155552671"));
        assert!(!c.blind_index("+14155552671").contains("4155552671"));
    }

    #[test]
    fn master_keys_are_validated_and_never_printed() {
        let good = STANDARD.encode([3u8; 32]);
        let key = MasterKey::from_base64(1, &good).expect("valid");
        assert!(!format!("{key:?}").contains('3'));
        assert_eq!(
            MasterKey::from_base64(1, "!!").expect_err("b64").field(),
            Some("CALLCAT_MASTER_KEY")
        );
        let short = STANDARD.encode([3u8; 16]);
        assert!(
            MasterKey::from_base64(1, &short)
                .expect_err("short")
                .message()
                .contains("32 bytes")
        );
        assert!(FieldCipher::new(vec![]).is_err());
        assert!(FieldCipher::new(vec![k(1, 1), k(1, 2)]).is_err());
        let c = FieldCipher::new(vec![key]).expect("cipher");
        assert_eq!(format!("{c:?}"), "FieldCipher { key_ids: [1] }");
    }
}
