//! `pollbus check`: prints the plan of a valid configuration and, with `--probe`, asks the sink
//! and every vendor whether what the plan names is there.

use std::process::ExitCode;

use pollbus::config::Config;

/// Prints the plan; with `probe`, attaches a sender per topic and fetches one record per
/// resource. Exit 1 when a probe failed or a configured field is missing.
pub async fn check(config: Config, probe: bool) -> anyhow::Result<ExitCode> {
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
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
