//! The image index and the operations on it: pull, resolve, list, remove and
//! garbage collection of blobs and snapshots no image needs any more.
//!
//! Each image is one JSON record, `index/<id hex>.json`, written atomically;
//! the in-memory map is rebuilt from those files at start, so the index
//! survives restarts and never disagrees with the disk for long. Names point
//! to image IDs (the config digest) the way containerd's do: a tag moves to
//! the newest image pulled under it, and an image disappears when its last
//! name goes or when it is removed by ID.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn, Instrument};

use crate::config::ImageConfig;
use crate::content::{write_atomic, ContentStore};
use crate::error::{Error, Result};
use crate::manifest::{self, Descriptor, Parsed};
use crate::metrics::ImageMetrics;
use crate::reference::{digest_hex, is_image_id, is_lower_hex, ImageRef};
use crate::registry::{self, Credentials, Endpoint, RegistryClient};
use crate::snapshot::SnapshotStore;

const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub diff_id: String,
}

/// One image as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub version: u32,
    /// The config digest.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The platform manifest the layers came from.
    pub manifest_digest: String,
    /// What a tag resolved to (an index, or the manifest itself).
    pub target_digest: String,
    pub config_size: u64,
    pub manifest_size: u64,
    pub layers: Vec<LayerRecord>,
    /// The image's USER, as written in its config.
    pub user: String,
}

impl ImageRecord {
    /// Bytes the image occupies in compressed form, as containerd reports it.
    pub fn size(&self) -> u64 {
        self.config_size + self.manifest_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// Bytes and inodes under the image store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub struct ImageStore {
    config: ImageConfig,
    index_dir: PathBuf,
    content: ContentStore,
    snapshots: SnapshotStore,
    client: RegistryClient,
    images: RwLock<BTreeMap<String, ImageRecord>>,
    /// Blobs and snapshots an unfinished pull still needs; GC leaves them be.
    leases: Mutex<HashMap<String, usize>>,
    /// Serialises index updates and GC against each other.
    write: tokio::sync::Mutex<()>,
    metrics: ImageMetrics,
}

/// Releases a pull's claim on its digests when dropped.
struct Lease<'a> {
    store: &'a ImageStore,
    keys: Vec<String>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut leases = self.store.leases.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            if let Some(n) = leases.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    leases.remove(k);
                }
            }
        }
    }
}

impl ImageStore {
    pub fn open(config: ImageConfig, metrics: ImageMetrics) -> Result<Self> {
        let root = config.root.clone();
        let index_dir = root.join("index");
        std::fs::create_dir_all(&index_dir)
            .map_err(Error::io(format!("creating {}", index_dir.display())))?;
        let content = ContentStore::open(&root.join("content"))?;
        let snapshots = SnapshotStore::open(&root.join("snapshots"))?;
        let mut images = BTreeMap::new();
        for entry in std::fs::read_dir(&index_dir).map_err(Error::io("listing the image index"))? {
            let entry = entry.map_err(Error::io("listing the image index"))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                // Temp files from an interrupted write.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ImageRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(rec) if rec.version == RECORD_VERSION => {
                    images.insert(rec.id.clone(), rec);
                }
                Ok(rec) => {
                    warn!(path = %path.display(), version = rec.version, "skipping image record of unknown version")
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "skipping unreadable image record")
                }
            }
        }
        info!(images = images.len(), root = %root.display(), "image index loaded");
        let client = RegistryClient::new(&config)?;
        Ok(ImageStore {
            config,
            index_dir,
            content,
            snapshots,
            client,
            images: RwLock::new(images),
            leases: Mutex::default(),
            write: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    pub fn root(&self) -> &Path {
        &self.config.root
    }

    fn read_images(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ImageRecord>> {
        self.images.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.read_images().values().cloned().collect()
    }

    /// Finds an image by ID, unique ID prefix, tag or digest reference.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRecord>> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("no image given".into()));
        }
        let images = self.read_images();
        if is_image_id(name) {
            let id = format!("sha256:{}", name.trim_start_matches("sha256:"));
            return Ok(images.get(&id).cloned());
        }
        let parsed = ImageRef::parse(name);
        if let Ok(r) = &parsed {
            let wanted = match (&r.digest, r.tagged()) {
                (Some(d), _) => r.with_digest(d),
                (None, Some(t)) => t,
                (None, None) => return Ok(None),
            };
            let by_digest = r.digest.is_some();
            let found = images.values().find(|img| {
                if by_digest {
                    img.repo_digests.contains(&wanted)
                } else {
                    img.repo_tags.contains(&wanted)
                }
            });
            if let Some(img) = found {
                return Ok(Some(img.clone()));
            }
        }
        // A truncated ID, as `crictl images` prints them.
        let hex = name.trim_start_matches("sha256:");
        if is_lower_hex(hex) && !hex.is_empty() {
            let mut matches = images
                .values()
                .filter(|img| img.id["sha256:".len()..].starts_with(hex));
            if let (Some(one), None) = (matches.next(), matches.next()) {
                return Ok(Some(one.clone()));
            }
        }
        match parsed {
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stored config JSON of an image.
    pub fn config_json(&self, img: &ImageRecord) -> Result<Vec<u8>> {
        self.content
            .read(&img.id, self.config.limits.max_config_bytes)
    }

    pub fn snapshot_paths(&self, img: &ImageRecord) -> Result<Vec<PathBuf>> {
        img.layers
            .iter()
            .map(|l| self.snapshots.path(&l.diff_id))
            .collect()
    }

    fn lease(&self, keys: Vec<String>) -> Lease<'_> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for k in &keys {
            *leases.entry(k.clone()).or_default() += 1;
        }
        Lease { store: self, keys }
    }

    /// Pulls an image and returns its record.
    pub async fn pull(&self, name: &str, credentials: Option<Credentials>) -> Result<ImageRecord> {
        let image = ImageRef::parse(name)?;
        let span = info_span!("pull", image = %image);
        let started = Instant::now();
        let result = self.pull_inner(&image, credentials).instrument(span).await;
        self.metrics.observe_pull(started.elapsed(), result.is_ok());
        match &result {
            Ok(rec) => {
                info!(image = %image, id = %rec.id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled")
            }
            Err(e) => warn!(image = %image, error = %e, "pull failed"),
        }
        result
    }

    async fn pull_inner(
        &self,
        image: &ImageRef,
        credentials: Option<Credentials>,
    ) -> Result<ImageRecord> {
        let limits = &self.config.limits;
        let endpoints =
            registry::endpoints_for(&self.config, &image.registry, credentials.as_ref())?;
        let (endpoint, top) =
            registry::resolve_manifest(&self.client, &endpoints, image, limits.max_manifest_bytes)
                .await?;
        let mut lease_keys = vec![top.digest.clone()];
        let _top_lease = self.lease(lease_keys.clone());
        self.content.put_bytes(&top.digest, &top.bytes)?;

        let (manifest_digest, manifest_bytes, config_desc, layers) =
            match manifest::parse(&top.bytes, &top.media_type)? {
                Parsed::Manifest { config, layers } => {
                    (top.digest.clone(), top.bytes.clone(), config, layers)
                }
                Parsed::Index(entries) => {
                    let want = manifest::host_platform();
                    let chosen = manifest::choose_platform(&entries, &want).ok_or_else(|| {
                        Error::NoMatchingPlatform(format!(
                            "{}/{}{}",
                            want.os,
                            want.architecture,
                            want.variant
                                .as_deref()
                                .map(|v| format!("/{v}"))
                                .unwrap_or_default()
                        ))
                    })?;
                    let m = self
                        .client
                        .manifest(
                            &endpoint,
                            &image.repository,
                            &chosen.digest,
                            limits.max_manifest_bytes,
                        )
                        .await?;
                    if m.bytes.len() as u64 != chosen.size {
                        return Err(Error::DigestMismatch {
                            digest: chosen.digest.clone(),
                            reason: format!(
                                "manifest is {} bytes, the index says {}",
                                m.bytes.len(),
                                chosen.size
                            ),
                        });
                    }
                    self.content.put_bytes(&m.digest, &m.bytes)?;
                    match manifest::parse(&m.bytes, &m.media_type)? {
                        Parsed::Manifest { config, layers } => (m.digest, m.bytes, config, layers),
                        Parsed::Index(_) => {
                            return Err(Error::malformed(
                                "image index",
                                "an index points to another index",
                            ))
                        }
                    }
                }
            };
        if layers.len() > limits.max_layers {
            return Err(Error::LimitExceeded(format!(
                "image has {} layers, more than max_layers = {}",
                layers.len(),
                limits.max_layers
            )));
        }
        if config_desc.size > limits.max_config_bytes {
            return Err(Error::LimitExceeded(format!(
                "image config is {} bytes, more than max_config_bytes = {}",
                config_desc.size, limits.max_config_bytes
            )));
        }
        if let Some(l) = layers.iter().find(|l| l.size > limits.max_layer_bytes) {
            return Err(Error::LimitExceeded(format!(
                "layer {} is {} bytes, more than max_layer_bytes = {}",
                l.digest, l.size, limits.max_layer_bytes
            )));
        }
        lease_keys.push(manifest_digest.clone());
        lease_keys.push(config_desc.digest.clone());
        self.fetch_blob(&endpoint, &image.repository, &config_desc)
            .await?;
        let config_bytes = self
            .content
            .read(&config_desc.digest, limits.max_config_bytes)?;
        let config = manifest::parse_config(&config_bytes)?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(Error::malformed(
                "image",
                format!(
                    "{} layers but {} diff IDs in the config",
                    layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        for (l, d) in layers.iter().zip(&config.rootfs.diff_ids) {
            lease_keys.push(l.digest.clone());
            lease_keys.push(d.clone());
        }
        let _lease = self.lease(lease_keys);

        // Layers are independent directories, so they download and unpack
        // in parallel and in any order.
        let semaphore = tokio::sync::Semaphore::new(self.config.max_concurrent_downloads.max(1));
        let jobs = layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(layer, diff_id)| {
                let semaphore = &semaphore;
                let endpoint = &endpoint;
                async move {
                    let _permit = semaphore
                        .acquire()
                        .await
                        .map_err(|_| Error::Internal("semaphore closed".into()))?;
                    self.ensure_layer(endpoint, &image.repository, layer, diff_id)
                        .await
                }
            });
        try_join_all(jobs).await?;

        let user = config.config.and_then(|c| c.user).unwrap_or_default();
        let record = ImageRecord {
            version: RECORD_VERSION,
            id: config_desc.digest.clone(),
            repo_tags: image.tagged().into_iter().collect(),
            repo_digests: vec![image.with_digest(&top.digest)],
            manifest_digest,
            target_digest: top.digest.clone(),
            config_size: config_desc.size,
            manifest_size: manifest_bytes.len() as u64,
            layers: layers
                .iter()
                .zip(&config.rootfs.diff_ids)
                .map(|(l, d)| LayerRecord {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: d.clone(),
                })
                .collect(),
            user,
        };
        self.commit(record).await
    }

    /// Downloads a blob unless it is already stored; one download per digest
    /// however many pulls want it.
    async fn fetch_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        desc: &Descriptor,
    ) -> Result<()> {
        let _guard = self.content.lock(&desc.digest).await;
        if self.content.contains(&desc.digest) {
            return Ok(());
        }
        let started = Instant::now();
        let response = self.client.blob(endpoint, repository, &desc.digest).await?;
        let total = desc.size;
        let mut done = 0u64;
        let mut last_report = Instant::now();
        let metrics = &self.metrics;
        self.content
            .ingest(&desc.digest, desc.size, response.bytes_stream(), |n| {
                done += n;
                metrics.add_pull_bytes(n);
                if last_report.elapsed().as_secs() >= 5 {
                    last_report = Instant::now();
                    info!(digest = %desc.digest, done, total, "downloading");
                }
            })
            .await?;
        info!(
            digest = %desc.digest,
            bytes = desc.size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "blob downloaded"
        );
        Ok(())
    }

    async fn ensure_layer(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        layer: &Descriptor,
        diff_id: &str,
    ) -> Result<()> {
        digest_hex(diff_id)?;
        let _guard = self.snapshots.lock(diff_id).await;
        if self.snapshots.contains(diff_id) {
            return Ok(());
        }
        self.fetch_blob(endpoint, repository, layer).await?;
        let blob = self.content.blob_path(&layer.digest)?;
        let limits = self.config.limits.clone();
        let started = Instant::now();
        let diff = diff_id.to_string();
        let stats = self.snapshots.create(&diff, blob, limits).await;
        let stats = match stats {
            Ok(s) => s,
            Err(e) => {
                // A layer that does not unpack to its diff ID is bad content:
                // drop the blob too, so a retry downloads it again.
                if matches!(e, Error::DigestMismatch { .. }) {
                    let _ = self.content.remove(&layer.digest);
                }
                return Err(e);
            }
        };
        info!(
            diff_id,
            entries = stats.entries,
            bytes = stats.uncompressed_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "layer unpacked"
        );
        Ok(())
    }

    fn record_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self.index_dir.join(format!("{}.json", digest_hex(id)?)))
    }

    fn persist(&self, rec: &ImageRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&self.record_path(&rec.id)?, &bytes)
            .map_err(Error::io(format!("writing image record {}", rec.id)))
    }

    fn unpersist(&self, id: &str) -> Result<()> {
        match std::fs::remove_file(self.record_path(id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing image record {id}"))(e)),
        }
    }

    /// Adds a pulled image: its names move to it from any other image, and
    /// images left without names are dropped.
    async fn commit(&self, pulled: ImageRecord) -> Result<ImageRecord> {
        let _w = self.write.lock().await;
        let mut images = self
            .images
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut merged = images
            .get(&pulled.id)
            .cloned()
            .unwrap_or_else(|| pulled.clone());
        for t in &pulled.repo_tags {
            if !merged.repo_tags.contains(t) {
                merged.repo_tags.push(t.clone());
            }
        }
        for d in &pulled.repo_digests {
            if !merged.repo_digests.contains(d) {
                merged.repo_digests.push(d.clone());
            }
        }
        let mut changed = Vec::new();
        let mut dropped = Vec::new();
        for other in images.values_mut().filter(|o| o.id != merged.id) {
            let before = (other.repo_tags.len(), other.repo_digests.len());
            other.repo_tags.retain(|t| !merged.repo_tags.contains(t));
            other
                .repo_digests
                .retain(|d| !merged.repo_digests.contains(d));
            if (other.repo_tags.len(), other.repo_digests.len()) != before {
                if other.repo_tags.is_empty() && other.repo_digests.is_empty() {
                    dropped.push(other.id.clone());
                } else {
                    changed.push(other.clone());
                }
            }
        }
        self.persist(&merged)?;
        for c in &changed {
            self.persist(c)?;
        }
        for d in &dropped {
            self.unpersist(d)?;
            images.remove(d);
        }
        images.insert(merged.id.clone(), merged.clone());
        *self.images.write().unwrap_or_else(|p| p.into_inner()) = images;
        if !dropped.is_empty() {
            self.collect_garbage_locked()?;
        }
        Ok(merged)
    }

    /// Removes an image with all its names. Returns whether it existed.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let Some(img) = self.resolve(name)? else {
            return Ok(false);
        };
        let _w = self.write.lock().await;
        self.unpersist(&img.id)?;
        self.images
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&img.id);
        info!(id = %img.id, tags = ?img.repo_tags, "image removed");
        self.collect_garbage_locked()?;
        Ok(true)
    }

    /// Deletes blobs and snapshots that no image and no running pull needs.
    fn collect_garbage_locked(&self) -> Result<()> {
        let mut keep: HashSet<String> = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for img in self.read_images().values() {
            keep.insert(img.id.clone());
            keep.insert(img.manifest_digest.clone());
            keep.insert(img.target_digest.clone());
            for l in &img.layers {
                keep.insert(l.digest.clone());
                keep.insert(l.diff_id.clone());
            }
        }
        let mut removed = 0;
        for d in self.content.list()? {
            if !keep.contains(&d) {
                self.content.remove(&d)?;
                removed += 1;
            }
        }
        for s in self.snapshots.list()? {
            if !keep.contains(&s) {
                self.snapshots.remove(&s)?;
                removed += 1;
            }
        }
        if removed > 0 {
            info!(removed, "garbage collected blobs and snapshots");
        }
        Ok(())
    }

    /// Bytes (allocated blocks) and inodes used under the store root.
    pub fn usage(&self) -> Result<FsUsage> {
        let usage = disk_usage(&self.config.root)?;
        self.metrics.set_store_bytes(usage.bytes);
        Ok(usage)
    }
}

fn disk_usage(root: &Path) -> Result<FsUsage> {
    use std::os::unix::fs::MetadataExt;
    let mut usage = FsUsage {
        bytes: 0,
        inodes: 0,
    };
    let mut stack = vec![root.to_path_buf()];
    let mut seen = HashSet::new();
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // Removed by a concurrent GC: nothing to count.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {}", dir.display()))(e)),
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            // Hardlinks count once.
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.inodes += 1;
            usage.bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}
