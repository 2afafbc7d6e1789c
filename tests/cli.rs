//! The command line's face: help texts and usage errors, as snapshots.

mod common;

use common::{run, ship};

fn snapshot_filters() -> Vec<(&'static str, &'static str)> {
    vec![(r"ship \d+\.\d+\.\d+", "ship [VERSION]")]
}

#[test]
fn top_level_help_lists_the_commands_and_exit_codes() {
    let out = run(ship().arg("--help")).expect(0);
    insta::with_settings!({filters => snapshot_filters()}, {
        insta::assert_snapshot!(out.stdout);
    });
}

#[test]
fn pack_help_explains_the_artifact() {
    let out = run(ship().args(["pack", "--help"])).expect(0);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let out = run(ship().args(["pack", "build", "--level", "40"])).expect(2);
    insta::assert_snapshot!(out.stderr);
    let out = run(ship().args(["verify", "x.tar.zst", "--digest", "abc"])).expect(2);
    assert!(
        out.stderr
            .contains("invalid sha256 digest \"abc\": expected 64 hexadecimal digits"),
        "{}",
        out.stderr
    );
    run(ship().arg("frobnicate")).expect(2);
}

#[test]
fn version_flag_prints_the_version() {
    let out = run(ship().arg("--version")).expect(0);
    assert_eq!(out.stdout, format!("ship {}\n", env!("CARGO_PKG_VERSION")));
}
