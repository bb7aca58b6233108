//! Pulls the crafted images of issue 19 (layer media types, attestations,
//! nested indexes, foreign layers, schema 1, artifacts, a rejected layer)
//! into gantry and, when given its socket, into a peer CRI runtime such as
//! containerd, and prints what each answered side by side. Only prints:
//!
//! ```sh
//! gantry-image-matrix --registry 127.0.0.1:5000 \
//!     --peer unix:///run/peer-containerd/containerd.sock
//! ```
//!
//! The images go to `<registry>/issue19/...`; what a registry will not
//! hold (schema 1, foreign layers) is served by a loopback server of this
//! program, which the peer must reach over plain HTTP (containerd does for
//! 127.0.0.1).

use anyhow::{bail, Context};
use clap::Parser;
use gantry_e2e::daemon::Gantry;
use gantry_e2e::fixture::pull_request;
use gantry_e2e::oci::{
    artifact, attestation, attestation_entry, BuiltImage, Compression, ImageSpec, Layer, Pusher,
    OCI_INDEX,
};
use gantry_e2e::static_http::StaticHttp;
use gantry_proto::v1::image_service_client::ImageServiceClient;
use gantry_proto::v1::{ImageSpec as CriImageSpec, ImageStatusRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Parser)]
struct Args {
    /// The registry to push to (plain HTTP), as host:port.
    #[arg(long, default_value = "127.0.0.1:5000")]
    registry: String,
    /// A peer CRI runtime's image endpoint, unix:///path.
    #[arg(long)]
    peer: Option<String>,
}

async fn channel(endpoint: &str) -> anyhow::Result<ImageServiceClient<Channel>> {
    let Some(path) = endpoint.strip_prefix("unix://") else {
        bail!("endpoint must be unix:///path")
    };
    let path = path.to_string();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(ImageServiceClient::new(channel))
}

/// One pull's outcome in a line: the image ID and repo digests, or the
/// error code and message.
async fn outcome(client: &mut ImageServiceClient<Channel>, name: &str) -> String {
    match client.pull_image(pull_request(name)).await {
        Ok(r) => {
            let id = r.into_inner().image_ref;
            let digests = client
                .image_status(ImageStatusRequest {
                    image: Some(CriImageSpec {
                        image: name.into(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|s| s.into_inner().image)
                .map(|i| i.repo_digests)
                .unwrap_or_default();
            let short: Vec<String> = digests
                .iter()
                .map(|d| d.rsplit('@').next().unwrap_or(d)[..19.min(d.len())].to_string())
                .collect();
            format!("OK id={} repo_digests={short:?}", &id[..19.min(id.len())])
        }
        Err(e) => {
            let mut m = e.message().replace('\n', " ");
            m.truncate(220);
            format!("{:?}: {m}", e.code())
        }
    }
}

fn foreign(label: &str, url: &str) -> BuiltImage {
    let mut img = ImageSpec::new(vec![Layer::new().file("f", label.as_bytes())])
        .label(label)
        .build();
    img.blobs.remove(&img.layer_digests[0]);
    img.edit_manifest(|m| {
        m["layers"][0]["mediaType"] =
            json!("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip");
        m["layers"][0]["urls"] = json!([url]);
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let r = args.registry.clone();
    let pusher = Pusher::new(&r, None);
    let web = StaticHttp::start().await;
    let w = web.addr.clone();
    let linux = |arch: &str| json!({"architecture": arch, "os": "linux"});
    let mut cases: Vec<(String, String)> = Vec::new();

    for (docker, family) in [(false, "oci"), (true, "docker")] {
        for c in [Compression::None, Compression::Zstd] {
            let mut spec = ImageSpec::new(vec![
                Layer::new().file("f", format!("{family}{c:?}").as_bytes())
            ])
            .label(&format!("issue19-{family}-{c:?}"));
            spec.layers[0].1 = c;
            spec.docker = docker;
            let repo = format!("issue19/{family}-{c:?}").to_lowercase();
            pusher.image(&repo, &["v1"], &spec.build()).await;
            cases.push((format!("{family} layer, {c:?}"), format!("{r}/{repo}:v1")));
        }
    }
    let evil = ImageSpec::new(vec![Layer::new().file("f", b"evil")])
        .label("issue19-evil")
        .build()
        .layer_media_type(0, "application/vnd.acme.unknown.layer.v1+evil");
    pusher.image("issue19/evil", &["v1"], &evil).await;
    cases.push(("unknown layer type".into(), format!("{r}/issue19/evil:v1")));
    let mut mis = ImageSpec::new(vec![Layer::new().file("f", b"mis")]).label("issue19-mis");
    mis.layers[0].1 = Compression::Gzip;
    let mis = mis
        .build()
        .layer_media_type(0, "application/vnd.oci.image.layer.v1.tar");
    pusher.image("issue19/mislabeled", &["v1"], &mis).await;
    cases.push((
        "gzip bytes typed .tar".into(),
        format!("{r}/issue19/mislabeled:v1"),
    ));

    let amd = ImageSpec::new(vec![Layer::new().file("arch", b"amd64")])
        .label("issue19-attested")
        .build();
    let att = attestation(&amd);
    pusher.untagged("issue19/attested", &amd).await;
    pusher.untagged("issue19/attested", &att).await;
    let (_, index_digest) = pusher
        .raw_index(
            "issue19/attested",
            "v1",
            vec![
                attestation_entry(&att, &amd),
                amd.index_entry(linux("amd64")),
            ],
        )
        .await;
    cases.push((
        "index with attestation".into(),
        format!("{r}/issue19/attested:v1"),
    ));
    cases.push((
        "by index digest".into(),
        format!("{r}/issue19/attested@{index_digest}"),
    ));
    cases.push((
        "by platform manifest digest".into(),
        format!("{r}/issue19/attested@{}", amd.manifest_digest),
    ));

    let deep = ImageSpec::new(vec![Layer::new().file("f", b"deep")])
        .label("issue19-deep")
        .build();
    pusher.untagged("issue19/nested", &deep).await;
    let mut inner = deep.index_entry(linux("amd64"));
    for level in 1..=5 {
        let (bytes, d) = pusher
            .raw_index("issue19/nested", &format!("level{level}"), vec![inner])
            .await;
        inner = json!({"mediaType": OCI_INDEX, "digest": d, "size": bytes.len()});
    }
    cases.push((
        "index in an index".into(),
        format!("{r}/issue19/nested:level2"),
    ));
    cases.push((
        "5 nested indexes".into(),
        format!("{r}/issue19/nested:level5"),
    ));

    let bundle = artifact(
        "application/vnd.gantry.issue19.bundle.v1",
        &[("application/vnd.gantry.issue19.data.v1", b"payload")],
    );
    pusher.image("issue19/artifact", &["v1"], &bundle).await;
    cases.push(("OCI artifact".into(), format!("{r}/issue19/artifact:v1")));

    let mut bad = Layer::new().file("a", b"a");
    bad = bad.file("../escape", b"x");
    let rejected = ImageSpec::new(vec![
        Layer::new().file("one", b"1"),
        bad,
        Layer::new().file("three", b"3"),
    ])
    .label("issue19-rejected")
    .build();
    pusher.image("issue19/rejected", &["v1"], &rejected).await;
    cases.push((
        "second layer escapes".into(),
        format!("{r}/issue19/rejected:v1"),
    ));

    // What docker-registry will not hold, from this program's own server.
    let fimg = foreign("issue19-foreign", &format!("http://{w}/foreign/layer"));
    let layer = ImageSpec::new(vec![Layer::new().file("f", b"issue19-foreign")])
        .label("issue19-foreign")
        .build();
    web.route(
        "/foreign/layer",
        "application/octet-stream",
        &layer.blobs[&layer.layer_digests[0]],
    );
    web.image("issue19/foreign", "v1", &fimg);
    cases.push(("foreign layer".into(), format!("{w}/issue19/foreign:v1")));
    let schema1 = serde_json::to_vec(&json!({
        "schemaVersion": 1, "name": "issue19/old", "tag": "v1", "architecture": "amd64",
        "fsLayers": [{"blobSum": format!("sha256:{}", "a".repeat(64))}],
        "history": [{"v1Compatibility": "{\"id\":\"x\"}"}],
        "signatures": [{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": "e30"}],
    }))?;
    web.route(
        "/v2/issue19/old/manifests/v1",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        &schema1,
    );
    cases.push(("schema 1".into(), format!("{w}/issue19/old:v1")));

    let g = Gantry::start(&gantry_e2e::local_registries(&[&r, &w])).await;
    let mut gantry = g.images().await;
    let mut peer = match &args.peer {
        Some(p) => Some(channel(p).await?),
        None => None,
    };
    for (what, name) in &cases {
        println!("== {what}: {name}");
        println!("   gantry:     {}", outcome(&mut gantry, name).await);
        if let Some(p) = peer.as_mut() {
            println!("   peer:       {}", outcome(p, name).await);
        }
    }
    Ok(())
}
