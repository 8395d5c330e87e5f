//! `schemas/config.schema.json` is generated from the config types; this fails when the
//! committed file is stale. Regenerate with `UPDATE_SCHEMAS=1 cargo test --test config_schema`.

use std::path::Path;

#[test]
fn committed_config_schema_matches_the_types() {
    let generated =
        serde_json::to_string_pretty(&pollbus::config::Config::json_schema()).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/config.schema.json");
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/config.schema.json is stale: run `UPDATE_SCHEMAS=1 cargo test --test config_schema` and commit it"
    );
}

#[test]
fn example_configs_are_valid_against_the_schema() {
    let schema = pollbus::config::Config::json_schema();
    let validator = jsonschema::draft202012::new(&schema).expect("schema compiles");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: serde_json::Value = toml::from_str(&text).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(
                errors.is_empty(),
                "{}: {}",
                path.display(),
                errors.join("; ")
            );
            pollbus::config::Config::parse(&text, &path.display().to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn the_kubernetes_configmap_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/base/pollbus.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    pollbus::config::Config::parse(&text, "deploy/kubernetes/base/pollbus.toml")
        .unwrap_or_else(|e| panic!("{e}"));
}
