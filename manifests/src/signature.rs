//! Release signatures and trust statements, in minisign's format.
//!
//! A release is signed by an ordinary minisign signature of its artifact's bytes
//! (Ed25519 over the BLAKE2b-512 of the file, minisign's "prehashed" mode), so the
//! `minisign` command checks it (`minisign -Vm ARTIFACT -p KEY.pub`). Its trusted
//! comment, which minisign signs too (the "global signature" covers the file's
//! signature and the comment), is a [`Claim`]: the app, the version, the payload
//! digest, the manifest digest and a signing sequence. A host checks the claim:
//! the global signature under a key it trusts, then the claim against the manifest
//! it receives, which lists every file's sha256. That needs none of the artifact's
//! bytes, so it holds for a delta and a download as for a pushed artifact; `ship
//! verify` checks the file's signature as well.
//!
//! A trust statement adds or revokes a key: a minisign signature, by a key the host
//! trusts, of the public key file concerned, whose trusted comment is a
//! [`Statement`] naming the action and the key.
//!
//! Parsing and checking only: reading key files and signing live with the callers.

use std::fmt;
use std::io::Cursor;

use crate::manifest::Manifest;
use crate::{AppName, Sha256, Version};

/// Why a key, signature, claim or statement was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(String);

impl SignatureError {
    fn new(message: impl Into<String>) -> SignatureError {
        SignatureError(message.into())
    }
}

impl From<String> for SignatureError {
    fn from(message: String) -> SignatureError {
        SignatureError(message)
    }
}

/// A key's identifier, as minisign prints it (16 hexadecimal digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u64);

impl KeyId {
    fn from_keynum(keynum: &[u8]) -> Result<KeyId, SignatureError> {
        let bytes: [u8; 8] = keynum
            .try_into()
            .map_err(|_| SignatureError::new("the key id is not 8 bytes"))?;
        Ok(KeyId(u64::from_le_bytes(bytes)))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = SignatureError;
    fn from_str(text: &str) -> Result<KeyId, SignatureError> {
        if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SignatureError::new(format!(
                "{text:?} is not a key id (up to 16 hexadecimal digits)"
            )));
        }
        u64::from_str_radix(text, 16)
            .map(KeyId)
            .map_err(|e| SignatureError::new(format!("{text:?} is not a key id: {e}")))
    }
}

/// A minisign public key, with the text of the file it came from.
#[derive(Debug, Clone)]
pub struct PublicKey {
    id: KeyId,
    key: minisign::PublicKey,
    text: String,
}

impl PublicKey {
    /// Parses the text of a minisign public key file (an untrusted comment line,
    /// then the key in base64).
    pub fn parse(text: &str) -> Result<PublicKey, SignatureError> {
        let key = minisign::PublicKeyBox::from_string(text)
            .and_then(minisign::PublicKeyBox::into_public_key)
            .map_err(|e| SignatureError::new(format!("not a minisign public key: {e}")))?;
        Ok(PublicKey {
            id: KeyId::from_keynum(key.keynum())?,
            key,
            text: text.to_owned(),
        })
    }

    /// Its id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The file's text, as parsed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The raw Ed25519 key.
    fn ed25519(&self) -> Result<ed25519_compact::PublicKey, SignatureError> {
        // Algorithm (2 bytes), key id (8), key (32).
        let bytes = self.key.to_bytes();
        ed25519_compact::PublicKey::from_slice(&bytes[10..])
            .map_err(|e| SignatureError::new(format!("key {}: {e}", self.id)))
    }
}

/// A minisign signature file, parsed.
#[derive(Clone)]
pub struct Signature {
    sig: minisign::SignatureBox,
    key: KeyId,
    comment: String,
    /// The signature of the data (64 bytes), and the global signature over it and
    /// the trusted comment.
    data_sig: Vec<u8>,
    global_sig: Vec<u8>,
    text: String,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signature")
            .field("key", &self.key)
            .field("comment", &self.comment)
            .finish()
    }
}

impl Signature {
    /// Parses the text of a `.minisig` file: its four lines, each of the right form
    /// and size (a truncated file is refused here).
    pub fn parse(text: &str) -> Result<Signature, SignatureError> {
        let bad = |why: &str| SignatureError::new(format!("not a minisign signature: {why}"));
        let sig = minisign::SignatureBox::from_string(text).map_err(|e| bad(&e.to_string()))?;
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() < 4 {
            return Err(bad("it has fewer than four lines"));
        }
        let decode = |line: &str| {
            use ct_codecs::Decoder;
            ct_codecs::Base64::decode_to_vec(line.trim(), None).map_err(|e| bad(&e.to_string()))
        };
        // Algorithm (2 bytes), key id (8), signature (64).
        let data = decode(lines[1])?;
        let global_sig = decode(lines[3])?;
        if data.len() != 74 || global_sig.len() != 64 {
            return Err(bad("a signature line has the wrong length"));
        }
        if !sig.is_prehashed() {
            return Err(bad(
                "it is a legacy (not prehashed) signature; sign with minisign 0.8 or later, or ship",
            ));
        }
        let comment = sig.trusted_comment().map_err(|e| bad(&e.to_string()))?;
        Ok(Signature {
            key: KeyId::from_keynum(sig.keynum())?,
            comment,
            data_sig: data[10..].to_vec(),
            global_sig,
            text: text.to_owned(),
            sig,
        })
    }

    /// A prehashed signature of the data whose BLAKE2b-512 is `prehash`, by the
    /// Ed25519 secret key `secret` (the 64 bytes of minisign's secret key file) of
    /// key `key`, with trusted comment `comment`: minisign's format, as `minisign
    /// -S` writes it, for data hashed while it was written. Checked before it is
    /// returned.
    pub fn make_prehashed(
        secret: &[u8],
        key: &PublicKey,
        prehash: &[u8],
        comment: &str,
        untrusted: &str,
    ) -> Result<Signature, SignatureError> {
        use ct_codecs::Encoder;
        let secret = ed25519_compact::SecretKey::from_slice(secret)
            .map_err(|e| SignatureError::new(format!("not an Ed25519 secret key: {e}")))?;
        let noise = || Some(ed25519_compact::Noise::generate());
        let data_sig = secret.sign(prehash, noise());
        let mut signed = data_sig.to_vec();
        signed.extend_from_slice(comment.as_bytes());
        let global = secret.sign(&signed, noise());
        // "ED": Ed25519 over a BLAKE2b-512 prehash; then the key id, as stored.
        let mut line = b"ED".to_vec();
        line.extend_from_slice(&key.id.0.to_le_bytes());
        line.extend_from_slice(data_sig.as_ref());
        let b64 = |bytes: &[u8]| {
            ct_codecs::Base64::encode_to_string(bytes).expect("base64 of a signature")
        };
        let text = format!(
            "untrusted comment: {untrusted}\n{}\ntrusted comment: {comment}\n{}\n",
            b64(&line),
            b64(global.as_ref())
        );
        let signature = Signature::parse(&text)?;
        signature.verify_comment(key)?;
        key.ed25519()?.verify(prehash, &data_sig).map_err(|_| {
            SignatureError::new(format!("key {} does not match its secret key", key.id))
        })?;
        Ok(signature)
    }

    /// The id of the key that made it.
    pub fn key(&self) -> KeyId {
        self.key
    }

    /// Its trusted comment.
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// The file's text, as parsed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Checks that `key` made the trusted comment (minisign's global signature over
    /// the data's signature and the comment); says nothing of the data.
    pub fn verify_comment(&self, key: &PublicKey) -> Result<(), SignatureError> {
        self.same_key(key)?;
        let mut signed = self.data_sig.clone();
        signed.extend_from_slice(self.comment.as_bytes());
        let global = ed25519_compact::Signature::from_slice(&self.global_sig)
            .map_err(|e| SignatureError::new(format!("malformed signature: {e}")))?;
        key.ed25519()?.verify(&signed, &global).map_err(|_| {
            SignatureError::new(format!(
                "the signature by key {} does not verify: it was forged or altered",
                key.id
            ))
        })
    }

    /// Checks that `key` signed `data` and the trusted comment, as `minisign -V`
    /// does.
    pub fn verify(
        &self,
        key: &PublicKey,
        data: impl std::io::Read + std::io::Seek,
    ) -> Result<(), SignatureError> {
        self.same_key(key)?;
        minisign::verify(&key.key, &self.sig, data, true, false, false).map_err(|e| {
            SignatureError::new(format!(
                "the signature by key {} does not verify: {e}",
                key.id
            ))
        })
    }

    fn same_key(&self, key: &PublicKey) -> Result<(), SignatureError> {
        if self.key == key.id {
            Ok(())
        } else {
            Err(SignatureError::new(format!(
                "signed by key {}, not by key {}",
                self.key, key.id
            )))
        }
    }
}

/// A `.minisig` file's text as one command-line argument (base64).
pub fn encode_arg(text: &str) -> String {
    use ct_codecs::Encoder;
    ct_codecs::Base64::encode_to_string(text.as_bytes()).expect("base64 of a short text")
}

/// The signature passed as [`encode_arg`] made it.
pub fn decode_arg(arg: &str) -> Result<Signature, SignatureError> {
    use ct_codecs::Decoder;
    let bytes = ct_codecs::Base64::decode_to_vec(arg, None)
        .map_err(|e| SignatureError::new(format!("not base64: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| SignatureError::new("not a minisign signature: not UTF-8"))?;
    Signature::parse(&text)
}

/// The manifest digest a claim binds: SHA-256 of the manifest as ship writes it,
/// with its entry list left out — the payload digest, which a claim binds too and a
/// manifest is checked against, stands for the entries. The rest (the app's hooks,
/// services and requirements, the counts, the rewrites) is a few kilobytes, so a
/// host checks a claim without serialising ten thousand entries again.
pub fn manifest_digest(manifest: &Manifest) -> Sha256 {
    let rest = Manifest {
        entries: Vec::new(),
        ..manifest.clone()
    };
    Sha256::of(&rest.to_json())
}

/// What a release signature says it is for: its trusted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The app.
    pub app: AppName,
    /// The release.
    pub version: Version,
    /// Its payload digest.
    pub payload: Sha256,
    /// Its manifest digest ([`manifest_digest`]).
    pub manifest: Sha256,
    /// The signing sequence: hosts refuse a release signed with a lower one than
    /// they have accepted from the same key.
    pub seq: u64,
}

/// The first word of a release claim.
const CLAIM: &str = "ship-release";

impl Claim {
    /// The claim for `manifest`, signed with sequence `seq`.
    pub fn of(manifest: &Manifest, seq: u64) -> Claim {
        Claim {
            app: manifest.name.clone(),
            version: manifest.version.clone(),
            payload: manifest.payload_digest.clone(),
            manifest: manifest_digest(manifest),
            seq,
        }
    }

    /// Parses a trusted comment written by [`Claim::to_comment`].
    pub fn parse(comment: &str) -> Result<Claim, SignatureError> {
        let bad = |why: String| {
            SignatureError::new(format!(
                "its trusted comment is not a ship release claim ({why}): {comment:?}"
            ))
        };
        let mut words = comment.split(' ');
        if words.next() != Some(CLAIM) {
            return Err(bad(format!("it does not start with {CLAIM:?}")));
        }
        let fields =
            fields(words, &["app", "version", "payload", "manifest", "seq"]).map_err(bad)?;
        let [app, version, payload, manifest, seq] = fields;
        Ok(Claim {
            app: app.parse().map_err(|e| bad(format!("app: {e}")))?,
            version: version.parse().map_err(|e| bad(format!("version: {e}")))?,
            payload: payload.parse().map_err(|e| bad(format!("payload: {e}")))?,
            manifest: manifest
                .parse()
                .map_err(|e| bad(format!("manifest: {e}")))?,
            seq: seq.parse().map_err(|e| bad(format!("seq: {e}")))?,
        })
    }

    /// The trusted comment that says this.
    pub fn to_comment(&self) -> String {
        format!(
            "{CLAIM} app:{} version:{} payload:{} manifest:{} seq:{}",
            self.app, self.version, self.payload, self.manifest, self.seq
        )
    }

    /// Checks the claim against the release's manifest: the name, the version, the
    /// payload and the manifest itself must be what was signed.
    pub fn check(&self, manifest: &Manifest) -> Result<(), SignatureError> {
        let other = |what: &str, signed: &dyn fmt::Display, found: &dyn fmt::Display| {
            Err(SignatureError::new(format!(
                "the signature is for another release: it was made for {what} {signed}, this release has {found}"
            )))
        };
        if self.app != manifest.name {
            return other("app", &self.app, &manifest.name);
        }
        if self.version != manifest.version {
            return other("version", &self.version, &manifest.version);
        }
        if self.payload != manifest.payload_digest {
            return other("payload", &self.payload, &manifest.payload_digest);
        }
        let digest = manifest_digest(manifest);
        if self.manifest != digest {
            return other("manifest", &self.manifest, &digest);
        }
        Ok(())
    }
}

/// `name:value` words, exactly `names` in that order.
fn fields<'a, const N: usize>(
    words: impl Iterator<Item = &'a str>,
    names: &[&str; N],
) -> Result<[&'a str; N], String> {
    let words: Vec<&str> = words.collect();
    if words.len() != N {
        return Err(format!("{} fields instead of {N}", words.len()));
    }
    let mut values = [""; N];
    for ((value, word), name) in values.iter_mut().zip(&words).zip(names) {
        *value = word
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .ok_or_else(|| format!("{word:?} where {name}:… belongs"))?;
    }
    Ok(values)
}

/// What a trust statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Trust the key.
    Add,
    /// Stop trusting the key.
    Revoke,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Add => "add",
            Action::Revoke => "revoke",
        })
    }
}

/// The trusted comment of a trust statement: a signature of a public key file by a
/// trusted key, saying what to do with that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// What to do.
    pub action: Action,
    /// With which key: the one the statement's signed data is.
    pub key: KeyId,
}

/// The first word of a trust statement.
const STATEMENT: &str = "ship-trust";

impl Statement {
    /// Parses a trusted comment written by [`Statement::to_comment`].
    pub fn parse(comment: &str) -> Result<Statement, SignatureError> {
        let bad = |why: String| {
            SignatureError::new(format!(
                "its trusted comment is not a ship trust statement ({why}): {comment:?}"
            ))
        };
        let mut words = comment.split(' ');
        if words.next() != Some(STATEMENT) {
            return Err(bad(format!("it does not start with {STATEMENT:?}")));
        }
        let [action, key] = fields(words, &["action", "key"]).map_err(bad)?;
        let action = match action {
            "add" => Action::Add,
            "revoke" => Action::Revoke,
            other => return Err(bad(format!("unknown action {other:?}"))),
        };
        Ok(Statement {
            action,
            key: key.parse().map_err(|e| bad(format!("key: {e}")))?,
        })
    }

    /// The trusted comment that says this.
    pub fn to_comment(&self) -> String {
        format!("{STATEMENT} action:{} key:{}", self.action, self.key)
    }

    /// Checks `statement` (a signature of `subject`'s file) by `signer`: the signature
    /// verifies, and it says `action` of `subject`.
    pub fn verify(
        statement: &Signature,
        signer: &PublicKey,
        subject: &PublicKey,
        action: Action,
    ) -> Result<(), SignatureError> {
        statement.verify(signer, Cursor::new(subject.text().as_bytes()))?;
        let said = Statement::parse(statement.comment())?;
        if said.action != action || said.key != subject.id() {
            return Err(SignatureError::new(format!(
                "the statement says {} key {}, not {action} key {}",
                said.action,
                said.key,
                subject.id()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> (PublicKey, minisign::SecretKey) {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let text = pair.pk.to_box().unwrap().into_string();
        (PublicKey::parse(&text).unwrap(), pair.sk)
    }

    fn sign(sk: &minisign::SecretKey, data: &[u8], comment: &str) -> Signature {
        let sig = minisign::sign(None, sk, Cursor::new(data), Some(comment), None).unwrap();
        Signature::parse(&sig.into_string()).unwrap()
    }

    #[test]
    fn a_comment_verifies_under_its_key_only_and_not_once_altered() {
        let (pk, sk) = keypair();
        let (other, _) = keypair();
        let sig = sign(&sk, b"artifact", "ship-release x");
        sig.verify_comment(&pk).unwrap();
        sig.verify(&pk, Cursor::new(b"artifact")).unwrap();
        assert!(sig.verify(&pk, Cursor::new(b"artifacT")).is_err());
        assert!(
            sig.verify_comment(&other)
                .unwrap_err()
                .to_string()
                .contains("not by key")
        );
        let altered = sig.text().replace("ship-release x", "ship-release y");
        let altered = Signature::parse(&altered).unwrap();
        assert!(
            altered
                .verify_comment(&pk)
                .unwrap_err()
                .to_string()
                .contains("forged or altered")
        );
    }

    #[test]
    fn a_signature_of_a_prehash_is_minisigns() {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let pk = PublicKey::parse(&pair.pk.to_box().unwrap().into_string()).unwrap();
        let data = b"the artifact's bytes".repeat(1000);
        let prehash = blake2b_simd::Params::new().hash_length(64).hash(&data);
        let secret = pair.sk.to_bytes();
        let sig =
            Signature::make_prehashed(&secret[62..126], &pk, prehash.as_bytes(), "c", "u").unwrap();
        // minisign's own verification, over the data.
        sig.verify(&pk, Cursor::new(&data)).unwrap();
        assert!(sig.verify(&pk, Cursor::new(&data[1..])).is_err());
        let (other, _) = keypair();
        assert!(
            Signature::make_prehashed(&secret[62..126], &other, prehash.as_bytes(), "c", "u")
                .is_err()
        );
    }

    #[test]
    fn truncated_and_malformed_signatures_are_refused() {
        let (_, sk) = keypair();
        let text = sign(&sk, b"a", "c").text().to_owned();
        for cut in [0, 10, text.len() / 2, text.len() - 20] {
            assert!(Signature::parse(&text[..cut]).is_err(), "cut at {cut}");
        }
        assert!(PublicKey::parse("untrusted comment: x\nRWQ\n").is_err());
    }

    #[test]
    fn the_manifest_digest_is_pinned_and_leaves_the_entries_to_the_payload() {
        // The definition is part of the format: changing it voids every signature.
        let json = br#"{"format":1,"name":"shop","version":"v1","created":"1970-01-01T00:00:00Z",
            "compression":{"algorithm":"zstd","zstd_version":"1.5.7","level":3},
            "entry_count":1,"unpacked_size":0,
            "payload_digest":"DIGEST",
            "entries":[{"path":"a","kind":"dir","mode":"0755"}]}"#;
        let entries: Vec<crate::Entry> =
            serde_json::from_str(r#"[{"path":"a","kind":"dir","mode":"0755"}]"#).unwrap();
        let digest = crate::manifest::payload_digest(&entries);
        let text = String::from_utf8(json.to_vec())
            .unwrap()
            .replace("DIGEST", digest.as_str());
        let manifest = Manifest::from_json(text.as_bytes()).unwrap();
        let mut rest = manifest.clone();
        rest.entries.clear();
        assert_eq!(manifest_digest(&manifest), Sha256::of(&rest.to_json()));
        assert!(
            !String::from_utf8(rest.to_json())
                .unwrap()
                .contains("\"path\"")
        );
        assert_eq!(
            manifest_digest(&manifest).as_str(),
            "0934b1b0828ad110ce0901e9a2a1dc23d16af91b79f2a512d1aa41d2c32564a7",
            "{}",
            String::from_utf8(rest.to_json()).unwrap()
        );
    }

    #[test]
    fn claims_round_trip_and_are_strict() {
        let claim = Claim {
            app: "shop".parse().unwrap(),
            version: "v2".parse().unwrap(),
            payload: Sha256::of(b"p"),
            manifest: Sha256::of(b"m"),
            seq: 42,
        };
        assert_eq!(Claim::parse(&claim.to_comment()).unwrap(), claim);
        for bad in [
            "timestamp:1 file:x hashed",
            "ship-release app:shop",
            &claim.to_comment().replace("seq:42", "seq:x"),
            &claim.to_comment().replace("version:", "ver:"),
        ] {
            assert!(Claim::parse(bad).is_err(), "{bad}");
        }
        let statement = Statement {
            action: Action::Revoke,
            key: KeyId(0xAB),
        };
        assert_eq!(
            Statement::parse(&statement.to_comment()).unwrap(),
            statement
        );
        assert_eq!(statement.key.to_string(), "00000000000000AB");
    }

    #[test]
    fn a_statement_binds_its_action_and_its_key() {
        let (signer, sk) = keypair();
        let (subject, _) = keypair();
        let (third, _) = keypair();
        let add = Statement {
            action: Action::Add,
            key: subject.id(),
        };
        let sig = sign(&sk, subject.text().as_bytes(), &add.to_comment());
        Statement::verify(&sig, &signer, &subject, Action::Add).unwrap();
        assert!(Statement::verify(&sig, &signer, &subject, Action::Revoke).is_err());
        assert!(Statement::verify(&sig, &signer, &third, Action::Add).is_err());
        assert!(Statement::verify(&sig, &third, &subject, Action::Add).is_err());
    }
}
