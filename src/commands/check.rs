//! `pollbus check`: prints the plan of a valid configuration and, with `--probe`, asks the sink
//! and every vendor whether what the plan names is there.

use std::process::ExitCode;

use pollbus::config::Config;
use pollbus::source::Resource;
use serde_json::Value;

/// Prints the plan; with `probe`, attaches a sender per topic and fetches one record per
/// resource; with `fields` too, prints each resource's field map from one whole record. Exit 1
/// when a probe failed or a configured field is missing.
pub async fn check(config: Config, probe: bool, fields: bool) -> anyhow::Result<ExitCode> {
    print!("{}", super::plan::describe(&config));
    if !probe {
        return Ok(ExitCode::SUCCESS);
    }
    let app = super::start(config).await?;
    let mut ok = true;
    for (topic, result) in app.probe_sink().await {
        match result {
            Ok(()) => println!("probe topic {topic}: ok, a sender attached"),
            Err(e) => {
                ok = false;
                println!("probe topic {topic}: failed: {e}");
            }
        }
    }
    for (resource, result) in app.probe().await {
        match result {
            Ok(Some(missing)) if missing.is_empty() => {
                println!("probe {resource}: ok, every configured field is present")
            }
            Ok(Some(missing)) => {
                ok = false;
                println!("probe {resource}: missing {}", missing.join(", "));
            }
            Ok(None) => {
                println!("probe {resource}: reachable, but no record to check fields against")
            }
            Err(e) => {
                ok = false;
                println!("probe {resource}: failed: {e}");
            }
        }
    }
    if fields {
        for (resource, result) in app.samples().await {
            match result {
                Ok(Some(record)) => print!("{}", field_map(&resource, &record)),
                Ok(None) => println!("# {}: no record to read a field map from", resource.key()),
                Err(e) => {
                    ok = false;
                    println!("# {}: failed: {e}", resource.key());
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One record's top-level fields as a TOML field map (contract name = vendor field), to paste
/// below the resource's `[[sources.resources]]` entry: the fields `fields = "*"` would track
/// (the id, date and revision fields and the vendor's bookkeeping fields, which change on every
/// write, are left out); names a contract cannot carry (a `,`) are named in a comment.
fn field_map(resource: &Resource, record: &Value) -> String {
    let Some(object) = record.as_object() else {
        return format!("# {}: the record is not a JSON object\n", resource.key());
    };
    let left_out: Vec<&str> = resource.untracked.iter().map(String::as_str).collect();
    let mut map = indexmap::IndexMap::new();
    let mut refused = Vec::new();
    for key in object.keys() {
        if left_out.contains(&key.as_str()) {
            continue;
        }
        if key.trim().is_empty() || key.contains(',') {
            refused.push(key.as_str());
            continue;
        }
        map.insert(key.clone(), key.clone());
    }
    let mut out = format!(
        "# {}: {} fields of one record ({} left out: the id, dates and bookkeeping); paste below its [[sources.resources]] entry in place of its fields, and remove what should not publish changes\n",
        resource.key(),
        map.len(),
        left_out
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !refused.is_empty() {
        out.push_str(&format!(
            "# not listed (a contract field name cannot be empty or hold ','): {refused:?}\n"
        ));
    }
    out.push_str("[sources.resources.fields]\n");
    out.push_str(&toml::to_string(&map).unwrap_or_default());
    out
}
