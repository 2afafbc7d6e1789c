//! One module per `ship` command; each takes resolved settings and returns what
//! happened or a [`CliError`](crate::error::CliError).

pub mod fleet;
pub mod inspect;
pub mod pack;
pub mod verify;
