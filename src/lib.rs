//! `ship`: the command line, artifacts and fleet orchestration.
//!
//! [`run_in`] is the whole program: it parses arguments, sets up logging and the
//! `Printer` every command prints through, resolves each
//! command's settings and runs it, then renders any error once and maps it to an
//! exit status (0 success, 1 failure on a subject, 2 usage/config/internal). It
//! takes its console, environment and Ctrl-C flag as arguments, so tests can run any
//! command in-process; [`run`] gives it the process's own.

mod analysis;
mod cli;
mod commands;
mod delta;
mod error;
mod fleet;
mod inventory;
mod notify;
mod printer;
mod quote;
mod remote;
mod results;
mod rollout;
mod settings;
mod signing;
mod store;
mod transport;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

pub use error::{CliError, ExitStatus};
pub use fleet::Interrupt;
pub use printer::{Buffers, Console};
pub use settings::Env;

use cli::{Cli, Command};
use printer::{Mode, Printer};
use settings::{FleetSettings, PackSettings};

/// Runs `ship` with `args` (the first being the program name), on the process's
/// stdout and stderr, with Ctrl-C stopping new work.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let interrupt = Interrupt::default();
    let console = Console::stdio();
    // Ctrl-C: start no new host; hosts in flight finish their step (the agents run in
    // their own process groups, so the terminal's signal does not reach them).
    let on_signal = interrupt.clone();
    let _ = ctrlc::set_handler(move || {
        on_signal.set();
        eprintln!("interrupted: finishing the hosts in flight, starting no new ones");
    });
    run_in(args, console, &Env::from_process(), &interrupt).into()
}

/// Runs `ship` with `args` on `console`, with the environment `env`: the whole
/// program, which a test can run in-process. Exit status: 0 success, 1 failure on
/// a subject, 2 usage, config or internal error.
pub fn run_in<I, T>(args: I, console: Console, env: &Env, interrupt: &Interrupt) -> ExitStatus
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let rendered = if console.is_terminal() {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            let printer = Printer::new(console, Mode::Plain);
            if e.use_stderr() {
                printer.error(&rendered);
                return ExitStatus::Error;
            }
            printer.data(&rendered);
            return ExitStatus::Success;
        }
    };
    init_logging(cli.global.verbose);
    // The log lines of -v would tear through progress bars: lines instead.
    let mode = Mode::choose(
        cli.command.json_lines(),
        cli.global.quiet,
        cli.global.no_progress || cli.global.verbose > 0,
        &console,
    );
    let printer = Printer::new(console, mode);
    match dispatch(cli.command, &printer, env, interrupt) {
        Ok(()) => ExitStatus::Success,
        Err(e) => {
            printer.error(&e.render());
            e.status()
        }
    }
}

fn dispatch(
    command: Command,
    printer: &Printer,
    env: &Env,
    interrupt: &Interrupt,
) -> Result<(), CliError> {
    let fleet =
        |args, environment: Option<&str>| FleetSettings::resolve(args, environment, env, interrupt);
    match command {
        Command::Pack(args) => commands::pack::run(PackSettings::resolve(args, env)?, printer),
        Command::Publish(args) => commands::publish::run(args, printer),
        Command::Inspect(args) => {
            commands::inspect::run(&settings::artifact_path(args.artifact)?, args.json, printer)
        }
        Command::Verify(args) => commands::verify::run(
            &settings::artifact_path(args.artifact)?,
            args.digest,
            &args.key,
            args.config,
            printer,
        ),
        Command::Analyze(args) => commands::analyze::run(
            &fleet(args.fleet, args.env.name.as_deref())?,
            &commands::analyze::Request {
                hosts: &args.hosts,
                since: args.since,
                version: args.version,
            },
            printer,
        ),
        Command::Key(args) => commands::keys::key(args.command, printer),
        Command::Sign(args) => commands::keys::sign(args, printer),
        Command::Trust(args) => commands::fleet::trust(args.command, env, interrupt, printer),
        Command::Deploy(args) => {
            let environment = args.env.name.as_deref();
            let hosts = settings::hosts_or_env(args.hosts, environment)?;
            let settings = fleet(args.fleet, environment)?;
            let rollout = settings.rollout(&args.rollout)?;
            commands::fleet::deploy(&settings, &args.release, &hosts, &rollout, printer)
        }
        Command::Rollback(args) => {
            let environment = args.env.name.as_deref();
            let hosts = settings::hosts_or_env(args.hosts, environment)?;
            commands::fleet::rollback(
                &fleet(args.fleet, environment)?,
                &hosts,
                args.to.as_ref(),
                printer,
            )
        }
        Command::Promote(args) => {
            let settings = fleet(args.fleet, Some(&args.to))?;
            let rollout = settings.rollout(&args.rollout)?;
            commands::fleet::promote(&settings, &args.from, &args.hosts, &rollout, printer)
        }
        Command::Check(args) => commands::fleet::check(
            &fleet(args.fleet, args.env.name.as_deref())?,
            args.release.as_deref(),
            &args.hosts,
            printer,
        ),
        Command::Status(args) => commands::fleet::status(
            &fleet(args.fleet, args.env.name.as_deref())?,
            &args.hosts,
            printer,
        ),
        Command::History(args) => commands::fleet::history(
            &fleet(args.fleet, args.env.name.as_deref())?,
            &args.hosts,
            printer,
        ),
    }
}

/// Logs on stderr: warnings; with `-v`, each host's steps with their times (the
/// `host` and `step` spans as they close); with `-vv`, also the agent commands run
/// and the bytes sent. `RUST_LOG` overrides.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::format::FmtSpan;
    let default = match verbose {
        0 => "warn",
        1 => "warn,ship=info,packager=info,manifests=info",
        _ => "warn,ship=debug,packager=debug,manifests=debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::CLOSE)
        .with_target(false)
        // Seconds since start: the spans' busy and idle times come with it.
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}
