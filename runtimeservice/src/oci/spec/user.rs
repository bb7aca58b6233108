//! The user a container runs as: resolved against the image's own
//! passwd and group files, read only through [`crate::container::rootfs_path`].

use super::*;

/// The image's `/etc/passwd` and `/etc/group`, each read at most once,
/// inside the rootfs and with a size cap (see [`crate::container::rootfs_path`]).
pub(super) struct Accounts<'a> {
    rootfs: &'a Path,
    root: Option<Rootfs>,
    passwd: Option<Option<String>>,
    group: Option<Option<String>>,
}

impl<'a> Accounts<'a> {
    fn new(rootfs: &'a Path) -> Self {
        Accounts {
            rootfs,
            root: None,
            passwd: None,
            group: None,
        }
    }

    fn read(&mut self, path: &str) -> Result<Option<String>> {
        let root = match self.root.take() {
            Some(r) => r,
            None => Rootfs::open(self.rootfs)?,
        };
        // The runtime reads these files again inside the container, where
        // /dev is its own: what they lead to there must be what we read.
        let text = root.read_runtime_text(path, MAX_SMALL_FILE);
        self.root = Some(root);
        Ok(text?)
    }

    fn passwd(&mut self) -> Result<&str> {
        if self.passwd.is_none() {
            self.passwd = Some(self.read("/etc/passwd")?);
        }
        Ok(self
            .passwd
            .as_ref()
            .and_then(|p| p.as_deref())
            .unwrap_or(""))
    }

    fn group(&mut self) -> Result<&str> {
        if self.group.is_none() {
            self.group = Some(self.read("/etc/group")?);
        }
        Ok(self.group.as_ref().and_then(|g| g.as_deref()).unwrap_or(""))
    }
}

/// Looks a name up in a passwd/group style text: its id and, for passwd,
/// its primary group.
pub(super) fn lookup(text: &str, name: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || f[0] != name {
            return None;
        }
        let id = f[2].parse().ok()?;
        Some((id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0)))
    })
}

/// uid, gid and extra groups: `run_as_user`/`run_as_username`/`run_as_group`
/// first, else the image's USER (`uid`, `name`, `uid:gid`, `name:group`).
pub fn user(
    config: &cri::ContainerConfig,
    image: &Value,
    rootfs: &Path,
) -> Result<(u32, u32, Vec<u32>)> {
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let image_user = image["config"]["User"].as_str().unwrap_or("");
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let mut accounts = Accounts::new(rootfs);
    let resolve_user = |accounts: &mut Accounts<'_>, name: &str| -> Result<(u32, u32)> {
        if name.is_empty() {
            return Ok((0, 0));
        }
        if let Ok(uid) = name.parse::<u32>() {
            return Ok((uid, lookup_uid_gid(accounts.passwd()?, uid).unwrap_or(0)));
        }
        lookup(accounts.passwd()?, name).ok_or_else(|| {
            Error::InvalidArgument(format!("user {name:?} is not in the image's /etc/passwd"))
        })
    };
    if sc.is_some_and(|s| {
        s.run_as_group.is_some() && s.run_as_user.is_none() && s.run_as_username.is_empty()
    }) {
        return Err(Error::InvalidArgument(
            "run_as_group needs run_as_user or run_as_username".into(),
        ));
    }
    let (mut uid, mut gid) = match (
        sc.and_then(|s| s.run_as_user.as_ref()),
        sc.map(|s| s.run_as_username.as_str()),
    ) {
        (Some(u), _) => {
            let uid = u32::try_from(u.value).map_err(|_| {
                Error::InvalidArgument(format!("run_as_user {} is out of range", u.value))
            })?;
            (uid, lookup_uid_gid(accounts.passwd()?, uid).unwrap_or(0))
        }
        (None, Some(name)) if !name.is_empty() => resolve_user(&mut accounts, name)?,
        _ => resolve_user(&mut accounts, user_part)?,
    };
    if sc.and_then(|s| s.run_as_user.as_ref()).is_none()
        && sc.is_none_or(|s| s.run_as_username.is_empty())
    {
        if let Some(g) = group_part {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup(accounts.group()?, g)
                    .map(|(gid, _)| gid)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "group {g:?} is not in the image's /etc/group"
                        ))
                    })?,
            };
        }
    }
    if let Some(g) = sc.and_then(|s| s.run_as_group.as_ref()) {
        gid = u32::try_from(g.value).map_err(|_| {
            Error::InvalidArgument(format!("run_as_group {} is out of range", g.value))
        })?;
    }
    if uid == u32::MAX {
        uid = 0;
    }
    let strict = sc.is_some_and(|s| {
        s.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32
    });
    // Merge (the default): the groups the image's /etc/group gives the
    // user, then the requested ones; Strict: the requested ones only.
    let mut extra: Vec<u32> = if strict {
        Vec::new()
    } else {
        image_groups(&mut accounts, uid)?
    };
    for g in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        let g = u32::try_from(*g).map_err(|_| {
            Error::InvalidArgument(format!("supplemental group {g} is out of range"))
        })?;
        extra.push(g);
    }
    // The primary group leads the list, as containerd does since
    // CVE-2023-25173: without it, a process that drops to another gid could
    // keep rights the container's primary group was meant to limit.
    extra.retain(|g| *g != gid);
    extra.sort_unstable();
    extra.dedup();
    extra.insert(0, gid);
    Ok((uid, gid, extra))
}

/// The groups whose member list in the image's /etc/group names the user
/// with this uid (found in its /etc/passwd).
pub(super) fn image_groups(accounts: &mut Accounts<'_>, uid: u32) -> Result<Vec<u32>> {
    let Some(name) = accounts.passwd()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    }) else {
        return Ok(Vec::new());
    };
    Ok(accounts
        .group()?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f.get(3)?;
            members
                .split(',')
                .any(|m| m.trim() == name)
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect())
}

pub(super) fn lookup_uid_gid(passwd: &str, uid: u32) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok()? == uid)
            .then(|| f[3].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Value {
        json!({"config": {"Entrypoint": ["/ep"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=image"], "User": "app"}})
    }

    #[test]
    fn users_resolve_against_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let c = cri::ContainerConfig::default();
        assert_eq!(
            user(&c, &image(), d.path()).unwrap(),
            (1000, 1001, vec![1001])
        );
        let img = json!({"config": {"User": "app:staff"}});
        assert_eq!(user(&c, &img, d.path()).unwrap(), (1000, 50, vec![50]));
        let img = json!({"config": {"User": "nobody"}});
        assert!(user(&c, &img, d.path()).is_err());
        let c = cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    run_as_group: Some(cri::Int64Value { value: 7 }),
                    supplemental_groups: vec![8, 9],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            user(&c, &json!({}), d.path()).unwrap(),
            (1000, 7, vec![7, 8, 9])
        );
    }

    #[test]
    fn hostile_account_files_are_neither_followed_nor_read_without_end() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "alice:x:4242:4242::/:/bin/sh\n").unwrap();
        std::fs::write(host.path().join("group"), "hostgrp:x:4343:root\n").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), d.path().join("etc/passwd"))
            .unwrap();
        std::os::unix::fs::symlink(host.path().join("group"), d.path().join("etc/group")).unwrap();
        let c = cri::ContainerConfig::default();
        // The host's alice is not the image's, nor are the host's groups
        // root's: links to nothing in the image are refused, since the
        // runtime would follow them in the container.
        for img in [json!({"config": {"User": "alice"}}), json!({})] {
            let e = user(&c, &img, d.path()).unwrap_err();
            assert!(e.to_string().contains("/etc/passwd"), "{e}");
            assert_eq!(
                tonic::Status::from(e).code(),
                tonic::Code::FailedPrecondition
            );
        }
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        let e = user(&c, &json!({}), d.path()).unwrap_err();
        assert!(e.to_string().contains("/etc/group"), "{e}");

        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("etc/passwd")).unwrap();
        std::fs::create_dir(d.path().join("dev")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.path().join("dev/zero").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = user(&c, &json!({}), d.path()).unwrap_err();
        assert!(e.to_string().contains("mounts over"), "{e}");
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::fs::rename(d.path().join("dev/zero"), d.path().join("etc/passwd")).unwrap();
        for img in [json!({"config": {"User": "alice"}}), json!({})] {
            let e = user(&c, &img, d.path()).unwrap_err();
            assert!(
                e.to_string().contains("/etc/passwd") && e.to_string().contains("FIFO"),
                "{e}"
            );
            assert_eq!(
                tonic::Status::from(e).code(),
                tonic::Code::FailedPrecondition
            );
        }
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), vec![b'#'; 5 << 20]).unwrap();
        let e = user(&c, &json!({}), d.path()).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn supplemental_groups_merge_with_the_images_unless_strict() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "app:x:1000:1000::/:/bin/sh
",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "app:x:1000:\nwheel:x:10:root,app\naudio:x:29:other\nvideo:x:44: app \n",
        )
        .unwrap();
        let with = |policy: cri::SupplementalGroupsPolicy| cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 1000 }),
                    supplemental_groups: vec![5000, 10],
                    supplemental_groups_policy: policy as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = user(
            &with(cri::SupplementalGroupsPolicy::Merge),
            &json!({}),
            d.path(),
        );
        assert_eq!(merged.unwrap(), (1000, 1000, vec![1000, 10, 44, 5000]));
        let strict = user(
            &with(cri::SupplementalGroupsPolicy::Strict),
            &json!({}),
            d.path(),
        );
        assert_eq!(strict.unwrap(), (1000, 1000, vec![1000, 10, 5000]));
    }
}
