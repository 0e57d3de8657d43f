//! The few systemd operations the steps need, through `systemctl` (always there where systemd
//! runs, and what an operator would type), on a host seen through its [`HostRoot`].

use std::path::{Path, PathBuf};

use super::host::{HostCommands, HostRoot};
use super::step::{StepError, StepResult};

/// Where bale puts its unit files: the admin's directory, which wins over packaged units.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// A unit file's host path.
pub fn unit_path(unit: &str) -> PathBuf {
    Path::new(UNIT_DIR).join(unit)
}

/// systemd on one host: its unit files under the root, `systemctl` through the commands.
#[derive(Clone, Copy)]
pub struct Systemd<'a> {
    root: &'a HostRoot,
    commands: &'a dyn HostCommands,
}

impl<'a> Systemd<'a> {
    pub fn new(root: &'a HostRoot, commands: &'a dyn HostCommands) -> Systemd<'a> {
        Systemd { root, commands }
    }

    /// True when systemd is the running init (the test for it that systemd documents).
    pub fn is_running(&self) -> bool {
        self.root.is_dir("/run/systemd/system")
    }

    fn systemctl(&self, args: &[&str]) -> StepResult<String> {
        self.commands.run("systemctl", args)
    }

    /// Writes a unit file; true when it changed (then a daemon-reload is due).
    pub fn write_unit(&self, unit: &str, text: &str) -> StepResult<bool> {
        Ok(self
            .root
            .write_file(unit_path(unit), text.as_bytes(), 0o644)?)
    }

    pub fn daemon_reload(&self) -> StepResult<()> {
        self.systemctl(&["daemon-reload"]).map(|_| ())
    }

    pub fn is_active(&self, unit: &str) -> bool {
        self.commands
            .succeeds("systemctl", &["is-active", "--quiet", unit])
    }

    pub fn is_enabled(&self, unit: &str) -> bool {
        self.commands
            .succeeds("systemctl", &["is-enabled", "--quiet", unit])
    }

    pub fn enable(&self, unit: &str) -> StepResult<()> {
        self.systemctl(&["enable", unit]).map(|_| ())
    }

    pub fn enable_now(&self, unit: &str) -> StepResult<()> {
        self.systemctl(&["enable", "--now", unit]).map(|_| ())
    }

    pub fn restart(&self, unit: &str) -> StepResult<()> {
        self.systemctl(&["restart", unit]).map(|_| ())
    }

    pub fn stop(&self, unit: &str) -> StepResult<()> {
        self.systemctl(&["stop", unit]).map(|_| ())
    }

    /// Stops and disables a unit; a unit systemd does not know is fine.
    pub fn stop_disable(&self, unit: &str) -> StepResult<()> {
        if !self.root.exists(unit_path(unit)) && !self.is_active(unit) {
            return Ok(());
        }
        match self.systemctl(&["disable", "--now", unit]) {
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
    pub fn recent_log(&self, unit: &str) -> String {
        self.commands
            .run("journalctl", &["-u", unit, "-n", "15", "--no-pager", "-q"])
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// Makes sure `unit` runs the current `text`: writes it, reloads systemd, enables and
    /// starts it, and restarts it when it was running an older version. Returns whether
    /// anything changed.
    pub fn install_and_start(&self, unit: &str, text: &str) -> StepResult<bool> {
        let changed = self.write_unit(unit, text)?;
        if changed {
            self.daemon_reload()?;
        }
        let was_active = self.is_active(unit);
        let was_enabled = self.is_enabled(unit);
        if changed && was_active {
            self.restart(unit)?;
        }
        if !was_active || !was_enabled {
            self.enable_now(unit)?;
        }
        Ok(changed || !was_active || !was_enabled)
    }

    /// Stops, disables and deletes a unit bale wrote. Returns whether anything was there.
    pub fn remove(&self, unit: &str) -> StepResult<bool> {
        let path = unit_path(unit);
        if !self.root.exists(&path) {
            return Ok(false);
        }
        self.stop_disable(unit)?;
        self.root.remove_file(&path)?;
        self.daemon_reload()?;
        // A unit that failed stays listed as failed until reset.
        let _ = self.systemctl(&["reset-failed", unit]);
        Ok(true)
    }
}
