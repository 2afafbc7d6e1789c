//! The command line as clap sees it. These types stay here: each command resolves
//! them into settings (`settings.rs`) before doing anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use manifests::{AppName, Sha256, Version};

/// Pack an application into a checksummed, relocatable release artifact and deploy
/// it to a fleet of Linux hosts.
#[derive(Debug, Parser)]
#[command(name = "ship", version, max_term_width = 100)]
#[command(
    after_help = "Exit status: 0 all good, 1 a host failed or an artifact did not \
verify, 2 usage, config or internal error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,
    /// Never draw progress bars, even on a terminal.
    #[arg(long, global = true, help_heading = "Global options")]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack a directory into <NAME>-<VERSION>.tar.zst and its .sha256 sidecar.
    ///
    /// The artifact is a zstd-compressed tar stream readable by GNU tar. Its first
    /// entry, .ship/manifest.json, lists every directory, file and symlink with its
    /// mode, size and sha256. Metadata is normalised (mtime from SOURCE_DATE_EPOCH or
    /// 1970-01-01, owner 0, modes 0644/0755), so the same tree always gives the same
    /// bytes. The sha256 of the artifact is printed on stdout.
    ///
    /// Things that tie the tree to its build directory (absolute or escaping
    /// symlinks, the build path in text files or #! lines, ELF RPATH/RUNPATH inside
    /// the build directory) are reported as warnings, or errors with --strict.
    Pack(PackArgs),
    /// Show an artifact's manifest (without verifying the artifact).
    Inspect(InspectArgs),
    /// Check an artifact: its sha256 against the sidecar, and every file against the
    /// manifest. Exits 1 naming the first thing that does not hold.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The directory to pack (the build output).
    pub dir: PathBuf,
    /// App name [default: [app] name in DIR/ship.toml].
    #[arg(long)]
    pub name: Option<AppName>,
    /// Release version, such as v42 or 1.4.0 [default: [app] version in DIR/ship.toml].
    #[arg(long)]
    pub version: Option<Version>,
    /// Directory to write the artifact into.
    #[arg(long, short, default_value = "dist")]
    pub out: PathBuf,
    /// zstd compression level.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Make relocatability findings errors.
    #[arg(long)]
    pub strict: bool,
    /// Print the result as a JSON line on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The artifact (.tar.zst).
    pub artifact: PathBuf,
    /// Print the manifest document itself on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The artifact (.tar.zst).
    pub artifact: PathBuf,
    /// Expected sha256 of the artifact, instead of reading <ARTIFACT>.sha256.
    #[arg(long)]
    pub digest: Option<Sha256>,
    /// Print the result as a JSON line on stdout.
    #[arg(long)]
    pub json: bool,
}
