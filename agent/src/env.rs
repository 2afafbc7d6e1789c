//! The environment a release runs with: the agent's own environment, the app's
//! environment file (`shared/.env` unless the release or the host names another), and
//! the host's settings from the fleet file (`--set NAME=VALUE`), later ones winning.
//! Hooks, restart and health commands get it; `${NAME}` in a health check's address
//! is expanded from it; `requires.env` is checked against it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use manifests::behaviour::{Behaviour, is_env_name};

use crate::error::AgentError;
use crate::layout::AppRoot;
use crate::protocol::HostSettings;

/// The default environment file, relative to the app root.
const DEFAULT_ENV_FILE: &str = "shared/.env";

/// Parses `NAME=VALUE` (for `--set`).
pub fn parse_assignment(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
    if !is_env_name(name) {
        return Err(format!("{name:?} is not an environment variable name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// The variables a release runs with, beyond the agent's own environment.
#[derive(Debug, Clone)]
pub struct Environment {
    /// From the environment file, then the host's settings.
    vars: BTreeMap<String, String>,
    /// The environment file used.
    pub file: PathBuf,
}

impl Environment {
    /// Loads the environment for a release with `behaviour` on `root`. A missing
    /// environment file is empty (`requires.files` is how to insist on one).
    pub fn load(
        root: &AppRoot,
        behaviour: &Behaviour,
        host: &HostSettings,
    ) -> Result<Environment, AgentError> {
        let relative = host
            .env_file
            .as_deref()
            .or(behaviour.env_file.as_deref())
            .unwrap_or(DEFAULT_ENV_FILE);
        let file = root.path().join(relative);
        let mut vars = match fs::read_to_string(&file) {
            Ok(text) => parse_env_file(&text).map_err(|(line, reason)| AgentError::EnvFile {
                path: file.clone(),
                line,
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(AgentError::io("cannot read", &file, e)),
        };
        vars.extend(host.set.iter().cloned());
        Ok(Environment { vars, file })
    }

    /// The value of `name`: the host's settings, the environment file, then the
    /// agent's own environment.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// The variables to set for a child process (on top of the agent's own).
    pub fn vars(&self) -> impl Iterator<Item = (&String, &String)> {
        self.vars.iter()
    }

    /// The variables of `required` that are not set (an empty value counts as set).
    pub fn missing<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required
            .iter()
            .filter(|name| self.get(name).is_none())
            .map(String::as_str)
            .collect()
    }

    /// Expands `${NAME}` in `text`; an unset name is an error that names it.
    pub fn expand(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("{text:?} has an unclosed ${{"))?;
            let name = &after[..end];
            let value = self
                .get(name)
                .ok_or_else(|| format!("{name} is not set (used in {text:?})"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Parses an environment file: `NAME=VALUE` lines, an optional `export ` prefix,
/// values optionally in single or double quotes, blank lines and `#` comments.
/// Errors give the line number and why.
fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| (i + 1, "expected NAME=VALUE".to_owned()))?;
        let name = name.trim();
        if !is_env_name(name) {
            return Err((
                i + 1,
                format!("{name:?} is not an environment variable name"),
            ));
        }
        let value = value.trim();
        let unquoted = [('"', '"'), ('\'', '\'')]
            .iter()
            .find_map(|(open, close)| {
                value
                    .strip_prefix(*open)
                    .and_then(|v| v.strip_suffix(*close))
            })
            .unwrap_or(value);
        vars.insert(name.to_owned(), unquoted.to_owned());
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_parse_like_dotenv() {
        let vars = parse_env_file(
            "# db\nDATABASE_URL=postgres://db/shop\nexport PORT = 8080\nQUOTED=\"a b\"\nSINGLE='x=y'\n\nEMPTY=\n",
        )
        .unwrap();
        assert_eq!(vars["DATABASE_URL"], "postgres://db/shop");
        assert_eq!(vars["PORT"], "8080");
        assert_eq!(vars["QUOTED"], "a b");
        assert_eq!(vars["SINGLE"], "x=y");
        assert_eq!(vars["EMPTY"], "");
        assert_eq!(
            parse_env_file("A=1\nnot a line\n").unwrap_err(),
            (2, "expected NAME=VALUE".to_owned())
        );
        assert_eq!(parse_env_file("1A=x\n").unwrap_err().0, 1);
    }

    #[test]
    fn expansion_names_what_is_missing() {
        let env = Environment {
            vars: BTreeMap::from([("SHOP_PORT".to_owned(), "8081".to_owned())]),
            file: PathBuf::new(),
        };
        assert_eq!(
            env.expand("http://127.0.0.1:${SHOP_PORT}/health").unwrap(),
            "http://127.0.0.1:8081/health"
        );
        assert!(
            env.expand("${SHIP_NO_SUCH_VARIABLE_X}")
                .unwrap_err()
                .starts_with("SHIP_NO_SUCH_VARIABLE_X is not set")
        );
        assert!(env.expand("${OPEN").is_err());
        assert_eq!(
            env.missing(&["SHOP_PORT".into(), "SHIP_NO_SUCH_VARIABLE_Y".into()]),
            ["SHIP_NO_SUCH_VARIABLE_Y"]
        );
        assert_eq!(
            parse_assignment("A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert!(parse_assignment("A b=c").is_err());
    }
}
