//! `gantry-bench`: pulls the same kinds of images through gantry and through
//! a peer CRI runtime (containerd) in one run, from one local registry, and
//! prints the times, their ratios and resident memory. It measures; it never
//! asserts.
//!
//! Example (peer set up by the yardstick scripts, registry on :5000):
//!   gantry-bench --registry 127.0.0.1:5000 \
//!     --peer unix:///run/peer-containerd/containerd.sock \
//!     --peer-pid "$(cat /opt/peer-containerd/containerd.pid)"
//!
//! gantry itself is started by the bench (release build preferred, or
//! `$GANTRY_BIN`) with the registry configured as plain HTTP.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use gantry_e2e::daemon::{rss_kib, Gantry};
use gantry_e2e::oci::{ImageSpec, Layer, Pusher};
use gantry_proto::v1::image_service_client::ImageServiceClient;
use gantry_proto::v1::{ImageSpec as CriImageSpec, PullImageRequest, RemoveImageRequest};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Parser)]
#[command(about = "Pull benchmark: gantry against a peer CRI runtime")]
struct Args {
    /// Registry (host:port on loopback) both runtimes pull from over plain HTTP.
    #[arg(long, default_value = "127.0.0.1:5000")]
    registry: String,
    /// The peer's CRI endpoint, e.g. unix:///run/peer-containerd/containerd.sock.
    #[arg(long)]
    peer: Option<String>,
    /// The peer daemon's PID, for its resident memory.
    #[arg(long)]
    peer_pid: Option<u32>,
    /// Pulls of each image kind per runtime.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Size of the large image in MiB (spread over 5 layers).
    #[arg(long, default_value_t = 100)]
    large_mib: usize,
}

async fn connect(endpoint: &str) -> anyhow::Result<ImageServiceClient<Channel>> {
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

/// A layer of `mib` MiB in files of 128 KiB: half random bytes, half
/// repetitive text, so it compresses about as well as real software.
fn bulky_layer(rng: &mut rand::rngs::StdRng, layer: usize, mib: usize) -> Layer {
    let mut l = Layer::new().dir(&format!("l{layer}/"));
    let files = mib * 8;
    for f in 0..files {
        let mut data = vec![0u8; 128 << 10];
        rng.fill(&mut data[..64 << 10]);
        for (i, b) in data[64 << 10..].iter_mut().enumerate() {
            *b = b"lorem ipsum dolor sit amet, consectetur adipiscing elit\n"[i % 56];
        }
        l = l.file(&format!("l{layer}/f{f:05}"), &data);
    }
    l
}

fn busybox_image(tag: &str) -> gantry_e2e::oci::BuiltImage {
    ImageSpec::new(vec![Layer::busybox()]).label(tag).build()
}

fn large_image(seed: u64, mib: usize) -> gantry_e2e::oci::BuiltImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let layers = (0..5).map(|i| bulky_layer(&mut rng, i, mib / 5)).collect();
    ImageSpec::new(layers)
        .label(&format!("large-{seed}"))
        .build()
}

async fn timed_pull(
    client: &mut ImageServiceClient<Channel>,
    name: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    client
        .pull_image(PullImageRequest {
            image: Some(CriImageSpec {
                image: name.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("pulling {name}"))?;
    Ok(started.elapsed())
}

async fn remove(client: &mut ImageServiceClient<Channel>, name: &str) {
    let _ = client
        .remove_image(RemoveImageRequest {
            image: Some(CriImageSpec {
                image: name.to_string(),
                ..Default::default()
            }),
        })
        .await;
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let run_id: u64 = rand::rng().random();
    let pusher = Pusher::new(&args.registry, None);
    let gantry = Gantry::start(&format!(
        "log_level: warn\nimage:\n  registries:\n    \"{}\":\n      insecure: true\n",
        args.registry
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = gantry.rss_kib();
    let mut g = gantry.images().await;
    let mut peer = match &args.peer {
        Some(e) => Some(connect(e).await?),
        None => None,
    };
    let peer_idle_rss = args.peer_pid.map(rss_kib);

    println!(
        "gantry pull benchmark: registry {}, {} rounds, run {run_id:x}",
        args.registry, args.rounds
    );
    for kind in ["busybox", "large"] {
        let mut gantry_times = Vec::new();
        let mut peer_times = Vec::new();
        for round in 0..args.rounds {
            // Fresh content for every pull, so no runtime finds layers cached.
            let mut names = Vec::new();
            for who in ["gantry", "peer"] {
                let img = match kind {
                    "busybox" => {
                        // The busybox layer is shared by design; a marker layer makes the image unique.
                        let mut spec = ImageSpec::new(vec![Layer::busybox()
                            .file("marker", format!("{run_id}-{round}-{who}").as_bytes())]);
                        spec.label = format!("{run_id}-{round}-{who}");
                        spec.build()
                    }
                    _ => large_image(
                        run_id ^ ((round as u64) << 8) ^ if who == "gantry" { 1 } else { 2 },
                        args.large_mib,
                    ),
                };
                let repo = format!("bench/{kind}-{who}-{run_id:x}");
                pusher.image(&repo, &[&format!("r{round}")], &img).await;
                names.push(format!("{}/{repo}:r{round}", args.registry));
            }
            // Alternate who goes first so caches and disk state favour no one.
            let order: Vec<usize> = if round % 2 == 0 {
                vec![0, 1]
            } else {
                vec![1, 0]
            };
            for i in order {
                if i == 0 {
                    gantry_times.push(timed_pull(&mut g, &names[0]).await?);
                } else if let Some(p) = peer.as_mut() {
                    peer_times.push(timed_pull(p, &names[1]).await?);
                }
            }
            remove(&mut g, &names[0]).await;
            if let Some(p) = peer.as_mut() {
                remove(p, &names[1]).await;
            }
        }
        let gm = median(&mut gantry_times);
        print!(
            "{kind:>8}: gantry median {:8.1} ms (min {:.1})",
            ms(gm),
            ms(gantry_times[0])
        );
        if !peer_times.is_empty() {
            let pm = median(&mut peer_times);
            print!(
                "  peer median {:8.1} ms (min {:.1})  ratio gantry/peer {:.2}",
                ms(pm),
                ms(peer_times[0]),
                gm.as_secs_f64() / pm.as_secs_f64()
            );
        }
        println!();
    }
    let _ = busybox_image;

    // Memory after 20 pulls (of distinct small images).
    for i in 0..20 {
        let img = ImageSpec::new(vec![
            Layer::new().file("n", format!("{run_id}-{i}").as_bytes())
        ])
        .label(&format!("mem-{i}"))
        .build();
        let repo = format!("bench/mem-{run_id:x}");
        pusher.image(&repo, &[&format!("m{i}")], &img).await;
        timed_pull(&mut g, &format!("{}/{repo}:m{i}", args.registry)).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_rss = gantry.rss_kib();
    println!(
        "gantry RSS: idle {:.1} MiB, after 20 more pulls {:.1} MiB",
        idle_rss as f64 / 1024.0,
        after_rss as f64 / 1024.0
    );
    if let Some(p) = peer_idle_rss {
        println!("peer RSS at start of run: {:.1} MiB", p as f64 / 1024.0);
    }
    Ok(())
}
