//! `pollbus import`: another tool's configuration as a pollbus configuration.

use std::process::ExitCode;

use pollbus::cli::ImportFrom;

use super::EXIT_CONFIG;

/// The configuration on stdout (or `--out`), warnings on stderr. Exit 64 when the input cannot
/// be read or imported.
pub fn import(from: &ImportFrom) -> ExitCode {
    let ImportFrom::CloudElements { file, out } = from;
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("pollbus: cannot read {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let imported = match pollbus::import::cloud_elements(&text, &file.display().to_string()) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("pollbus: import failed: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in &imported.warnings {
        eprintln!("pollbus: warning: {warning}");
    }
    match out {
        None => print!("{}", imported.toml),
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.toml) {
                eprintln!("pollbus: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("pollbus: wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}
