//! `gantry state`: a read-only dump of what the state directories hold —
//! pods, containers (state, pid, monitor and whether it is alive), the
//! mounts each holds, and images with their layers — for bug reports.
//!
//! It reads the on-disk records only, never the daemon's locks, so it works
//! with the daemon stopped, running or wedged. A record it cannot read or
//! parse is listed under `problems` rather than ending the dump.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use gantry_imageservice::store::ImageRecord;
use gantry_runtimeservice::container::{monitor_alive, ContainerRecord};
use gantry_runtimeservice::pod::PodRecord;
use serde::Serialize;

use crate::config::Config;

/// Records are small; anything bigger is not one of ours.
const MAX_RECORD_BYTES: u64 = 16 << 20;
/// A state directory with more entries than this is reported truncated.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Serialize)]
pub struct StateDump {
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub daemon: Daemon,
    pub pods: Vec<Pod>,
    pub containers: Vec<Container>,
    pub images: Vec<Image>,
    /// Records that could not be read, with why.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Serialize)]
pub struct Daemon {
    /// Whether a gantry holds the state directory's lock.
    pub running: bool,
    pub pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct Pod {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub state: String,
    pub runtime_handler: String,
    pub created_at: i64,
    pub ips: Vec<String>,
    pub network: Option<String>,
    pub cgroup: String,
    /// The init of a shared PID namespace, if the pod has one.
    pub init_pid: i32,
    pub init_alive: bool,
    /// Namespace pins and other mounts under the pod's directories.
    pub mounts: Vec<String>,
    pub containers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Container {
    pub id: String,
    pub pod_id: String,
    /// False when no pod record has this container's pod ID.
    pub pod_known: bool,
    pub name: String,
    pub state: String,
    pub image: String,
    pub image_id: String,
    pub handler: String,
    pub pid: i32,
    pub pid_alive: bool,
    pub monitor_pid: i32,
    pub monitor_alive: bool,
    pub exit_code: i32,
    pub log_path: String,
    pub rootfs_mounted: bool,
    /// The rootfs and whatever else is mounted under the container's
    /// directory.
    pub mounts: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Image {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Compressed bytes, as `ListImages` reports them.
    pub size: u64,
    pub artifact_type: Option<String>,
    pub layers: Vec<Layer>,
}

#[derive(Debug, Serialize)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    /// Whether the unpacked snapshot is on disk.
    pub unpacked: bool,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Problem {
    pub path: PathBuf,
    pub error: String,
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_RECORD_BYTES {
        return Err(format!("larger than {MAX_RECORD_BYTES} bytes"));
    }
    Ok(buf)
}

/// Parses every record `record_of` names in `dir`'s entries; failures go
/// to `problems`. A missing directory holds nothing.
fn records<T: serde::de::DeserializeOwned>(
    dir: &Path,
    record_of: impl Fn(&Path) -> Option<PathBuf>,
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(Problem {
                path: dir.to_path_buf(),
                error: e.to_string(),
            });
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => {
                if paths.len() >= MAX_ENTRIES {
                    problems.push(Problem {
                        path: dir.to_path_buf(),
                        error: format!("more than {MAX_ENTRIES} entries; the rest are left out"),
                    });
                    break;
                }
                if let Some(p) = record_of(&e.path()) {
                    paths.push(p);
                }
            }
            Err(e) => problems.push(Problem {
                path: dir.to_path_buf(),
                error: e.to_string(),
            }),
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        match read_bounded(&path)
            .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => out.push(r),
            Err(error) => problems.push(Problem { path, error }),
        }
    }
    out
}

/// Mount points from a mountinfo text, unescaped (`\040` is a space).
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    gantry_common::mountinfo::parse(mountinfo)
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

fn mounts_under(mounts: &[PathBuf], dirs: &[PathBuf]) -> Vec<String> {
    let mut found: Vec<String> = mounts
        .iter()
        .filter(|m| dirs.iter().any(|d| m.starts_with(d)))
        .map(|m| m.display().to_string())
        .collect();
    found.sort();
    found.dedup();
    found
}

fn alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Reads the state of the gantry configured by `config`.
pub fn dump(config: &Config) -> StateDump {
    let mut problems = Vec::new();
    let mounts = mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let runtime_root = &config.runtime.root;

    let pod_records: Vec<PodRecord> = records(
        &runtime_root.join("sandboxes"),
        |p| p.is_dir().then(|| p.join("sandbox.json")),
        &mut problems,
    );
    let container_records: Vec<ContainerRecord> = records(
        &runtime_root.join("containers"),
        |p| p.is_dir().then(|| p.join("container.json")),
        &mut problems,
    );
    let image_records: Vec<ImageRecord> = records(
        &config.image.root.join("index"),
        |p| (p.extension().is_some_and(|e| e == "json")).then(|| p.to_path_buf()),
        &mut problems,
    );

    let mut by_pod: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for c in &container_records {
        by_pod.entry(&c.pod_id).or_default().push(c.id.clone());
    }
    let pods: Vec<Pod> = pod_records
        .iter()
        .map(|p| {
            let meta = p.config.metadata.clone().unwrap_or_default();
            let mut dirs = vec![
                runtime_root.join("sandboxes").join(&p.id),
                config.state_dir.join("pods").join(&p.id),
            ];
            dirs.extend(
                [&p.netns, &p.ipc_ns, &p.uts_ns, &p.pid_ns]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
            Pod {
                id: p.id.clone(),
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                state: format!("{:?}", p.state),
                runtime_handler: p.runtime_handler.clone(),
                created_at: p.created_at,
                ips: p.ips.clone(),
                network: p.network.clone(),
                cgroup: p.cgroup.clone(),
                init_pid: p.init_pid,
                init_alive: alive(p.init_pid),
                mounts: mounts_under(&mounts, &dirs),
                containers: by_pod.get(p.id.as_str()).cloned().unwrap_or_default(),
            }
        })
        .collect();
    let containers = container_records
        .iter()
        .map(|c| Container {
            id: c.id.clone(),
            pod_id: c.pod_id.clone(),
            pod_known: pod_records.iter().any(|p| p.id == c.pod_id),
            name: c
                .config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            state: format!("{:?}", c.state),
            image: c
                .config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            image_id: c.image_id.clone(),
            handler: c.handler.clone(),
            pid: c.pid,
            pid_alive: alive(c.pid),
            monitor_pid: c.monitor_pid,
            monitor_alive: monitor_alive(c.monitor_pid, &c.id),
            exit_code: c.exit_code,
            log_path: c.log_path.clone(),
            rootfs_mounted: c.rootfs_mounted,
            mounts: mounts_under(&mounts, &[runtime_root.join("containers").join(&c.id)]),
        })
        .collect();
    let snapshots = config.image.root.join("snapshots");
    let images = image_records
        .into_iter()
        .map(|i| Image {
            size: i.size(),
            layers: i
                .layers
                .iter()
                .map(|l| Layer {
                    digest: l.digest.clone(),
                    size: l.size,
                    diff_id: l.diff_id.clone(),
                    unpacked: l
                        .diff_id
                        .split_once(':')
                        .is_some_and(|(_, hex)| snapshots.join(hex).is_dir()),
                })
                .collect(),
            id: i.id,
            repo_tags: i.repo_tags,
            repo_digests: i.repo_digests,
            artifact_type: i.artifact_type,
        })
        .collect();
    let pid = crate::reload::running_pid(&config.state_dir).ok();
    StateDump {
        root: config.root.clone(),
        state_dir: config.state_dir.clone(),
        daemon: Daemon {
            running: pid.is_some(),
            pid,
        },
        pods,
        containers,
        images,
        problems,
    }
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..13).unwrap_or(id)
}

/// The dump as readable tables.
pub fn table(d: &StateDump) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let daemon = match d.daemon.pid {
        Some(pid) => format!("running (pid {pid})"),
        None => "not running".into(),
    };
    let _ = writeln!(
        out,
        "root {}  state_dir {}  daemon {daemon}\n",
        d.root.display(),
        d.state_dir.display()
    );
    let _ = writeln!(
        out,
        "PODS\n{:<14} {:<9} {:<24} {:<8} {:<16} MOUNTS",
        "ID", "STATE", "NAMESPACE/NAME", "HANDLER", "IPS"
    );
    for p in &d.pods {
        let _ = writeln!(
            out,
            "{:<14} {:<9} {:<24} {:<8} {:<16} {}",
            short(&p.id),
            p.state,
            format!("{}/{}", p.namespace, p.name),
            if p.runtime_handler.is_empty() {
                "(default)"
            } else {
                &p.runtime_handler
            },
            p.ips.join(","),
            p.mounts.len()
        );
    }
    let _ = writeln!(
        out,
        "\nCONTAINERS\n{:<14} {:<14} {:<8} {:<16} {:<8} {:<15} MOUNTS",
        "ID", "POD", "STATE", "NAME", "PID", "MONITOR"
    );
    for c in &d.containers {
        let monitor = format!(
            "{} ({})",
            c.monitor_pid,
            if c.monitor_alive { "alive" } else { "gone" }
        );
        let _ = writeln!(
            out,
            "{:<14} {:<14} {:<8} {:<16} {:<8} {:<15} {}",
            short(&c.id),
            short(&c.pod_id),
            c.state,
            c.name,
            c.pid,
            monitor,
            c.mounts.len()
        );
    }
    let _ = writeln!(
        out,
        "\nIMAGES\n{:<14} {:>12} {:>6}  TAGS",
        "ID", "SIZE", "LAYERS"
    );
    for i in &d.images {
        let _ = writeln!(
            out,
            "{:<14} {:>12} {:>6}  {}",
            short(&i.id),
            i.size,
            i.layers.len(),
            i.repo_tags.join(",")
        );
    }
    if !d.problems.is_empty() {
        let _ = writeln!(out, "\nPROBLEMS");
        for p in &d.problems {
            let _ = writeln!(out, "{}: {}", p.path.display(), p.error);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_points_are_unescaped() {
        let text = "36 35 98:0 /mnt1 /mnt\\040with\\040space rw,noatime master:1 - ext3 /dev/root rw\n37 35 0:5 / /run/gantry/pods/abc/net rw - nsfs nsfs rw\n";
        assert_eq!(
            mount_points(text),
            [
                PathBuf::from("/mnt with space"),
                PathBuf::from("/run/gantry/pods/abc/net")
            ]
        );
        let m = mount_points(text);
        assert_eq!(
            mounts_under(&m, &[PathBuf::from("/run/gantry/pods/abc")]),
            ["/run/gantry/pods/abc/net"]
        );
    }

    #[test]
    fn corrupt_and_partial_records_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_yaml(Some(&format!(
            "root: {0}/root\nstate_dir: {0}/state\nsocket: {0}/state/g.sock\n",
            dir.path().display()
        )))
        .unwrap();
        // Nothing there at all: an empty dump.
        let d = dump(&config);
        assert!(d.pods.is_empty() && d.containers.is_empty() && d.images.is_empty());
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert!(!d.daemon.running);

        let sandboxes = config.runtime.root.join("sandboxes");
        std::fs::create_dir_all(sandboxes.join("bad")).unwrap();
        std::fs::write(
            sandboxes.join("bad/sandbox.json"),
            b"{\"version\": 1, \"id\":",
        )
        .unwrap();
        // A directory whose record was never written.
        std::fs::create_dir_all(sandboxes.join("empty")).unwrap();
        let containers = config.runtime.root.join("containers");
        std::fs::create_dir_all(containers.join("c1")).unwrap();
        std::fs::write(containers.join("c1/container.json"), b"[]").unwrap();
        let index = config.image.root.join("index");
        std::fs::create_dir_all(&index).unwrap();
        std::fs::write(index.join("x.json"), b"not json").unwrap();
        std::fs::write(index.join("x.json.tmp123"), b"ignored").unwrap();

        let d = dump(&config);
        let paths: Vec<PathBuf> = d.problems.iter().map(|p| p.path.clone()).collect();
        assert_eq!(
            paths,
            [
                sandboxes.join("bad/sandbox.json"),
                sandboxes.join("empty/sandbox.json"),
                containers.join("c1/container.json"),
                index.join("x.json"),
            ]
        );
        assert!(d.pods.is_empty() && d.containers.is_empty() && d.images.is_empty());
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["problems"].as_array().unwrap().len(), 4);
        assert!(table(&d).contains("PROBLEMS"));
    }
}
