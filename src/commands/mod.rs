//! One module per `ship` command (fleet.rs holds the fleet commands); each takes
//! resolved settings and the printer, prints through it, and returns `Ok` or a
//! [`CliError`](crate::error::CliError).

pub mod analyze;
pub mod fleet;
pub mod inspect;
pub mod keys;
pub mod pack;
pub mod publish;
pub mod verify;
