//! The few systemd operations the steps need, through `systemctl` (always there where systemd
//! runs, and what an operator would type).

use std::path::{Path, PathBuf};

use super::step::{self, StepError, StepResult};

/// Where bale puts its unit files: the admin's directory, which wins over packaged units.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// True when systemd is the running init (the test for it that systemd documents).
pub fn is_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn unit_path(unit: &str) -> PathBuf {
    Path::new(UNIT_DIR).join(unit)
}

fn systemctl(args: &[&str]) -> StepResult<String> {
    step::run("systemctl", args)
}

/// Writes a unit file; true when it changed (then a daemon-reload is due).
pub fn write_unit(unit: &str, text: &str) -> StepResult<bool> {
    step::write_file(&unit_path(unit), text.as_bytes(), 0o644)
}

pub fn daemon_reload() -> StepResult<()> {
    systemctl(&["daemon-reload"]).map(|_| ())
}

pub fn is_active(unit: &str) -> bool {
    std::process::Command::new("systemctl")
        .args(["is-active", "--quiet", unit])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_enabled(unit: &str) -> bool {
    std::process::Command::new("systemctl")
        .args(["is-enabled", "--quiet", unit])
        .status()
        .is_ok_and(|s| s.success())
}

pub fn enable_now(unit: &str) -> StepResult<()> {
    systemctl(&["enable", "--now", unit]).map(|_| ())
}

pub fn restart(unit: &str) -> StepResult<()> {
    systemctl(&["restart", unit]).map(|_| ())
}

/// Stops and disables a unit; a unit systemd does not know is fine.
pub fn stop_disable(unit: &str) -> StepResult<()> {
    if !unit_path(unit).exists() && !is_active(unit) {
        return Ok(());
    }
    match systemctl(&["disable", "--now", unit]) {
        Ok(_) => Ok(()),
        Err(StepError::Command { detail, .. })
            if detail.contains("not loaded") || detail.contains("does not exist") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The last lines of a unit's journal, for error messages.
pub fn recent_log(unit: &str) -> String {
    step::run("journalctl", &["-u", unit, "-n", "15", "--no-pager", "-q"])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Makes sure `unit` runs the current `text`: writes it, reloads systemd, enables and starts
/// it, and restarts it when it was running an older version. Returns whether anything changed.
pub fn install_and_start(unit: &str, text: &str) -> StepResult<bool> {
    let changed = write_unit(unit, text)?;
    if changed {
        daemon_reload()?;
    }
    let was_active = is_active(unit);
    let was_enabled = is_enabled(unit);
    if changed && was_active {
        restart(unit)?;
    }
    if !was_active || !was_enabled {
        enable_now(unit)?;
    }
    Ok(changed || !was_active || !was_enabled)
}

/// Stops, disables and deletes a unit bale wrote. Returns whether anything was there.
pub fn remove(unit: &str) -> StepResult<bool> {
    let path = unit_path(unit);
    if !path.exists() {
        return Ok(false);
    }
    stop_disable(unit)?;
    step::remove_file(&path)?;
    daemon_reload()?;
    // A unit that failed stays listed as failed until reset.
    let _ = systemctl(&["reset-failed", unit]);
    Ok(true)
}
