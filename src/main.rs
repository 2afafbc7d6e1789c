//! The `ship` binary: a shim over [`ship::run`].

fn main() -> std::process::ExitCode {
    ship::run(std::env::args_os())
}
