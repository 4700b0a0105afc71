//! Keeps docs/configuration.md true to the code: every setting's variable
//! and default must be documented there.

use clap::CommandFactory;
use lizards_shared::config::Config;

#[test]
fn every_setting_is_documented_with_its_default() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let command = Config::command();
    let mut missing = Vec::new();
    for arg in command.get_arguments() {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_string_lossy();
        let row = doc.lines().find(|line| line.starts_with(&format!("| `{env}` |")));
        match row {
            None => missing.push(format!("{env}: no row")),
            Some(row) => {
                for default in arg.get_default_values() {
                    let default = default.to_string_lossy();
                    if !row.contains(&format!("`{default}`")) {
                        missing.push(format!("{env}: default {default} not in its row"));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "docs/configuration.md is out of date: {missing:#?}");
}
