//! ship's documents — the release manifest and the app config (`ship.toml`) — with
//! their serde types, validation and digests.
//!
//! This crate does no I/O beyond reading a config file it is pointed at: the packager,
//! the agent and the CLI all speak through these types, so an identifier or a path
//! that passes here is safe to use everywhere.

pub mod analysis;
pub mod behaviour;
pub mod config;
pub mod ids;
pub mod manifest;
pub mod rollout;
pub mod signature;
pub mod time;

pub use ids::{AppName, HostName, IdError, Sha256, Version};
pub use manifest::{
    Entry, EntryKind, EntryPath, Finding, FindingKind, HostRequirement, Manifest, Mode, Rewrite,
    RewriteKind, Source,
};
pub use time::Timestamp;
