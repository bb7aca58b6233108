//! The cap on a container's log file: the node's, lowered by its pod's
//! annotation (the cap itself is kept by the monitor,
//! [`gantry_monitor::crilog::CappedLog`]).

use gantry_monitor::crilog::MIN_LOG_CAP;

/// The pod annotation that lowers the node's log size cap
/// (`runtime.log_max_bytes`) for the pod's containers: a Kubernetes
/// quantity (`5Mi`). It can only lower the cap, never raise or lift it.
pub const LOG_CAP_ANNOTATION: &str = "gantry.dev/log-max-bytes";

/// The cap on each log file of a pod's containers: the node's (`node`, 0
/// for none), lowered by the pod's annotation if it asks for less.
pub fn effective_cap(
    node: u64,
    annotations: &std::collections::HashMap<String, String>,
) -> Result<u64, String> {
    let Some(v) = annotations.get(LOG_CAP_ANNOTATION) else {
        return Ok(node);
    };
    let want = crate::pod::network::parse_quantity(v)
        .map_err(|why| format!("annotation {LOG_CAP_ANNOTATION}={v:?}: {why}"))?;
    if want < MIN_LOG_CAP {
        return Err(format!(
            "annotation {LOG_CAP_ANNOTATION}={v:?}: a log cap must be at least {MIN_LOG_CAP} bytes"
        ));
    }
    Ok(if node == 0 { want } else { want.min(node) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_can_only_lower_the_log_cap() {
        let a = |v: &str| {
            std::collections::HashMap::from([(LOG_CAP_ANNOTATION.to_string(), v.to_string())])
        };
        let none = std::collections::HashMap::new();
        assert_eq!(effective_cap(100 << 20, &none), Ok(100 << 20));
        assert_eq!(effective_cap(100 << 20, &a("1Mi")), Ok(1 << 20));
        assert_eq!(effective_cap(100 << 20, &a("10Gi")), Ok(100 << 20));
        assert_eq!(effective_cap(0, &a("2Mi")), Ok(2 << 20));
        assert_eq!(effective_cap(0, &none), Ok(0));
        for bad in ["0", "1k", "lots", "-5Mi", "1e99"] {
            assert!(effective_cap(100 << 20, &a(bad)).is_err(), "{bad}");
        }
    }
}
