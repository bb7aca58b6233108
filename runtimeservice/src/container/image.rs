//! The image store as containers see it.

use super::*;

/// What the runtime needs to know of an image: the image service answers.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub id: String,
    /// The reference to report as `image_ref` (a repo digest if known).
    pub image_ref: String,
    /// Layer directories, bottom first.
    pub snapshots: Vec<PathBuf>,
    /// The image config JSON.
    pub config: Value,
    /// Set when the name is an OCI artifact: stored, but no container image.
    pub artifact_type: Option<String>,
}

/// The image store as containers see it. A container holds its image (and
/// each image it mounts) from create to remove through leases named after
/// it, so removing the image meanwhile takes only its name.
#[async_trait::async_trait]
pub trait ImageLookup: Send + Sync + 'static {
    /// Resolves `image` and holds its content under the lease `lease` for
    /// the container `owner` until [`Self::release`]; `None` when no usable
    /// image has that name.
    async fn acquire(&self, image: &str, lease: &str, owner: &str)
        -> Result<Option<ResolvedImage>>;
    /// Lets go of every lease of the container `owner`.
    async fn release(&self, owner: &str) -> Result<()>;
    /// Reconciles the leases with the containers that exist, given with
    /// their image IDs: leases of others go (containers removed while a
    /// crash kept their leases), and a container that holds none (made
    /// before leases existed) gets one on its image.
    async fn retain(&self, live: &HashMap<String, String>) -> Result<()>;
}
