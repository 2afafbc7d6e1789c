//! The `ship.toml` parser (`ShipToml::parse`). Errors name the file. A config
//! that parses carries a behaviour that passes the manifest's checks and survives
//! the manifest's JSON, and it means the same whatever its TOML layout: the same
//! document written back by the `toml` crate (other quoting, tables for dotted
//! keys) parses to an equal config.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use manifests::behaviour::Behaviour;
use manifests::config::ShipToml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/ship.toml");
    let config = match ShipToml::parse(text, path) {
        Ok(config) => config,
        Err(e) => {
            assert!(e.to_string().contains("/fuzz/ship.toml"), "{e}");
            return;
        }
    };
    let behaviour = config.behaviour();
    behaviour
        .check()
        .expect("a config's behaviour passes the manifest's checks");
    let json = serde_json::to_vec(&behaviour).expect("a behaviour serializes");
    let back: Behaviour = serde_json::from_slice(&json).expect("a behaviour reads back");
    assert_eq!(back, behaviour);
    let table: toml::Table = toml::from_str(text).expect("a config is a TOML table");
    if let Ok(again) = toml::to_string(&table) {
        let reparsed = ShipToml::parse(&again, path).unwrap_or_else(|e| {
            panic!("the same document in another layout fails: {e:?}\n{again}")
        });
        assert_eq!(reparsed, config, "{again}");
    }
});
