//! A full disk, for real: the app root on a small tmpfs. Needs root (to mount);
//! without it the test fails under CI and is skipped elsewhere (see `runs_here`).

mod common;

use std::process::Command;

use common::{Host, artifact_with};

/// A tmpfs mounted over the host's directory, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, options: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs failed");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_release_that_does_not_fit_is_refused_and_the_host_keeps_running() {
    if !common::skip::runs_here(common::skip::is_root(), "root, to mount a tmpfs") {
        return;
    }
    let host = Host::new();
    std::fs::create_dir_all(host.root()).unwrap();
    let _fs = Tmpfs::mount(&host.root(), "size=48m");
    host.receive(&artifact_with("v1", |_| {}).0).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    let (big, _) = artifact_with("v2", |tree| {
        let noise: Vec<u8> = (0..40u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(tree.join("big.bin"), noise).unwrap();
    });
    let out = host.receive(&big).expect(1);
    let error = out.event("failed")["message"].as_str().unwrap().to_owned();
    assert!(error.contains("not enough disk space on"), "{error}");
    assert!(error.contains(&host.root_str()), "{error}");
    assert_eq!(host.releases(), ["v1"]);
    assert!(host.incoming().is_empty());
    host.check_invariants();
}

#[test]
fn running_out_of_space_while_unpacking_leaves_no_trace() {
    if !common::skip::runs_here(common::skip::is_root(), "root, to mount a tmpfs") {
        return;
    }
    let host = Host::new();
    std::fs::create_dir_all(host.root()).unwrap();
    // Plenty of bytes, few inodes: the space check passes, creating files fails.
    let _fs = Tmpfs::mount(&host.root(), "size=200m,nr_inodes=60");
    host.receive(&artifact_with("v1", |_| {}).0).expect(0);
    host.agent("activate", &["v1"], None).expect(0);
    let (many, _) = artifact_with("v2", |tree| {
        for i in 0..80 {
            std::fs::write(tree.join(format!("public/page{i}.html")), format!("{i}")).unwrap();
        }
    });
    let out = host.receive(&many).expect(1);
    let failed = out.event("failed");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot create "),
        "{failed}"
    );
    assert!(
        failed["causes"][0]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{failed}"
    );
    assert_eq!(host.releases(), ["v1"]);
    assert!(host.incoming().is_empty());
    assert_eq!(host.journal().last().unwrap()["result"], "failed");
    host.check_invariants();
}
