//! The `ship-agent` binary: a shim over [`agent::run`].

fn main() -> std::process::ExitCode {
    agent::run(std::env::args_os())
}
