//! Resolved settings: what each command will do, merged from the command line, the
//! environment and `ship.toml` (in that order of precedence). Commands receive these
//! and never see the clap types of `cli.rs`. The environment variables ship reads
//! are read here, once, into [`Env`].

use std::path::PathBuf;

use manifests::config::{self, ShipToml};
use packager::PackOptions;

use manifests::rollout::{Policy, RolloutTable};

use crate::cli::{PackArgs, RolloutArgs};
use crate::error::CliError;

/// What ship takes from its environment, read once.
#[derive(Debug, Clone)]
pub struct Env {
    /// `SOURCE_DATE_EPOCH`: the timestamp for reproducible builds.
    pub source_date_epoch: Option<String>,
    /// Who is deploying: `SHIP_USER`, else `USER` or `LOGNAME`, else the name of
    /// the user ship runs as.
    pub operator: String,
    /// The local `ship-agent`: `SHIP_AGENT`, else the one beside `ship`.
    pub agent_binary: PathBuf,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let operator = ["SHIP_USER", "USER", "LOGNAME"]
            .into_iter()
            .find_map(var)
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let agent_binary = std::env::var_os("SHIP_AGENT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::current_exe()
                    .map(|exe| exe.with_file_name("ship-agent"))
                    .unwrap_or_else(|_| PathBuf::from("ship-agent"))
            });
        Env {
            source_date_epoch: var("SOURCE_DATE_EPOCH"),
            operator,
            agent_binary,
        }
    }
}

/// How `ship pack` runs.
#[derive(Debug)]
pub struct PackSettings {
    pub options: PackOptions,
    pub relocation: packager::Relocation,
    /// The secret key to sign the artifact with.
    pub sign: Option<PathBuf>,
}

impl PackSettings {
    pub fn resolve(args: PackArgs, env: &Env) -> Result<Self, CliError> {
        let toml = ShipToml::load_from_dir(&args.dir)
            .map_err(|e| CliError::config("cannot use the app config", e))?
            .unwrap_or_default();
        let config_path = args.dir.join(config::FILE_NAME);
        let behaviour = toml.behaviour();
        let name = args.name.or(toml.app.name).ok_or_else(|| {
            CliError::usage("no app name").hint(format!(
                "pass --name, or set `name` under [app] in {}",
                config_path.display()
            ))
        })?;
        let version = args.version.or(toml.app.version).ok_or_else(|| {
            CliError::usage("no version").hint(format!(
                "pass --version, or set `version` under [app] in {}",
                config_path.display()
            ))
        })?;
        let mtime = match env.source_date_epoch.as_deref() {
            None => 0,
            Some(value) => value.trim().parse::<u64>().map_err(|_| {
                CliError::usage(format!(
                    "SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds since 1970"
                ))
            })?,
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        // A signed artifact's BLAKE2b is computed while it is written.
        let prehash = args.sign.is_some();
        Ok(PackSettings {
            sign: args.sign,
            relocation: if args.no_relocate {
                packager::Relocation::KeepBytes
            } else {
                packager::Relocation::Rewrite
            },
            options: PackOptions {
                dir: args.dir,
                name,
                version,
                out_dir: args.out,
                level: args.level,
                mtime,
                strict: args.strict,
                threads,
                behaviour,
                prehash,
            },
        })
    }
}

/// An artifact path given on the command line.
pub fn artifact_path(path: PathBuf) -> Result<PathBuf, CliError> {
    if path.is_dir() {
        return Err(CliError::usage(format!(
            "{} is a directory, not an artifact",
            path.display()
        )));
    }
    Ok(path)
}

/// The fleet a command works on, and how.
pub struct FleetSettings {
    pub fleet: crate::inventory::Fleet,
    pub options: crate::fleet::Options,
    /// The whole file, for commands that use more than one environment.
    pub toml: ShipToml,
    /// Where it was read from.
    pub path: PathBuf,
}

impl FleetSettings {
    /// Reads the fleet file; the fleet is its top-level hosts, or environment `env`.
    pub fn resolve(
        args: crate::cli::FleetArgs,
        environment: Option<&str>,
        env: &Env,
        interrupt: &crate::fleet::Interrupt,
    ) -> Result<Self, CliError> {
        let path = args
            .config
            .unwrap_or_else(|| PathBuf::from(config::FILE_NAME));
        if !path.is_file() {
            return Err(
                CliError::usage(format!("no fleet config at {}", path.display()))
                    .hint("run from the directory holding ship.toml, or pass --config PATH"),
            );
        }
        let toml = ShipToml::load(&path)
            .map_err(|e| CliError::config("cannot use the fleet config", e))?;
        let fleet =
            crate::inventory::Fleet::resolve(&toml, &path, environment).map_err(CliError::usage)?;
        Ok(FleetSettings {
            fleet,
            options: crate::fleet::Options {
                parallel: args.parallel as usize,
                accept_new_keys: args.accept_new_host_keys,
                interrupt: interrupt.clone(),
                operator: env.operator.clone(),
                agent_binary: env.agent_binary.clone(),
            },
            toml,
            path,
        })
    }

    /// Environment `name` of the same file.
    pub fn environment(&self, name: &str) -> Result<crate::inventory::Fleet, CliError> {
        crate::inventory::Fleet::resolve(&self.toml, &self.path, Some(name))
            .map_err(CliError::usage)
    }

    /// How a deploy rolls out: the policy of `args` over the file's (the
    /// environment's over `[rollout]`), and its switches.
    pub fn rollout(&self, args: &RolloutArgs) -> Result<RolloutSettings, CliError> {
        let flags = RolloutTable {
            canary: args.canary,
            canary_wait: args.canary_wait,
            batch: args.batch,
            max_failures: args.max_failures,
            on_failure: args.on_failure,
        };
        flags
            .check("")
            .map_err(|_| CliError::usage("--batch must be at least 1 host"))?;
        Ok(RolloutSettings {
            policy: flags.over(&self.fleet.rollout).policy(),
            plan: args.plan,
            all_or_nothing: args.all_or_nothing,
            full: args.full,
            push: args.push,
            allow_downgrade: args.allow_downgrade.clone(),
        })
    }

    /// Where this fleet's deploy events go.
    pub fn notifier(&self) -> crate::notify::Notifier {
        crate::notify::Notifier::new(self.fleet.webhooks.clone(), self.fleet.deploy_log.clone())
    }
}

/// How a deploy rolls out.
pub struct RolloutSettings {
    /// Canary, waves, budget, what a failure does.
    pub policy: Policy,
    /// Show what would happen; change nothing.
    pub plan: bool,
    /// Activate no host unless every host staged.
    pub all_or_nothing: bool,
    /// Send the whole artifact even to hosts that keep releases.
    pub full: bool,
    /// Stream the artifact from here even when there is a store to fetch it from.
    pub push: bool,
    /// Why hosts may take a release signed before one they have taken.
    pub allow_downgrade: Option<String>,
}

impl FleetSettings {
    /// The keys of `[trust]`, which an artifact must be signed by before a deploy
    /// sends it anywhere.
    pub fn trusted_keys(&self) -> Result<Vec<manifests::signature::PublicKey>, CliError> {
        crate::signing::config_keys(&self.toml, &self.path)
    }
}

/// The hosts a deploy or rollback works on: `--hosts`, else every host of the
/// environment; one of the two must be given.
pub fn hosts_or_env(hosts: Option<String>, env: Option<&str>) -> Result<String, CliError> {
    match (hosts, env) {
        (Some(hosts), _) => Ok(hosts),
        (None, Some(_)) => Ok("*".to_owned()),
        (None, None) => Err(CliError::usage("no hosts chosen")
            .hint("pass --hosts PATTERNS (names, globs, @groups), or --env NAME for all the hosts of an environment")),
    }
}
