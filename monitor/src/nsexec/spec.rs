//! The part of the container's OCI spec an exec inherits, as gantry-exec
//! reads it (only the fields it applies; unknown ones are ignored).

use super::*;

/// The parts of the OCI spec an exec needs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Spec {
    pub process: Process,
    pub linux: Linux,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Linux {
    pub seccomp: Option<Seccomp>,
    #[serde(rename = "cgroupsPath")]
    pub cgroups_path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Process {
    pub cwd: String,
    pub env: Vec<String>,
    pub user: User,
    pub rlimits: Vec<Rlimit>,
    pub oom_score_adj: Option<i32>,
    pub capabilities: Option<Capabilities>,
    pub no_new_privileges: bool,
    pub apparmor_profile: String,
    pub selinux_label: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub umask: Option<u32>,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub permitted: Vec<String>,
    pub ambient: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Seccomp {
    pub default_action: String,
    pub default_errno_ret: Option<u32>,
    pub architectures: Vec<String>,
    pub flags: Vec<String>,
    pub listener_path: String,
    pub syscalls: Vec<SyscallRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SyscallRule {
    pub names: Vec<String>,
    pub action: String,
    pub errno_ret: Option<u32>,
    pub args: Vec<SyscallArg>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SyscallArg {
    pub index: u32,
    pub value: u64,
    pub value_two: u64,
    pub op: String,
}

pub fn load_spec(path: &Path) -> Result<Spec> {
    let bytes = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| ExecError::Spec(format!("{}: {e}", path.display())))
}
