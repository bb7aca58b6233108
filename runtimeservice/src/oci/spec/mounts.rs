//! Mounts: CRI mounts as OCI bind mounts, recursive read-only, and the
//! image's anonymous volumes.

use super::*;

/// The image's `VOLUME` paths that no CRI mount covers, cleaned. A path
/// that is not absolute or climbs with `..` is refused: it would name
/// something outside the container.
pub fn image_volumes(image: &Value, mounts: &[cri::Mount]) -> Result<Vec<String>> {
    let Some(vols) = image["config"]["Volumes"].as_object() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in vols.keys() {
        let path = Path::new(v);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::InvalidArgument(format!(
                "image volume {v:?} is not a clean absolute path"
            )));
        }
        let clean: PathBuf = path.components().collect();
        let clean = clean.display().to_string();
        if clean == "/"
            || mounts
                .iter()
                .any(|m| Path::new(&m.container_path) == Path::new(&clean))
        {
            continue;
        }
        out.push(clean);
    }
    out.sort();
    Ok(out)
}

/// The CRI's conditions for a recursive read-only mount (KEP-3857): read-only,
/// private propagation, and a handler that can do it.
pub(super) fn check_recursive_read_only(
    m: &cri::Mount,
    propagation: &str,
    supported: bool,
) -> Result<()> {
    if !m.readonly {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: recursive_read_only needs readonly",
            m.container_path
        )));
    }
    if propagation != "rprivate" {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: recursive_read_only needs private propagation",
            m.container_path
        )));
    }
    if !supported {
        return Err(Error::InvalidArgument(format!(
            "mount {:?}: recursive_read_only is not supported by this runtime handler (see Status' runtime_handlers)",
            m.container_path
        )));
    }
    Ok(())
}

pub(super) fn bind(dest: &str, source: &Path, readonly: bool, propagation: &str) -> Value {
    let mut options = vec!["rbind", propagation];
    options.push(if readonly { "ro" } else { "rw" });
    json!({"destination": dest, "type": "bind", "source": source, "options": options})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_read_only_needs_readonly_private_and_a_capable_handler() {
        let m = cri::Mount {
            container_path: "/d".into(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        };
        assert!(check_recursive_read_only(&m, "rprivate", true).is_ok());
        let refused = |m: &cri::Mount, p: &str, ok: bool, word: &str| {
            assert!(matches!(
                check_recursive_read_only(m, p, ok),
                Err(Error::InvalidArgument(msg)) if msg.contains(word)
            ));
        };
        refused(&m, "rslave", true, "propagation");
        refused(&m, "rshared", true, "propagation");
        refused(&m, "rprivate", false, "not supported");
        let rw = cri::Mount {
            readonly: false,
            ..m.clone()
        };
        refused(&rw, "rprivate", true, "readonly");
    }

    #[test]
    fn image_volumes_are_clean_and_skip_mounted_paths() {
        let img = json!({"config": {"Volumes": {"/data/": {}, "/var//log": {}, "/m": {}}}});
        let mounts = vec![cri::Mount {
            container_path: "/m".into(),
            ..Default::default()
        }];
        assert_eq!(
            image_volumes(&img, &mounts).unwrap(),
            vec!["/data".to_string(), "/var/log".to_string()]
        );
        for bad in ["relative", "/a/../../etc"] {
            let img = json!({"config": {"Volumes": {bad: {}}}});
            assert!(image_volumes(&img, &[]).is_err(), "{bad}");
        }
        assert!(image_volumes(&json!({"config": {}}), &[])
            .unwrap()
            .is_empty());
    }
}
