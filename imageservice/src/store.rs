//! The image index and the operations on it: pull, resolve, list, remove and
//! garbage collection of blobs and snapshots no image needs any more.
//!
//! Each image is one JSON record, `index/<id hex>.json`, written atomically;
//! the in-memory index ([`crate::index`]) is rebuilt from those files at
//! start and changed only after them, so it survives restarts and never
//! disagrees with the disk for long. Names point
//! to image IDs (the config digest) the way containerd's do: a tag moves to
//! the newest image pulled under it, and an image disappears when its last
//! name goes or when it is removed by ID.
//!
//! Containers hold leases ([`crate::leases`]) on the content of the images
//! they use: removing an image in use removes its names at once, and its
//! blobs and snapshots when the last lease goes. An image whose snapshots
//! or config went missing (a damaged disk, a hand-made deletion) is
//! rebuilt from its blobs, at start and whenever a container takes it, or
//! else dropped from the index, so that kubelet pulls it again instead of
//! seeing it present and failing to run it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use futures_util::future::try_join_all;
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn, Instrument};

use crate::config::ImageConfig;
use crate::content::{write_atomic, ContentStore};
use crate::error::{Error, Result};
use crate::index::{Index, Indexed};
use crate::leases::{check_id, ContentLease, LeaseStore};
use crate::manifest::{self, Descriptor, Parsed};
use crate::mediatype;
use crate::metrics::ImageMetrics;
use crate::reference::{digest_hex, is_image_id, is_lower_hex, ImageRef};
use crate::registry::{self, Credentials, Endpoint, FetchedManifest, RegistryClient};
use crate::snapshot::SnapshotStore;

const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// Empty for an artifact's layers, which are never unpacked.
    pub diff_id: String,
}

/// One image as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub version: u32,
    /// The config digest; for an artifact the manifest digest, since
    /// artifacts often share one empty config.
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
    /// The config blob: the ID for images, not for artifacts (see `id`).
    /// Empty in records written before artifacts were kept.
    #[serde(default)]
    pub config_digest: String,
    /// The platform manifest's media type.
    #[serde(default)]
    pub media_type: String,
    /// Set for OCI artifacts, which are stored but cannot be run.
    #[serde(default)]
    pub artifact_type: Option<String>,
}

impl ImageRecord {
    pub fn config_digest(&self) -> &str {
        if self.config_digest.is_empty() {
            &self.id
        } else {
            &self.config_digest
        }
    }

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
    /// Fixed for the store's life: the settings below may be reloaded, but
    /// never where the store lives.
    root: PathBuf,
    /// The registries, limits and timeouts in force, swapped whole by a
    /// reload ([`ImageStore::set_config`]); each pull step reads a snapshot.
    live: RwLock<Arc<Live>>,
    index_dir: PathBuf,
    content: ContentStore,
    snapshots: SnapshotStore,
    images: RwLock<Index>,
    /// Blobs and snapshots an unfinished pull still needs; GC leaves them be.
    leases: Mutex<HashMap<String, usize>>,
    /// What containers hold, persisted; GC leaves that be too.
    held: LeaseStore,
    /// Serialises index updates and GC against each other.
    write: tokio::sync::Mutex<()>,
    /// Bumped each time a holder of `write` lets go: what was stored may
    /// have changed, so a usage measured before is stale.
    generation: std::sync::atomic::AtomicU64,
    metrics: ImageMetrics,
}

/// Holds the store's write lock; letting go marks the stored content as
/// possibly changed.
struct Writing<'a> {
    _lock: tokio::sync::MutexGuard<'a, ()>,
    generation: &'a std::sync::atomic::AtomicU64,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

/// The reloadable part of the store: its configuration and the HTTP
/// clients built from it (timeouts and the foreign-layer redirect policy
/// live in the clients).
struct Live {
    config: ImageConfig,
    client: RegistryClient,
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
        let held = LeaseStore::open(&root.join("leases"))?;
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
        let store = ImageStore {
            root,
            live: RwLock::new(Arc::new(Live { config, client })),
            index_dir,
            content,
            snapshots,
            images: RwLock::new(Index::new(images.into_values())),
            leases: Mutex::default(),
            held,
            write: tokio::sync::Mutex::new(()),
            generation: Default::default(),
            metrics,
        };
        store.repair_at_start()?;
        store.collect_orphans_at_start()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn write_lock(&self) -> Writing<'_> {
        Writing {
            _lock: self.write.lock().await,
            generation: &self.generation,
        }
    }

    /// Changes each time the stored images, blobs, snapshots or leases may
    /// have changed: a [`ImageStore::usage`] measured at the same
    /// generation still holds, except for pulls under way.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> ImageConfig {
        self.live().config.clone()
    }

    /// Puts a new configuration in force for the pulls that start from now
    /// on (registries, mirrors, credentials, limits, timeouts); pulls under
    /// way finish with the one they started with. The store's root is not
    /// reloadable: `config.root` is ignored. Registry tokens are fetched
    /// anew, since the credentials behind them may have changed.
    pub fn set_config(&self, mut config: ImageConfig) -> Result<()> {
        config.root = self.root.clone();
        let client = RegistryClient::new(&config)?;
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live { config, client });
        Ok(())
    }

    fn read_images(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.images.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_images(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.images.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.read_images().records().cloned().collect()
    }

    /// Every image's CRI message, as built when its record last changed.
    pub fn list_cri(&self) -> Vec<gantry_proto::v1::Image> {
        self.read_images().cri_images()
    }

    /// Finds an image by ID, unique ID prefix, tag or digest reference.
    pub fn resolve(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(self.resolve_indexed(name)?.map(|e| e.record.clone()))
    }

    /// [`Self::resolve`], giving the index entry with its CRI message.
    pub fn resolve_indexed(&self, name: &str) -> Result<Option<Arc<Indexed>>> {
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
            let found = match &r.digest {
                Some(d) => images.named(&wanted).or_else(|| {
                    // The platform manifest of an image pulled through
                    // its index (or the reverse) is the same image.
                    let repo = wanted.split('@').next().unwrap_or_default();
                    images.entries().find(|e| {
                        let img = &e.record;
                        (&img.manifest_digest == d || &img.target_digest == d)
                            && names_repository(img, repo)
                    })
                }),
                // Names are unique: a digest-shaped tag is no tag.
                None => images
                    .named(&wanted)
                    .filter(|e| e.record.repo_tags.contains(&wanted)),
            };
            if let Some(img) = found {
                return Ok(Some(img.clone()));
            }
        }
        // A truncated ID, as `crictl images` prints them.
        let hex = name.trim_start_matches("sha256:");
        if is_lower_hex(hex) && !hex.is_empty() {
            let mut matches = images.entries().filter(|e| {
                e.record
                    .id
                    .strip_prefix("sha256:")
                    .is_some_and(|h| h.starts_with(hex))
            });
            if let (Some(one), None) = (matches.next(), matches.next()) {
                return Ok(Some(one.clone()));
            }
        }
        match parsed {
            Ok(_) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Self::resolve`] for callers about to use the image (ImageStatus,
    /// which tells kubelet whether to pull): an image found damaged is
    /// rebuilt from its blobs first, or dropped and reported absent.
    /// The check is what the image needs on disk (one `stat` per layer
    /// and one for the config), nothing is read.
    pub async fn resolve_usable(&self, name: &str) -> Result<Option<Arc<Indexed>>> {
        let Some(entry) = self.resolve_indexed(name)? else {
            return Ok(None);
        };
        if self.intact(&entry.record) {
            return Ok(Some(entry));
        }
        let _w = self.write_lock().await;
        let Some(entry) = self.resolve_indexed(name)? else {
            return Ok(None);
        };
        Ok(self.repair_locked(&entry.record).await?.then_some(entry))
    }

    /// The stored config JSON of an image.
    pub fn config_json(&self, img: &ImageRecord) -> Result<Vec<u8>> {
        self.content.read(
            img.config_digest(),
            self.live().config.limits.max_config_bytes,
        )
    }

    /// The layer directories of an image, bottom first; artifacts have none.
    pub fn snapshot_paths(&self, img: &ImageRecord) -> Result<Vec<PathBuf>> {
        if let Some(artifact_type) = &img.artifact_type {
            return Err(Error::NotAnImage {
                image: img.id.clone(),
                artifact_type: artifact_type.clone(),
            });
        }
        img.layers
            .iter()
            .map(|l| self.snapshots.path(&l.diff_id))
            .collect()
    }

    /// The stored blobs of an artifact's layers (or an image's compressed
    /// layers), with their media types, bottom first.
    pub fn layer_blobs(&self, img: &ImageRecord) -> Result<Vec<(String, PathBuf)>> {
        img.layers
            .iter()
            .map(|l| Ok((l.media_type.clone(), self.content.blob_path(&l.digest)?)))
            .collect()
    }

    fn lease(&self, keys: Vec<String>) -> Lease<'_> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        for k in &keys {
            *leases.entry(k.clone()).or_default() += 1;
        }
        Lease { store: self, keys }
    }

    /// Pulls an image and returns its record. A pull that fails leaves
    /// nothing behind that no image needs: its blobs and snapshots are
    /// collected before the error is returned.
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
            Err(e) => {
                warn!(image = %image, error = %e, "pull failed");
                // The pull's leases are gone, so whatever it stored that no
                // image or other pull claims goes now.
                let _w = self.write_lock().await;
                if let Err(gc) = self.collect_garbage_locked() {
                    warn!(image = %image, error = %gc, "cleaning up after a failed pull");
                }
            }
        }
        result
    }

    /// Follows the reference to one platform manifest: through indexes
    /// (nested ones too, up to [`manifest::MAX_INDEX_DEPTH`]), picking the
    /// host's platform and skipping attestations.
    async fn resolve_platform_manifest(
        &self,
        endpoint: &Endpoint,
        image: &ImageRef,
        top: &FetchedManifest,
    ) -> Result<(String, Vec<u8>, String, manifest::Manifest)> {
        let live = self.live();
        let limits = &live.config.limits;
        let mut current = (
            top.digest.clone(),
            top.bytes.clone(),
            top.media_type.clone(),
        );
        let mut depth = 0;
        loop {
            depth += 1;
            let entries = match manifest::parse(&current.1, &current.2)? {
                Parsed::Manifest(m) => {
                    let media_type = if current.2.is_empty() {
                        serde_json::from_slice::<serde_json::Value>(&current.1)
                            .ok()
                            .and_then(|v| v["mediaType"].as_str().map(String::from))
                            .unwrap_or_default()
                    } else {
                        current.2
                    };
                    return Ok((current.0, current.1, media_type, *m));
                }
                Parsed::Index(entries) => entries,
            };
            if depth > manifest::MAX_INDEX_DEPTH {
                return Err(Error::malformed(
                    "image index",
                    format!(
                        "indexes nested deeper than {} levels",
                        manifest::MAX_INDEX_DEPTH
                    ),
                ));
            }
            let want = manifest::host_platform();
            let chosen = manifest::choose_platform(&entries, &want).ok_or_else(|| {
                Error::NoMatchingPlatform(format!(
                    "{want} (the index offers: {})",
                    manifest::offered_platforms(&entries)
                ))
            })?;
            if chosen.size > limits.max_manifest_bytes {
                return Err(Error::LimitExceeded(format!(
                    "manifest {} is {} bytes, more than max_manifest_bytes = {}",
                    chosen.digest, chosen.size, limits.max_manifest_bytes
                )));
            }
            let m = live
                .client
                .manifest(
                    endpoint,
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
            // The index entry's type is the one the index author vouched for.
            let media_type = if chosen.media_type.is_empty() {
                m.media_type
            } else {
                chosen.media_type.clone()
            };
            current = (m.digest, m.bytes, media_type);
        }
    }

    /// Checks a manifest against the limits and the foreign-layer policy
    /// before anything is downloaded.
    fn check_manifest(&self, m: &manifest::Manifest) -> Result<()> {
        let live = self.live();
        let limits = &live.config.limits;
        if m.layers.len() > limits.max_layers {
            return Err(Error::LimitExceeded(format!(
                "image has {} layers, more than max_layers = {}",
                m.layers.len(),
                limits.max_layers
            )));
        }
        if m.config.size > limits.max_config_bytes {
            return Err(Error::LimitExceeded(format!(
                "image config is {} bytes, more than max_config_bytes = {}",
                m.config.size, limits.max_config_bytes
            )));
        }
        if let Some(l) = m.layers.iter().find(|l| l.size > limits.max_layer_bytes) {
            return Err(Error::LimitExceeded(format!(
                "layer {} is {} bytes, more than max_layer_bytes = {}",
                l.digest, l.size, limits.max_layer_bytes
            )));
        }
        if m.artifact_type.is_none() {
            for l in &m.layers {
                if mediatype::layer_type(&l.media_type).is_some_and(|t| t.foreign) {
                    self.foreign_urls(l)?;
                }
            }
        }
        Ok(())
    }

    /// The URLs a non-distributable layer may be fetched from: those it
    /// names that start with a configured prefix.
    fn foreign_urls(&self, layer: &Descriptor) -> Result<Vec<String>> {
        let live = self.live();
        let prefixes = &live.config.foreign_layer_url_prefixes;
        let refuse = |reason: String| Error::ForeignLayer {
            digest: layer.digest.clone(),
            reason,
        };
        if layer.urls.is_empty() {
            return Err(refuse(format!(
                "its media type {} says it is not in the registry, and it names no URL",
                layer.media_type
            )));
        }
        if prefixes.is_empty() {
            return Err(refuse(format!(
                "it must be downloaded from {:?}, outside the registry, and \
                 image.foreign_layer_url_prefixes allows no URL",
                layer.urls
            )));
        }
        let allowed: Vec<String> = layer
            .urls
            .iter()
            .filter(|u| registry::foreign_url_allowed(prefixes, u))
            .cloned()
            .collect();
        if allowed.is_empty() {
            return Err(refuse(format!(
                "none of its URLs {:?} starts with a prefix in image.foreign_layer_url_prefixes",
                layer.urls
            )));
        }
        Ok(allowed)
    }

    async fn pull_inner(
        &self,
        image: &ImageRef,
        credentials: Option<Credentials>,
    ) -> Result<ImageRecord> {
        let live = self.live();
        let limits = &live.config.limits;
        let endpoints =
            registry::endpoints_for(&live.config, &image.registry, credentials.as_ref())?;
        let (endpoint, top) =
            registry::resolve_manifest(&live.client, &endpoints, image, limits.max_manifest_bytes)
                .await?;
        let (manifest_digest, manifest_bytes, manifest_media_type, m) = self
            .resolve_platform_manifest(&endpoint, image, &top)
            .await?;
        self.check_manifest(&m)?;

        let mut lease_keys = vec![
            top.digest.clone(),
            manifest_digest.clone(),
            m.config.digest.clone(),
        ];
        lease_keys.extend(m.layers.iter().map(|l| l.digest.clone()));
        let _lease = self.lease(lease_keys);
        self.content.put_bytes(&top.digest, &top.bytes)?;
        self.content.put_bytes(&manifest_digest, &manifest_bytes)?;
        self.fetch_blob(&endpoint, &image.repository, &m.config)
            .await?;

        let repo_digest = image.with_digest(&top.digest);
        let base = ImageRecord {
            version: RECORD_VERSION,
            id: m.config.digest.clone(),
            repo_tags: image.tagged().into_iter().collect(),
            repo_digests: vec![repo_digest],
            manifest_digest: manifest_digest.clone(),
            target_digest: top.digest.clone(),
            config_size: m.config.size,
            manifest_size: manifest_bytes.len() as u64,
            layers: Vec::new(),
            user: String::new(),
            config_digest: m.config.digest.clone(),
            media_type: manifest_media_type,
            artifact_type: None,
        };

        if let Some(artifact_type) = &m.artifact_type {
            // An artifact's blobs are kept as they are, for whatever mounts
            // them (image volumes); nothing is unpacked.
            let jobs = m
                .layers
                .iter()
                .map(|l| self.fetch_blob(&endpoint, &image.repository, l));
            try_join_all(jobs).await?;
            let record = ImageRecord {
                id: manifest_digest.clone(),
                artifact_type: Some(artifact_type.clone()),
                layers: m
                    .layers
                    .iter()
                    .map(|l| LayerRecord {
                        digest: l.digest.clone(),
                        media_type: l.media_type.clone(),
                        size: l.size,
                        diff_id: String::new(),
                    })
                    .collect(),
                ..base
            };
            return self.commit(record).await;
        }

        let config_bytes = self
            .content
            .read(&m.config.digest, limits.max_config_bytes)?;
        let config = manifest::parse_config(&config_bytes)?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(Error::malformed(
                "image",
                format!(
                    "{} layers but {} diff IDs in the config",
                    m.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let _diff_lease = self.lease(config.rootfs.diff_ids.clone());

        // Layers are independent directories, so they download and unpack
        // in parallel and in any order. When one fails the others are
        // dropped; an unpack already running finishes on its thread but
        // does not commit (see `SnapshotStore::create`).
        let semaphore = tokio::sync::Semaphore::new(live.config.max_concurrent_downloads.max(1));
        let jobs = m
            .layers
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

        let record = ImageRecord {
            layers: m
                .layers
                .iter()
                .zip(&config.rootfs.diff_ids)
                .map(|(l, d)| LayerRecord {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: d.clone(),
                })
                .collect(),
            user: config.config.and_then(|c| c.user).unwrap_or_default(),
            ..base
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
        let response = self.open_blob(endpoint, repository, desc).await?;
        let mut progress = self.progress(desc);
        self.content
            .ingest(&desc.digest, desc.size, response.bytes_stream(), |n| {
                progress(n)
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

    /// Starts the download of a blob: from the registry, or for a
    /// non-distributable layer from the first of its allowed URLs that
    /// answers.
    async fn open_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        desc: &Descriptor,
    ) -> Result<reqwest::Response> {
        let foreign = mediatype::layer_type(&desc.media_type).is_some_and(|t| t.foreign);
        let live = self.live();
        let client = &live.client;
        if !foreign {
            return client.blob(endpoint, repository, &desc.digest).await;
        }
        let mut last = None;
        for url in self.foreign_urls(desc)? {
            match client.foreign_blob(&url).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    warn!(digest = %desc.digest, url, error = %e, "foreign layer URL failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("no foreign layer URL".into())))
    }

    /// Counts a download's bytes in the metrics and logs its progress
    /// every few seconds.
    fn progress<'a>(&'a self, desc: &'a Descriptor) -> impl FnMut(u64) + 'a {
        let mut done = 0u64;
        let mut last_report = Instant::now();
        move |n| {
            done += n;
            self.metrics.add_pull_bytes(n);
            if last_report.elapsed().as_secs() >= 5 {
                last_report = Instant::now();
                info!(digest = %desc.digest, done, total = desc.size, "downloading");
            }
        }
    }

    /// Makes sure the layer's snapshot exists. A layer not yet stored is
    /// unpacked while it downloads, its blob kept on the way (leases and
    /// repairs rebuild snapshots from blobs); one whose blob is here is
    /// unpacked from it.
    async fn ensure_layer(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        layer: &Descriptor,
        diff_id: &str,
    ) -> Result<()> {
        digest_hex(diff_id)?;
        let layer_type =
            mediatype::layer_type(&layer.media_type).ok_or_else(|| Error::Unsupported {
                what: format!("media type of layer {}", layer.digest),
                value: format!("{:?}", layer.media_type),
            })?;
        let _guard = self.snapshots.lock(diff_id).await;
        if self.snapshots.contains(diff_id) {
            self.metrics.layer_reused();
            return Ok(());
        }
        let limits = self.live().config.limits.clone();
        let started = Instant::now();
        let blob_guard = self.content.lock(&layer.digest).await;
        let stats = if self.content.contains(&layer.digest) {
            drop(blob_guard);
            let blob = self.content.blob_path(&layer.digest)?;
            let stats = self
                .snapshots
                .create(diff_id, blob, layer_type.compression, limits)
                .await;
            // A layer that does not unpack to its diff ID is bad content:
            // drop the blob too, so a retry downloads it again.
            if let Err(Error::DigestMismatch { .. }) = &stats {
                let _ = self.content.remove(&layer.digest);
            }
            stats?
        } else {
            let response = self.open_blob(endpoint, repository, layer).await?;
            let blob = self.content.begin(&layer.digest, layer.size)?;
            let stats = self
                .snapshots
                .create_streamed(
                    diff_id,
                    blob,
                    layer_type.compression,
                    limits,
                    response.bytes_stream(),
                    self.progress(layer),
                )
                .await;
            drop(blob_guard);
            stats?
        };
        self.metrics.layer_unpacked();
        info!(
            diff_id,
            digest = %layer.digest,
            entries = stats.entries,
            bytes = stats.uncompressed_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "layer pulled and unpacked"
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
        let _w = self.write_lock().await;
        let mut images = self.read_images().clone();
        let mut merged = images
            .get(&pulled.id)
            .map(|e| e.record.clone())
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
        for other in images.records().filter(|o| o.id != merged.id) {
            let before = (other.repo_tags.len(), other.repo_digests.len());
            let mut other = other.clone();
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
        for c in changed {
            images.insert(c);
        }
        images.insert(merged.clone());
        *self.write_images() = images;
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
        let _w = self.write_lock().await;
        self.unpersist(&img.id)?;
        self.write_images().remove(&img.id);
        let holders = self
            .held
            .list()
            .iter()
            .filter(|l| l.image == img.id)
            .count();
        if holders > 0 {
            info!(id = %img.id, tags = ?img.repo_tags, leases = holders, "image removed; its content stays until the containers using it are removed");
        } else {
            info!(id = %img.id, tags = ?img.repo_tags, "image removed");
        }
        self.collect_garbage_locked()?;
        Ok(true)
    }

    /// Deletes blobs and snapshots that no image and no running pull needs.
    fn collect_garbage_locked(&self) -> Result<()> {
        let mut keep = referenced(&self.read_images());
        keep.extend(self.held.keys());
        keep.extend(
            self.leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        let (blobs, snapshots) = self.remove_unreferenced(&keep)?;
        if blobs + snapshots > 0 {
            info!(blobs, snapshots, "garbage collected blobs and snapshots");
        }
        Ok(())
    }

    fn remove_unreferenced(&self, keep: &HashSet<String>) -> Result<(usize, usize)> {
        let mut blobs = 0;
        for d in self.content.list()? {
            if !keep.contains(&d) {
                self.content.remove(&d)?;
                blobs += 1;
            }
        }
        let mut snapshots = 0;
        for s in self.snapshots.list()? {
            if !keep.contains(&s) {
                self.snapshots.remove(&s)?;
                snapshots += 1;
            }
        }
        Ok((blobs, snapshots))
    }

    /// At start no pull is running, so every blob and snapshot that no
    /// image record names is left from a pull that a crash cut short
    /// (committed pieces the record never got written for), as is anything
    /// in ingest/ or a half-unpacked snapshot.
    fn collect_orphans_at_start(&self) -> Result<()> {
        let mut keep = referenced(&self.read_images());
        keep.extend(self.held.keys());
        let (blobs, snapshots) = self.remove_unreferenced(&keep)?;
        let partial = self.content.leftovers_removed() + self.snapshots.leftovers_removed();
        self.metrics.add_orphans("blob", blobs);
        self.metrics.add_orphans("snapshot", snapshots);
        self.metrics.add_orphans("partial", partial);
        if blobs + snapshots + partial > 0 {
            warn!(
                blobs,
                snapshots, partial, "removed orphans of interrupted pulls from the image store"
            );
        }
        Ok(())
    }

    /// Resolves `name` and holds its content for `owner` (a container) under
    /// the lease `lease_id` until [`Self::release_owner`]: removing the
    /// image then removes its names only. A damaged image is rebuilt from
    /// its blobs or dropped first; `None` when no usable image has that
    /// name. Taking the same lease again replaces it.
    pub async fn acquire(
        &self,
        lease_id: &str,
        owner: &str,
        name: &str,
    ) -> Result<Option<ImageRecord>> {
        check_id("lease", lease_id)?;
        check_id("lease owner", owner)?;
        // Under the write lock no removal or GC runs between finding the
        // image and recording the lease.
        let _w = self.write_lock().await;
        let Some(img) = self.resolve(name)? else {
            return Ok(None);
        };
        if !self.repair_locked(&img).await? {
            return Ok(None);
        }
        self.lease_locked(lease_id, owner, &img)?;
        Ok(Some(img))
    }

    /// Records a lease on `img`; the caller holds the write lock.
    fn lease_locked(&self, lease_id: &str, owner: &str, img: &ImageRecord) -> Result<()> {
        let mut keys = HashSet::new();
        image_keys(img, &mut keys);
        let mut keys: Vec<String> = keys.into_iter().filter(|k| !k.is_empty()).collect();
        keys.sort();
        self.held.put(ContentLease {
            version: 1,
            id: lease_id.to_string(),
            owner: owner.to_string(),
            image: img.id.clone(),
            keys,
        })
    }

    /// Drops every lease of `owner`, then whatever content no image and no
    /// other lease needs. Returns how many leases went.
    pub async fn release_owner(&self, owner: &str) -> Result<usize> {
        let _w = self.write_lock().await;
        let gone = self.held.remove_where(|l| l.owner == owner)?;
        if !gone.is_empty() {
            info!(owner, leases = gone.len(), "image leases released");
            self.collect_if_freed_locked(&gone)?;
        }
        Ok(gone.len())
    }

    /// Collects garbage if the leases that went held something no image and
    /// no other lease does: removing a container whose image is still there
    /// (the common case) then costs no walk of the store.
    fn collect_if_freed_locked(&self, gone: &[ContentLease]) -> Result<()> {
        let mut kept = referenced(&self.read_images());
        kept.extend(self.held.keys());
        if gone.iter().flat_map(|l| &l.keys).any(|k| !kept.contains(k)) {
            self.collect_garbage_locked()?;
        }
        Ok(())
    }

    /// Reconciles the leases with the containers that exist, given with
    /// their image IDs: leases of owners not in `live` (containers removed
    /// while a crash kept their leases) go, with the content they alone
    /// held; a live container holding no lease (made by a gantry from
    /// before leases) gets one on its image if that is still there.
    /// Returns how many leases went.
    pub async fn retain_owners(&self, live: &HashMap<String, String>) -> Result<usize> {
        let _w = self.write_lock().await;
        let holders: HashSet<String> = self.held.list().into_iter().map(|l| l.owner).collect();
        for (owner, image) in live {
            if holders.contains(owner) || check_id("lease owner", owner).is_err() {
                continue;
            }
            if let Some(img) = self.resolve(image).ok().flatten() {
                info!(container = %owner, image = %img.id, "leasing the image of a container made before leases");
                self.lease_locked(owner, owner, &img)?;
            }
        }
        let gone = self.held.remove_where(|l| !live.contains_key(&l.owner))?;
        if !gone.is_empty() {
            warn!(
                leases = gone.len(),
                "dropped image leases of containers that no longer exist"
            );
            self.collect_if_freed_locked(&gone)?;
        }
        Ok(gone.len())
    }

    /// The leases containers hold.
    pub fn leases(&self) -> Vec<ContentLease> {
        self.held.list()
    }

    /// Whether nothing of the image is missing on disk: [`Self::damage`]
    /// that stops at the first loss.
    fn intact(&self, img: &ImageRecord) -> bool {
        img.artifact_type.is_some()
            || (self.content.contains(img.config_digest())
                && img
                    .layers
                    .iter()
                    .all(|l| self.snapshots.contains(&l.diff_id)))
    }

    fn damage(&self, img: &ImageRecord) -> Damage {
        if img.artifact_type.is_some() {
            // Nothing is unpacked; a missing blob shows when it is used.
            return Damage::default();
        }
        Damage {
            config: !self.content.contains(img.config_digest()),
            snapshots: img
                .layers
                .iter()
                .filter(|l| !self.snapshots.contains(&l.diff_id))
                .cloned()
                .collect(),
        }
    }

    /// Whether the image's missing snapshots can be rebuilt: each from its
    /// blob, and the config is there.
    fn repairable(&self, damage: &Damage) -> std::result::Result<(), String> {
        if damage.config {
            return Err("its config blob is missing".into());
        }
        for l in &damage.snapshots {
            if !self.content.contains(&l.digest) {
                return Err(format!(
                    "the snapshot of layer {} and its blob are missing",
                    l.diff_id
                ));
            }
            if mediatype::layer_type(&l.media_type).is_none() {
                return Err(format!("layer {} has an unknown media type", l.digest));
            }
        }
        Ok(())
    }

    /// Drops a damaged image from the index (under the write lock), so
    /// that it is reported absent and pulled again.
    fn drop_damaged_locked(&self, img: &ImageRecord, why: &str) -> Result<()> {
        warn!(id = %img.id, tags = ?img.repo_tags, reason = why, "image is damaged beyond repair; removing it from the index so that it is pulled again");
        self.unpersist(&img.id)?;
        self.write_images().remove(&img.id);
        Ok(())
    }

    /// Rebuilds what the image is missing from its blobs; an image that
    /// cannot be rebuilt is dropped and `false` returned. The caller holds
    /// the write lock.
    async fn repair_locked(&self, img: &ImageRecord) -> Result<bool> {
        let damage = self.damage(img);
        if damage.is_none() {
            return Ok(true);
        }
        let mut failure = self.repairable(&damage).err();
        if failure.is_none() {
            for l in &damage.snapshots {
                let _guard = self.snapshots.lock(&l.diff_id).await;
                if self.snapshots.contains(&l.diff_id) {
                    continue;
                }
                let compression = match mediatype::layer_type(&l.media_type) {
                    Some(t) => t.compression,
                    None => break,
                };
                let blob = self.content.blob_path(&l.digest)?;
                warn!(id = %img.id, diff_id = %l.diff_id, "a snapshot of the image is missing; unpacking it again from its blob");
                if let Err(e) = self
                    .snapshots
                    .create(&l.diff_id, blob, compression, self.config().limits.clone())
                    .await
                {
                    failure = Some(format!("unpacking layer {} again: {e}", l.diff_id));
                    break;
                }
            }
        }
        match failure {
            None => Ok(true),
            Some(why) => {
                self.drop_damaged_locked(img, &why)?;
                self.collect_garbage_locked()?;
                Ok(false)
            }
        }
    }

    /// At start, before anything can use the store: every image's missing
    /// snapshots are rebuilt from their blobs, and images that cannot be
    /// rebuilt leave the index (their content is then collected as
    /// orphans).
    fn repair_at_start(&self) -> Result<()> {
        for img in self.list() {
            let damage = self.damage(&img);
            if damage.is_none() {
                continue;
            }
            let mut failure = self.repairable(&damage).err();
            if failure.is_none() {
                for l in &damage.snapshots {
                    let Some(t) = mediatype::layer_type(&l.media_type) else {
                        break;
                    };
                    let blob = self.content.blob_path(&l.digest)?;
                    warn!(id = %img.id, diff_id = %l.diff_id, "a snapshot of the image is missing; unpacking it again from its blob");
                    if let Err(e) = self.snapshots.create_now(
                        &l.diff_id,
                        &blob,
                        t.compression,
                        &self.config().limits,
                    ) {
                        failure = Some(format!("unpacking layer {} again: {e}", l.diff_id));
                        break;
                    }
                }
            }
            if let Some(why) = failure {
                self.drop_damaged_locked(&img, &why)?;
            }
        }
        Ok(())
    }

    /// Bytes (allocated blocks) and inodes used under the store root.
    pub fn usage(&self) -> Result<FsUsage> {
        let usage = disk_usage(&self.root)?;
        self.metrics.set_store_bytes(usage.bytes);
        Ok(usage)
    }
}

/// Whether one of the image's names is in `repo` (`host/path`).
fn names_repository(img: &ImageRecord, repo: &str) -> bool {
    img.repo_digests
        .iter()
        .any(|d| d.split('@').next() == Some(repo))
        || img
            .repo_tags
            .iter()
            .any(|t| t.rsplit_once(':').map(|(r, _)| r) == Some(repo))
}

/// Every blob and snapshot the images need.
fn referenced(images: &Index) -> HashSet<String> {
    let mut keep = HashSet::new();
    for img in images.records() {
        image_keys(img, &mut keep);
    }
    keep
}

/// The blobs and snapshots one image needs, including the manifests that
/// let a re-pull of it skip every download.
fn image_keys(img: &ImageRecord, keep: &mut HashSet<String>) {
    keep.insert(img.id.clone());
    keep.insert(img.config_digest().to_string());
    keep.insert(img.manifest_digest.clone());
    keep.insert(img.target_digest.clone());
    for l in &img.layers {
        keep.insert(l.digest.clone());
        if !l.diff_id.is_empty() {
            keep.insert(l.diff_id.clone());
        }
    }
}

/// What of an image is missing on disk.
#[derive(Debug, Default)]
struct Damage {
    /// The config blob, without which no container can be made.
    config: bool,
    /// Layers whose snapshot is gone.
    snapshots: Vec<LayerRecord>,
}

impl Damage {
    fn is_none(&self) -> bool {
        !self.config && self.snapshots.is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::sha256_digest;

    const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            h.set_size(data.len() as u64);
            h.set_path(path).unwrap();
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn open(root: &Path) -> ImageStore {
        let config = ImageConfig {
            root: root.to_path_buf(),
            ..Default::default()
        };
        let metrics = ImageMetrics::new(&prometheus::Registry::new()).unwrap();
        ImageStore::open(config, metrics).unwrap()
    }

    /// Stores an image as a pull would (blobs, snapshots, record) and
    /// returns its record; `layers` are uncompressed tars.
    fn seed(store: &ImageStore, tag: &str, layers: &[Vec<u8>]) -> ImageRecord {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {"Label": tag},
        }))
        .unwrap();
        let config_digest = sha256_digest(&config);
        store.content.put_bytes(&config_digest, &config).unwrap();
        let manifest = format!("manifest of {tag}").into_bytes();
        let manifest_digest = sha256_digest(&manifest);
        store
            .content
            .put_bytes(&manifest_digest, &manifest)
            .unwrap();
        for (l, d) in layers.iter().zip(&diff_ids) {
            store.content.put_bytes(d, l).unwrap();
            if store.snapshots.contains(d) {
                continue;
            }
            let blob = store.content.blob_path(d).unwrap();
            store
                .snapshots
                .create_now(d, &blob, crate::mediatype::Compression::None, &Limits())
                .unwrap();
        }
        let rec = ImageRecord {
            version: RECORD_VERSION,
            id: config_digest.clone(),
            repo_tags: vec![tag.to_string()],
            repo_digests: vec![],
            manifest_digest: manifest_digest.clone(),
            target_digest: manifest_digest,
            config_size: config.len() as u64,
            manifest_size: manifest.len() as u64,
            layers: layers
                .iter()
                .zip(&diff_ids)
                .map(|(l, d)| LayerRecord {
                    digest: d.clone(),
                    media_type: LAYER_TAR.into(),
                    size: l.len() as u64,
                    diff_id: d.clone(),
                })
                .collect(),
            user: String::new(),
            config_digest,
            media_type: String::new(),
            artifact_type: None,
        };
        store.persist(&rec).unwrap();
        store.write_images().insert(rec.clone());
        rec
    }

    #[allow(non_snake_case)]
    fn Limits() -> crate::config::Limits {
        crate::config::Limits::default()
    }

    fn has_snapshot(store: &ImageStore, l: &LayerRecord) -> bool {
        store.snapshots.contains(&l.diff_id)
    }

    /// The index in memory says what the records on disk say: every
    /// image's cached CRI message is its record's, every name finds its
    /// image and no other, and a reload from disk gives the same answers.
    fn assert_index_consistent(store: &ImageStore, names: &[&str]) {
        let records = store.list();
        let cri = store.list_cri();
        assert_eq!(cri.len(), records.len());
        for (r, c) in records.iter().zip(&cri) {
            assert_eq!(&crate::index::to_cri(r), c);
            for name in r.repo_tags.iter().chain(&r.repo_digests) {
                let found = store.resolve_indexed(name).unwrap().expect(name);
                assert_eq!(found.record.id, r.id, "{name}");
                assert_eq!(&found.cri, c, "{name}");
            }
        }
        for name in names {
            let owners: Vec<&ImageRecord> = records
                .iter()
                .filter(|r| r.repo_tags.iter().chain(&r.repo_digests).any(|n| n == name))
                .collect();
            assert!(owners.len() <= 1, "{name} names {owners:?}");
            if owners.is_empty() && name.contains('@') {
                // A digest no image was pulled by may still find the
                // image whose manifest it is (see `resolve`).
                continue;
            }
            assert_eq!(
                store.resolve(name).unwrap().map(|r| r.id),
                owners.first().map(|r| r.id.clone()),
                "{name}"
            );
        }
        let on_disk: Vec<ImageRecord> = std::fs::read_dir(&store.index_dir)
            .unwrap()
            .flatten()
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect();
        let mut on_disk_ids: Vec<&str> = on_disk.iter().map(|r| r.id.as_str()).collect();
        on_disk_ids.sort();
        let mut ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        assert_eq!(on_disk_ids, ids);
        for r in &on_disk {
            assert_eq!(Some(r), records.iter().find(|x| x.id == r.id));
        }
    }

    #[tokio::test]
    async fn the_index_in_memory_follows_pulls_tags_removals_and_reloads() {
        let d = tempfile::tempdir().unwrap();
        let store = open(d.path());
        let a = seed(&store, "r.test/a:1", &[layer(&[("a", b"a")])]);
        let b = seed(&store, "r.test/b:1", &[layer(&[("b", b"b")])]);
        let a_digest = format!("r.test/a@{}", a.manifest_digest);
        let b_digest = format!("r.test/b@{}", b.manifest_digest);
        let names = [
            "r.test/a:1",
            "r.test/a:2",
            "r.test/b:1",
            a_digest.as_str(),
            b_digest.as_str(),
        ];
        assert_index_consistent(&store, &names);

        // Pulled again by digest and under a second tag: the names add up.
        let mut again = a.clone();
        again.repo_tags = vec!["r.test/a:2".into()];
        again.repo_digests = vec![a_digest.clone()];
        store.commit(again).await.unwrap();
        let got = store.resolve("r.test/a:2").unwrap().unwrap();
        assert_eq!(got.repo_tags, ["r.test/a:1", "r.test/a:2"]);
        assert_index_consistent(&store, &names);

        // b pulled under a's first tag: the tag moves, a keeps its others.
        let mut moved = b.clone();
        moved.repo_tags = vec!["r.test/a:1".into()];
        moved.repo_digests = vec![];
        store.commit(moved).await.unwrap();
        assert_eq!(store.resolve("r.test/a:1").unwrap().unwrap().id, b.id);
        assert_eq!(store.resolve("r.test/a:2").unwrap().unwrap().id, a.id);
        assert_index_consistent(&store, &names);

        // ...and its last tag and digest: a has no name left and goes.
        let mut last = b.clone();
        last.repo_tags = vec!["r.test/a:2".into()];
        last.repo_digests = vec![a_digest.clone()];
        store.commit(last).await.unwrap();
        assert!(store.resolve(&a.id).unwrap().is_none());
        assert_eq!(store.list_cri().len(), 1);
        assert_index_consistent(&store, &names);

        // A reload from disk answers the same.
        let before = store.list_cri();
        drop(store);
        let store = open(d.path());
        assert_eq!(store.list_cri(), before);
        assert_index_consistent(&store, &names);

        assert!(store.remove("r.test/a:1").await.unwrap());
        assert!(store.list_cri().is_empty());
        for name in names {
            assert!(store.resolve_indexed(name).unwrap().is_none(), "{name}");
        }
        assert_index_consistent(&store, &names);
        drop(store);
        assert!(open(d.path()).list_cri().is_empty());
    }

    #[tokio::test]
    async fn content_stays_until_the_last_lease_goes() {
        let d = tempfile::tempdir().unwrap();
        let store = open(d.path());
        let shared = layer(&[("shared", b"both images")]);
        let a = seed(
            &store,
            "r.test/a:1",
            &[shared.clone(), layer(&[("a", b"only a")])],
        );
        let b = seed(&store, "r.test/b:1", &[shared, layer(&[("b", b"only b")])]);

        let got = store.acquire("c1", "c1", "r.test/a:1").await.unwrap();
        assert_eq!(got.map(|r| r.id), Some(a.id.clone()));
        store
            .acquire("c2.volume-0", "c2", "r.test/a:1")
            .await
            .unwrap()
            .unwrap();
        assert!(store
            .acquire("c3", "c3", "r.test/none:1")
            .await
            .unwrap()
            .is_none());

        // Removing the image takes its name at once, its content not.
        assert!(store.remove("r.test/a:1").await.unwrap());
        assert!(store.resolve("r.test/a:1").unwrap().is_none());
        assert!(store.resolve(&a.id).unwrap().is_none());
        assert!(a.layers.iter().all(|l| has_snapshot(&store, l)));
        assert!(store.content.contains(&a.id));

        // One holder left: still there.
        assert_eq!(store.release_owner("c1").await.unwrap(), 1);
        assert!(a.layers.iter().all(|l| has_snapshot(&store, l)));
        // The last one: a's own layer goes, the one b shares stays.
        assert_eq!(store.release_owner("c2").await.unwrap(), 1);
        assert!(!has_snapshot(&store, &a.layers[1]));
        assert!(!store.content.contains(&a.layers[1].digest));
        assert!(!store.content.contains(&a.id));
        assert!(has_snapshot(&store, &a.layers[0]));
        assert!(b.layers.iter().all(|l| has_snapshot(&store, l)));
        assert_eq!(store.release_owner("c2").await.unwrap(), 0);
        assert!(store.leases().is_empty());
    }

    #[tokio::test]
    async fn leases_survive_a_restart_and_dead_owners_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let a = {
            let store = open(d.path());
            let a = seed(&store, "r.test/a:1", &[layer(&[("a", b"a")])]);
            store.acquire("live", "live", "r.test/a:1").await.unwrap();
            store.acquire("dead", "dead", "r.test/a:1").await.unwrap();
            store.remove("r.test/a:1").await.unwrap();
            a
        };
        // The orphan sweep at start keeps what leases hold.
        let store = open(d.path());
        assert_eq!(store.leases().len(), 2);
        assert!(store.resolve("r.test/a:1").unwrap().is_none());
        assert!(has_snapshot(&store, &a.layers[0]));

        let live = HashMap::from([("live".to_string(), a.id.clone())]);
        assert_eq!(store.retain_owners(&live).await.unwrap(), 1);
        assert!(has_snapshot(&store, &a.layers[0]));
        assert_eq!(store.retain_owners(&HashMap::new()).await.unwrap(), 1);
        assert!(!has_snapshot(&store, &a.layers[0]));
        assert_eq!(store.content.list().unwrap(), Vec::<String>::new());
        drop(store);
        assert!(open(d.path()).leases().is_empty());
    }

    #[tokio::test]
    async fn a_held_image_pulled_again_shares_the_content() {
        let d = tempfile::tempdir().unwrap();
        let store = open(d.path());
        let l = layer(&[("f", b"x")]);
        let a = seed(&store, "r.test/a:1", std::slice::from_ref(&l));
        store.acquire("c1", "c1", &a.id).await.unwrap().unwrap();
        store.remove(&a.id).await.unwrap();
        let snap = store.snapshots.path(&a.layers[0].diff_id).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&snap).unwrap().ino();
        // What a re-pull commits: the same record under its name again.
        store.commit(a.clone()).await.unwrap();
        store.release_owner("c1").await.unwrap();
        assert_eq!(std::fs::metadata(&snap).unwrap().ino(), ino);
        assert!(store.resolve("r.test/a:1").unwrap().is_some());
    }

    /// A lease taken while the image is being removed either finds the
    /// image and keeps its content, or finds nothing: never a lease on
    /// content that is already gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leases_and_removals_do_not_race() {
        let d = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(d.path()));
        for round in 0..40 {
            let img = seed(&store, "r.test/a:1", &[layer(&[("f", b"x")])]);
            let owner = format!("c{round}");
            let (s1, s2) = (store.clone(), store.clone());
            let o = owner.clone();
            let acquire = tokio::spawn(async move { s1.acquire(&o, &o, "r.test/a:1").await });
            let remove = tokio::spawn(async move { s2.remove("r.test/a:1").await });
            let got = acquire.await.unwrap().unwrap();
            remove.await.unwrap().unwrap();
            assert_eq!(
                got.is_some(),
                has_snapshot(&store, &img.layers[0]),
                "round {round}"
            );
            store.release_owner(&owner).await.unwrap();
            assert!(!has_snapshot(&store, &img.layers[0]));
        }
    }

    /// Containers from before leases get one at start, so that removing
    /// their image keeps what they run on.
    #[tokio::test]
    async fn containers_without_a_lease_get_one() {
        let d = tempfile::tempdir().unwrap();
        let store = open(d.path());
        let a = seed(&store, "r.test/a:1", &[layer(&[("a", b"a")])]);
        let live = HashMap::from([
            ("old".to_string(), a.id.clone()),
            (
                "gone-image".to_string(),
                "sha256:".to_string() + &"0".repeat(64),
            ),
        ]);
        assert_eq!(store.retain_owners(&live).await.unwrap(), 0);
        let leases = store.leases();
        assert_eq!(leases.len(), 1, "{leases:?}");
        assert_eq!(
            (leases[0].owner.as_str(), leases[0].image.as_str()),
            ("old", a.id.as_str())
        );
        store.remove(&a.id).await.unwrap();
        assert!(has_snapshot(&store, &a.layers[0]));
        // Once leased, nothing more is added.
        store.retain_owners(&live).await.unwrap();
        assert_eq!(store.leases().len(), 1);
    }

    #[tokio::test]
    async fn lease_ids_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let store = open(d.path());
        seed(&store, "r.test/a:1", &[layer(&[("f", b"x")])]);
        for (lease, owner) in [("../x", "c"), ("c", "a/b"), ("", "c")] {
            assert!(matches!(
                store.acquire(lease, owner, "r.test/a:1").await,
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(store.leases().is_empty());
    }

    #[tokio::test]
    async fn missing_snapshots_are_rebuilt_from_their_blobs_or_the_image_goes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = {
            let store = open(d.path());
            let a = seed(&store, "r.test/a:1", &[layer(&[("a", b"a")])]);
            let b = seed(&store, "r.test/b:1", &[layer(&[("b", b"b")])]);
            (a, b)
        };
        let snapshots = d.path().join("snapshots");
        let hex = |id: &str| id.trim_start_matches("sha256:").to_string();
        // a: the snapshot goes, the blob stays: rebuilt at start.
        std::fs::remove_dir_all(snapshots.join(hex(&a.layers[0].diff_id))).unwrap();
        // b: both go: the image cannot be used and must not be listed.
        std::fs::remove_dir_all(snapshots.join(hex(&b.layers[0].diff_id))).unwrap();
        std::fs::remove_file(
            d.path()
                .join("content/blobs/sha256")
                .join(hex(&b.layers[0].digest)),
        )
        .unwrap();
        let store = open(d.path());
        assert!(has_snapshot(&store, &a.layers[0]));
        assert!(std::fs::read(snapshots.join(hex(&a.layers[0].diff_id)).join("a")).is_ok());
        assert!(store.resolve("r.test/a:1").unwrap().is_some());
        assert!(store.resolve("r.test/b:1").unwrap().is_none());
        assert!(
            !store.content.contains(&b.id),
            "b's other blobs are collected"
        );

        // The same while running: checked when a container takes the image.
        std::fs::remove_dir_all(snapshots.join(hex(&a.layers[0].diff_id))).unwrap();
        let got = store.acquire("c1", "c1", "r.test/a:1").await.unwrap();
        assert!(got.is_some());
        assert!(has_snapshot(&store, &a.layers[0]));
        store.release_owner("c1").await.unwrap();
        std::fs::remove_dir_all(snapshots.join(hex(&a.layers[0].diff_id))).unwrap();
        std::fs::remove_file(d.path().join("content/blobs/sha256").join(hex(&a.id))).unwrap();
        assert!(store
            .acquire("c1", "c1", "r.test/a:1")
            .await
            .unwrap()
            .is_none());
        assert!(store.resolve("r.test/a:1").unwrap().is_none());
        assert!(store.leases().is_empty());
        assert!(store.list().is_empty());
    }
}
