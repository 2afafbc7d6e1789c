//! Validated identifiers: `AppName`, `Version`, `Sha256`.
//!
//! An identifier is checked once, when it is parsed, so that a value holding `/`,
//! `..`, whitespace or shell syntax can never reach a path or a command line. Every
//! type here deserializes through the same check, so a manifest or a config file
//! cannot smuggle in what the command line would refuse.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct IdError {
    /// What was being parsed ("version", "app name", …).
    pub what: &'static str,
    /// The rejected input, as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks a name-like identifier: starts with an ASCII letter or digit, continues
/// with letters, digits and the characters in `punct`, has no `..`, and is at most
/// `max` bytes long.
fn check_name(what: &'static str, value: &str, max: usize, punct: &str) -> Result<(), IdError> {
    let fail = |reason: String| IdError {
        what,
        value: value.to_owned(),
        reason,
    };
    let allowed = format!("use ASCII letters, digits and {}", spaced(punct));
    let Some(first) = value.chars().next() else {
        return Err(fail("it is empty".into()));
    };
    if value.len() > max {
        return Err(fail(format!("it is longer than {max} characters")));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(fail(format!(
            "it must start with an ASCII letter or digit, not {}",
            describe(first)
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !punct.contains(*c))
    {
        return Err(fail(format!(
            "{} is not allowed ({allowed})",
            describe(bad)
        )));
    }
    if value.contains("..") {
        return Err(fail("\"..\" is not allowed".into()));
    }
    Ok(())
}

fn spaced(punct: &str) -> String {
    punct
        .chars()
        .map(String::from)
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        '\n' => "a newline".into(),
        c if c.is_control() => format!("the control character {:?}", c),
        c => format!("'{c}'"),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let check: fn(&str) -> Result<String, IdError> = $check;
                check(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// An application name: `shop`, `billing-api`. Used in artifact file names.
    AppName,
    "app name",
    |s| check_name("app name", s, 64, "._-").map(|()| s.to_owned())
);

string_id!(
    /// A release version: `v42`, `1.4.0`, `2026.11.23+g1a2b3c`. Used as a directory
    /// name under `releases/` and in artifact file names.
    Version,
    "version",
    |s| check_name("version", s, 128, "._+-").map(|()| s.to_owned())
);

string_id!(
    /// A host or group name in the fleet inventory: `web1`, `db.eu-1`.
    HostName,
    "host name",
    |s| check_name("host name", s, 253, "._-").map(|()| s.to_owned())
);

string_id!(
    /// A SHA-256 digest as 64 lowercase hex digits (upper case is accepted and
    /// normalised).
    Sha256,
    "sha256 digest",
    |s| {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdError {
                what: "sha256 digest",
                value: s.to_owned(),
                reason: "expected 64 hexadecimal digits".into(),
            });
        }
        Ok(s.to_ascii_lowercase())
    }
);

impl Sha256 {
    /// The digest of a finished hasher.
    pub fn from_hasher(hasher: sha2::Sha256) -> Self {
        use sha2::Digest;
        Sha256(hex(&hasher.finalize()))
    }

    /// The digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Sha256(hex(&sha2::Sha256::digest(bytes)))
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_that_are_accepted() {
        for v in ["v1", "1.4.0", "2026.11.23+g1a2b3c", "v42-rc.1", "A_b"] {
            assert_eq!(v.parse::<Version>().unwrap().as_str(), v);
        }
    }

    #[test]
    fn versions_that_could_act_as_paths_or_shell_are_refused() {
        let cases = [
            ("", "invalid version \"\": it is empty"),
            (
                "v1/2",
                "invalid version \"v1/2\": '/' is not allowed (use ASCII letters, digits and . _ + -)",
            ),
            ("v1..2", "invalid version \"v1..2\": \"..\" is not allowed"),
            (
                "..",
                "invalid version \"..\": it must start with an ASCII letter or digit, not '.'",
            ),
            (
                "v1 2",
                "invalid version \"v1 2\": a space is not allowed (use ASCII letters, digits and . _ + -)",
            ),
            (
                "v1;rm",
                "invalid version \"v1;rm\": ';' is not allowed (use ASCII letters, digits and . _ + -)",
            ),
            (
                "$(id)",
                "invalid version \"$(id)\": it must start with an ASCII letter or digit, not '$'",
            ),
            (
                "-rf",
                "invalid version \"-rf\": it must start with an ASCII letter or digit, not '-'",
            ),
            (
                "v1\n",
                "invalid version \"v1\\n\": a newline is not allowed (use ASCII letters, digits and . _ + -)",
            ),
        ];
        for (input, message) in cases {
            let err = input.parse::<Version>().unwrap_err();
            assert_eq!(err.to_string(), message, "for {input:?}");
        }
        assert!("v".repeat(129).parse::<Version>().is_err());
        assert!("v".repeat(128).parse::<Version>().is_ok());
    }

    #[test]
    fn app_names_refuse_plus_and_slash() {
        assert!("shop".parse::<AppName>().is_ok());
        assert!("billing-api.v2".parse::<AppName>().is_ok());
        assert!("a+b".parse::<AppName>().is_err());
        assert!("a/b".parse::<AppName>().is_err());
        assert!("é".parse::<AppName>().is_err());
    }

    #[test]
    fn sha256_normalises_case_and_checks_length() {
        let upper = "AB".repeat(32);
        assert_eq!(upper.parse::<Sha256>().unwrap().as_str(), "ab".repeat(32));
        assert!("ab".parse::<Sha256>().is_err());
        assert!("zz".repeat(32).parse::<Sha256>().is_err());
        assert_eq!(
            Sha256::of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn deserializing_runs_the_same_check() {
        let err = serde_json::from_str::<Version>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("invalid version"), "{err}");
    }
}
