//! The command line as clap sees it. Each command's arguments are resolved into
//! settings (`settings.rs`) before it runs; the commands never see these types.

use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use manifests::rollout::{Amount, OnFailure};
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
    /// More log output on stderr: -v each host's steps with their times, -vv also the
    /// agent commands run and the bytes sent; RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,
    /// Never draw progress bars, even on a terminal.
    #[arg(long, global = true, help_heading = "Global options")]
    pub no_progress: bool,
    /// Print only the command's data on stdout, and warnings and errors on stderr:
    /// no progress, no notes.
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub quiet: bool,
}

impl Command {
    /// Whether the command prints JSON Lines (`--json`; for `inspect`, it prints
    /// the manifest document instead, which is data like its text).
    pub fn json_lines(&self) -> bool {
        match self {
            Command::Pack(args) => args.json,
            Command::Inspect(_) => false,
            Command::Publish(args) => args.json,
            Command::Verify(args) => args.json,
            Command::Deploy(args) => args.fleet.json,
            Command::Rollback(args) => args.fleet.json,
            Command::Promote(args) => args.fleet.json,
            Command::Check(args) => args.fleet.json,
            Command::Status(args) => args.fleet.json,
            Command::History(args) => args.fleet.json,
            Command::Key(_) | Command::Sign(_) => false,
            Command::Analyze(args) => args.fleet.json,
            Command::Trust(args) => match &args.command {
                TrustCommand::List { target }
                | TrustCommand::Add { target, .. }
                | TrustCommand::Revoke { target, .. } => target.fleet.json,
            },
        }
    }
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
    /// The release must run from whatever directory a host unpacks it in, so what
    /// ties the tree to its build directory is rewritten and recorded in the
    /// manifest (--no-relocate keeps the bytes as they are): #! lines naming a
    /// Python interpreter of the tree become a sh preamble that finds it beside the
    /// script; virtualenv activation scripts (sh, fish, csh) find their directory
    /// when sourced; pyvenv.cfg loses its `command` line; .pth paths and absolute
    /// symlinks into the tree become relative. Absolute symlinks out of the tree
    /// (a virtualenv's bin/python3 -> /usr/bin/python3.11) are host requirements:
    /// deploys check that every host has their targets.
    ///
    /// What is left (escaping symlinks, the build path in other text or #! lines,
    /// ELF RPATH/RUNPATH inside the build directory) is reported as warnings, or
    /// errors with --strict.
    Pack(PackArgs),
    /// Upload an artifact to the artifact store, for hosts to fetch.
    ///
    /// The store is --to, or [store] url in ship.toml (the environment's with --env):
    /// s3://BUCKET/PREFIX (any S3-compatible server: [store] endpoint; credentials
    /// from the AWS environment variables, never from the file), http(s)://HOST/PATH
    /// (a server that takes PUT, WebDAV-style) or file:///PATH. The artifact is
    /// checked against its sidecar first; then it, its manifest and last its sidecar
    /// are uploaded under PREFIX/<name>/. An artifact already published with the same
    /// sha256 is not uploaded again; another one under the same version is refused.
    Publish(PublishArgs),
    /// Show an artifact's manifest (without verifying the artifact).
    Inspect(InspectArgs),
    /// Check an artifact: its sha256 against the sidecar, and every file against the
    /// manifest. Exits 1 naming the first thing that does not hold.
    Verify(VerifyArgs),
    /// Deploy a release to hosts: stage it on every host (transfer and verify), then
    /// switch them, all at once or in waves.
    ///
    /// Every selected host is staged first, in parallel: connect, check the agent,
    /// preflight (lock free, enough disk, what the release requires), and stream the
    /// artifact into the agent, which verifies every file before the release appears
    /// on the host. With an artifact store ([store] in ship.toml) each host fetches
    /// the published artifact itself instead (--push streams it from here); a
    /// version not in the artifacts directory is deployed from the store. Hosts that already have this exact release skip the transfer. A
    /// host that fails staging is reported and left alone; the others go on, unless
    /// --all-or-nothing.
    ///
    /// Then the staged hosts are activated: the canary hosts alone (--canary), their
    /// health watched for --canary-wait, then waves of --batch hosts, each wave
    /// passing health before the next starts. When more hosts fail than
    /// --max-failures allows (default 0), no new wave starts and, under
    /// --on-failure revert (the default), every host this deploy switched goes back
    /// to the release it ran before and is checked again. [rollout] in ship.toml (or
    /// the environment's) sets the defaults; flags win. --plan shows all this
    /// without changing anything.
    ///
    /// Activating runs what the release's manifest says: its pre_activate hook (a
    /// failure stops the host before the switch), the atomic switch of `current`,
    /// each service's restart and health check, then its post_activate hook. Hook
    /// output is shown under the host's name. A release that does not come up
    /// healthy is switched back to the one before, which is restarted and checked
    /// again; the failed release is marked bad so no rollback chooses it.
    Deploy(DeployArgs),
    /// Switch hosts back to the release before the current one (or --to VERSION). No
    /// artifact moves: it works with the build system and artifact store down.
    ///
    /// Releases that failed their health check are skipped. The release switched to
    /// has its services restarted and checked, as in a deploy.
    Rollback(RollbackArgs),
    /// Preflight alone, changing nothing: are the hosts ready for a release?
    ///
    /// On every host: the lock is free, and what the app requires is there — its
    /// environment variables (in the agent's environment, the environment file or the
    /// host's `env` in the fleet file) and its files; with a release, also room on
    /// disk for it. Without a release, the requirements in ship.toml count. Each
    /// failing host names everything that is missing.
    Check(CheckArgs),
    /// Deploy to one environment the release another runs: the version FROM runs on
    /// all of its hosts, healthy there, goes to TO with TO's rollout policy.
    ///
    /// Every host of FROM is asked what it runs and its services are checked now.
    /// The promotion is refused, naming the reason, when FROM's hosts run different
    /// releases (or none), when one is unreachable or unhealthy, or when the local
    /// artifact of that version is not the one FROM runs (its payload digest).
    Promote(PromoteArgs),
    /// A table of what every host runs; hosts that differ from the fleet stand out.
    Status(StatusArgs),
    /// Every host's journal: who deployed or rolled back what, and when.
    History(StatusArgs),
    /// Make signing keys (minisign's format) and the statements that rotate them.
    Key(KeyArgs),
    /// Sign an artifact: writes <ARTIFACT>.minisig.
    ///
    /// The signature is minisign's (Ed25519 over the artifact's BLAKE2b-512, so
    /// `minisign -Vm ARTIFACT -p KEY.pub` checks it). Its trusted comment, signed
    /// too, names the app, the version, the payload and manifest digests and a
    /// signing sequence (the time in seconds, or --seq): a signature cannot be moved
    /// to another artifact or version, and a host refuses a release signed with a
    /// lower sequence than one it has taken from the same key. With --print-claim,
    /// only that comment is printed, to sign with `minisign -S -t COMMENT`.
    Sign(SignArgs),
    /// The keys hosts trust: list them, add one, revoke one.
    ///
    /// A host that trusts a key takes only releases signed by a key it trusts. Keys
    /// live on the host (<root>/.ship/trust/), set there by `ship-agent trust add`,
    /// or from here: a host that trusts no key yet takes its first one with
    /// --first-contact; after that, a key is added or revoked only with a statement
    /// signed by a key the host already trusts (`ship key endorse`, `ship key
    /// revoke`).
    Trust(TrustArgs),
    /// Run the metric analysis of ship.toml now, over the chosen hosts, and judge it
    /// as a rollout would; changes nothing.
    ///
    /// [analysis] sets the interval, the count of measurements, an initial delay,
    /// the failed measurements tolerated and what no data counts as (fail, pass, or
    /// inconclusive); each [[analysis.metric]] names a provider (prometheus, graphite, http,
    /// command), a query template ({{hosts}}, {{hosts_regex}}, {{env}},
    /// {{version}}, {{window}}, {{window_seconds}}) and a judgement: max/min, a
    /// relative max_increase/max_decrease against the same hosts --since ago, or
    /// baseline = true (the chosen hosts against the others, Mann-Whitney U). Each
    /// measurement is printed as it comes; exit 1 when a metric does not pass, 2
    /// when a query is rejected.
    Analyze(AnalyzeArgs),
}

/// `ship analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// The hosts to measure (the canary, for a baseline comparison).
    #[arg(long, default_value = "*")]
    pub hosts: String,
    /// How far back "before" is for relative judgements.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = duration)]
    pub since: Duration,
    /// The release the query templates name as {{version}}.
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    #[command(flatten)]
    pub env: EnvArg,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `ship key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new keypair: OUT.key (the secret key, 0600, encrypted with a
    /// passphrase from SHIP_KEY_PASSPHRASE or a prompt) and OUT.pub.
    Generate {
        /// The files' path without their extension.
        #[arg(long, default_value = "ship")]
        out: PathBuf,
        /// Do not encrypt the secret key (for a CI secrets store).
        #[arg(long)]
        unencrypted: bool,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Sign a statement that hosts trusting KEY may trust NEW (key rotation):
    /// writes NEW.add.minisig, for `ship trust add NEW --statement`.
    Endorse {
        /// The new public key file.
        new: PathBuf,
        /// A secret key the hosts trust.
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        /// Where to write the statement.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Sign a statement that hosts are to stop trusting OLD: writes
    /// OLD.revoke.minisig, for `ship trust revoke OLD --statement`.
    Revoke {
        /// The public key file to revoke.
        old: PathBuf,
        /// A secret key the hosts trust.
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        /// Where to write the statement.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

/// `ship sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The artifact (.tar.zst).
    pub artifact: PathBuf,
    /// The secret key.
    #[arg(long, value_name = "PATH", required_unless_present = "print_claim")]
    pub key: Option<PathBuf>,
    /// The signing sequence [default: the time now, in seconds].
    #[arg(long, value_name = "N")]
    pub seq: Option<u64>,
    /// Print the trusted comment a signature of this artifact carries, and sign
    /// nothing.
    #[arg(long)]
    pub print_claim: bool,
}

/// `ship trust`.
#[derive(Debug, Args)]
pub struct TrustArgs {
    #[command(subcommand)]
    pub command: TrustCommand,
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// The keys each host trusts, and the highest signing sequence it took from each.
    List {
        #[command(flatten)]
        target: StatusArgs,
    },
    /// Have hosts trust a key: with --statement (a key they trust signed it: `ship
    /// key endorse`), or --first-contact (only hosts that trust no key yet).
    Add {
        /// The public key file.
        key: PathBuf,
        /// The statement of the addition.
        #[arg(long, value_name = "PATH", required_unless_present = "first_contact")]
        statement: Option<PathBuf>,
        /// Give the key to hosts that trust none yet; a host that trusts keys
        /// refuses it.
        #[arg(long)]
        first_contact: bool,
        #[command(flatten)]
        target: StatusArgs,
    },
    /// Have hosts stop trusting a key, by a statement a key they trust signed (`ship
    /// key revoke`). A host's last key is not revoked from here.
    Revoke {
        /// The public key file.
        key: PathBuf,
        /// The statement of the revocation.
        #[arg(long, value_name = "PATH")]
        statement: PathBuf,
        #[command(flatten)]
        target: StatusArgs,
    },
}

/// Where the fleet is described.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The fleet's ship.toml [default: ./ship.toml]
    #[arg(long, env = "SHIP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Hosts to work on at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallel: u32,
    /// Record the host key of hosts not yet in known_hosts instead of refusing them.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Print JSON Lines events on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which environment of ship.toml.
#[derive(Debug, Args)]
pub struct EnvArg {
    /// Work on the hosts of this environment ([environments.<NAME>] in ship.toml).
    #[arg(long = "env", env = "SHIP_ENV", value_name = "NAME")]
    pub name: Option<String>,
}

/// How a deploy activates the hosts it staged.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Rollout")]
pub struct RolloutArgs {
    /// Activate no host unless every host staged.
    #[arg(long)]
    pub all_or_nothing: bool,
    /// Send every host the whole artifact. By default a host that keeps releases
    /// is sent only the files whose content none of them has (a delta, which it
    /// checks file by file like an artifact), unless that is most of the release.
    #[arg(long)]
    pub full: bool,
    /// With an artifact store ([store] in ship.toml): stream the artifact to every
    /// host from here over SSH, instead of having each host fetch it from the
    /// store.
    #[arg(long)]
    pub push: bool,
    /// Activate the first N hosts alone, before any other [default: 0].
    #[arg(long, value_name = "N")]
    pub canary: Option<usize>,
    /// Keep checking the canary hosts' health this long (30s, 5m) before the rest
    /// proceed [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub canary_wait: Option<Duration>,
    /// After the canary, activate in waves of N hosts or P% of the hosts; each wave
    /// must pass health before the next starts [default: all at once].
    #[arg(long, value_name = "N|P%")]
    pub batch: Option<Amount>,
    /// Start no new wave once more hosts than this (N or P%) have failed
    /// [default: 0].
    #[arg(long, value_name = "N|P%")]
    pub max_failures: Option<Amount>,
    /// Beyond the budget: halt (switched hosts stay) or revert (every host this
    /// deploy switched goes back to its previous release) [default: revert].
    #[arg(long, value_name = "halt|revert")]
    pub on_failure: Option<OnFailure>,
    /// Change nothing: ask every host for its state and print what would happen
    /// (which hosts need a transfer, how many bytes, the waves).
    #[arg(long)]
    pub plan: bool,
    /// Let hosts take a release signed with a lower sequence than one they have
    /// taken from the same key (a downgrade); REASON goes in each host's journal,
    /// with who allowed it.
    #[arg(long, value_name = "REASON")]
    pub allow_downgrade: Option<String>,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 30s or 5m: {e}"))
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A version (the artifact is <artifacts>/<name>-<VERSION>.tar.zst) or the path
    /// of an artifact.
    pub release: String,
    /// Hosts: names, globs (web*) and groups (@web), comma-separated [default: all
    /// the hosts of --env].
    #[arg(long)]
    pub hosts: Option<String>,
    #[command(flatten)]
    pub env: EnvArg,
    #[command(flatten)]
    pub fleet: FleetArgs,
    // Last: its help heading holds for what follows.
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The environment whose release is promoted.
    pub from: String,
    /// The environment it is deployed to.
    pub to: String,
    /// Hosts of TO: names, globs (web*) and groups (@web), comma-separated
    /// [default: all].
    #[arg(long, default_value = "*")]
    pub hosts: String,
    #[command(flatten)]
    pub fleet: FleetArgs,
    // Last: its help heading holds for what follows.
    #[command(flatten)]
    pub rollout: RolloutArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Hosts: names, globs (web*) and groups (@web), comma-separated [default: all
    /// the hosts of --env].
    #[arg(long)]
    pub hosts: Option<String>,
    #[command(flatten)]
    pub env: EnvArg,
    /// Switch to this release instead of the previous one.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<Version>,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A version or the path of an artifact: check what that release requires.
    pub release: Option<String>,
    /// Hosts: names, globs (web*) and groups (@web), comma-separated.
    #[arg(long, default_value = "*")]
    pub hosts: String,
    #[command(flatten)]
    pub env: EnvArg,
    #[command(flatten)]
    pub fleet: FleetArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Hosts: names, globs (web*) and groups (@web), comma-separated.
    #[arg(long, default_value = "*")]
    pub hosts: String,
    #[command(flatten)]
    pub env: EnvArg,
    #[command(flatten)]
    pub fleet: FleetArgs,
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
    /// Pack the bytes as they are: rewrite nothing (findings are still reported).
    #[arg(long)]
    pub no_relocate: bool,
    /// Make relocatability findings (what is left unrelocated) errors.
    #[arg(long)]
    pub strict: bool,
    /// Sign the artifact with this secret key, as `ship sign` does.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
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
pub struct PublishArgs {
    /// A version (the artifact is <artifacts>/<name>-<VERSION>.tar.zst) or the path
    /// of an artifact.
    pub release: String,
    /// The store's URL, instead of [store] url.
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// The fleet's ship.toml, for [store] and the artifacts directory [default:
    /// ./ship.toml].
    #[arg(long, env = "SHIP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub env: EnvArg,
    /// Print JSON Lines events on stdout instead of text.
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
    /// A public key to check <ARTIFACT>.minisig against (repeatable) [default: the
    /// keys of [trust] in ship.toml, when there is one]. With keys, an unsigned
    /// artifact does not verify.
    #[arg(long, value_name = "PATH")]
    pub key: Vec<PathBuf>,
    /// The ship.toml whose [trust] keys to use [default: ./ship.toml].
    #[arg(long, env = "SHIP_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the result as a JSON line on stdout.
    #[arg(long)]
    pub json: bool,
}
