//! The packager: builds deterministic, checksummed artifacts from a tree, and reads,
//! inspects and verifies them.
//!
//! - [`pack()`] surveys a tree (hashing every file, relocating what ties it to the
//!   build directory, reporting what cannot be), then writes the manifest and a
//!   normalised tar stream through zstd in one pass.
//! - [`read`](mod@read) walks an artifact and checks every entry against its manifest as the
//!   bytes go by; it is the one reader of artifacts, used to verify and to unpack.
//! - [`verify`](mod@verify) adds the artifact's own digest (the `.sha256` sidecar).
//! - [`delta`](mod@delta) cuts an artifact down to the files a host lacks;
//!   [`read_delta`] reads such a stream with the same checks.
//!
//! `docs/FORMAT.md` describes the artifact format.

#[cfg(feature = "pack")]
pub mod delta;
pub mod error;
#[cfg(feature = "pack")]
pub mod pack;
pub mod read;
#[cfg(feature = "pack")]
mod relocate;
#[cfg(feature = "pack")]
mod scan;
#[cfg(any(feature = "pack", test))]
mod tarfmt;
pub mod verify;
#[cfg(feature = "pack")]
mod walk;

pub use error::{PackError, ReadError};
#[cfg(feature = "pack")]
pub use pack::{PackOptions, Packed, Progress, Relocation, pack, pack_with};
pub use read::{ReadSummary, Visitor, read_artifact, read_delta};
pub use verify::{Expected, VerifyError, artifact_file_name, sidecar_path, verify_file};
