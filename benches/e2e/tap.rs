//! `tap-rest-api-msdk` (a Singer tap on the Meltano SDK) extracting the same simulator table,
//! measured like pollbus: wall, CPU and peak RSS from `wait4`, requests from the simulator.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pollbus_testkit::servicenow::ServiceNowSim;
use serde_json::Value;

use crate::process;

/// The installed tap.
pub struct Tap {
    exe: PathBuf,
    version: String,
}

/// One full extraction.
pub struct TapRun {
    /// Records in the table.
    pub n: usize,
    /// RECORD messages the tap wrote.
    pub records: usize,
    /// Wall time.
    pub wall: Duration,
    /// CPU seconds and peak RSS.
    pub usage: process::Usage,
    /// Table API requests and response bytes.
    pub requests: usize,
    /// Response bytes.
    pub bytes: usize,
    /// `tap-rest-api-msdk --version`.
    pub version: String,
}

impl Tap {
    /// Installs (or finds) the tap in `.venv-bench` through `scripts/setup-bench.sh`.
    pub fn setup() -> Result<Tap> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/setup-bench.sh"))
            .current_dir(&root)
            .stderr(Stdio::inherit())
            .output()
            .context("running scripts/setup-bench.sh")?;
        if !out.status.success() {
            bail!("scripts/setup-bench.sh failed with {}", out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let exe = PathBuf::from(stdout.lines().last().context("no tap path printed")?.trim());
        let version = Command::new(&exe)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Ok(Tap { exe, version })
    }

    /// Extracts every incident: the same fields pollbus asks for, the same page size.
    pub async fn run(
        &self,
        sim: &ServiceNowSim,
        n: usize,
        page_size: u32,
        tracked: &[String],
    ) -> Result<TapRun> {
        eprintln!("-- N = {n}, tap-rest-api-msdk");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let template = std::fs::read_to_string(root.join("scripts/tap-servicenow.json.template"))?;
        let text = template
            .replace("@BASE_URL@", sim.base_url().trim_end_matches('/'))
            .replace("@USER@", "admin")
            .replace("@PASSWORD@", "admin")
            .replace("@PAGE_SIZE@", &page_size.to_string());
        let mut config: Value = serde_json::from_str(&text).context("the tap config template")?;
        let mut fields: Vec<&str> = tracked.iter().map(String::as_str).collect();
        fields.extend([
            "sys_id",
            "sys_updated_on",
            "sys_created_on",
            "sys_class_name",
            "sys_updated_by",
        ]);
        config["streams"][0]["params"]["sysparm_fields"] = Value::String(fields.join(","));
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("tap.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let out_path = dir.path().join("out.jsonl");
        sim.clear_requests();
        let started = Instant::now();
        let child = Command::new(&self.exe)
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(dir.path().join("tap.log"))?)
            .spawn()
            .context("starting the tap")?;
        let exit = tokio::task::spawn_blocking(move || process::wait(child, started, 0)).await??;
        if exit.code != Some(0) {
            let log = std::fs::read_to_string(dir.path().join("tap.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "the tap exited with {:?}:\n{}",
                exit.code,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let records = std::io::BufReader::new(std::fs::File::open(&out_path)?)
            .lines()
            .map_while(Result::ok)
            .filter(|l| {
                l.starts_with("{\"type\":\"RECORD\"") || l.starts_with("{\"type\": \"RECORD\"")
            })
            .count();
        if records != n {
            bail!("the tap extracted {records} of {n} records");
        }
        let requests = sim.table_requests();
        Ok(TapRun {
            n,
            records,
            wall: exit.wall,
            usage: exit.usage,
            requests: requests.len(),
            bytes: requests.iter().map(|r| r.response_bytes).sum(),
            version: self.version.clone(),
        })
    }
}
