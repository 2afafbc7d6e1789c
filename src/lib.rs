//! `ship`: the command line and, as issues land, fleet orchestration.
//!
//! [`run`] is the whole program: it parses arguments, sets up logging, resolves each
//! command's settings and runs it, then renders any error once and maps it to an
//! exit status (0 success, 1 failure on a subject, 2 usage/config/internal).

mod cli;
mod commands;
mod error;
mod fleet;
mod inventory;
mod notify;
mod output;
mod quote;
mod remote;
mod report;
mod rollout;
mod settings;
mod transport;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

pub use error::{CliError, ExitStatus};

use cli::{Cli, Command};
use settings::{Env, FleetSettings, PackSettings};

/// Runs `ship` with `args` (the first being the program name).
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::Error.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    init_logging(cli.global.verbose);
    // Ctrl-C: start no new host; hosts in flight finish their step (the agents run in
    // their own process groups, so the terminal's signal does not reach them).
    let _ = ctrlc::set_handler(|| {
        fleet::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("interrupted: finishing the hosts in flight, starting no new ones");
    });
    match dispatch(cli) {
        Ok(()) => ExitStatus::Success.into(),
        Err(e) => {
            eprint!("{}", e.render());
            e.status().into()
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), CliError> {
    let env = Env::from_process();
    match cli.command {
        Command::Pack(args) => commands::pack::run(PackSettings::resolve(args, &cli.global, &env)?),
        Command::Inspect(args) => {
            commands::inspect::run(&settings::artifact_path(args.artifact)?, args.json)
        }
        Command::Verify(args) => commands::verify::run(
            &settings::artifact_path(args.artifact)?,
            args.digest,
            args.json,
        ),
        Command::Deploy(args) => {
            let env = args.env.name.as_deref();
            let hosts = settings::hosts_or_env(args.hosts, env)?;
            commands::fleet::deploy(
                FleetSettings::resolve(args.fleet, env, &cli.global)?,
                &args.release,
                &hosts,
                &args.rollout,
            )
        }
        Command::Rollback(args) => {
            let env = args.env.name.as_deref();
            let hosts = settings::hosts_or_env(args.hosts, env)?;
            commands::fleet::rollback(
                FleetSettings::resolve(args.fleet, env, &cli.global)?,
                &hosts,
                args.to.as_ref(),
            )
        }
        Command::Promote(args) => commands::fleet::promote(
            FleetSettings::resolve(args.fleet, Some(&args.to), &cli.global)?,
            &args.from,
            &args.hosts,
            &args.rollout,
        ),
        Command::Check(args) => commands::fleet::check(
            FleetSettings::resolve(args.fleet, args.env.name.as_deref(), &cli.global)?,
            args.release.as_deref(),
            &args.hosts,
        ),
        Command::Status(args) => commands::fleet::status(
            FleetSettings::resolve(args.fleet, args.env.name.as_deref(), &cli.global)?,
            &args.hosts,
        ),
        Command::History(args) => commands::fleet::history(
            FleetSettings::resolve(args.fleet, args.env.name.as_deref(), &cli.global)?,
            &args.hosts,
        ),
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}
