//! CreateContainer: the record, the rootfs, the spec and the monitor
//! that creates the container through the OCI runtime, and the roll back
//! of each step.

use super::*;

impl ContainerService {
    pub async fn create(&self, pod_id: &str, config: cri::ContainerConfig) -> Result<String> {
        let pod = self.pods.store.find(pod_id)?;
        let pod_id = pod.id.clone();
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {pod_id} is not ready"
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("container metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument(
                "container metadata.name is required".into(),
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::InvalidArgument("container image is required".into()));
        }
        let id = new_id()?;
        let image = match self.images.acquire(&image_name, &id, &id).await {
            Ok(Some(image)) => image,
            Ok(None) => return Err(Error::NotFound(format!("image {image_name:?}"))),
            Err(e) => {
                // The lease may be taken even if what it leads to is not
                // usable.
                self.release_images(&id).await;
                return Err(e);
            }
        };
        // Until the record exists, a failure must let go of the image
        // itself; after, destroy does.
        let recorded = self.record_new(&id, &pod, &pod_id, &meta, &config, &image);
        if let Err(e) = recorded {
            self.release_images(&id).await;
            return Err(e);
        }
        let span = info_span!("container", container = %id, pod = %pod_id, name = %meta.name);
        let _guard = self.lock(&id).await;
        let started = Instant::now();
        let result = self
            .create_inner(&id, &pod, &config, &image)
            .instrument(span.clone())
            .await;
        match result {
            Ok(()) => {
                self.metrics.observe_phase(phase::RUNTIME_CREATE, started);
                let _e = span.enter();
                info!("container created");
                Ok(id)
            }
            Err(e) => {
                warn!(container = %id, error = %e, "container create failed; rolling back");
                self.destroy(&id).await;
                Err(e)
            }
        }
    }

    /// Lets go of the images container `id` held; a failure leaves the
    /// leases to the reconciliation at the next start.
    pub(super) async fn release_images(&self, id: &str) {
        if let Err(e) = self.images.release(id).await {
            warn!(container = %id, error = %e, "releasing the container's images");
        }
    }

    /// Checks the new container against the pod and its image and writes
    /// its first record (state `Creating`).
    pub(super) fn record_new(
        &self,
        id: &str,
        pod: &crate::pod::PodRecord,
        pod_id: &str,
        meta: &cri::ContainerMetadata,
        config: &cri::ContainerConfig,
        image: &ResolvedImage,
    ) -> Result<()> {
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.as_str())
            .unwrap_or_default();
        if let Some(artifact_type) = &image.artifact_type {
            return Err(Error::FailedPrecondition(format!(
                "image {image_name:?} is an OCI artifact ({artifact_type}), not a container \
                 image: it has no root file system to run"
            )));
        }
        let runtime = self.runtime(&pod.runtime_handler)?;
        let stop_signal = crate::signal::stop_signal(config, &image.config)?;
        let key = format!("{}_{}_{}", meta.name, meta.attempt, pod_id);
        let id = id.to_string();
        let pod_id = pod_id.to_string();
        {
            let log_path = match (pod.config.log_directory.as_str(), config.log_path.as_str()) {
                (d, l) if !d.is_empty() && !l.is_empty() => gantry_monitor::crilog::log_file(d, l)
                    .map_err(Error::InvalidArgument)?
                    .display()
                    .to_string(),
                (_, l) if l.starts_with('/') => {
                    return Err(Error::InvalidArgument(format!(
                        "log_path {l:?} is absolute; it must be relative to the pod's log_directory"
                    )))
                }
                _ => self.cdir(&id).join("container.log").display().to_string(),
            };
            let rec = ContainerRecord {
                version: RECORD_VERSION,
                id: id.clone(),
                pod_id: pod_id.clone(),
                state: ContainerState::Creating,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                config: config.clone(),
                image_id: image.id.clone(),
                image_ref: image.image_ref.clone(),
                log_path,
                handler: runtime.name().to_string(),
                pid: 0,
                monitor_pid: 0,
                rootfs_mounted: true,
                user: None,
                stop_signal: stop_signal as i32,
            };
            let same_name = |r: &ContainerRecord| {
                let m = r.config.metadata.clone().unwrap_or_default();
                format!("{}_{}_{}", m.name, m.attempt, r.pod_id) == key
            };
            if let Err(other) = self.records.reserve(rec.clone(), same_name) {
                return Err(Error::AlreadyExists(format!(
                    "container name {key:?} is already used by {}",
                    other.id
                )));
            }
            let made = private_dir(&self.cdir(&id).join("bundle"))
                .map_err(Error::io("creating the container directory"))
                .and_then(|()| self.persist(&rec));
            if let Err(e) = made {
                self.records.forget(&id);
                let _ = std::fs::remove_dir_all(self.cdir(&id));
                return Err(e);
            }
        }
        Ok(())
    }

    pub(super) async fn create_inner(
        &self,
        id: &str,
        pod: &crate::pod::PodRecord,
        config: &cri::ContainerConfig,
        image: &ResolvedImage,
    ) -> Result<()> {
        let cdir = self.cdir(id);
        let bundle = cdir.join("bundle");
        let rootfs = bundle.join("rootfs");
        for d in [&rootfs, &cdir.join("upper"), &cdir.join("work")] {
            std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        if image.snapshots.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "image {} has no layers",
                image.id
            )));
        }
        let userns = crate::container::userns::PodUserns::of(pod)?;
        if let Some(u) = &userns {
            crate::userns::let_pod_root_through(&bundle).map_err(Error::io(
                "opening the path to the rootfs for the pod's root",
            ))?;
            let lowers: Vec<&Path> = image.snapshots.iter().rev().map(PathBuf::as_path).collect();
            crate::userns::idmap::overlay(
                &lowers,
                &cdir.join("upper"),
                &cdir.join("work"),
                &rootfs,
                std::os::fd::AsFd::as_fd(&u.fd),
                &u.maps,
            )?;
        } else {
            // The top layer first, as overlayfs wants them.
            let lower: Vec<PathBuf> = image.snapshots.iter().rev().cloned().collect();
            self.host
                .mount_overlay(&lower, &cdir.join("upper"), &cdir.join("work"), &rootfs)
                .map_err(Error::io("mounting the container rootfs"))?;
        }
        let pid = self.pid_namespace(pod, config)?;
        let driver = self.pods.config.cgroup_driver;
        // Records from before pods owned a cgroup keep the old layout.
        let pod_cgroup = if pod.cgroup.is_empty() {
            let parent = pod
                .config
                .linux
                .as_ref()
                .map(|l| l.cgroup_parent.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or("/gantry");
            parent.to_string()
        } else {
            pod.cgroup.clone()
        };
        let cgroups_path = crate::cgroup::container_path(driver, &pod_cgroup, id);
        let image_mounts = crate::container::image_volume::mount_all(
            &*self.host,
            &*self.images,
            id,
            &cdir,
            &config.mounts,
        )
        .await?;
        // Each image VOLUME gets a directory of its own, seeded with what
        // the image has there, as containerd does; it goes with the
        // container's directory.
        let mut volumes = Vec::new();
        let root = Rootfs::open(&rootfs)?;
        for (i, dest) in image_volumes(&image.config, &config.mounts)?
            .into_iter()
            .enumerate()
        {
            let host = cdir.join("volumes").join(i.to_string());
            std::fs::create_dir_all(&host)
                .map_err(Error::io(format!("creating {}", host.display())))?;
            // A copy of a whole tree: the worker is handed off meanwhile.
            gantry_common::records::blocking(|| seed_volume(&root, &dest, &host))?;
            volumes.push((dest, host));
        }
        let security = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let apparmor = crate::oci::spec::apparmor::profile_for(
            &security,
            &crate::oci::spec::apparmor::Kernel,
        )?;
        let mut spec = generate(&SpecInput {
            id,
            config,
            pod: &pod.config,
            image_config: &image.config,
            rootfs: &rootfs,
            pod_dir: &self.pods.store.pod_dir(&pod.id),
            netns: pod.netns.as_deref(),
            ipc_ns: pod.ipc_ns.as_deref(),
            uts_ns: pod.uts_ns.as_deref(),
            pid,
            cgroups_path: &cgroups_path,
            volumes: &volumes,
            image_mounts: &image_mounts,
            apparmor: apparmor.as_deref(),
            recursive_read_only: self
                .handler_features(&pod.runtime_handler)
                .recursive_read_only_mounts,
        })?;
        match &userns {
            Some(u) => {
                crate::container::userns::apply(&mut spec, &cdir, config, u)?;
                crate::container::userns::as_pod_root(&u.maps, || {
                    prepare_rootfs_paths(&rootfs, &spec)
                })??;
            }
            None => prepare_rootfs_paths(&rootfs, &spec)?,
        }
        let spec_json =
            serde_json::to_vec_pretty(&spec).map_err(Error::corrupt("encoding the OCI spec"))?;
        write_atomic(&bundle.join("config.json"), &spec_json)
            .map_err(Error::io("writing config.json"))?;
        // The runtime sees the container only at StartContainer; a command
        // the image lacks must fail here, as it does with runtimes that
        // create at once.
        if let Some(process) = spec.process() {
            let args = process.args().clone().unwrap_or_default();
            let env = process.env().clone().unwrap_or_default();
            let mounts: Vec<String> = spec
                .mounts()
                .iter()
                .flatten()
                .map(|m| m.destination().display().to_string())
                .collect();
            crate::container::rootfs_path::check_command(
                &rootfs,
                args.first().map(String::as_str).unwrap_or_default(),
                &env,
                &process.cwd().display().to_string(),
                &mounts,
            )
            .map_err(Error::FailedPrecondition)?;
        }
        let user = spec.process().as_ref().map(|p| {
            let u = p.user();
            cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: u.uid().into(),
                    gid: u.gid().into(),
                    supplemental_groups: u
                        .additional_gids()
                        .iter()
                        .flatten()
                        .map(|g| i64::from(*g))
                        .collect(),
                }),
            }
        });
        self.update_then_emit(id, |r| {
            r.state = ContainerState::Created;
            r.user = user;
            Some(cri::ContainerEventType::ContainerCreatedEvent)
        })?;
        Ok(())
    }

    /// Runs the created container: its monitor starts and runs the runtime
    /// (`run --detach`), which creates and starts it in one go (one
    /// runtime start-up instead of two). Returns the monitor's and the
    /// container's PIDs.
    pub(super) async fn run_monitor(
        &self,
        id: &str,
        rec: &ContainerRecord,
        runtime: &dyn OciRuntime,
    ) -> Result<(i32, i32)> {
        let runtime = runtime.invocation();
        let cdir = self.cdir(id);
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut arg = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            args.push(name.into());
            args.push(value.as_ref().to_owned());
        };
        arg("--id", &id);
        arg("--bundle", &cdir.join("bundle"));
        arg("--runtime", &runtime.binary);
        arg("--runtime-root", &runtime.root);
        for a in &runtime.global_args {
            arg("--runtime-arg", a);
        }
        if rec.config.tty {
            arg("--tty", &"true");
        }
        if rec.config.stdin {
            arg(
                "--stdin",
                &if rec.config.stdin_once {
                    "once"
                } else {
                    "true"
                },
            );
        }
        let node_cap = self.pods.config.log_max_bytes;
        // Checked when the pod ran; a record from before the check keeps
        // the node's cap.
        let log_cap = self
            .pods
            .store
            .get(&rec.pod_id)
            .and_then(|p| {
                crate::container::log_cap::effective_cap(node_cap, &p.config.annotations).ok()
            })
            .unwrap_or(node_cap);
        let (log_dir, _) = log_dir_and_file(rec);
        arg("--log-max-bytes", &log_cap.to_string());
        arg("--log-dir", &log_dir);
        arg("--log-path", &rec.log_path);
        arg("--exit-file", &cdir.join(EXIT_FILE));
        arg("--pid-file", &cdir.join("pid"));
        private_dir(&runtime.root).map_err(Error::io("creating the runtime root"))?;
        // Runtimes that talk to their init over files in their state
        // directory (youki's notify socket) do so as the pod's root when the
        // pod has a user namespace of its own.
        if self
            .pods
            .store
            .get(&rec.pod_id)
            .is_some_and(|p| p.user_ns.is_some())
        {
            crate::userns::let_pod_root_through(&runtime.root)
                .map_err(Error::io("opening the runtime root for the pod's root"))?;
        }
        let line = self
            .host
            .run_monitor(&self.monitor, &args, &cdir.join("monitor.log"))
            .await
            .map_err(Error::io(format!("starting {}", self.monitor.display())))?;
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|p| p.parse().ok()),
            words.next().and_then(|p| p.parse().ok()),
        ) {
            (Some("ok"), Some(mpid), Some(cpid)) => Ok((mpid, cpid)),
            _ => {
                let msg = line.strip_prefix("error ").unwrap_or(&line).to_string();
                Err(Error::FailedPrecondition(format!(
                    "starting the container failed: {msg}"
                )))
            }
        }
    }

    /// Undoes whatever an unfinished run of a created container left: a
    /// monitor, the runtime's container, its cgroup, the monitor's files.
    /// The container is created again afterwards, and can be started.
    pub(super) async fn undo_run(&self, id: &str, rec: &ContainerRecord) {
        self.release_runtime(id, rec, true).await;
        let cdir = self.cdir(id);
        for f in ["pid", EXIT_FILE, "attach.sock"] {
            let _ = std::fs::remove_file(cdir.join(f));
        }
    }

    /// The container's PID namespace per its (or else the pod's) options.
    pub(super) fn pid_namespace(
        &self,
        pod: &crate::pod::PodRecord,
        config: &cri::ContainerConfig,
    ) -> Result<PidNamespace> {
        let own = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let pod_opts = pod
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        let opts = own.or(pod_opts).unwrap_or_default();
        match cri::NamespaceMode::try_from(opts.pid).unwrap_or(cri::NamespaceMode::Container) {
            cri::NamespaceMode::Node => Ok(PidNamespace::Host),
            cri::NamespaceMode::Pod => match &pod.pid_ns {
                Some(p) => Ok(PidNamespace::Join(p.clone())),
                // The pod was not started with a shared PID namespace.
                None => Ok(PidNamespace::Private),
            },
            cri::NamespaceMode::Target => {
                let target = self
                    .resolve(&opts.target_id)?
                    .and_then(|id| self.refresh(&id))
                    .ok_or_else(|| {
                        Error::NotFound(format!("target container {}", opts.target_id))
                    })?;
                if target.state != ContainerState::Running {
                    return Err(Error::FailedPrecondition(format!(
                        "target container {} is not running",
                        target.id
                    )));
                }
                Ok(PidNamespace::Join(PathBuf::from(format!(
                    "/proc/{}/ns/pid",
                    target.pid
                ))))
            }
            cri::NamespaceMode::Container => Ok(PidNamespace::Private),
        }
    }
}
