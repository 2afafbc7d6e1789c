//! What makes a switched release a running one, as the release's own manifest says:
//! its requirements (preflight), its shared paths, its hooks, restarting its services
//! and checking their health. `switch` decides when each runs; this module runs it.
//!
//! Programs run in the release directory with the release's environment plus
//! `SHIP_APP`, `SHIP_VERSION`, `SHIP_PREVIOUS`, `SHIP_ROOT` and `SHIP_RELEASE_DIR`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use manifests::behaviour::{Behaviour, Restart, signal_number};
use manifests::{AppName, Version};

use crate::env::Environment;
use crate::error::AgentError;
use crate::health;
use crate::layout::AppRoot;
use crate::output::Output;
use crate::protocol::{self, HostSettings, Lacking, Preflight};
use crate::run;

/// How long a hook may run unless `[hooks] timeout` says otherwise.
const HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a restart command may run unless it says otherwise.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// A release about to go (or going) live.
pub struct Context<'a> {
    /// The app root.
    pub root: &'a AppRoot,
    /// The app.
    pub app: &'a AppName,
    /// The release.
    pub version: &'a Version,
    /// The release live before it, if any.
    pub previous: Option<&'a Version>,
    /// Its behaviour, from its manifest.
    pub behaviour: &'a Behaviour,
    /// Its environment.
    pub env: &'a Environment,
    /// Where events go.
    pub out: Output,
}

/// Why a release did not go live.
#[derive(Debug, Clone)]
pub struct NotLive {
    /// The service concerned.
    pub service: String,
    /// `restart` or `health`.
    pub step: &'static str,
    /// What went wrong (for health: what the last check saw and after how long).
    pub reason: String,
}

impl std::fmt::Display for NotLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            "health" => write!(f, "{}: {}", self.service, self.reason),
            _ => write!(f, "{} did not restart: {}", self.service, self.reason),
        }
    }
}

impl Context<'_> {
    fn release_dir(&self) -> PathBuf {
        self.root.release(self.version)
    }

    /// A process for `program` in the release directory, with the release's
    /// environment.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.release_dir())
            .envs(self.env.vars())
            .env("SHIP_APP", self.app.as_str())
            .env("SHIP_VERSION", self.version.as_str())
            .env("SHIP_PREVIOUS", self.previous.map_or("", |v| v.as_str()))
            .env("SHIP_ROOT", self.root.path())
            .env("SHIP_RELEASE_DIR", self.release_dir());
        command
    }

    /// `sh -c line`, as [`Context::command`].
    fn shell(&self, line: &str) -> Command {
        let mut command = self.command("sh");
        command.arg("-c").arg(line);
        command
    }

    fn phase(&self, phase: &str, detail: &str) {
        self.out.phase(phase, detail);
        self.out.say(format!("{phase} {detail}"));
    }

    /// Runs the `pre_activate` or `post_activate` hook, if the release has it.
    pub fn hook(&self, stage: &str) -> Result<(), AgentError> {
        let hook = match stage {
            "pre_activate" => &self.behaviour.hooks.pre_activate,
            _ => &self.behaviour.hooks.post_activate,
        };
        let Some(hook) = hook else { return Ok(()) };
        self.phase(stage, hook);
        let timeout = self.behaviour.hooks.timeout.unwrap_or(HOOK_TIMEOUT);
        run::run(
            stage,
            self.command(self.release_dir().join(hook)),
            timeout,
            self.out,
        )
        .map_err(|source| AgentError::Hook {
            stage: stage.to_owned(),
            hook: hook.clone(),
            version: self.version.clone(),
            source,
        })
    }

    /// Restarts every service and checks its health, in the order listed.
    pub fn go_live(&self) -> Result<(), NotLive> {
        for service in &self.behaviour.services {
            if let Some(restart) = &service.restart {
                self.phase("restart", &service.name);
                self.restart(&service.name, restart)
                    .map_err(|reason| NotLive {
                        service: service.name.clone(),
                        step: "restart",
                        reason,
                    })?;
            }
        }
        for service in &self.behaviour.services {
            if let Some(check) = &service.health {
                self.phase("health", &service.name);
                health::check(check, self.env, |line| self.shell(line), self.out).map_err(
                    |unhealthy| NotLive {
                        service: service.name.clone(),
                        step: "health",
                        reason: unhealthy.to_string(),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Checks each service's health once, now, in the order listed: no restart and
    /// no retry. Services without a health check are left out.
    pub fn health_now(&self) -> Vec<(String, Result<(), String>)> {
        self.behaviour
            .services
            .iter()
            .filter_map(|service| {
                let check = service.health.as_ref()?;
                let result = health::once(check, self.env, |line| self.shell(line), self.out);
                Some((service.name.clone(), result))
            })
            .collect()
    }

    fn restart(&self, name: &str, restart: &Restart) -> Result<(), String> {
        match restart {
            Restart::Command { command, timeout } => run::run(
                &format!("restart {name}"),
                self.shell(command),
                timeout.unwrap_or(RESTART_TIMEOUT),
                self.out,
            )
            .map_err(|e| format!("`{command}`: {e}")),
            Restart::Signal { signal, pidfile } => {
                let number = signal_number(signal).ok_or(format!("unknown signal {signal}"))?;
                let path = self.root.path().join(pidfile);
                let text = fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read the pidfile {}: {e}", path.display()))?;
                let pid: i32 = text
                    .trim()
                    .parse()
                    .ok()
                    .filter(|pid| *pid > 1)
                    .ok_or(format!("the pidfile {} holds no pid", path.display()))?;
                let signal = nix::sys::signal::Signal::try_from(number)
                    .map_err(|e| format!("signal {signal}: {e}"))?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| {
                    format!(
                        "cannot send {signal} to pid {pid} (from {}): {e}",
                        path.display()
                    )
                })
            }
        }
    }
}

/// What is missing for a release with `behaviour`: required variables (in `env`)
/// and files (under `root`), one phrase each.
pub fn missing(root: &AppRoot, behaviour: &Behaviour, env: &Environment) -> Vec<String> {
    let mut problems: Vec<String> = env
        .missing(&behaviour.requires.env)
        .into_iter()
        .map(|name| format!("{name} is not set"))
        .collect();
    for file in &behaviour.requires.files {
        if !root.path().join(file).exists() {
            problems.push(format!("{file} is missing"));
        }
    }
    problems
}

/// The host paths a release needs (the targets of its host requirements), each with
/// the links of the release that point to it.
pub type HostPaths = BTreeMap<String, Vec<String>>;

/// The host paths `manifest` needs.
pub fn host_paths(manifest: &manifests::Manifest) -> HostPaths {
    manifest
        .host_paths()
        .into_iter()
        .map(|(target, links)| {
            (
                target.to_owned(),
                links.into_iter().map(str::to_owned).collect(),
            )
        })
        .collect()
}

/// The paths of `paths` that this host lacks: nothing there, or a symlink that
/// leads nowhere.
pub fn lacking(paths: &HostPaths) -> Vec<Lacking> {
    paths
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, links)| Lacking {
            path: path.clone(),
            needed_by: links.clone(),
        })
        .collect()
}

/// Preflight alone, changing nothing: the lock is free, `need_bytes` (all told: see
/// [`protocol::disk_need`])
/// fit, what `behaviour` requires is here, and so are the host paths `host_paths`.
/// Every problem is named at once.
pub fn preflight(
    root: &AppRoot,
    behaviour: &Behaviour,
    host_paths: &HostPaths,
    host: &HostSettings,
    need_bytes: Option<u64>,
) -> Result<Preflight, AgentError> {
    // Nothing else can be checked under a root that cannot be a directory.
    if let Some(blocked) = root
        .path()
        .ancestors()
        .find(|dir| fs::symlink_metadata(dir).is_ok_and(|meta| !meta.is_dir()) && !dir.is_dir())
    {
        return Err(AgentError::Preflight {
            version: None,
            problems: vec![format!(
                "the app root {} cannot be a directory: {} is in the way",
                root.path().display(),
                blocked.display()
            )],
            lacking: Vec::new(),
        });
    }
    let env = Environment::load(root, behaviour, host)?;
    let mut problems = Vec::new();
    if root.exists()
        && let Some(holder) = crate::lock::holder(&root.lock())
    {
        problems.push(protocol::busy(
            &root.path().display().to_string(),
            holder.as_ref(),
        ));
    }
    // The nearest directory that exists: a fresh host has no app root yet.
    let measured = root
        .path()
        .ancestors()
        .find(|dir| dir.is_dir())
        .unwrap_or(Path::new("/"));
    let free_bytes = crate::fsutil::free_bytes(measured)
        .map_err(|e| AgentError::io("cannot measure free space on", measured, e))?;
    if let Some(need) = need_bytes {
        problems.extend(protocol::no_room(
            &measured.display().to_string(),
            need,
            free_bytes,
        ));
    }
    problems.extend(missing(root, behaviour, &env));
    let lacking = lacking(host_paths);
    if !problems.is_empty() || !lacking.is_empty() {
        return Err(AgentError::Preflight {
            version: None,
            problems,
            lacking,
        });
    }
    Ok(Preflight {
        env_file_found: env.file.is_file(),
        env_file: env.file,
        free_bytes,
    })
}

/// Creates the shared paths under `shared/` that do not exist yet: directories for
/// paths ending in `/`; for files, only their directory (the file is the operator's
/// to provide, and `requires.files` can insist on it).
pub fn prepare_shared(root: &AppRoot, behaviour: &Behaviour) -> Result<(), AgentError> {
    for shared in &behaviour.shared {
        let path = root.shared().join(shared.trim_end_matches('/'));
        let dir = if shared.ends_with('/') {
            path.as_path()
        } else {
            path.parent().unwrap_or(&path)
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| AgentError::io("cannot create", dir, e))?;
    }
    Ok(())
}

/// Links each shared path into a release being received (`dir`, which is not live
/// yet): `<dir>/<path> -> ../…/shared/<path>`, relative so the app root can move.
/// Missing parent directories are created; a parent that is not a directory is
/// refused.
pub fn link_shared(dir: &Path, behaviour: &Behaviour) -> io::Result<()> {
    for shared in &behaviour.shared {
        let relative = Path::new(shared.trim_end_matches('/'));
        let mut parent = dir.to_owned();
        let depth = relative.components().count();
        for component in relative.components().take(depth - 1) {
            let Component::Normal(name) = component else {
                return Err(io::Error::other(format!("bad shared path {shared:?}")));
            };
            parent.push(name);
            match fs::symlink_metadata(&parent) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(io::Error::other(format!(
                        "cannot link shared path {shared:?}: {} is not a directory",
                        parent.display()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new().mode(0o755).create(&parent)?;
                }
                Err(e) => return Err(e),
            }
        }
        // releases/<version>/<path>: up through the path's parents, the version
        // and releases/.
        let mut target = PathBuf::new();
        for _ in 0..depth + 1 {
            target.push("..");
        }
        target.push("shared");
        target.push(relative);
        std::os::unix::fs::symlink(&target, dir.join(relative))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_paths_link_into_the_release_relatively() {
        let tmp = tempfile::tempdir().unwrap();
        let root = AppRoot::new(tmp.path()).unwrap();
        root.create().unwrap();
        let version: Version = "v1".parse().unwrap();
        let dir = root.release(&version);
        fs::create_dir_all(dir.join("tmp")).unwrap();
        let behaviour = Behaviour {
            shared: vec!["log/".into(), "tmp/pids/".into(), "config/.env".into()],
            ..Behaviour::default()
        };
        link_shared(&dir, &behaviour).unwrap();
        prepare_shared(&root, &behaviour).unwrap();
        assert_eq!(
            fs::read_link(dir.join("tmp/pids")).unwrap(),
            Path::new("../../../shared/tmp/pids")
        );
        assert_eq!(
            fs::read_link(dir.join("log")).unwrap(),
            Path::new("../../shared/log")
        );
        assert!(dir.join("log").is_dir() && dir.join("tmp/pids").is_dir());
        fs::write(root.shared().join("config/.env"), "A=1\n").unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("config/.env")).unwrap(),
            "A=1\n"
        );

        let other = tmp.path().join("other");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("config"), "").unwrap();
        let err = link_shared(&other, &behaviour).unwrap_err().to_string();
        assert!(err.contains("is not a directory"), "{err}");
    }
}
