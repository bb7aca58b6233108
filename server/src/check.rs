//! `gantry check`: a preflight of what the daemon needs from the host, one
//! line per item.

use std::path::Path;

use crate::config::Config;

pub struct Item {
    pub name: &'static str,
    pub result: Result<String, String>,
}

/// `gantry check --json`: `{"ok": <all passed>, "checks": [{"name",
/// "ok", "detail"}, ...]}`, in the order the checks ran. Names repeat
/// (one `runtime` per handler, one `cni plugin` per plugin).
pub fn to_json(items: &[Item]) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = items
        .iter()
        .map(|i| {
            let (ok, detail) = match &i.result {
                Ok(d) => (true, d),
                Err(d) => (false, d),
            };
            serde_json::json!({"name": i.name, "ok": ok, "detail": detail})
        })
        .collect();
    serde_json::json!({
        "ok": items.iter().all(|i| i.result.is_ok()),
        "checks": checks,
    })
}

fn cgroup_mode() -> Result<String, String> {
    let fs = rustix::fs::statfs("/sys/fs/cgroup").map_err(|e| format!("/sys/fs/cgroup: {e}"))?;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    if fs.f_type as i64 == CGROUP2_SUPER_MAGIC {
        return Ok("v2 (unified)".into());
    }
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        return Ok("v1 with v2 at /sys/fs/cgroup/unified (hybrid)".into());
    }
    if Path::new("/sys/fs/cgroup/memory").exists() {
        return Ok("v1".into());
    }
    Err("no cgroup hierarchy found under /sys/fs/cgroup".into())
}

/// Whether pods with `hostUsers: false` can run: an overlay of idmapped
/// layers on the state root's filesystem, then a trial container per
/// handler. Not having them is a limit, not a fault (such pods are refused
/// and kubelet keeps them off the node), so these items never fail.
fn user_namespaces(config: &Config) -> Vec<Item> {
    use gantry_runtimeservice::userns::{probe, trial};
    let unavailable = |why: String| {
        vec![Item {
            name: "user namespaces",
            result: Ok(format!(
                "not available, hostUsers: false pods are refused: {why}"
            )),
        }]
    };
    if !rustix::process::geteuid().is_root() {
        return unavailable("checking needs root".into());
    }
    // The nearest existing directory: check creates no state root.
    let Some(root) = config.root.ancestors().find(|p| p.is_dir()) else {
        return unavailable(format!("no directory of {} exists", config.root.display()));
    };
    if let Err(why) = probe::idmapped_overlay(root) {
        return unavailable(format!("idmapped layers on {}: {why}", root.display()));
    }
    let mut items = vec![Item {
        name: "user namespaces",
        result: Ok(format!(
            "overlay of idmapped layers works on {}",
            root.display()
        )),
    }];
    for (name, handler) in &config.runtime.runtimes {
        let Some(binary) = handler.resolve() else {
            continue;
        };
        let result = match trial::run(&binary, &handler.args, root) {
            Ok(()) => format!("handler {name}: hostUsers: false pods run"),
            Err(why) => format!("handler {name}: no user namespaces (its pods are refused): {why}"),
        };
        items.push(Item {
            name: "user namespaces",
            result: Ok(result),
        });
    }
    items
}

pub fn run_checks(config: &Config) -> Vec<Item> {
    let mut items = Vec::new();
    items.push(Item {
        name: "root",
        result: if rustix::process::geteuid().is_root() {
            Ok("running as root".into())
        } else {
            Err("gantry needs root (mounts, namespaces, cgroups)".into())
        },
    });
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    items.push(Item {
        name: "overlayfs",
        result: if filesystems
            .lines()
            .any(|l| l.trim_end().ends_with("overlay"))
        {
            Ok("overlay filesystem available".into())
        } else {
            Err("the kernel lists no overlay filesystem (modprobe overlay)".into())
        },
    });
    items.push(Item {
        name: "namespaces",
        result: ["net", "ipc", "uts", "pid", "mnt"]
            .iter()
            .find(|ns| !Path::new("/proc/self/ns").join(ns).exists())
            .map(|ns| Err(format!("the kernel lacks {ns} namespaces")))
            .unwrap_or_else(|| Ok("net, ipc, uts, pid and mnt namespaces available".into())),
    });
    items.push(Item {
        name: "cgroups",
        result: cgroup_mode(),
    });
    items.push(Item {
        name: "cgroup driver",
        result: match config.runtime.cgroup_driver {
            gantry_runtimeservice::CgroupDriver::Cgroupfs => {
                Ok("cgroupfs: gantry makes the pod cgroups".into())
            }
            gantry_runtimeservice::CgroupDriver::Systemd
                if gantry_runtimeservice::cgroup::systemd_running() =>
            {
                Ok("systemd: runc is run with --systemd-cgroup".into())
            }
            gantry_runtimeservice::CgroupDriver::Systemd => Err(
                "cgroup_driver is systemd but systemd is not running (/run/systemd/system is missing); containers will fail to start".into(),
            ),
        },
    });
    for (name, handler) in &config.runtime.runtimes {
        items.push(Item {
            name: "runtime",
            result: match handler.resolve() {
                Some(p) => Ok(format!("handler {name}: {}", p.display())),
                None => Err(format!(
                    "handler {name}: {} not found",
                    handler.path.display()
                )),
            },
        });
    }
    for (name, handler) in &config.runtime.runtimes {
        if handler
            .resolve()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == "runsc"))
        {
            items.push(Item {
                name: "runtime",
                result: Ok(format!(
                    "handler {name}: no terminal exec (exec -it answers Unimplemented): runsc \
                     hands a terminal over --console-socket only with exec --detach, whose \
                     re-executed child loses the container ID (runsc 20221219); plain exec, \
                     ExecSync and attach work"
                )),
            });
        }
    }
    let native: Vec<&str> = config
        .runtime
        .runtimes
        .iter()
        .filter(|(_, h)| h.exec_mode() == gantry_runtimeservice::ExecMode::Native)
        .map(|(n, _)| n.as_str())
        .collect();
    if !native.is_empty() {
        items.push(Item {
            name: "exec helper",
            result: match crate::daemon::exec_helper_path(config) {
                // It runs from a sealed in-memory copy, so the copy must work.
                Ok(p) if p.is_file() => {
                    gantry_monitor::sealed_exe::sealed_copy(&p, std::ffi::OsStr::new("gantry-exec"))
                        .map(|_| {
                            format!(
                                "{} (native exec for {}, run from a sealed memfd copy)",
                                p.display(),
                                native.join(", ")
                            )
                        })
                        .map_err(|e| {
                            format!(
                        "{}: no sealed copy can be made ({e}): exec in {} containers will fail",
                        p.display(),
                        native.join(", ")
                    )
                        })
                }
                Ok(p) => Err(format!(
                    "{} not found: exec in {} containers will fail",
                    p.display(),
                    native.join(", ")
                )),
                Err(e) => Err(format!("{e:#}")),
            },
        });
    }
    items.extend(user_namespaces(config));
    let want = (!config.cni.network_name.is_empty()).then_some(config.cni.network_name.as_str());
    match gantry_cni::default_network(&config.cni.conf_dir, want) {
        Ok(net) => {
            items.push(Item {
                name: "cni config",
                result: Ok(format!("network {} from {}", net.name, net.path.display())),
            });
            for t in &net.plugin_types {
                let found = config
                    .cni
                    .bin_dirs
                    .iter()
                    .map(|d| d.join(t))
                    .find(|p| p.is_file());
                items.push(Item {
                    name: "cni plugin",
                    result: match found {
                        Some(p) => Ok(format!("{t}: {}", p.display())),
                        None => Err(format!(
                            "{t}: not found in {}",
                            config
                                .cni
                                .bin_dirs
                                .iter()
                                .map(|d| d.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    },
                });
            }
        }
        Err(e) => items.push(Item {
            name: "cni config",
            result: Err(e.to_string()),
        }),
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lists_every_check_and_the_overall_result() {
        let items = vec![
            Item {
                name: "root",
                result: Ok("running as root".into()),
            },
            Item {
                name: "runtime",
                result: Err("handler youki: youki not found".into()),
            },
        ];
        let v = to_json(&items);
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][0]["name"], "root");
        assert_eq!(v["checks"][0]["ok"], true);
        assert_eq!(v["checks"][1]["detail"], "handler youki: youki not found");
        assert_eq!(to_json(&items[..1])["ok"], true);
        // The real checks on this host serialise the same way.
        let config = Config::from_yaml(None).unwrap();
        let real = to_json(&run_checks(&config));
        let names: Vec<&str> = real["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for want in [
            "root",
            "overlayfs",
            "namespaces",
            "cgroups",
            "runtime",
            "cni config",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }
}
