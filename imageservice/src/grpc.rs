//! The CRI ImageService over gRPC: converts between CRI messages and the
//! store's plain types; the logic lives in [`crate::store`].

use std::collections::HashMap;
use std::sync::Arc;

use gantry_proto::v1::image_service_server::ImageService;
use gantry_proto::v1::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageSpec, ImageStatusRequest, ImageStatusResponse, ListImagesRequest, ListImagesResponse,
    PullImageRequest, PullImageResponse, RemoveImageRequest, RemoveImageResponse,
    StreamImagesRequest, StreamImagesResponse, UInt64Value,
};
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::fs_info::FsInfoCache;
use crate::reference::ImageRef;
use crate::registry::Credentials;
use crate::store::ImageStore;

pub use crate::fs_info::ContainerFsUsage;

#[derive(Clone)]
pub struct CriImageService {
    store: Arc<ImageStore>,
    fs_info: Arc<FsInfoCache>,
}

impl CriImageService {
    pub fn new(store: Arc<ImageStore>) -> Self {
        let fs_info = Arc::new(FsInfoCache::new(store.clone(), None));
        fs_info.watch_changes();
        CriImageService { fs_info, store }
    }

    /// Reports the containers' filesystem in ImageFsInfo too, so that
    /// kubelet's eviction sees what containers write.
    pub fn with_container_usage(mut self, containers: Arc<dyn ContainerFsUsage>) -> Self {
        self.fs_info = Arc::new(FsInfoCache::new(self.store.clone(), Some(containers)));
        self.fs_info.watch_changes();
        self
    }

    /// The images a ListImages or StreamImages filter selects.
    fn list(&self, filter: Option<gantry_proto::v1::ImageFilter>) -> Result<Vec<Image>, Status> {
        let filter = filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        Ok(match filter {
            Some(name) => self
                .store
                .resolve_indexed(&name)?
                .map(|e| e.cri.clone())
                .into_iter()
                .collect(),
            None => self.store.list_cri(),
        })
    }
}

type ImageStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<StreamImagesResponse, Status>> + Send>,
>;

pub use crate::index::ARTIFACT_TYPE_ANNOTATION;

fn image_name(spec: Option<&ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(Status::invalid_argument(
            "image spec with a non-empty image name is required",
        )),
    }
}

#[tonic::async_trait]
impl ImageService for CriImageService {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let images = self.list(request.into_inner().filter)?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    type StreamImagesStream = ImageStream;

    /// ListImages' answer, split into messages of bounded size (CRI 1.36).
    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> Result<Response<ImageStream>, Status> {
        let images = self.list(request.into_inner().filter)?;
        let chunks = gantry_proto::chunk_by_size(images, gantry_proto::STREAM_CHUNK_BYTES);
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|images| Ok(StreamImagesResponse { images })),
        ))))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let name = image_name(req.image.as_ref())?;
        // Damaged means absent, so that kubelet pulls it again.
        let Some(entry) = self.store.resolve_usable(name).await? else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let img = &entry.record;
        let mut info = HashMap::new();
        if req.verbose {
            // An artifact's config need not be JSON at all.
            let config: serde_json::Value = match &img.artifact_type {
                None => serde_json::from_slice(&self.store.config_json(img)?)
                    .map_err(|e| Status::internal(e.to_string()))?,
                Some(_) => serde_json::Value::Null,
            };
            let snapshots = match &img.artifact_type {
                None => self.store.snapshot_paths(img)?,
                Some(_) => Vec::new(),
            };
            let detail = serde_json::json!({
                "id": img.id,
                "manifestDigest": img.manifest_digest,
                "targetDigest": img.target_digest,
                "mediaType": img.media_type,
                "artifactType": img.artifact_type,
                "configDigest": img.config_digest(),
                "layers": img.layers.iter().map(|l| serde_json::json!({
                    "digest": l.digest, "diffID": l.diff_id, "size": l.size, "mediaType": l.media_type,
                })).collect::<Vec<_>>(),
                "snapshots": snapshots,
                "imageSpec": config,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        let mut image = entry.cri.clone();
        // Kubelet checks the digest it asked for: report it first, also when
        // it named the platform manifest of an image pulled by its index.
        if let Ok(r) = ImageRef::parse(name) {
            if let Some(d) = &r.digest {
                let asked = r.with_digest(d);
                image.repo_digests.retain(|x| x != &asked);
                image.repo_digests.insert(0, asked);
            }
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(image),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        let name = image_name(req.image.as_ref())?;
        let credentials = match &req.auth {
            Some(a) => Credentials::from_cri(&a.username, &a.password, &a.auth, &a.registry_token)?,
            None => None,
        };
        let img = self.store.pull(name, credentials).await?;
        Ok(Response::new(PullImageResponse { image_ref: img.id }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let req = request.into_inner();
        let name = image_name(req.image.as_ref())?;
        // Removing an image that is not there succeeds (CRI idempotence).
        match self.store.remove(name).await {
            Ok(_) => Ok(Response::new(RemoveImageResponse {})),
            Err(Error::InvalidReference { .. }) => Ok(Response::new(RemoveImageResponse {})),
            Err(e) => Err(e.into()),
        }
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let figures = self.fs_info.figures().await?;
        let timestamp = figures.timestamp;
        let usage = figures.images;
        let container_usage = figures.containers.clone();
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.store.root().display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: usage.bytes }),
                inodes_used: Some(UInt64Value {
                    value: usage.inodes,
                }),
            }],
            container_filesystems: container_usage
                .map(|(dir, bytes, inodes)| FilesystemUsage {
                    timestamp,
                    fs_id: Some(FilesystemIdentifier {
                        mountpoint: dir.display().to_string(),
                    }),
                    used_bytes: Some(UInt64Value { value: bytes }),
                    inodes_used: Some(UInt64Value { value: inodes }),
                })
                .into_iter()
                .collect(),
        }))
    }
}
