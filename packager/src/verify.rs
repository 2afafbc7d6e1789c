//! Verifying an artifact file: its contents against its manifest, and its bytes
//! against the digest in its `.sha256` sidecar (or one given explicitly).

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use manifests::Sha256;

use crate::error::ReadError;
use crate::read::{self, CheckOnly, ReadSummary};

/// Why an artifact did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The artifact could not be opened.
    #[error("cannot open {}", path.display())]
    Open {
        /// The artifact.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// There is no sidecar.
    #[error("sidecar {}: not found (pass --digest to give the expected sha256)", path.display())]
    NoSidecar {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The sidecar is unreadable or malformed.
    #[error("sidecar {}: {reason}", path.display())]
    Sidecar {
        /// The sidecar.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The content does not match the manifest.
    #[error(transparent)]
    Content(#[from] ReadError),
    /// The artifact's bytes do not hash to the expected digest.
    #[error("the artifact's sha256 is {actual}, but {origin} says {expected}")]
    Digest {
        /// The expected digest.
        expected: Sha256,
        /// The computed digest.
        actual: Sha256,
        /// Where the expected digest came from.
        origin: String,
    },
}

/// Where the expected digest of an artifact comes from.
#[derive(Debug, Clone)]
pub enum Expected {
    /// The `<artifact>.sha256` file beside it.
    Sidecar,
    /// A digest given by the caller.
    Digest(Sha256),
}

/// `<name>-<version>.tar.zst`.
pub fn artifact_file_name(name: &manifests::AppName, version: &manifests::Version) -> String {
    format!("{name}-{version}.tar.zst")
}

/// The sidecar's path for an artifact path: `<artifact>.sha256`.
pub fn sidecar_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// Reads the whole artifact at `path`, checks every entry against the manifest and
/// the artifact's digest against `expected`.
pub fn verify_file(path: &Path, expected: &Expected) -> Result<ReadSummary, VerifyError> {
    let (expected, origin) = match expected {
        Expected::Digest(d) => (d.clone(), "--digest".to_owned()),
        Expected::Sidecar => {
            let sidecar = sidecar_path(path);
            (
                read_sidecar(&sidecar, path)?,
                format!("{}", sidecar.display()),
            )
        }
    };
    let file = File::open(path).map_err(|source| VerifyError::Open {
        path: path.to_owned(),
        source,
    })?;
    let summary = read::read_artifact(
        BufReader::with_capacity(1 << 20, file),
        &mut CheckOnly,
        true,
    )?;
    let actual = summary
        .digest
        .clone()
        .expect("the artifact digest was asked for");
    if actual != expected {
        return Err(VerifyError::Digest {
            expected,
            actual,
            origin,
        });
    }
    Ok(summary)
}

/// Parses a `sha256sum` line for `artifact` from `sidecar`.
pub fn read_sidecar(sidecar: &Path, artifact: &Path) -> Result<Sha256, VerifyError> {
    let fail = |reason: String| VerifyError::Sidecar {
        path: sidecar.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(sidecar).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            VerifyError::NoSidecar {
                path: sidecar.to_owned(),
            }
        } else {
            fail(e.to_string())
        }
    })?;
    let line = text.lines().next().unwrap_or("");
    let (digest, name) = line
        .split_once("  ")
        .or_else(|| line.split_once(" *"))
        .ok_or_else(|| fail("expected a line \"<sha256>  <file name>\"".into()))?;
    let digest: Sha256 = digest
        .parse()
        .map_err(|e: manifests::IdError| fail(e.to_string()))?;
    let file_name = artifact.file_name().map(|n| n.to_string_lossy());
    if file_name.as_deref() != Some(name) {
        return Err(fail(format!(
            "it is for {name:?}, not {:?}",
            file_name.unwrap_or_default()
        )));
    }
    Ok(digest)
}

/// The sha256 of the file at `path`.
pub fn file_digest(path: &Path) -> io::Result<Sha256> {
    digest_of(File::open(path)?)
}

/// The sha256 of everything `input` yields.
pub fn digest_of(mut input: impl io::Read) -> io::Result<Sha256> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(Sha256::from_hasher(hasher)),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
