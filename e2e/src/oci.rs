//! Builds OCI images in memory (from Debian's static busybox or synthetic
//! files) and pushes them to a registry over the distribution API.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// One file-system entry of a layer.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir(String),
    File(String, Vec<u8>, u32),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
    /// A character device node: path, major, minor.
    CharDevice(String, u32, u32),
    /// A directory of another owner than root: path, uid, gid.
    OwnedDir(String, u64, u64),
    /// A file of another owner than root: path, data, uid, gid.
    OwnedFile(String, Vec<u8>, u64, u64),
}

/// A layer as a list of entries, serialised to a tar stream on demand.
#[derive(Clone, Debug, Default)]
pub struct Layer {
    pub entries: Vec<Entry>,
}

impl Layer {
    pub fn new() -> Self {
        Layer::default()
    }
    pub fn dir(mut self, p: &str) -> Self {
        self.entries.push(Entry::Dir(p.into()));
        self
    }
    pub fn file(mut self, p: &str, data: &[u8]) -> Self {
        self.entries
            .push(Entry::File(p.into(), data.to_vec(), 0o644));
        self
    }
    pub fn exec(mut self, p: &str, data: &[u8]) -> Self {
        self.entries
            .push(Entry::File(p.into(), data.to_vec(), 0o755));
        self
    }
    pub fn symlink(mut self, p: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink(p.into(), target.into()));
        self
    }
    pub fn hardlink(mut self, p: &str, target: &str) -> Self {
        self.entries.push(Entry::Hardlink(p.into(), target.into()));
        self
    }
    pub fn fifo(mut self, p: &str) -> Self {
        self.entries.push(Entry::Fifo(p.into()));
        self
    }
    pub fn owned_dir(mut self, p: &str, uid: u64, gid: u64) -> Self {
        self.entries.push(Entry::OwnedDir(p.into(), uid, gid));
        self
    }
    pub fn owned_file(mut self, p: &str, data: &[u8], uid: u64, gid: u64) -> Self {
        self.entries
            .push(Entry::OwnedFile(p.into(), data.to_vec(), uid, gid));
        self
    }
    pub fn char_device(mut self, p: &str, major: u32, minor: u32) -> Self {
        self.entries.push(Entry::CharDevice(p.into(), major, minor));
        self
    }

    /// Debian's static busybox with the usual applet links.
    pub fn busybox() -> Self {
        let bb = std::fs::read("/bin/busybox").expect("reading /bin/busybox (busybox-static)");
        let mut l = Layer::new().dir("bin/").exec("bin/busybox", &bb);
        for applet in [
            "sh", "ls", "cat", "echo", "sleep", "id", "true", "false", "env", "top",
        ] {
            l = l.symlink(&format!("bin/{applet}"), "busybox");
        }
        l.dir("etc/")
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\nappuser:x:1000:1000::/home/app:/bin/sh\n",
            )
            .file("etc/group", b"root:x:0:\napp:x:1000:\n")
            .dir("tmp/")
    }

    /// The uncompressed tar. Paths are written raw into the header so that
    /// hostile names (`../x`) survive for the tests that need them.
    pub fn tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            let (path, data): (&str, &[u8]) = match e {
                Entry::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    (p, &[])
                }
                Entry::File(p, d, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    (p, d)
                }
                Entry::OwnedDir(p, uid, gid) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_uid(*uid);
                    h.set_gid(*gid);
                    (p, &[])
                }
                Entry::OwnedFile(p, d, uid, gid) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_uid(*uid);
                    h.set_gid(*gid);
                    (p, d)
                }
                Entry::Symlink(p, t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    set_raw(&mut h.as_old_mut().linkname, t);
                    (p, &[])
                }
                Entry::Hardlink(p, t) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(0o644);
                    set_raw(&mut h.as_old_mut().linkname, t);
                    (p, &[])
                }
                Entry::Fifo(p) => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_mode(0o644);
                    (p, &[])
                }
                Entry::CharDevice(p, major, minor) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(0o666);
                    h.set_device_major(*major)
                        .expect("a device number in a GNU header");
                    h.set_device_minor(*minor)
                        .expect("a device number in a GNU header");
                    (p, &[])
                }
            };
            set_raw(&mut h.as_old_mut().name, path);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).expect("appending to an in-memory tar");
        }
        b.into_inner().expect("finishing an in-memory tar")
    }
}

fn set_raw(field: &mut [u8; 100], s: &str) {
    assert!(s.len() < 100, "test paths stay under 100 bytes");
    field.fill(0);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, tar).expect("gzip into memory");
            gz.finish().expect("gzip into memory")
        }
        Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd into memory"),
    }
}

pub fn layer_media(c: Compression, docker: bool) -> &'static str {
    match (c, docker) {
        (Compression::None, true) => "application/vnd.docker.image.rootfs.diff.tar",
        (Compression::Gzip, true) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (Compression::Zstd, true) => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        (Compression::None, false) => "application/vnd.oci.image.layer.v1.tar",
        (Compression::Gzip, false) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Compression::Zstd, false) => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// An image ready to push: blobs by digest plus the manifest.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: &'static str,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
}

impl BuiltImage {
    /// Changes the manifest JSON (a layer's media type, its URLs...) and
    /// recomputes its digest.
    pub fn edit_manifest(mut self, f: impl FnOnce(&mut serde_json::Value)) -> Self {
        let mut m: serde_json::Value =
            serde_json::from_slice(&self.manifest).expect("manifest JSON");
        f(&mut m);
        self.manifest = serde_json::to_vec(&m).expect("manifest JSON");
        self.manifest_digest = digest(&self.manifest);
        self
    }

    /// Sets the media type of layer `i`.
    pub fn layer_media_type(self, i: usize, media_type: &str) -> Self {
        self.edit_manifest(|m| m["layers"][i]["mediaType"] = json!(media_type))
    }

    /// The index entry for this manifest with the given platform.
    pub fn index_entry(&self, platform: serde_json::Value) -> serde_json::Value {
        json!({
            "mediaType": self.manifest_media_type,
            "digest": self.manifest_digest,
            "size": self.manifest.len(),
            "platform": platform,
        })
    }
}

/// An OCI artifact: an empty config and one blob per `(media type, bytes)`,
/// typed by `artifactType` as the OCI image spec 1.1 describes.
pub fn artifact(artifact_type: &str, blobs: &[(&str, &[u8])]) -> BuiltImage {
    let config = b"{}".to_vec();
    let config_digest = digest(&config);
    let mut all = BTreeMap::new();
    all.insert(config_digest.clone(), config.clone());
    let mut layers = Vec::new();
    let mut layer_digests = Vec::new();
    for (media_type, bytes) in blobs {
        let d = digest(bytes);
        layers.push(json!({"mediaType": media_type, "digest": d, "size": bytes.len()}));
        layer_digests.push(d.clone());
        all.insert(d, bytes.to_vec());
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .expect("manifest JSON");
    BuiltImage {
        blobs: all,
        config,
        config_digest,
        manifest_digest: digest(&manifest),
        manifest,
        manifest_media_type: OCI_MANIFEST,
        layer_digests,
        diff_ids: Vec::new(),
    }
}

/// A build attestation as buildkit attaches it to an index: an image
/// manifest for platform `unknown/unknown` whose layer is an in-toto
/// statement about `subject`. Run as an image, its layer would not unpack.
pub fn attestation(subject: &BuiltImage) -> BuiltImage {
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "subject": [{"digest": {"sha256": subject.manifest_digest.trim_start_matches("sha256:")}}],
        "predicateType": "https://spdx.dev/Document",
        "predicate": {},
    }))
    .expect("statement JSON");
    let layer_digest = digest(&statement);
    let config = serde_json::to_vec(&json!({
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .expect("config JSON");
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": layer_digest, "size": statement.len(),
                    "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}],
    }))
    .expect("manifest JSON");
    let mut blobs = BTreeMap::new();
    blobs.insert(config_digest.clone(), config.clone());
    blobs.insert(layer_digest.clone(), statement);
    BuiltImage {
        blobs,
        config,
        config_digest,
        manifest_digest: digest(&manifest),
        manifest,
        manifest_media_type: OCI_MANIFEST,
        layer_digests: vec![layer_digest.clone()],
        diff_ids: vec![layer_digest],
    }
}

/// The index entry buildkit writes for an attestation of `subject`.
pub fn attestation_entry(att: &BuiltImage, subject: &BuiltImage) -> serde_json::Value {
    let mut e = att.index_entry(json!({"architecture": "unknown", "os": "unknown"}));
    e["annotations"] = json!({
        "vnd.docker.reference.type": "attestation-manifest",
        "vnd.docker.reference.digest": subject.manifest_digest,
    });
    e
}

#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub layers: Vec<(Layer, Compression)>,
    pub user: Option<String>,
    pub arch: String,
    /// Docker schema2 media types instead of OCI ones.
    pub docker: bool,
    /// Makes otherwise equal images differ.
    pub label: String,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
    /// `WORKDIR`.
    pub workdir: Option<String>,
    /// `STOPSIGNAL`, written as is.
    pub stop_signal: Option<String>,
}

impl ImageSpec {
    pub fn new(layers: Vec<Layer>) -> Self {
        ImageSpec {
            layers: layers.into_iter().map(|l| (l, Compression::Gzip)).collect(),
            user: None,
            arch: "amd64".into(),
            docker: false,
            label: String::new(),
            volumes: Vec::new(),
            workdir: None,
            stop_signal: None,
        }
    }
    pub fn workdir(mut self, dir: &str) -> Self {
        self.workdir = Some(dir.into());
        self
    }
    pub fn stop_signal(mut self, s: &str) -> Self {
        self.stop_signal = Some(s.into());
        self
    }
    pub fn volume(mut self, path: &str) -> Self {
        self.volumes.push(path.into());
        self
    }
    pub fn user(mut self, u: &str) -> Self {
        self.user = Some(u.into());
        self
    }
    pub fn label(mut self, l: &str) -> Self {
        self.label = l.into();
        self
    }

    pub fn build(&self) -> BuiltImage {
        let mut blobs = BTreeMap::new();
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for (layer, c) in &self.layers {
            let tar = layer.tar();
            diff_ids.push(digest(&tar));
            let blob = compress(&tar, *c);
            let d = digest(&blob);
            layer_descs.push(
                json!({"mediaType": layer_media(*c, self.docker), "digest": d, "size": blob.len()}),
            );
            layer_digests.push(d.clone());
            blobs.insert(d, blob);
        }
        let volumes: serde_json::Map<String, serde_json::Value> = self
            .volumes
            .iter()
            .map(|v| (v.clone(), json!({})))
            .collect();
        let config = json!({
            "architecture": self.arch,
            "os": "linux",
            "config": {
                "User": self.user.clone().unwrap_or_default(),
                "Env": ["PATH=/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": {"gantry.e2e": self.label},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let mut config = config;
        if !volumes.is_empty() {
            config["config"]["Volumes"] = json!(volumes);
        }
        if let Some(w) = &self.workdir {
            config["config"]["WorkingDir"] = json!(w);
        }
        if let Some(s) = &self.stop_signal {
            config["config"]["StopSignal"] = json!(s);
        }
        let config = serde_json::to_vec(&config).expect("config JSON");
        let config_digest = digest(&config);
        blobs.insert(config_digest.clone(), config.clone());
        let media = if self.docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        };
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media,
            "config": {"mediaType": if self.docker { DOCKER_CONFIG } else { OCI_CONFIG }, "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
        BuiltImage {
            blobs,
            config_digest,
            manifest_digest: digest(&manifest),
            manifest,
            config,
            manifest_media_type: media,
            layer_digests,
            diff_ids,
        }
    }
}

/// Pushes blobs and manifests with the distribution API's monolithic upload.
pub struct Pusher {
    client: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl Pusher {
    pub fn new(addr: &str, auth: Option<(&str, &str)>) -> Self {
        Pusher {
            client: reqwest::Client::new(),
            base: format!("http://{addr}"),
            auth: auth.map(|(u, p)| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            }),
        }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, url);
        match &self.auth {
            Some(a) => r.header("Authorization", a),
            None => r,
        }
    }

    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let head = self
            .req(
                reqwest::Method::HEAD,
                &format!("{}/v2/{repo}/blobs/{d}", self.base),
            )
            .send()
            .await;
        if head.is_ok_and(|r| r.status().is_success()) {
            return d;
        }
        let start = self
            .req(
                reqwest::Method::POST,
                &format!("{}/v2/{repo}/blobs/uploads/", self.base),
            )
            .send()
            .await
            .expect("starting a blob upload");
        assert_eq!(start.status(), 202, "upload start for {repo}");
        let location = start.headers()["location"]
            .to_str()
            .expect("upload location")
            .to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let put = self
            .req(reqwest::Method::PUT, &format!("{url}{sep}digest={d}"))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .expect("uploading a blob");
        assert_eq!(put.status(), 201, "blob upload for {repo}");
        d
    }

    pub async fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("pushing a manifest");
        assert_eq!(
            r.status(),
            201,
            "manifest push of {repo}:{reference}: {:?}",
            r.text().await
        );
    }

    /// Pushes an image and tags it with every name in `tags`.
    pub async fn image(&self, repo: &str, tags: &[&str], img: &BuiltImage) {
        for b in img.blobs.values() {
            self.blob(repo, b).await;
        }
        for t in tags {
            self.manifest(repo, t, img.manifest_media_type, &img.manifest)
                .await;
        }
    }

    /// Pushes an index of the given entries (whose manifests must be
    /// pushed already) under `reference`. Returns the index and its digest.
    pub async fn raw_index(
        &self,
        repo: &str,
        reference: &str,
        entries: Vec<serde_json::Value>,
    ) -> (Vec<u8>, String) {
        let index = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        )
        .expect("index JSON");
        self.manifest(repo, reference, OCI_INDEX, &index).await;
        let d = digest(&index);
        (index, d)
    }

    /// Pushes an image's blobs and its manifest by digest only.
    pub async fn untagged(&self, repo: &str, img: &BuiltImage) {
        self.image(repo, &[], img).await;
        self.manifest(
            repo,
            &img.manifest_digest,
            img.manifest_media_type,
            &img.manifest,
        )
        .await;
    }

    /// Pushes several single-platform images and an index over them.
    /// Returns the index digest.
    pub async fn index(&self, repo: &str, tag: &str, images: &[(&str, &BuiltImage)]) -> String {
        let mut entries = Vec::new();
        for (arch, img) in images {
            self.image(repo, &[], img).await;
            self.manifest(
                repo,
                &img.manifest_digest,
                img.manifest_media_type,
                &img.manifest,
            )
            .await;
            entries.push(json!({
                "mediaType": img.manifest_media_type,
                "digest": img.manifest_digest,
                "size": img.manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            }));
        }
        let index = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
        )
        .expect("index JSON");
        self.manifest(repo, tag, OCI_INDEX, &index).await;
        digest(&index)
    }
}
