//! `ship.toml`: the app's own config, read from the packed directory by `ship pack`.
//!
//! User config is strict: an unknown key is an error that names the key, so a typo
//! never silently changes what gets deployed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ids::{AppName, Version};

/// The file name ship looks for.
pub const FILE_NAME: &str = "ship.toml";

/// A parsed `ship.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipToml {
    /// The `[app]` table.
    #[serde(default)]
    pub app: AppTable,
}

/// The `[app]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppTable {
    /// The app's name, used in artifact names.
    pub name: Option<AppName>,
    /// The version to pack, when the build does not pass `--version`.
    pub version: Option<Version>,
}

/// Why `ship.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml reported, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
}

impl ShipToml {
    /// Parses `text`, naming `path` in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ShipToml, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Reads `dir/ship.toml` if it exists; `Ok(None)` if it does not.
    pub fn load_from_dir(dir: &Path) -> Result<Option<ShipToml>, ConfigError> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => ShipToml::parse(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn reads_name_and_version() {
        let t =
            ShipToml::parse("[app]\nname = \"shop\"\nversion = \"v3\"\n", Path::new("x")).unwrap();
        assert_eq!(t.app.name.unwrap().as_str(), "shop");
        assert_eq!(t.app.version.unwrap().as_str(), "v3");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            ShipToml::parse("[app]\nnmae = \"shop\"\n", Path::new("dir/ship.toml")).unwrap_err();
        assert_eq!(err.to_string(), "invalid config dir/ship.toml");
        let cause = err.source().unwrap().to_string();
        assert!(cause.contains("unknown field `nmae`"), "{cause}");
        assert!(cause.contains("line 2"), "{cause}");
    }

    #[test]
    fn invalid_values_use_the_identifier_checks() {
        let err =
            ShipToml::parse("[app]\nversion = \"v1/../x\"\n", Path::new("s.toml")).unwrap_err();
        let cause = err.source().unwrap().to_string();
        assert!(cause.contains("invalid version \"v1/../x\""), "{cause}");
    }
}
