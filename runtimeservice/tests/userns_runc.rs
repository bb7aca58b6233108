//! runc 1.1 in a pod user namespace made by `userns`: it joins the pinned
//! namespace (it still wants the mappings in the spec, to know the host id
//! of the container's root) and runs on an overlay of layers idmapped by
//! gantry, with an idmapped host directory bind-mounted in. Root inside is
//! the mapped id outside, image files keep their owners, and host files
//! outside the mapping stay out of reach.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use gantry_cni::netns::Private;
use gantry_runtimeservice::userns::{idmap, pin, IdMap, Mappings};
use oci_spec::runtime::{
    LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder,
    Spec,
};

fn runc() -> PathBuf {
    ["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("runc is not installed: apt-get install runc")
}

const HOST: u32 = 5_000_000;

/// Everything the test mounted, undone in reverse whatever happened.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn image(lower: &Path) {
    std::fs::create_dir_all(lower.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "hostdir", "hostfile", "data"] {
        std::fs::create_dir_all(lower.join(d)).unwrap();
    }
    std::fs::remove_dir(lower.join("hostfile")).unwrap();
    std::fs::write(lower.join("hostfile"), b"").unwrap();
    std::fs::copy("/bin/busybox", lower.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", lower.join("bin/sh")).unwrap();
    // An image file of a non-root user, as an image layer would hold it.
    std::fs::write(lower.join("data/owned"), b"image").unwrap();
    std::os::unix::fs::chown(lower.join("data/owned"), Some(1234), Some(4321)).unwrap();
    std::os::unix::fs::chown(lower.join("data"), Some(1234), Some(4321)).unwrap();
}

#[test]
fn runc_runs_in_a_pinned_user_namespace_on_an_idmapped_rootfs() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test drives runc and needs root"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut mounts = Mounts(vec![]);
    let (lower, upper, work, rootfs) = (
        d.join("lower"),
        d.join("rw/upper"),
        d.join("rw/work"),
        d.join("rootfs"),
    );
    for p in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(p).unwrap();
    }
    image(&lower);
    let maps = Mappings {
        uid: IdMap {
            container: 0,
            host: HOST,
            len: 65536,
        },
        gid: IdMap {
            container: 0,
            host: HOST,
            len: 65536,
        },
    };
    let ns_dir = d.join("ns");
    std::fs::create_dir(&ns_dir).unwrap();
    let all = Private {
        net: true,
        ipc: true,
        uts: true,
    };
    let pinned = pin::create(&ns_dir, &maps, all).unwrap();
    struct Unpin(pin::PinnedUserns);
    impl Drop for Unpin {
        fn drop(&mut self) {
            pin::remove(&self.0);
        }
    }
    let pinned = Unpin(pinned);
    let userns = pin::open(&pinned.0.user).unwrap();
    idmap::overlay(
        &[lower.as_path()],
        &upper,
        &work,
        &rootfs,
        userns.as_fd(),
        &maps,
    )
    .unwrap();
    mounts.0.push(rootfs.clone());

    // A host directory of the node's user 1000, idmapped like a volume, and
    // a root-owned host file bound in without an idmap.
    let host_dir = d.join("volume");
    std::fs::create_dir(&host_dir).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &host_dir,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    mounts.0.push(host_dir.clone());
    std::fs::write(host_dir.join("f"), b"vol").unwrap();
    std::os::unix::fs::chown(host_dir.join("f"), Some(1000), Some(1000)).unwrap();
    let vol = d.join("volume-idmapped");
    idmap::bind_creating(&host_dir, &vol, userns.as_fd()).unwrap();
    mounts.0.push(vol.clone());
    let host_file = d.join("host-owned");
    std::fs::write(&host_file, b"node's").unwrap();

    let script = "id -u; id -g; cat /proc/self/uid_map; stat -c %u:%g /data/owned /hostdir/f; \
        echo new > /written && echo wrote-image; echo new > /hostdir/new && echo wrote-volume; \
        echo x > /hostfile || echo host-file-refused; \
        mount -t tmpfs none /tmp && echo tmpfs-inside; \
        mount --bind /hostfile /tmp 2>/dev/null; mknod /tmp/sda b 8 0 2>/dev/null || echo mknod-refused";
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(false));
    process.set_args(Some(vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
    ]));
    let mut caps = process.capabilities().clone().unwrap();
    // CAP_SYS_ADMIN inside must still not reach the node.
    let mut bounding = caps.bounding().clone().unwrap_or_default();
    bounding.insert(oci_spec::runtime::Capability::SysAdmin);
    bounding.insert(oci_spec::runtime::Capability::Mknod);
    caps.set_bounding(Some(bounding.clone()));
    caps.set_effective(Some(bounding.clone()));
    caps.set_permitted(Some(bounding));
    process.set_capabilities(Some(caps));
    spec.set_process(Some(process));
    spec.set_hostname(None);
    let mut root = spec.root().clone().unwrap();
    root.set_path(rootfs.clone());
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    let mut ms = spec.mounts().clone().unwrap();
    for (src, dst) in [(&vol, "/hostdir"), (&host_file, "/hostfile")] {
        ms.push(
            MountBuilder::default()
                .destination(dst)
                .typ("bind")
                .source(src)
                .options(vec!["rbind".into(), "rw".into()])
                .build()
                .unwrap(),
        );
    }
    spec.set_mounts(Some(ms));
    let ns = |t, p: Option<&PathBuf>| {
        let mut b = LinuxNamespaceBuilder::default().typ(t);
        if let Some(p) = p {
            b = b.path(p.clone());
        }
        b.build().unwrap()
    };
    let id_map = |m: IdMap| {
        LinuxIdMappingBuilder::default()
            .container_id(m.container)
            .host_id(m.host)
            .size(m.len)
            .build()
            .unwrap()
    };
    let others = &pinned.0.others;
    let linux = LinuxBuilder::default()
        .namespaces(vec![
            ns(LinuxNamespaceType::User, Some(&pinned.0.user)),
            ns(LinuxNamespaceType::Network, others.net.as_ref()),
            ns(LinuxNamespaceType::Ipc, others.ipc.as_ref()),
            ns(LinuxNamespaceType::Uts, others.uts.as_ref()),
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Mount, None),
        ])
        .uid_mappings(vec![id_map(maps.uid)])
        .gid_mappings(vec![id_map(maps.gid)])
        .masked_paths(
            spec.linux()
                .as_ref()
                .unwrap()
                .masked_paths()
                .clone()
                .unwrap_or_default(),
        )
        .readonly_paths(
            spec.linux()
                .as_ref()
                .unwrap()
                .readonly_paths()
                .clone()
                .unwrap_or_default(),
        )
        .build()
        .unwrap();
    spec.set_linux(Some(linux));
    let bundle = d.join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    spec.save(bundle.join("config.json")).unwrap();

    let id = format!("gantry-userns-{}", std::process::id());
    let out = Command::new(runc())
        .arg("--root")
        .arg(d.join("runc"))
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = Command::new(runc())
        .arg("--root")
        .arg(d.join("runc"))
        .args(["delete", "-f", &id])
        .output();
    assert!(out.status.success(), "runc: {stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "{stdout}");
    assert_eq!(lines[1], "0", "{stdout}");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["0", "5000000", "65536"]
    );
    assert_eq!(lines[3], "1234:4321", "image ownership kept: {stdout}");
    assert_eq!(lines[4], "1000:1000", "host ownership mapped: {stdout}");
    for want in [
        "wrote-image",
        "wrote-volume",
        "host-file-refused",
        "tmpfs-inside",
        "mknod-refused",
    ] {
        assert!(lines.contains(&want), "{want} missing: {stdout}\n{stderr}");
    }
    // Root inside wrote as its host id into the container's own upper layer,
    // and as root through the volume's idmap.
    assert_eq!(
        std::fs::metadata(upper.join("written")).unwrap().uid(),
        HOST
    );
    assert_eq!(std::fs::metadata(host_dir.join("new")).unwrap().uid(), 0);
    assert_eq!(std::fs::read(&host_file).unwrap(), b"node's");
}
