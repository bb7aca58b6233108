//! The CRI 1.33–1.36 additions survive the wire, the descriptor set matches
//! the upstream field numbers, and records written before still load.

use prost::Message;

use crate::v1 as cri;

/// Every field, RPC and enum value the CRI gained between cri-api v0.32
/// and v0.36, with the number upstream gave it: (message, field, number,
/// protobuf type, type name for messages and enums).
const ADDED_FIELDS: &[(
    &str,
    &str,
    i32,
    prost_types::field_descriptor_proto::Type,
    &str,
)] = {
    use prost_types::field_descriptor_proto::Type::*;
    &[
        ("Mount", "image_sub_path", 10, String, ""),
        ("ImageSpec", "image_ref", 20, String, ""),
        ("KeyValue", "value", 2, Bytes, ""),
        (
            "ContainerConfig",
            "stop_signal",
            18,
            Enum,
            ".runtime.v1.Signal",
        ),
        (
            "ContainerStatus",
            "stop_signal",
            19,
            Enum,
            ".runtime.v1.Signal",
        ),
        (
            "LinuxPodSandboxStats",
            "io",
            6,
            Message,
            ".runtime.v1.IoUsage",
        ),
        ("ContainerStats", "io", 6, Message, ".runtime.v1.IoUsage"),
        ("CpuUsage", "psi", 4, Message, ".runtime.v1.PsiStats"),
        ("MemoryUsage", "psi", 8, Message, ".runtime.v1.PsiStats"),
        ("IoUsage", "timestamp", 1, Int64, ""),
        ("IoUsage", "psi", 2, Message, ".runtime.v1.PsiStats"),
        ("PsiStats", "Full", 1, Message, ".runtime.v1.PsiData"),
        ("PsiStats", "Some", 2, Message, ".runtime.v1.PsiData"),
        ("PsiData", "Total", 1, Uint64, ""),
        ("PsiData", "Avg10", 2, Double, ""),
        ("PsiData", "Avg60", 3, Double, ""),
        ("PsiData", "Avg300", 4, Double, ""),
        (
            "RuntimeFeatures",
            "user_namespaces_host_network",
            2,
            Bool,
            "",
        ),
        (
            "UpdatePodSandboxResourcesRequest",
            "pod_sandbox_id",
            1,
            String,
            "",
        ),
        (
            "UpdatePodSandboxResourcesRequest",
            "overhead",
            2,
            Message,
            ".runtime.v1.LinuxContainerResources",
        ),
        (
            "UpdatePodSandboxResourcesRequest",
            "resources",
            3,
            Message,
            ".runtime.v1.LinuxContainerResources",
        ),
        (
            "StreamPodSandboxesRequest",
            "filter",
            1,
            Message,
            ".runtime.v1.PodSandboxFilter",
        ),
        (
            "StreamPodSandboxesResponse",
            "pod_sandboxes",
            1,
            Message,
            ".runtime.v1.PodSandbox",
        ),
        (
            "StreamContainersRequest",
            "filter",
            1,
            Message,
            ".runtime.v1.ContainerFilter",
        ),
        (
            "StreamContainersResponse",
            "containers",
            1,
            Message,
            ".runtime.v1.Container",
        ),
        (
            "StreamContainerStatsRequest",
            "filter",
            1,
            Message,
            ".runtime.v1.ContainerStatsFilter",
        ),
        (
            "StreamContainerStatsResponse",
            "container_stats",
            1,
            Message,
            ".runtime.v1.ContainerStats",
        ),
        (
            "StreamPodSandboxStatsRequest",
            "filter",
            1,
            Message,
            ".runtime.v1.PodSandboxStatsFilter",
        ),
        (
            "StreamPodSandboxStatsResponse",
            "pod_sandbox_stats",
            1,
            Message,
            ".runtime.v1.PodSandboxStats",
        ),
        (
            "StreamPodSandboxMetricsResponse",
            "pod_sandbox_metrics",
            1,
            Message,
            ".runtime.v1.PodSandboxMetrics",
        ),
        (
            "StreamImagesRequest",
            "filter",
            1,
            Message,
            ".runtime.v1.ImageFilter",
        ),
        (
            "StreamImagesResponse",
            "images",
            1,
            Message,
            ".runtime.v1.Image",
        ),
        // Not new, but what pod resizes and rro mounts rely on.
        (
            "LinuxContainerResources",
            "memory_swap_limit_in_bytes",
            10,
            Int64,
            "",
        ),
        (
            "LinuxContainerResources",
            "unified",
            9,
            Message,
            ".runtime.v1.LinuxContainerResources.UnifiedEntry",
        ),
        (
            "RuntimeHandlerFeatures",
            "recursive_read_only_mounts",
            1,
            Bool,
            "",
        ),
        ("RuntimeHandlerFeatures", "user_namespaces", 2, Bool, ""),
        ("Mount", "recursive_read_only", 8, Bool, ""),
    ]
};

/// RPCs added after 1.32: (service, method, input, output, server streaming).
const ADDED_RPCS: &[(&str, &str, &str, &str, bool)] = &[
    (
        "RuntimeService",
        "StreamPodSandboxes",
        "StreamPodSandboxesRequest",
        "StreamPodSandboxesResponse",
        true,
    ),
    (
        "RuntimeService",
        "StreamContainers",
        "StreamContainersRequest",
        "StreamContainersResponse",
        true,
    ),
    (
        "RuntimeService",
        "StreamContainerStats",
        "StreamContainerStatsRequest",
        "StreamContainerStatsResponse",
        true,
    ),
    (
        "RuntimeService",
        "StreamPodSandboxStats",
        "StreamPodSandboxStatsRequest",
        "StreamPodSandboxStatsResponse",
        true,
    ),
    (
        "RuntimeService",
        "StreamPodSandboxMetrics",
        "StreamPodSandboxMetricsRequest",
        "StreamPodSandboxMetricsResponse",
        true,
    ),
    (
        "RuntimeService",
        "UpdatePodSandboxResources",
        "UpdatePodSandboxResourcesRequest",
        "UpdatePodSandboxResourcesResponse",
        false,
    ),
    (
        "ImageService",
        "StreamImages",
        "StreamImagesRequest",
        "StreamImagesResponse",
        true,
    ),
];

fn descriptor() -> prost_types::FileDescriptorProto {
    let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .expect("the embedded descriptor set decodes");
    assert_eq!(set.file.len(), 1);
    set.file.into_iter().next().expect("one file")
}

#[test]
fn descriptor_set_has_every_added_field_with_its_upstream_number() {
    let file = descriptor();
    assert_eq!(file.package(), "runtime.v1");
    for &(message, field, number, ty, type_name) in ADDED_FIELDS {
        let m = file
            .message_type
            .iter()
            .find(|m| m.name() == message)
            .unwrap_or_else(|| panic!("message {message} missing"));
        let f = m
            .field
            .iter()
            .find(|f| f.name() == field)
            .unwrap_or_else(|| panic!("{message}.{field} missing"));
        assert_eq!(f.number(), number, "{message}.{field}");
        assert_eq!(f.r#type(), ty, "{message}.{field}");
        assert_eq!(f.type_name(), type_name, "{message}.{field}");
        // No two fields of a message may share a number.
        let same = m.field.iter().filter(|g| g.number() == number).count();
        assert_eq!(same, 1, "{message} reuses number {number}");
    }
    for &(service, method, input, output, streaming) in ADDED_RPCS {
        let s = file
            .service
            .iter()
            .find(|s| s.name() == service)
            .unwrap_or_else(|| panic!("service {service} missing"));
        let m = s
            .method
            .iter()
            .find(|m| m.name() == method)
            .unwrap_or_else(|| panic!("{service}.{method} missing"));
        assert_eq!(m.input_type(), format!(".runtime.v1.{input}"));
        assert_eq!(m.output_type(), format!(".runtime.v1.{output}"));
        assert_eq!(m.server_streaming(), streaming, "{method}");
        assert!(!m.client_streaming(), "{method}");
    }
    let signal = file
        .enum_type
        .iter()
        .find(|e| e.name() == "Signal")
        .expect("enum Signal");
    assert_eq!(signal.value.len(), 66);
    for (name, number) in [
        ("RUNTIME_DEFAULT", 0),
        ("SIGKILL", 13),
        ("SIGTERM", 23),
        ("SIGRTMAX", 65),
    ] {
        let v = signal.value.iter().find(|v| v.name() == name).expect(name);
        assert_eq!(v.number(), number, "{name}");
    }
}

/// A resources value with every field set, as a pod resize sends it.
fn resources(scale: i64) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000 * scale,
        cpu_shares: 512 * scale,
        memory_limit_in_bytes: (64 << 20) * scale,
        oom_score_adj: 3,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        unified: [("memory.high".to_string(), "max".to_string())].into(),
        memory_swap_limit_in_bytes: (128 << 20) * scale,
    }
}

fn psi(seed: u64) -> Option<cri::PsiStats> {
    let data = |k: u64| cri::PsiData {
        total: seed * 1000 + k,
        avg10: 0.5 + k as f64,
        avg60: 1.25 + k as f64,
        avg300: 2.75 + k as f64,
    };
    Some(cri::PsiStats {
        full: Some(data(1)),
        some: Some(data(2)),
    })
}

/// Encodes, decodes and compares: the decoded message must equal the one
/// sent, and must differ from a default one where each added field sits.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(sent: &M) -> M {
    let bytes = sent.encode_to_vec();
    let got = M::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(&got, sent);
    got
}

#[test]
fn create_container_keeps_stop_signal_image_sub_path_and_binary_env() {
    let sent = cri::CreateContainerRequest {
        pod_sandbox_id: "pod".into(),
        config: Some(cri::ContainerConfig {
            stop_signal: cri::Signal::Sigrtmaxminus3 as i32,
            envs: vec![cri::KeyValue {
                key: "BLOB".into(),
                value: vec![0, 0xff, b'=', 0xfe],
            }],
            mounts: vec![cri::Mount {
                container_path: "/data".into(),
                image: Some(cri::ImageSpec {
                    image: "registry.example/data:1".into(),
                    image_ref: "sha256:abc".into(),
                    ..Default::default()
                }),
                image_sub_path: "sub/dir".into(),
                readonly: true,
                recursive_read_only: true,
                ..Default::default()
            }],
            ..Default::default()
        }),
        sandbox_config: None,
    };
    let got = round_trip(&sent);
    let config = got.config.expect("config");
    assert_eq!(config.stop_signal(), cri::Signal::Sigrtmaxminus3);
    assert_eq!(config.envs[0].value, [0, 0xff, b'=', 0xfe]);
    let mount = &config.mounts[0];
    assert_eq!(mount.image_sub_path, "sub/dir");
    assert!(mount.recursive_read_only);
    assert_eq!(
        mount.image.as_ref().map(|i| i.image_ref.as_str()),
        Some("sha256:abc")
    );
}

#[test]
fn statuses_stats_and_features_keep_their_added_fields() {
    let status = round_trip(&cri::ContainerStatusResponse {
        status: Some(cri::ContainerStatus {
            stop_signal: cri::Signal::Sigquit as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        status.status.map(|s| s.stop_signal()),
        Some(cri::Signal::Sigquit)
    );

    let container = cri::ContainerStats {
        cpu: Some(cri::CpuUsage {
            psi: psi(1),
            ..Default::default()
        }),
        memory: Some(cri::MemoryUsage {
            psi: psi(2),
            ..Default::default()
        }),
        io: Some(cri::IoUsage {
            timestamp: 42,
            psi: psi(3),
        }),
        ..Default::default()
    };
    let pod = round_trip(&cri::ListPodSandboxStatsResponse {
        stats: vec![cri::PodSandboxStats {
            linux: Some(cri::LinuxPodSandboxStats {
                io: Some(cri::IoUsage {
                    timestamp: 7,
                    psi: psi(4),
                }),
                containers: vec![container.clone()],
                ..Default::default()
            }),
            ..Default::default()
        }],
    });
    let linux = pod.stats[0].linux.as_ref().expect("linux stats");
    assert_eq!(linux.io.as_ref().and_then(|io| io.psi), psi(4));
    assert_eq!(linux.containers[0], container);
    let streamed = round_trip(&cri::StreamContainerStatsResponse {
        container_stats: vec![container.clone(), container],
    });
    assert_eq!(streamed.container_stats.len(), 2);

    let features = round_trip(&cri::StatusResponse {
        runtime_handlers: vec![cri::RuntimeHandler {
            name: "runc".into(),
            features: Some(cri::RuntimeHandlerFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: true,
            }),
        }],
        features: Some(cri::RuntimeFeatures {
            supplemental_groups_policy: true,
            user_namespaces_host_network: true,
        }),
        ..Default::default()
    });
    assert_eq!(
        features.features.map(|f| f.user_namespaces_host_network),
        Some(true)
    );
}

#[test]
fn update_pod_sandbox_resources_and_stream_requests_keep_every_field() {
    let got = round_trip(&cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: "pod-1".into(),
        overhead: Some(resources(1)),
        resources: Some(resources(3)),
    });
    assert_eq!(got.overhead, Some(resources(1)));
    assert_eq!(got.resources, Some(resources(3)));

    let labels: std::collections::HashMap<_, _> = [("app".to_string(), "x".to_string())].into();
    let pods = round_trip(&cri::StreamPodSandboxesRequest {
        filter: Some(cri::PodSandboxFilter {
            id: "p".into(),
            label_selector: labels.clone(),
            ..Default::default()
        }),
    });
    assert_eq!(pods.filter.map(|f| f.label_selector), Some(labels.clone()));
    let containers = round_trip(&cri::StreamContainersRequest {
        filter: Some(cri::ContainerFilter {
            pod_sandbox_id: "p".into(),
            ..Default::default()
        }),
    });
    assert_eq!(
        containers.filter.map(|f| f.pod_sandbox_id),
        Some("p".into())
    );
    let stats = round_trip(&cri::StreamPodSandboxStatsRequest {
        filter: Some(cri::PodSandboxStatsFilter {
            id: "p".into(),
            label_selector: labels,
        }),
    });
    assert_eq!(stats.filter.map(|f| f.id), Some("p".into()));
    let images = round_trip(&cri::StreamImagesRequest {
        filter: Some(cri::ImageFilter {
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
        }),
    });
    assert!(images.filter.and_then(|f| f.image).is_some());
    let metrics = round_trip(&cri::StreamPodSandboxMetricsResponse {
        pod_sandbox_metrics: vec![cri::PodSandboxMetrics {
            pod_sandbox_id: "p".into(),
            ..Default::default()
        }],
    });
    assert_eq!(metrics.pod_sandbox_metrics.len(), 1);
}

/// Bytes written by hand from the upstream field numbers, not by the
/// generated code: what a kubelet 1.36 puts on the wire for a mount with
/// an image sub-path and a container config with a stop signal.
#[test]
fn hand_encoded_upstream_bytes_decode_into_the_new_fields() {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut mount = Vec::new();
    encode_key(1, WireType::LengthDelimited, &mut mount);
    encode_varint(5, &mut mount);
    mount.extend_from_slice(b"/data");
    encode_key(10, WireType::LengthDelimited, &mut mount);
    encode_varint(3, &mut mount);
    mount.extend_from_slice(b"a/b");
    let mut config = Vec::new();
    encode_key(7, WireType::LengthDelimited, &mut config);
    encode_varint(mount.len() as u64, &mut config);
    config.extend_from_slice(&mount);
    encode_key(18, WireType::Varint, &mut config);
    encode_varint(18, &mut config); // SIGQUIT
    let got = cri::ContainerConfig::decode(config.as_slice()).expect("decodes");
    assert_eq!(got.mounts[0].container_path, "/data");
    assert_eq!(got.mounts[0].image_sub_path, "a/b");
    assert_eq!(got.stop_signal(), cri::Signal::Sigquit);
}

#[test]
fn records_written_with_the_1_32_types_still_load() {
    // A ContainerConfig as gantry stored it before: env values are strings
    // and the fields added since are absent.
    let old = r#"{"metadata":{"name":"c","attempt":0},"image":null,"command":[],
        "args":[],"working_dir":"","envs":[{"key":"A","value":"b c"}],
        "mounts":[{"container_path":"/x","host_path":"/y","readonly":true,
        "selinux_relabel":false,"propagation":0,"uid_mappings":[],"gid_mappings":[],
        "recursive_read_only":false,"image":null}],"devices":[],"labels":{},
        "annotations":{},"log_path":"","stdin":false,"stdin_once":false,
        "tty":false,"linux":null,"windows":null,"cdi_devices":[]}"#;
    let config: cri::ContainerConfig = serde_json::from_str(old).expect("old record loads");
    assert_eq!(config.envs[0].value, b"b c");
    assert_eq!(config.stop_signal(), cri::Signal::RuntimeDefault);
    assert_eq!(config.mounts[0].image_sub_path, "");
    // Text values are written back as text, so an older gantry reads them.
    let json = serde_json::to_value(&config).expect("serializes");
    assert_eq!(json["envs"][0]["value"], "b c");
}

#[test]
fn binary_env_values_survive_a_json_record() {
    let kv = cri::KeyValue {
        key: "K".into(),
        value: vec![0xff, 0, 0x80],
    };
    let json = serde_json::to_string(&kv).expect("serializes");
    assert_eq!(json, r#"{"key":"K","value":[255,0,128]}"#);
    let back: cri::KeyValue = serde_json::from_str(&json).expect("loads");
    assert_eq!(back, kv);
    assert!(serde_json::from_str::<cri::KeyValue>(r#"{"key":"K","value":[256]}"#).is_err());
    assert!(serde_json::from_str::<cri::KeyValue>(r#"{"key":"K","value":7}"#).is_err());
}

#[test]
fn auth_config_debug_hides_secrets() {
    let auth = cri::AuthConfig {
        username: "me".into(),
        password: "hunter2".into(),
        auth: "bWU6aHVudGVyMg==".into(),
        server_address: "registry.example".into(),
        identity_token: "idtok".into(),
        registry_token: String::new(),
    };
    let shown = format!("{auth:?}");
    for secret in ["hunter2", "bWU6aHVudGVyMg==", "idtok"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(shown.contains("me") && shown.contains("registry.example"));
    assert_eq!(shown.matches("[REDACTED]").count(), 3);
}

#[test]
fn chunks_stay_under_the_limit_and_keep_order() {
    let items: Vec<cri::Container> = (0..100)
        .map(|i| cri::Container {
            id: format!("{i:064}"),
            ..Default::default()
        })
        .collect();
    let one = cri::ListContainersResponse {
        containers: items[..1].to_vec(),
    }
    .encoded_len();
    let limit = one * 10;
    let chunks = crate::chunk_by_size(items.clone(), limit);
    assert_eq!(chunks.len(), 10);
    for c in &chunks {
        let size = cri::StreamContainersResponse {
            containers: c.clone(),
        }
        .encoded_len();
        assert!(size <= limit, "{size} > {limit}");
    }
    assert_eq!(chunks.concat(), items);
    // An item bigger than the limit travels alone; nothing gives nothing.
    assert_eq!(crate::chunk_by_size(items[..3].to_vec(), 1).len(), 3);
    assert!(crate::chunk_by_size(Vec::<cri::Container>::new(), limit).is_empty());
}
