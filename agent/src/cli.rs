//! The `ship-agent` command line (clap types stay here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use manifests::{Sha256, Version};

/// Receives, verifies, activates and rolls back releases of an app on this host.
///
/// Every command works by hand on the host and also speaks ship's protocol: with
/// --json, stdout carries one JSON event per line ({"type":…,"data":…}) and nothing
/// else. Commands that change the host take the app root's lock without waiting.
#[derive(Debug, Parser)]
#[command(name = "ship-agent", version, max_term_width = 100)]
#[command(
    after_help = "Exit status: 0 done, 1 refused or failed (the host is unchanged), \
2 usage error."
)]
pub struct Cli {
    /// Print protocol events as JSON lines on stdout instead of text on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// The protocol version the caller speaks; a mismatch is refused.
    #[arg(long, global = true, value_name = "N")]
    pub protocol: Option<u32>,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the app lives.
#[derive(Debug, Args)]
pub struct RootArg {
    /// The app root (holds current, releases/, shared/, .ship/).
    #[arg(long, env = "SHIP_ROOT")]
    pub root: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Unpack an artifact from stdin into releases/<version>, verifying every file.
    Receive {
        #[command(flatten)]
        root: RootArg,
        /// Refuse the artifact unless its sha256 is this (hashes the whole artifact).
        #[arg(long, value_name = "SHA256")]
        expect_digest: Option<Sha256>,
        /// Refuse the artifact unless its release's payload digest is this. Every
        /// file is checked against the manifest anyway, so this pins the content as
        /// firmly as --expect-digest, without hashing the compressed bytes.
        #[arg(long, value_name = "SHA256")]
        expect_payload: Option<Sha256>,
    },
    /// Point current at releases/<VERSION>, atomically.
    Activate {
        #[command(flatten)]
        root: RootArg,
        /// The release to activate.
        version: Version,
    },
    /// Switch back to the release that was live before the current one.
    Rollback {
        #[command(flatten)]
        root: RootArg,
        /// Switch to this release instead.
        #[arg(long, value_name = "VERSION")]
        to: Option<Version>,
    },
    /// The protocol's first exchange: agent version and protocol, and the app root's
    /// status (null when nothing was received there yet).
    Hello {
        #[command(flatten)]
        root: RootArg,
    },
    /// Show the current release, the kept ones, the lock and free disk.
    Status {
        #[command(flatten)]
        root: RootArg,
    },
    /// Show the journal: who did what, when, from what, to what.
    History {
        #[command(flatten)]
        root: RootArg,
    },
    /// Remove the oldest releases beyond N (never the current or the previous one).
    Prune {
        #[command(flatten)]
        root: RootArg,
        /// How many releases to keep.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
    },
    /// Re-hash a release (default: the current one) and name what changed on disk.
    Verify {
        #[command(flatten)]
        root: RootArg,
        /// The release to check.
        version: Option<Version>,
    },
}
