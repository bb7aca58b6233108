//! `NamespaceOption.userns_options` checked the way kubelet fills it in:
//! mode NODE is the host's namespace, mode POD a namespace of the pod's own
//! with one uid and one gid range that maps container id 0. Anything else
//! is refused before a single namespace or mount is made.

use gantry_proto::v1::{IdMapping, NamespaceMode, NamespaceOption};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One contiguous range: container ids `container..container+len` are host
/// ids `host..host+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

impl IdMap {
    /// The host id of container id `id`, if the range maps it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container)?;
        (off < self.len).then(|| self.host + off)
    }

    /// The line the kernel's `uid_map`/`gid_map` files take.
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container, self.host, self.len)
    }

    pub fn to_proto(self) -> IdMapping {
        IdMapping {
            host_id: self.host,
            container_id: self.container,
            length: self.len,
        }
    }
}

/// A pod's user namespace mappings, as its record keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mappings {
    pub uid: IdMap,
    pub gid: IdMap,
}

impl Mappings {
    /// The mappings as a pod status (and the OCI spec) carries them.
    pub fn to_proto(self) -> (Vec<IdMapping>, Vec<IdMapping>) {
        (vec![self.uid.to_proto()], vec![self.gid.to_proto()])
    }
}

/// The highest id the kernel maps: (u32)-1 means "no id" and never is one.
const LAST_ID: u64 = u32::MAX as u64 - 1;

fn one_range(kind: &str, list: &[IdMapping]) -> Result<IdMap> {
    let [m] = list else {
        return Err(Error::InvalidArgument(format!(
            "user namespace: exactly one {kind} mapping is supported, got {}",
            list.len()
        )));
    };
    if m.length == 0 {
        return Err(Error::InvalidArgument(format!(
            "user namespace: the {kind} mapping has length 0"
        )));
    }
    if m.container_id != 0 {
        return Err(Error::InvalidArgument(format!(
            "user namespace: the {kind} mapping must map container id 0, it starts at {}",
            m.container_id
        )));
    }
    let len = u64::from(m.length);
    for (side, start) in [("host", m.host_id), ("container", m.container_id)] {
        if u64::from(start) + len - 1 > LAST_ID {
            return Err(Error::InvalidArgument(format!(
                "user namespace: the {kind} mapping's {side} range {start}+{} overflows the id space",
                m.length
            )));
        }
    }
    // Host id 0 inside the pod would make the pod's root the node's root,
    // the one thing a user namespace is there to prevent.
    if m.host_id == 0 {
        return Err(Error::InvalidArgument(format!(
            "user namespace: the {kind} mapping must not include host id 0"
        )));
    }
    Ok(IdMap {
        container: m.container_id,
        host: m.host_id,
        len: m.length,
    })
}

fn mode_name(mode: i32) -> String {
    NamespaceMode::try_from(mode)
        .map(|m| m.as_str_name().to_string())
        .unwrap_or_else(|_| format!("unknown mode {mode}"))
}

/// The pod's own user namespace mappings, or `None` for the host's.
pub fn from_namespace_options(ns: Option<&NamespaceOption>) -> Result<Option<Mappings>> {
    let Some(ns) = ns else { return Ok(None) };
    let Some(u) = ns.userns_options.as_ref() else {
        return Ok(None);
    };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(Error::InvalidArgument(
                    "user namespace mode NODE takes no uid or gid mappings".into(),
                ));
            }
            Ok(None)
        }
        Ok(NamespaceMode::Pod) => {
            // The namespaces the pod would share with the node belong to the
            // node's user namespace, so the pod's root would hold nothing in
            // them and the runtime could not mount their /sys, /proc or mqueue.
            for (what, mode) in [("network", ns.network), ("pid", ns.pid), ("ipc", ns.ipc)] {
                if mode == NamespaceMode::Node as i32 {
                    return Err(Error::InvalidArgument(format!(
                        "a pod in its own user namespace cannot use the host's {what} namespace"
                    )));
                }
            }
            Ok(Some(Mappings {
                uid: one_range("uid", &u.uids)?,
                gid: one_range("gid", &u.gids)?,
            }))
        }
        _ => Err(Error::InvalidArgument(format!(
            "user namespace mode {} is not supported (only POD and NODE)",
            mode_name(u.mode)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use gantry_proto::v1::UserNamespace;

    use super::*;

    fn map(container: u32, host: u32, len: u32) -> IdMapping {
        IdMapping {
            host_id: host,
            container_id: container,
            length: len,
        }
    }

    fn opts(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> NamespaceOption {
        NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: mode as i32,
                uids,
                gids,
            }),
            ..Default::default()
        }
    }

    fn code(r: Result<Option<Mappings>>) -> tonic::Code {
        tonic::Status::from(r.expect_err("must be refused")).code()
    }

    #[test]
    fn absent_options_and_node_mode_are_the_host_namespace() {
        assert_eq!(from_namespace_options(None).unwrap(), None);
        assert_eq!(
            from_namespace_options(Some(&NamespaceOption::default())).unwrap(),
            None
        );
        let node = opts(NamespaceMode::Node, vec![], vec![]);
        assert_eq!(from_namespace_options(Some(&node)).unwrap(), None);
    }

    #[test]
    fn pod_mode_keeps_kubelets_ranges() {
        let o = opts(
            NamespaceMode::Pod,
            vec![map(0, 65536, 65536)],
            vec![map(0, 131072, 65536)],
        );
        let m = from_namespace_options(Some(&o)).unwrap().unwrap();
        assert_eq!(
            m.uid,
            IdMap {
                container: 0,
                host: 65536,
                len: 65536
            }
        );
        assert_eq!(m.gid.host, 131072);
        assert_eq!(m.uid.map_line(), "0 65536 65536\n");
        assert_eq!(m.uid.to_host(0), Some(65536));
        assert_eq!(m.uid.to_host(65535), Some(131071));
        assert_eq!(m.uid.to_host(65536), None);
        let (u, g) = m.to_proto();
        assert_eq!(u, vec![map(0, 65536, 65536)]);
        assert_eq!(g, vec![map(0, 131072, 65536)]);
        // critest's own range is not a multiple of 65536.
        let o = opts(
            NamespaceMode::Pod,
            vec![map(0, 1000, 100000)],
            vec![map(0, 1000, 100000)],
        );
        assert!(from_namespace_options(Some(&o)).unwrap().is_some());
    }

    #[test]
    fn bad_requests_are_invalid_argument() {
        let ok = || vec![map(0, 65536, 65536)];
        let cases = [
            opts(NamespaceMode::Container, vec![], vec![]),
            opts(NamespaceMode::Target, ok(), ok()),
            opts(NamespaceMode::Node, ok(), ok()),
            opts(NamespaceMode::Node, vec![], ok()),
            opts(NamespaceMode::Pod, vec![], ok()),
            opts(NamespaceMode::Pod, ok(), vec![]),
            opts(
                NamespaceMode::Pod,
                vec![map(0, 65536, 10), map(10, 70000, 10)],
                ok(),
            ),
            opts(NamespaceMode::Pod, ok(), vec![map(1, 65536, 65536)]),
            opts(NamespaceMode::Pod, vec![map(0, 65536, 0)], ok()),
            opts(NamespaceMode::Pod, vec![map(0, 0, 65536)], ok()),
            opts(NamespaceMode::Pod, vec![map(0, u32::MAX - 10, 65536)], ok()),
            opts(NamespaceMode::Pod, ok(), vec![map(0, 1, u32::MAX)]),
        ];
        for c in cases {
            assert_eq!(
                code(from_namespace_options(Some(&c))),
                tonic::Code::InvalidArgument,
                "{c:?}"
            );
        }
        let mut unknown = opts(NamespaceMode::Pod, ok(), ok());
        unknown.userns_options.as_mut().unwrap().mode = 42;
        let e = from_namespace_options(Some(&unknown)).unwrap_err();
        assert!(e.to_string().contains("unknown mode 42"), "{e}");
    }

    #[test]
    fn the_last_id_is_reachable_but_not_beyond() {
        // Host ids up to 2^32-2 are real ids; 2^32-1 is "no id".
        let edge = opts(
            NamespaceMode::Pod,
            vec![map(0, u32::MAX - 65536, 65536)],
            vec![map(0, u32::MAX - 65536, 65536)],
        );
        assert!(from_namespace_options(Some(&edge)).unwrap().is_some());
        let over = opts(
            NamespaceMode::Pod,
            vec![map(0, u32::MAX - 65535, 65536)],
            vec![map(0, 65536, 65536)],
        );
        assert_eq!(
            code(from_namespace_options(Some(&over))),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn host_namespaces_cannot_go_with_a_pod_user_namespace() {
        for set in [
            |o: &mut NamespaceOption| o.network = NamespaceMode::Node as i32,
            |o: &mut NamespaceOption| o.pid = NamespaceMode::Node as i32,
            |o: &mut NamespaceOption| o.ipc = NamespaceMode::Node as i32,
        ] {
            let mut o = opts(
                NamespaceMode::Pod,
                vec![map(0, 65536, 65536)],
                vec![map(0, 65536, 65536)],
            );
            set(&mut o);
            assert_eq!(
                code(from_namespace_options(Some(&o))),
                tonic::Code::InvalidArgument
            );
        }
    }
}
