//! The artifact stores of the pull-mode tests: real servers on loopback, each run in
//! the foreground as a child of the test and killed by pid when dropped, even when
//! the test fails. nginx (Debian's, taking PUT through its DAV module) is the plain
//! HTTP store; s3s-fs (an S3 server over a directory, built once by
//! scripts/test-deps into target/test-cache) is the S3 one.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{free_port, test_cache};

/// Whether the store servers are here (scripts/test installs nginx and builds
/// s3s-fs).
pub fn can_run() -> bool {
    super::skip::runs_here(
        Path::new("/usr/sbin/nginx").exists() && s3s_fs().is_file(),
        "nginx and s3s-fs (scripts/test installs nginx-light, scripts/test-deps builds s3s-fs)",
    )
}

fn s3s_fs() -> PathBuf {
    test_cache().join("s3s-fs/bin/s3s-fs")
}

/// A server child that is killed when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    what: &'static str,
}

impl Server {
    fn spawn(mut command: Command, port: u16, what: &'static str, log: &Path) -> Server {
        let log = fs::File::create(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let mut server = Server {
            child: Some(child),
            port,
            what,
        };
        server.wait_listening();
        server
    }

    fn wait_listening(&mut self) {
        let child = self.child.as_mut().unwrap();
        for _ in 0..1500 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited: {status}", self.what);
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("{} did not listen on {}", self.what, self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nginx serving a directory, taking PUT (and creating the directories a PUT needs).
pub struct Nginx {
    pub dir: tempfile::TempDir,
    server: Server,
}

impl Nginx {
    /// Serves a new, empty directory.
    pub fn start() -> Nginx {
        Nginx::start_with("")
    }

    /// Serves a new, empty directory at `rate` per connection (`limit_rate`, as
    /// `512k`), so that a download takes a while.
    pub fn start_limited(rate: &str) -> Nginx {
        Nginx::start_with(&format!("limit_rate {rate};"))
    }

    fn start_with(extra: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("www")).unwrap();
        fs::create_dir_all(d.join("tmp")).unwrap();
        let port = free_port();
        let conf = format!(
            "daemon off;
master_process off;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {d}/www;
    client_max_body_size 0;
    dav_methods PUT;
    create_full_put_path on;
    {extra}
  }}
}}
",
            d = d.display(),
            user = if super::skip::is_root() {
                "user root;"
            } else {
                ""
            },
        );
        fs::write(d.join("nginx.conf"), conf).unwrap();
        let server = Server::spawn(Nginx::command(d), port, "nginx", &d.join("nginx.out"));
        Nginx { dir, server }
    }

    fn command(dir: &Path) -> Command {
        let mut cmd = Command::new("/usr/sbin/nginx");
        cmd.arg("-c").arg(dir.join("nginx.conf")).arg("-p").arg(dir);
        cmd
    }

    /// The URL of the served directory.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// The served directory.
    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// Stops the server (killed by pid).
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.server.kill();
        let d = self.dir.path();
        self.server.child = Some(
            Server::spawn(
                Nginx::command(d),
                self.server.port,
                "nginx",
                &d.join("nginx.out"),
            )
            .child
            .take()
            .unwrap(),
        );
    }

    /// The requests it logged, one line each.
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// s3s-fs serving a directory as S3, with a bucket `releases`.
pub struct S3 {
    pub dir: tempfile::TempDir,
    server: Server,
}

/// The credentials the test S3 server takes.
pub const ACCESS_KEY: &str = "shiptestaccess";
pub const SECRET_KEY: &str = "shiptestsecret0123456789";

impl S3 {
    pub fn start() -> S3 {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("data/releases")).unwrap();
        let port = free_port();
        let mut cmd = Command::new(s3s_fs());
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir.path().join("data"));
        let server = Server::spawn(cmd, port, "s3s-fs", &dir.path().join("s3s-fs.log"));
        S3 { dir, server }
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// The file holding the object `key` of the bucket `releases`.
    pub fn object(&self, key: &str) -> PathBuf {
        self.dir.path().join("data/releases").join(key)
    }

    /// Sets the AWS credentials on `cmd`, as an operator's environment would.
    pub fn credentials<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT")
    }
}
