//! The signature parsers of `manifests::signature`: minisign public keys and
//! signatures (also as the base64 argument the agent is given), release claims and
//! trust statements. A claim, a statement or a key id that parses writes back to
//! text that parses to the same value; a signature survives the argument encoding.
//! The input is a key and a signature, split at the first NUL, and each part is
//! also tried alone as every kind.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use manifests::signature::{Claim, KeyId, PublicKey, Signature, Statement, decode_arg, encode_arg};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\0').unwrap_or((text, ""));
    for part in [first, second] {
        alone(part);
    }
    if let (Ok(key), Ok(signature)) = (PublicKey::parse(first), Signature::parse(second)) {
        let _ = signature.verify_comment(&key);
        let _ = signature.verify(&key, Cursor::new(b""));
    }
});

fn alone(text: &str) {
    if let Ok(key) = PublicKey::parse(text) {
        assert_eq!(key.id().to_string().parse::<KeyId>(), Ok(key.id()));
        assert_eq!(key.text(), text);
    }
    if let Ok(signature) = Signature::parse(text) {
        let arg = decode_arg(&encode_arg(text)).expect("an encoded signature decodes");
        assert_eq!(arg.key(), signature.key());
        assert_eq!(arg.comment(), signature.comment());
        assert_eq!(arg.text(), text);
        comment(signature.comment());
    }
    let _ = decode_arg(text);
    comment(text);
    if let Ok(id) = text.parse::<KeyId>() {
        assert_eq!(id.to_string().parse::<KeyId>(), Ok(id));
    }
}

/// A trusted comment as a claim and as a statement.
fn comment(text: &str) {
    if let Ok(claim) = Claim::parse(text) {
        assert_eq!(Claim::parse(&claim.to_comment()), Ok(claim));
    }
    if let Ok(statement) = Statement::parse(text) {
        assert_eq!(Statement::parse(&statement.to_comment()), Ok(statement));
    }
}
