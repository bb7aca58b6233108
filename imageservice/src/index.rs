//! The image index as held in memory: every image record, a map from each
//! of its names (tags and repo digests) to it, and its CRI `Image` message
//! built once when the record changes. ListImages clones the ready
//! messages and ImageStatus finds a name with one hash lookup; neither
//! reads the disk nor converts records. The records on disk stay the truth:
//! [`crate::store`] writes them first and rebuilds this from them at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gantry_proto::v1::{Image, ImageSpec, Int64Value};

use crate::manifest::user_of;
use crate::store::ImageRecord;

/// The spec annotation that marks an OCI artifact in ListImages and
/// ImageStatus, with its artifact type as the value.
pub const ARTIFACT_TYPE_ANNOTATION: &str = "gantry.dev/artifact-type";

/// One image: its record and its CRI message.
#[derive(Debug)]
pub struct Indexed {
    pub record: ImageRecord,
    pub cri: Image,
}

impl Indexed {
    fn new(record: ImageRecord) -> Arc<Self> {
        let cri = to_cri(&record);
        Arc::new(Indexed { record, cri })
    }
}

/// Cheap to clone: a pull's commit edits a copy and swaps it in whole.
#[derive(Debug, Clone, Default)]
pub struct Index {
    by_id: BTreeMap<String, Arc<Indexed>>,
    /// Every tag and repo digest of every image, to its ID.
    by_name: HashMap<String, String>,
}

impl Index {
    pub fn new(records: impl IntoIterator<Item = ImageRecord>) -> Self {
        let mut index = Index::default();
        for r in records {
            index.insert(r);
        }
        index
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Indexed>> {
        self.by_id.get(id)
    }

    /// The image that has `name` (a full tag or digest reference).
    pub fn named(&self, name: &str) -> Option<&Arc<Indexed>> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }

    pub fn entries(&self) -> impl Iterator<Item = &Arc<Indexed>> {
        self.by_id.values()
    }

    pub fn records(&self) -> impl Iterator<Item = &ImageRecord> {
        self.by_id.values().map(|e| &e.record)
    }

    /// The CRI messages of every image, in ID order.
    pub fn cri_images(&self) -> Vec<Image> {
        self.by_id.values().map(|e| e.cri.clone()).collect()
    }

    /// Adds or replaces the image with this record's ID. Names are unique
    /// to one image; the caller has taken them from any other first.
    pub fn insert(&mut self, record: ImageRecord) {
        self.remove(&record.id);
        for name in record.repo_tags.iter().chain(&record.repo_digests) {
            self.by_name.insert(name.clone(), record.id.clone());
        }
        self.by_id.insert(record.id.clone(), Indexed::new(record));
    }

    pub fn remove(&mut self, id: &str) -> Option<Arc<Indexed>> {
        let gone = self.by_id.remove(id)?;
        for name in gone
            .record
            .repo_tags
            .iter()
            .chain(&gone.record.repo_digests)
        {
            if self.by_name.get(name).map(String::as_str) == Some(id) {
                self.by_name.remove(name);
            }
        }
        Some(gone)
    }
}

pub fn to_cri(img: &ImageRecord) -> Image {
    let (uid, username) = user_of(&img.user);
    let annotations = img
        .artifact_type
        .iter()
        .map(|t| (ARTIFACT_TYPE_ANNOTATION.to_string(), t.clone()))
        .collect();
    Image {
        id: img.id.clone(),
        repo_tags: img.repo_tags.clone(),
        repo_digests: img.repo_digests.clone(),
        size: img.size(),
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: img.id.clone(),
            annotations,
            ..Default::default()
        }),
        pinned: false,
    }
}
