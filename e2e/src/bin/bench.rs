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
//! gantry itself is started by the bench (`$GANTRY_BIN`, else the gantry
//! built beside the bench: a release bench runs a release gantry) with the
//! registry configured as plain HTTP.
//!
//! `--mode pods --pods 200` times RunPodSandbox and Stop+RemovePodSandbox,
//! and ListPodSandbox and PodSandboxStatus with all the pods up.
//!
//! `--mode containers --list-containers 200` also times ListContainers and
//! ContainerStatus with 200 running `sleep` containers per runtime.
//!
//! `--mode memory` compares resident memory with `--containers` pods of one
//! running container each (containerd then runs a shim and a pause per pod).
//!
//! `--mode soak --cycles 1000 --clients 10` runs that many pod lifecycles
//! (pod, container, start, stop, remove) from that many concurrent clients
//! on each runtime and prints, every `--sample-every` cycles, the daemon's
//! resident memory, descriptors and threads, its per-container processes
//! and the entries under its state directories: flat lines mean nothing
//! leaks. It also prints RunPodSandbox latency at that concurrency.
//!
//! `--mode logs` times how fast a container's flood of output is drained
//! into its CRI log (gantry under its cap and capped at 1 MiB, the peer),
//! and a /metrics scrape.
//!
//! `--mode stop-pod --pod-containers 200` times StopPodSandbox of a pod
//! with that many running containers (crictl gives it 2 s by default),
//! then RemovePodSandbox of it.
//!
//! `--mode userns` times pod + container to running, and one more
//! container in a running pod, with and without a user namespace of the
//! pod's own (gantry), next to the peer's plain pods: the difference is the
//! cost of the pinned namespace and of idmapping the layers and mounts.
//! `--mode kubelet --kubelet-pods 110 --seconds 300` drives each runtime in
//! turn as kubelet drives a node (PLEG relist every second, stats every
//! 10 s, ...; see `kubelet_window`) and prints the CPU seconds its processes
//! spent over the window and each call's p50/p99.
//!
//! `--mode metrics` times what kubelet polls every 10 s with `--pods` pods
//! of one running container each: gantry's ListPodSandboxMetrics and
//! ListPodSandboxStats against the peer's ListPodSandboxStats (containerd
//! 1.6 has no metrics RPC).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use gantry_e2e::daemon::{rss_kib, Gantry};
use gantry_e2e::net::TestNetwork;
use gantry_e2e::oci::{ImageSpec, Layer, Pusher};
use gantry_proto::v1::image_service_client::ImageServiceClient;
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ImageSpec as CriImageSpec, ListContainersRequest, PodSandboxConfig,
    PodSandboxMetadata, PullImageRequest, RemoveContainerRequest, RemoveImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use std::path::Path;
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
    /// Threads of the bench's own client runtime; 1 runs every call on one
    /// thread, without the cross-thread wake-ups a call otherwise pays
    /// between the caller, tonic's buffer task and the connection task.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// The peer daemon's PID, for its resident memory.
    #[arg(long)]
    peer_pid: Option<u32>,
    /// Pulls of each image kind per runtime.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Size of the large image in MiB (spread over 5 layers).
    #[arg(long, default_value_t = 100)]
    large_mib: usize,
    /// What to measure: pull, images, pods, containers, memory, metrics,
    /// streaming, logs, soak, stop-pod, userns, kubelet or all (all but
    /// soak, stop-pod, userns and kubelet).
    #[arg(long, default_value = "all")]
    mode: String,
    /// In pull mode, the image kinds pulled, comma-separated: busybox (one
    /// layer), small (two layers), large (`--large-mib` in files of 128
    /// KiB over 5 layers), many-files (6 layers, 5000 files of 20 KiB),
    /// big-file (`--large-mib` as one file in each of 2 layers).
    #[arg(long, default_value = "busybox,small,large,many-files,big-file")]
    kinds: String,
    /// In images mode, the image counts at which ListImages and
    /// ImageStatus are timed, comma-separated.
    #[arg(long, default_value = "10,200")]
    image_counts: String,
    /// Containers per runtime in containers mode; pods of one container
    /// each in memory mode.
    #[arg(long, default_value_t = 50)]
    containers: usize,
    /// In containers mode, also time ListContainers and ContainerStatus
    /// with this many running containers per runtime (the `--containers`
    /// ones plus more started `sleep` containers in a second pod); 0 skips.
    #[arg(long, default_value_t = 0)]
    list_containers: usize,
    /// Samples of each call in the `--list-containers` and metrics
    /// measurements.
    #[arg(long, default_value_t = 100)]
    list_samples: usize,
    /// In containers mode, a pause before each timed lifecycle call, so
    /// that one runtime's work left running in the background (a shim
    /// reaping, a database sync) does not land in the other's figure.
    #[arg(long, default_value_t = 0)]
    settle_ms: u64,
    /// Pods started (then stopped and removed) per runtime in pods mode;
    /// pods of one running container each in metrics mode.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Exec sessions per runtime in streaming mode.
    #[arg(long, default_value_t = 100)]
    exec_rounds: usize,
    /// Size of the port-forwarded download in streaming mode, MiB.
    #[arg(long, default_value_t = 100)]
    forward_mib: usize,
    /// MiB of container output in logs mode (lines of 17 bytes; as CRI log
    /// lines about 3.3 times as much, under gantry's default cap).
    #[arg(long, default_value_t = 16)]
    log_mib: usize,
    /// Running containers in the pod that stop-pod mode stops.
    #[arg(long, default_value_t = 200)]
    pod_containers: usize,
    /// Pod lifecycles per runtime in soak mode.
    #[arg(long, default_value_t = 1000)]
    cycles: usize,
    /// Concurrent clients in soak mode.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// In soak mode, a sample of the daemon's resources every this many
    /// finished cycles.
    #[arg(long, default_value_t = 100)]
    sample_every: usize,
    /// Pods of one running container each in kubelet mode.
    #[arg(long, default_value_t = 110)]
    kubelet_pods: usize,
    /// Length of each runtime's window in kubelet mode, seconds.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// The peer's sandbox image, pulled before pods are timed.
    #[arg(long, default_value = "registry.k8s.io/pause:3.6")]
    pause_image: String,
}

async fn connect(endpoint: &str) -> anyhow::Result<ImageServiceClient<Channel>> {
    Ok(ImageServiceClient::new(channel(endpoint).await?))
}

async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    let Some(path) = endpoint.strip_prefix("unix://") else {
        bail!("endpoint must be unix:///path")
    };
    let path = path.to_string();
    // Kubelet's grpc-go client grows its flow-control windows as it goes;
    // tonic's fixed 64 KiB default would stall every response larger than
    // that (ListContainers with 200 containers is about 70 KB) on a window
    // update, for both runtimes alike, and measure that instead of them.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(channel)
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

/// Half random bytes, half repetitive text, as [`bulky_layer`]'s files.
fn bulky_bytes(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8 << 10) {
        let half = chunk.len() / 2;
        rng.fill(&mut chunk[..half]);
        for (i, b) in chunk[half..].iter_mut().enumerate() {
            *b = b"lorem ipsum dolor sit amet, consectetur adipiscing elit\n"[i % 56];
        }
    }
    data
}

/// 6 layers holding 5000 files of 20 KiB between them (about 100 MiB, half
/// of it compressible): the shape of a language runtime or a node_modules.
fn many_files_image(seed: u64) -> gantry_e2e::oci::BuiltImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let layers = (0..6)
        .map(|l| {
            let mut layer = Layer::new().dir(&format!("m{l}/"));
            let files = 5000 / 6 + usize::from(l < 5000 % 6);
            for f in 0..files {
                if f % 100 == 0 {
                    layer = layer.dir(&format!("m{l}/d{}/", f / 100));
                }
                layer = layer.file(
                    &format!("m{l}/d{}/f{f:04}", f / 100),
                    &bulky_bytes(&mut rng, 20 << 10),
                );
            }
            layer
        })
        .collect();
    ImageSpec::new(layers)
        .label(&format!("many-{seed}"))
        .build()
}

/// `mib` MiB as one file in each of 2 layers.
fn big_file_image(seed: u64, mib: usize) -> gantry_e2e::oci::BuiltImage {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let layers = (0..2)
        .map(|l| Layer::new().file(&format!("big{l}"), &bulky_bytes(&mut rng, (mib << 20) / 2)))
        .collect();
    ImageSpec::new(layers).label(&format!("big-{seed}")).build()
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

/// The gantry measured: `$GANTRY_BIN`, else the one built beside this
/// bench (a release bench measures a release gantry, never the debug build
/// the test harness would pick first).
fn choose_gantry() {
    if std::env::var_os("GANTRY_BIN").is_some() {
        return;
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("gantry")))
        .filter(|p| p.is_file());
    if let Some(p) = beside {
        // Before the runtime starts: no other thread reads the environment.
        std::env::set_var("GANTRY_BIN", p);
    }
}

fn main() -> anyhow::Result<()> {
    choose_gantry();
    let args = Args::parse();
    let runtime = if args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.mode.as_str() {
        "pull" => bench_pull(&args).await,
        "images" => bench_images(&args).await,
        "pods" => bench_pods(&args).await,
        "containers" => bench_containers(&args).await,
        "streaming" => bench_streaming(&args).await,
        "memory" => bench_memory(&args).await,
        "logs" => bench_logs(&args).await,
        "soak" => bench_soak(&args).await,
        "stop-pod" => bench_stop_pod(&args).await,
        "metrics" => bench_metrics(&args).await,
        "userns" => bench_userns(&args).await,
        "kubelet" => bench_kubelet(&args).await,
        "all" => {
            bench_pull(&args).await?;
            bench_images(&args).await?;
            bench_pods(&args).await?;
            bench_containers(&args).await?;
            bench_memory(&args).await?;
            bench_metrics(&args).await?;
            bench_streaming(&args).await?;
            bench_logs(&args).await
        }
        other => {
            bail!("unknown mode {other:?}: pull, images, pods, containers, memory, metrics, streaming, logs, soak, stop-pod, userns, kubelet or all")
        }
    }
}

async fn bench_pull(args: &Args) -> anyhow::Result<()> {
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
    for kind in args.kinds.split(',').map(str::trim) {
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
                    "small" => {
                        // The busybox layer (shared by design) under a
                        // layer of its own, as an application image is.
                        let mut spec = ImageSpec::new(vec![
                            Layer::busybox(),
                            Layer::new()
                                .dir("app/")
                                .file("app/marker", format!("{run_id}-{round}-{who}").as_bytes()),
                        ]);
                        spec.label = format!("{run_id}-{round}-{who}");
                        spec.build()
                    }
                    "large" | "many-files" | "big-file" => {
                        let seed =
                            run_id ^ ((round as u64) << 8) ^ if who == "gantry" { 1 } else { 2 };
                        match kind {
                            "large" => large_image(seed, args.large_mib),
                            "many-files" => many_files_image(seed),
                            _ => big_file_image(seed, args.large_mib),
                        }
                    }
                    other => bail!(
                        "unknown image kind {other:?}: busybox, small, large, many-files or big-file"
                    ),
                };
                if round == 0 && who == "gantry" {
                    let layers: usize = img.layer_digests.iter().map(|d| img.blobs[d].len()).sum();
                    println!(
                        "{kind:>10}: {} layers, {:.1} MB compressed",
                        img.layer_digests.len(),
                        layers as f64 / 1e6
                    );
                }
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
            "{kind:>10}: gantry median {:8.1} ms (min {:.1})",
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

/// ListImages and ImageStatus latency with `--image-counts` images in each
/// runtime: distinct images (their own config) sharing one small layer, so
/// that hundreds cost little to push and pull. Images the peer already held
/// are counted in its listing and printed.
async fn bench_images(args: &Args) -> anyhow::Result<()> {
    use gantry_proto::v1::{ImageStatusRequest, ListImagesRequest};
    let run: u64 = rand::rng().random();
    let mut counts = Vec::new();
    for c in args.image_counts.split(',') {
        counts.push(c.trim().parse::<usize>().context("--image-counts")?);
    }
    counts.sort();
    let most = counts.last().copied().unwrap_or(0);
    let pusher = Pusher::new(&args.registry, None);
    let repo = format!("bench/list-{run:x}");
    let shared = Layer::new().file("shared", b"one layer for every listed image");
    let mut names = Vec::new();
    for i in 0..most {
        let img = ImageSpec::new(vec![shared.clone()])
            .label(&format!("list-{run:x}-{i}"))
            .build();
        let tag = format!("i{i}");
        pusher.image(&repo, &[&tag], &img).await;
        names.push(format!("{}/{repo}:{tag}", args.registry));
    }
    let gantry = Gantry::start(&format!(
        "log_level: warn\nimage:\n  registries:\n    \"{}\":\n      insecure: true\n",
        args.registry
    ))
    .await;
    let mut sides = vec![("gantry", gantry.images().await)];
    // Version does no work on either side: its time is the gRPC round
    // trip itself, the floor under every other call's.
    let mut versions = vec![gantry.runtime().await];
    if let Some(e) = &args.peer {
        let ch = channel(e).await?;
        sides.push(("peer", ImageServiceClient::new(ch.clone())));
        versions.push(RuntimeServiceClient::new(ch));
    }
    println!(
        "ListImages, ImageStatus and Version, {} samples each, alternating, run {run:x}",
        args.list_samples
    );
    let mut pulled = 0;
    for &count in &counts {
        for name in &names[pulled..count] {
            for (_, client) in sides.iter_mut() {
                timed_pull(client, name).await?;
            }
        }
        pulled = count;
        let mut list_t = vec![Vec::new(); sides.len()];
        let mut status_t = vec![Vec::new(); sides.len()];
        let mut version_t = vec![Vec::new(); sides.len()];
        let mut listed = vec![0; sides.len()];
        // One untimed round first: connections, caches.
        for round in 0..=args.list_samples {
            let name = &names[round % count.max(1)];
            for (k, (_, client)) in sides.iter_mut().enumerate() {
                let t = Instant::now();
                let n = client
                    .list_images(ListImagesRequest { filter: None })
                    .await?
                    .into_inner()
                    .images
                    .len();
                let d = t.elapsed();
                listed[k] = n;
                if round > 0 {
                    list_t[k].push(d);
                }
                let t = Instant::now();
                let found = client
                    .image_status(ImageStatusRequest {
                        image: Some(CriImageSpec {
                            image: name.clone(),
                            ..Default::default()
                        }),
                        verbose: false,
                    })
                    .await?
                    .into_inner()
                    .image
                    .is_some();
                let d = t.elapsed();
                if !found {
                    bail!("{}: ImageStatus does not find {name}", sides[k].0);
                }
                if round > 0 {
                    status_t[k].push(d);
                }
                let t = Instant::now();
                versions[k]
                    .version(gantry_proto::v1::VersionRequest {
                        version: String::new(),
                    })
                    .await?;
                if round > 0 {
                    version_t[k].push(t.elapsed());
                }
            }
        }
        let listed: Vec<String> = sides
            .iter()
            .zip(&listed)
            .map(|((side, _), n)| format!("{side} lists {n}"))
            .collect();
        println!("with {count} pulled images ({}):", listed.join(", "));
        let peer = |v: &[Vec<Duration>]| v.get(1).cloned().unwrap_or_default();
        report(&format!("ListImages ({count})"), &list_t[0], &peer(&list_t));
        report(
            &format!("ImageStatus ({count})"),
            &status_t[0],
            &peer(&status_t),
        );
        report("Version (the floor)", &version_t[0], &peer(&version_t));
    }
    for name in &names {
        for (_, client) in sides.iter_mut() {
            remove(client, name).await;
        }
    }
    Ok(())
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Proportional set size in KiB: shared pages (the binary's text, shared
/// by every monitor) divided among the processes that map them.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The PIDs of processes whose command name starts with one of `names`
/// and, with `mentioning`, whose command line contains it (a gantry
/// monitor names its container's directory, so monitors of other gantry
/// instances on the machine are not counted).
fn processes(names: &[&str], mentioning: Option<&str>) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !names.iter().any(|n| comm.trim().starts_with(n)) {
            continue;
        }
        if let Some(m) = mentioning {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(m) {
                continue;
            }
        }
        pids.push(pid);
    }
    pids
}

/// Summed PSS (KiB) of the processes named like `names`.
fn pss_of_processes(names: &[&str], mentioning: Option<&str>) -> u64 {
    processes(names, mentioning).into_iter().map(pss_kib).sum()
}

/// Resident KiB and count of the processes named like `names` (the peer's
/// shims and pause containers, gantry's monitors).
fn rss_of_processes(names: &[&str], mentioning: Option<&str>) -> (u64, usize) {
    let pids = processes(names, mentioning);
    (pids.iter().map(|p| rss_kib(*p)).sum(), pids.len())
}

fn sandbox_config(who: &str, run: u64, i: usize) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("bench-{who}-{i}"),
            uid: format!("{run:x}-{who}-{i}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: format!("bench-{i}"),
        log_directory: format!("/tmp/gantry-bench-logs/{run:x}-{who}-{i}"),
        // What kubelet sends for a pod without shareProcessNamespace.
        linux: Some(gantry_proto::v1::LinuxPodSandboxConfig {
            security_context: Some(gantry_proto::v1::LinuxSandboxSecurityContext {
                namespace_options: Some(gantry_proto::v1::NamespaceOption {
                    pid: gantry_proto::v1::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// RunPodSandbox, then StopPodSandbox + RemovePodSandbox, N times each on
/// gantry and the peer (alternating), with resident memory at the top.
/// ListPodSandbox and PodSandboxStatus of one of the pods, `samples`
/// rounds after one untimed round, the runtimes taking turns; the times of
/// each runtime in `sides` order.
async fn time_pod_reads(
    sides: &mut [(RuntimeServiceClient<Channel>, Vec<String>)],
    samples: usize,
) -> anyhow::Result<(Vec<Vec<Duration>>, Vec<Vec<Duration>>)> {
    use gantry_proto::v1::{ListPodSandboxRequest, PodSandboxStatusRequest};
    let mut list_t = vec![Vec::new(); sides.len()];
    let mut status_t = vec![Vec::new(); sides.len()];
    for round in 0..=samples {
        for (k, (client, ids)) in sides.iter_mut().enumerate() {
            let Some(id) = ids.get(round % ids.len().max(1)).cloned() else {
                continue;
            };
            let t = Instant::now();
            let listed = client
                .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await?
                .into_inner()
                .items
                .len();
            let d = t.elapsed();
            if listed < ids.len() {
                bail!("ListPodSandbox lists {listed} of {} pods", ids.len());
            }
            if round > 0 {
                list_t[k].push(d);
            }
            let t = Instant::now();
            client
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: false,
                })
                .await?;
            if round > 0 {
                status_t[k].push(t.elapsed());
            }
        }
    }
    Ok((list_t, status_t))
}

async fn bench_pods(args: &Args) -> anyhow::Result<()> {
    let run: u64 = rand::rng().random();
    let tmp = tempfile::tempdir()?;
    let gantry = Gantry::start("log_level: warn\n").await;
    // The same plugins the yardstick peer uses (bridge, host-local,
    // portmap) on a throwaway bridge that is removed afterwards.
    let net = TestNetwork::create(&gantry.dir.join("cni"), &tmp.path().join("ipam"));
    let mut g = gantry.runtime().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gantry_idle = gantry.rss_kib();
    let mut peer = match &args.peer {
        Some(e) => {
            let ch = channel(e).await?;
            let mut images = ImageServiceClient::new(ch.clone());
            timed_pull(&mut images, &args.pause_image).await?;
            Some(RuntimeServiceClient::new(ch))
        }
        None => None,
    };
    let n = args.pods;
    let mut ids = (Vec::new(), Vec::new());
    let mut run_times = (Vec::new(), Vec::new());
    for i in 0..n {
        for turn in [i % 2, 1 - i % 2] {
            if turn == 0 {
                let t = Instant::now();
                let id = g
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(sandbox_config("gantry", run, i)),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                run_times.0.push(t.elapsed());
                ids.0.push(id);
            } else if let Some(p) = peer.as_mut() {
                let t = Instant::now();
                let id = p
                    .run_pod_sandbox(RunPodSandboxRequest {
                        config: Some(sandbox_config("peer", run, i)),
                        runtime_handler: String::new(),
                    })
                    .await?
                    .into_inner()
                    .pod_sandbox_id;
                run_times.1.push(t.elapsed());
                ids.1.push(id);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let gantry_rss = gantry.rss_kib();
    let peer_rss = args.peer_pid.map(rss_kib);
    let (shim_rss, shims) = rss_of_processes(&["containerd-shim"], None);
    let (pause_rss, pauses) = rss_of_processes(&["pause"], None);
    let mut sides = vec![(g.clone(), ids.0.clone())];
    if let Some(p) = &peer {
        sides.push((p.clone(), ids.1.clone()));
    }
    let (list_t, status_t) = time_pod_reads(&mut sides, args.list_samples).await?;

    let mut stop_times = (Vec::new(), Vec::new());
    for i in 0..n {
        for turn in [i % 2, 1 - i % 2] {
            if turn == 0 {
                let id = ids.0[i].clone();
                let t = Instant::now();
                g.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
                g.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await?;
                stop_times.0.push(t.elapsed());
            } else if let Some(p) = peer.as_mut() {
                let id = ids.1[i].clone();
                let t = Instant::now();
                p.stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
                p.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await?;
                stop_times.1.push(t.elapsed());
            }
        }
    }
    drop(gantry);
    drop(net);

    println!("pod sandbox benchmark: {n} pods per runtime, run {run:x}");
    for (what, t) in [
        ("RunPodSandbox", &run_times),
        ("Stop+RemovePodSandbox", &stop_times),
    ] {
        let (g50, g95) = (percentile(&t.0, 0.5), percentile(&t.0, 0.95));
        print!(
            "{what:>22}: gantry p50 {:7.1} ms p95 {:7.1} ms",
            ms(g50),
            ms(g95)
        );
        if !t.1.is_empty() {
            let (p50, p95) = (percentile(&t.1, 0.5), percentile(&t.1, 0.95));
            print!(
                "  peer p50 {:7.1} ms p95 {:7.1} ms  ratio p50 {:.2} p95 {:.2}",
                ms(p50),
                ms(p95),
                g50.as_secs_f64() / p50.as_secs_f64(),
                g95.as_secs_f64() / p95.as_secs_f64()
            );
        }
        println!();
    }
    let peer_of = |v: &[Vec<Duration>]| v.get(1).cloned().unwrap_or_default();
    report(
        &format!("ListPodSandbox ({n})"),
        &list_t[0],
        &peer_of(&list_t),
    );
    report("PodSandboxStatus", &status_t[0], &peer_of(&status_t));
    println!(
        "resident memory with {n} pods up: gantry {:.1} MiB (idle {:.1}), no per-pod processes: {:.3} MiB per pod",
        gantry_rss as f64 / 1024.0,
        gantry_idle as f64 / 1024.0,
        gantry_rss.saturating_sub(gantry_idle) as f64 / 1024.0 / n.max(1) as f64
    );
    if let Some(p) = peer_rss {
        println!(
            "  peer: containerd {:.1} MiB + {shims} shims {:.1} MiB + {pauses} pause {:.1} MiB = {:.1} MiB ({:.2} MiB per pod)",
            p as f64 / 1024.0,
            shim_rss as f64 / 1024.0,
            pause_rss as f64 / 1024.0,
            (p + shim_rss + pause_rss) as f64 / 1024.0,
            (shim_rss + pause_rss) as f64 / 1024.0 / n.max(1) as f64
        );
    }
    Ok(())
}

/// One runtime under test in containers mode.
struct Side {
    name: &'static str,
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Side {
    async fn run_pod(&mut self, pc: &PodSandboxConfig) -> anyhow::Result<String> {
        Ok(self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Stops and removes a pod (and the containers still in it).
    async fn remove_pod(&mut self, pod: &str) -> anyhow::Result<()> {
        self.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await?;
        self.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.into(),
            })
            .await?;
        Ok(())
    }
}

fn container_config(image: &str, name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(CriImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sleep".into(), "100000".into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

async fn create_start(
    side: &mut Side,
    pod: &str,
    pc: &PodSandboxConfig,
    cfg: ContainerConfig,
) -> anyhow::Result<String> {
    Ok(create_start_timed(side, pod, pc, cfg).await?.0)
}

/// `runc run --detach` of the bundle gantry made for `id`, timed alone `n`
/// times (each run deleted at once): the floor under any runtime's
/// create+start that drives runc's command line.
fn runtime_floor(gantry_dir: &Path, id: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let bundle = gantry_dir
        .join("root/runtime/containers")
        .join(id)
        .join("bundle");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    let cgroups = spec["linux"]["cgroupsPath"]
        .as_str()
        .context("the bundle's spec has no cgroupsPath")?
        .to_string();
    let parent = cgroups.rsplit_once('/').map(|p| p.0).unwrap_or("");
    let work = tempfile::tempdir()?;
    let root = work.path().join("state");
    let mut times = Vec::new();
    for i in 0..n {
        let cid = format!("floor-{}-{i}", std::process::id());
        let b = work.path().join(&cid);
        std::fs::create_dir_all(&b)?;
        // The same rootfs (already mounted) and namespaces; a cgroup and
        // state of its own.
        spec["linux"]["cgroupsPath"] = format!("{parent}/{cid}").into();
        spec["root"]["path"] = bundle.join("rootfs").display().to_string().into();
        std::fs::write(b.join("config.json"), serde_json::to_vec(&spec)?)?;
        let runc = |args: &[&str]| {
            std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
        };
        let t = Instant::now();
        let ok = runc(&[
            "run",
            "--detach",
            "--bundle",
            &b.display().to_string(),
            &cid,
        ])?
        .success();
        times.push(t.elapsed());
        runc(&["delete", "--force", &cid])?;
        if !ok {
            bail!("runc run of {cid} failed");
        }
    }
    Ok(times)
}

/// CreateContainer then StartContainer; also returns how long the create took.
async fn create_start_timed(
    side: &mut Side,
    pod: &str,
    pc: &PodSandboxConfig,
    cfg: ContainerConfig,
) -> anyhow::Result<(String, Duration)> {
    let t = Instant::now();
    let id = side
        .rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(cfg),
            sandbox_config: Some(pc.clone()),
        })
        .await?
        .into_inner()
        .container_id;
    let created = t.elapsed();
    side.rt
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    Ok((id, created))
}

fn report(what: &str, g: &[Duration], p: &[Duration]) {
    let (g50, g95) = (percentile(g, 0.5), percentile(g, 0.95));
    print!(
        "{what:>26}: gantry p50 {:8.2} ms p95 {:8.2} ms",
        ms(g50),
        ms(g95)
    );
    if !p.is_empty() {
        let (p50, p95) = (percentile(p, 0.5), percentile(p, 0.95));
        print!(
            "  peer p50 {:8.2} ms p95 {:8.2} ms  ratio p50 {:.2} p95 {:.2}",
            ms(p50),
            ms(p95),
            g50.as_secs_f64() / p50.as_secs_f64(),
            g95.as_secs_f64() / p95.as_secs_f64()
        );
    }
    println!();
}

/// What the container and streaming benchmarks start from: a busybox
/// image of their own in the registry, gantry on a throwaway CNI network
/// (the plugins the yardstick peer uses), and each runtime (gantry, then
/// the peer if given) with the image pulled.
struct Setup {
    gantry: Gantry,
    net: TestNetwork,
    tmp: tempfile::TempDir,
    image: String,
    sides: Vec<Side>,
    run: u64,
}

async fn setup(args: &Args, label: &str) -> anyhow::Result<Setup> {
    let run: u64 = rand::rng().random();
    let img = ImageSpec::new(vec![Layer::busybox()])
        .label(&format!("bench-{label}"))
        .build();
    let repo = format!("bench/{label}-{run:x}");
    Pusher::new(&args.registry, None)
        .image(&repo, &["1"], &img)
        .await;
    let image = format!("{}/{repo}:1", args.registry);
    let tmp = tempfile::tempdir()?;
    let gantry = Gantry::start(&format!(
        "log_level: warn\nimage:\n  registries:\n    \"{}\":\n      insecure: true\n",
        args.registry
    ))
    .await;
    let net = TestNetwork::create(&gantry.dir.join("cni"), &tmp.path().join("ipam"));
    let mut sides = vec![Side {
        name: "gantry",
        rt: gantry.runtime().await,
        images: gantry.images().await,
    }];
    timed_pull(&mut sides[0].images, &image).await?;
    if let Some(e) = &args.peer {
        let ch = channel(e).await?;
        let mut images = ImageServiceClient::new(ch.clone());
        timed_pull(&mut images, &args.pause_image).await?;
        timed_pull(&mut images, &image).await?;
        sides.push(Side {
            name: "peer",
            rt: RuntimeServiceClient::new(ch),
            images,
        });
    }
    Ok(Setup {
        gantry,
        net,
        tmp,
        image,
        sides,
        run,
    })
}

async fn settle(args: &Args) {
    if args.settle_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    }
}

/// A pod config in its own user namespace (kubelet's 65536 ids).
fn userns_config(who: &str, run: u64, i: usize) -> PodSandboxConfig {
    let mut pc = sandbox_config(who, run, i);
    let ids = vec![gantry_proto::v1::IdMapping {
        host_id: 3_000_000,
        container_id: 0,
        length: 65536,
    }];
    if let Some(o) = pc
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.userns_options = Some(gantry_proto::v1::UserNamespace {
            mode: gantry_proto::v1::NamespaceMode::Pod as i32,
            uids: ids.clone(),
            gids: ids,
        });
    }
    pc
}

/// Pod + container to running, and a second container in the running pod,
/// on gantry with and without a user namespace (alternating, so both see
/// the same machine), and on the peer with plain pods.
async fn bench_userns(args: &Args) -> anyhow::Result<()> {
    let Setup {
        gantry,
        net,
        tmp: _tmp,
        image,
        mut sides,
        run,
    } = setup(args, "userns").await?;
    let rounds = args.rounds.max(10);
    // [plain, userns] for gantry; the peer's plain pods in `peer`.
    let mut to_running: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut second: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut peer_to_running = Vec::new();
    let mut peer_second = Vec::new();
    for i in 0..rounds {
        for (k, side) in sides.iter_mut().enumerate() {
            for userns in [false, true] {
                if k > 0 && userns {
                    continue;
                }
                let n = 2000 + 2 * i + usize::from(userns);
                let pc = if userns {
                    userns_config(side.name, run, n)
                } else {
                    sandbox_config(side.name, run, n)
                };
                settle(args).await;
                let t = Instant::now();
                let pod = side.run_pod(&pc).await?;
                create_start(side, &pod, &pc, container_config(&image, "first")).await?;
                let whole = t.elapsed();
                let t = Instant::now();
                create_start(side, &pod, &pc, container_config(&image, "second")).await?;
                let more = t.elapsed();
                if k == 0 {
                    to_running[usize::from(userns)].push(whole);
                    second[usize::from(userns)].push(more);
                } else {
                    peer_to_running.push(whole);
                    peer_second.push(more);
                }
                side.remove_pod(&pod).await?;
            }
        }
    }
    println!("userns: {rounds} rounds; \"gantry\" plain pods, \"peer\" the peer's plain pods");
    report("pod+container, plain", &to_running[0], &peer_to_running);
    report("pod+container, userns", &to_running[1], &peer_to_running);
    report("2nd container, plain", &second[0], &peer_second);
    report("2nd container, userns", &second[1], &peer_second);
    for (what, v) in [("pod+container", &to_running), ("2nd container", &second)] {
        println!(
            "{what:>26}: userns costs p50 {:+.2} ms, p95 {:+.2} ms",
            ms(percentile(&v[1], 0.5)) - ms(percentile(&v[0], 0.5)),
            ms(percentile(&v[1], 0.95)) - ms(percentile(&v[0], 0.95)),
        );
    }
    drop(net);
    drop(gantry);
    Ok(())
}

/// Container lifecycle latencies and memory, gantry against the peer.
async fn bench_containers(args: &Args) -> anyhow::Result<()> {
    let Setup {
        gantry,
        net,
        tmp: _tmp,
        image,
        mut sides,
        run,
    } = setup(args, "containers").await?;
    let n = args.containers;
    let mut create_start_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut create_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut start_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut pod_to_running: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut exec_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut list_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut status_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut stop_rm_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut rm_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut pods = Vec::new();
    let mut ids: Vec<Vec<String>> = vec![Vec::new(); sides.len()];

    // Whole pod + container start, 10 times each.
    for i in 0..10 {
        for (k, side) in sides.iter_mut().enumerate() {
            let pc = sandbox_config(side.name, run, 1000 + i);
            settle(args).await;
            let t = Instant::now();
            let pod = side.run_pod(&pc).await?;
            create_start(side, &pod, &pc, container_config(&image, "first")).await?;
            pod_to_running[k].push(t.elapsed());
            side.remove_pod(&pod).await?;
        }
    }

    // N running containers in one pod per runtime.
    for side in sides.iter_mut() {
        let pc = sandbox_config(side.name, run, 0);
        let pod = side.run_pod(&pc).await?;
        pods.push((pod, pc));
    }
    for i in 0..n {
        for (k, side) in sides.iter_mut().enumerate() {
            let (pod, pc) = pods[k].clone();
            settle(args).await;
            let t = Instant::now();
            let (id, created) =
                create_start_timed(side, &pod, &pc, container_config(&image, &format!("c{i}")))
                    .await?;
            let both = t.elapsed();
            create_start_t[k].push(both);
            create_t[k].push(created);
            start_t[k].push(both.saturating_sub(created));
            ids[k].push(id);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = MemorySample::take(&gantry, args);
    let floor = runtime_floor(&gantry.dir, &ids[0][0], n)?;

    for (k, side) in sides.iter_mut().enumerate() {
        let target = ids[k][0].clone();
        for _ in 0..20 {
            let t = Instant::now();
            side.rt
                .exec_sync(ExecSyncRequest {
                    container_id: target.clone(),
                    cmd: vec!["/bin/true".into()],
                    timeout: 10,
                })
                .await?;
            exec_t[k].push(t.elapsed());
            let t = Instant::now();
            side.rt
                .list_containers(ListContainersRequest::default())
                .await?;
            list_t[k].push(t.elapsed());
            let t = Instant::now();
            side.rt
                .container_status(ContainerStatusRequest {
                    container_id: target.clone(),
                    verbose: false,
                })
                .await?;
            status_t[k].push(t.elapsed());
        }
    }
    // More containers in a second pod, then the read calls kubelet makes
    // most often, with the two runtimes taking turns call by call.
    let big = args.list_containers;
    let mut big_list_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut big_status_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut big_pods = Vec::new();
    if big > n {
        for (k, side) in sides.iter_mut().enumerate() {
            let pc = sandbox_config(side.name, run, 1);
            let pod = side.run_pod(&pc).await?;
            for i in n..big {
                let id = create_start(side, &pod, &pc, container_config(&image, &format!("c{i}")))
                    .await?;
                ids[k].push(id);
            }
            big_pods.push(pod);
        }
        for round in 0..args.list_samples {
            for (k, side) in sides.iter_mut().enumerate() {
                let t = Instant::now();
                let listed = side
                    .rt
                    .list_containers(ListContainersRequest::default())
                    .await?
                    .into_inner()
                    .containers
                    .len();
                big_list_t[k].push(t.elapsed());
                if listed < big {
                    bail!("{} listed {listed} containers, not {big}", side.name);
                }
                // A different container every time, spread over both pods.
                let target = ids[k][(round * 37) % ids[k].len()].clone();
                let t = Instant::now();
                side.rt
                    .container_status(ContainerStatusRequest {
                        container_id: target,
                        verbose: false,
                    })
                    .await?;
                big_status_t[k].push(t.elapsed());
            }
        }
    }
    // Both runtimes take turns, container by container.
    #[allow(clippy::needless_range_loop)]
    for i in 0..n {
        for (k, side) in sides.iter_mut().enumerate() {
            let id = ids[k][i].clone();
            settle(args).await;
            let t = Instant::now();
            side.rt
                .stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 0,
                })
                .await?;
            let r = Instant::now();
            side.rt
                .remove_container(RemoveContainerRequest { container_id: id })
                .await?;
            rm_t[k].push(r.elapsed());
            stop_rm_t[k].push(t.elapsed());
        }
    }
    for (k, side) in sides.iter_mut().enumerate() {
        // Removing a pod removes the containers still in it.
        for pod in std::iter::once(&pods[k].0).chain(big_pods.get(k)) {
            side.remove_pod(pod).await?;
        }
    }
    drop(sides);
    drop(gantry);
    drop(net);

    let peer = |v: &Vec<Vec<Duration>>| v.get(1).cloned().unwrap_or_default();
    println!(
        "container benchmark: {n} containers per runtime, {} ms pause before each timed lifecycle call, run {run:x}",
        args.settle_ms
    );
    report(
        "Create+StartContainer",
        &create_start_t[0],
        &peer(&create_start_t),
    );
    report("of which CreateContainer", &create_t[0], &peer(&create_t));
    report("and StartContainer", &start_t[0], &peer(&start_t));
    println!(
        "{:>26}: p50 {:8.2} ms p95 {:8.2} ms (the runtime's own share of both runtimes' figures)",
        "runc run --detach alone",
        ms(percentile(&floor, 0.5)),
        ms(percentile(&floor, 0.95))
    );
    report(
        "pod+container to running",
        &pod_to_running[0],
        &peer(&pod_to_running),
    );
    report("ExecSync /bin/true", &exec_t[0], &peer(&exec_t));
    report(&format!("ListContainers ({n})"), &list_t[0], &peer(&list_t));
    report("ContainerStatus", &status_t[0], &peer(&status_t));
    report("Stop+RemoveContainer", &stop_rm_t[0], &peer(&stop_rm_t));
    report("of which RemoveContainer", &rm_t[0], &peer(&rm_t));
    if !big_list_t[0].is_empty() {
        println!(
            "with {big} running containers per runtime ({} samples each, alternating):",
            args.list_samples
        );
        report(
            &format!("ListContainers ({big})"),
            &big_list_t[0],
            &peer(&big_list_t),
        );
        report("ContainerStatus", &big_status_t[0], &peer(&big_status_t));
    }
    memory.report(&format!("{n} running containers in one pod"));
    Ok(())
}

/// Memory of both runtimes (daemon, monitors or shims, pause processes),
/// sampled at one moment.
struct MemorySample {
    gantry_rss: u64,
    monitor_rss: u64,
    monitors: usize,
    peer_rss: Option<u64>,
    shim_rss: u64,
    shims: usize,
    pause_rss: u64,
    gantry_pss: u64,
    peer_pss: u64,
}

impl MemorySample {
    fn take(gantry: &Gantry, args: &Args) -> MemorySample {
        let ours = gantry.dir.display().to_string();
        let (monitor_rss, monitors) = rss_of_processes(&["gantry-monitor"], Some(&ours));
        let (shim_rss, shims) = rss_of_processes(&["containerd-shim"], None);
        MemorySample {
            gantry_rss: gantry.rss_kib(),
            monitor_rss,
            monitors,
            peer_rss: args.peer_pid.map(rss_kib),
            shim_rss,
            shims,
            pause_rss: rss_of_processes(&["pause"], None).0,
            gantry_pss: pss_kib(gantry.pid()) + pss_of_processes(&["gantry-monitor"], Some(&ours)),
            peer_pss: args.peer_pid.map(pss_kib).unwrap_or(0)
                + pss_of_processes(&["containerd-shim", "pause"], None),
        }
    }

    fn report(&self, what: &str) {
        let mib = |k: u64| k as f64 / 1024.0;
        let ours = self.gantry_rss + self.monitor_rss;
        println!(
            "resident memory with {what}: gantry {:.1} MiB + {} monitors {:.1} MiB = {:.1} MiB",
            mib(self.gantry_rss),
            self.monitors,
            mib(self.monitor_rss),
            mib(ours)
        );
        if let Some(p) = self.peer_rss {
            let theirs = p + self.shim_rss + self.pause_rss;
            println!(
                "  peer: containerd {:.1} MiB + {} shims {:.1} MiB + pause {:.1} MiB = {:.1} MiB; ratio gantry/peer {:.3}",
                mib(p),
                self.shims,
                mib(self.shim_rss),
                mib(self.pause_rss),
                mib(theirs),
                ours as f64 / theirs.max(1) as f64
            );
            println!(
                "  proportional (PSS, shared pages split): gantry + monitors {:.1} MiB, peer {:.1} MiB; ratio {:.3}",
                mib(self.gantry_pss),
                mib(self.peer_pss),
                self.gantry_pss as f64 / self.peer_pss.max(1) as f64
            );
        }
    }
}

/// Memory with `--containers` pods of one running container each, the
/// shape of most Kubernetes nodes: gantry's daemon and one monitor per
/// container against containerd with one shim and one pause per pod.
async fn bench_memory(args: &Args) -> anyhow::Result<()> {
    let Setup {
        gantry,
        net,
        tmp: _tmp,
        image,
        mut sides,
        run,
    } = setup(args, "memory").await?;
    let n = args.containers;
    let mut pods: Vec<Vec<String>> = vec![Vec::new(); sides.len()];
    for i in 0..n {
        for (k, side) in sides.iter_mut().enumerate() {
            let pc = sandbox_config(side.name, run, 2000 + i);
            let pod = side.run_pod(&pc).await?;
            create_start(side, &pod, &pc, container_config(&image, "only")).await?;
            pods[k].push(pod);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = MemorySample::take(&gantry, args);
    for (k, side) in sides.iter_mut().enumerate() {
        for pod in &pods[k] {
            side.remove_pod(pod).await?;
        }
    }
    drop(sides);
    drop(gantry);
    drop(net);
    println!("memory benchmark, run {run:x}");
    memory.report(&format!("{n} pods of one running container each"));
    Ok(())
}

/// The stats and metrics polls with `--pods` pods of one running
/// container each, `--list-samples` of each call, taken in turns so that
/// load on the machine falls on every figure alike. Pods get a cgroup
/// parent as kubelet gives them (containerd 1.6 has no stats for a pod
/// without one), under a parent of this run's that is removed afterwards.
async fn bench_metrics(args: &Args) -> anyhow::Result<()> {
    let Setup {
        gantry,
        net,
        tmp: _tmp,
        image,
        mut sides,
        run,
    } = setup(args, "metrics").await?;
    let n = args.pods;
    let parent = format!("/gantry-bench-{run:x}");
    let mut pods: Vec<Vec<String>> = vec![Vec::new(); sides.len()];
    let mut started = Ok(());
    'start: for i in 0..n {
        for (k, side) in sides.iter_mut().enumerate() {
            let one = start_kubelet_pod(side, run, &parent, &image, 3000 + i, &mut pods[k]);
            if let Err(e) = one.await {
                started = Err(e);
                break 'start;
            }
        }
    }
    let measured = match started {
        Ok(()) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            sample_polls(&mut sides, args.list_samples).await
        }
        Err(e) => Err(e),
    };
    for (k, side) in sides.iter_mut().enumerate() {
        remove_pods(side, &pods[k]).await;
    }
    drop(sides);
    drop(gantry);
    drop(net);
    remove_cgroup_parent(&parent);
    let (g_metrics, g_stats, p_stats, sizes) = measured?;
    println!(
        "metrics benchmark, run {run:x}: {n} pods of one running container each, {} samples; \
         pods answered: gantry metrics {}, gantry stats {}, peer stats {}",
        args.list_samples, sizes.0, sizes.1, sizes.2
    );
    println!("gantry's calls, each against the peer's ListPodSandboxStats:");
    report("ListPodSandboxMetrics", &g_metrics, &p_stats);
    report("ListPodSandboxStats", &g_stats, &p_stats);
    let (m50, s50) = (percentile(&g_metrics, 0.5), percentile(&g_stats, 0.5));
    println!(
        "  gantry ListPodSandboxMetrics / its own ListPodSandboxStats p50: {:.2}",
        m50.as_secs_f64() / s50.as_secs_f64()
    );
    Ok(())
}

/// Starts pod `i` of this run with one running `sleep` container, under
/// a cgroup parent below `parent` as kubelet gives pods (containerd 1.6
/// has no stats for a pod without one). The pod's id goes into `pods` as
/// soon as it exists, so that a failure later still removes it.
async fn start_kubelet_pod(
    side: &mut Side,
    run: u64,
    parent: &str,
    image: &str,
    i: usize,
    pods: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut pc = sandbox_config(side.name, run, i);
    if let Some(l) = pc.linux.as_mut() {
        l.cgroup_parent = format!("{parent}/pod-{}-{i}", side.name);
    }
    let pod = side.run_pod(&pc).await?;
    pods.push(pod.clone());
    create_start(side, &pod, &pc, container_config(image, "only")).await?;
    Ok(())
}

/// Stops and removes `pods`, saying which could not be removed.
async fn remove_pods(side: &mut Side, pods: &[String]) {
    for pod in pods {
        if let Err(e) = side.remove_pod(pod).await {
            eprintln!("removing {} pod {pod}: {e}", side.name);
        }
    }
}

type PollTimes = (
    Vec<Duration>,
    Vec<Duration>,
    Vec<Duration>,
    (usize, usize, usize),
);

/// `samples` rounds of gantry's ListPodSandboxMetrics and
/// ListPodSandboxStats and the peer's ListPodSandboxStats, after one
/// untimed round (connections, caches, first CPU samples); also how many
/// pods each answered.
async fn sample_polls(sides: &mut [Side], samples: usize) -> anyhow::Result<PollTimes> {
    use gantry_proto::v1::{ListPodSandboxMetricsRequest, ListPodSandboxStatsRequest};
    let (mut g_metrics, mut g_stats, mut p_stats) = (Vec::new(), Vec::new(), Vec::new());
    let mut sizes = (0, 0, 0);
    for round in 0..=samples {
        let t = Instant::now();
        let m = sides[0]
            .rt
            .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await?
            .into_inner()
            .pod_metrics;
        let d = t.elapsed();
        if round == 0 {
            let series: usize = m
                .iter()
                .map(|p| {
                    p.metrics.len()
                        + p.container_metrics
                            .iter()
                            .map(|c| c.metrics.len())
                            .sum::<usize>()
                })
                .sum();
            sizes.0 = m.len();
            println!(
                "gantry ListPodSandboxMetrics: {} pods, {series} series",
                m.len()
            );
        } else {
            g_metrics.push(d);
        }
        let t = Instant::now();
        let s = sides[0]
            .rt
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
            .await?
            .into_inner()
            .stats;
        let d = t.elapsed();
        if round == 0 {
            sizes.1 = s.len();
        } else {
            g_stats.push(d);
        }
        if let Some(peer) = sides.get_mut(1) {
            let t = Instant::now();
            let s = peer
                .rt
                .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
                .await?
                .into_inner()
                .stats;
            let d = t.elapsed();
            if round == 0 {
                sizes.2 = s.len();
            } else {
                p_stats.push(d);
            }
        }
    }
    Ok((g_metrics, g_stats, p_stats, sizes))
}

/// Removes a cgroup parent the runtimes created but leave behind (they
/// remove only the pods' own cgroups), in every hierarchy, once empty.
fn remove_cgroup_parent(parent: &str) {
    let rel = parent.trim_start_matches('/');
    let roots: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([std::path::PathBuf::from("/sys/fs/cgroup")])
        .collect();
    for root in roots {
        let dir = root.join(rel);
        if !dir.is_dir() {
            continue;
        }
        // Children first: pod cgroups a runtime has not removed yet.
        for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if child.path().is_dir() {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        if let Err(e) = std::fs::remove_dir(&dir) {
            eprintln!("cgroup {} is left: {e}", dir.display());
        }
    }
}

/// Streaming: the round trip of `Exec` + `echo hi` over SPDY (from the RPC
/// to the exit status), and the throughput of a port-forwarded HTTP
/// download of `--forward-mib` MiB from busybox httpd in the pod.
async fn bench_streaming(args: &Args) -> anyhow::Result<()> {
    use gantry_e2e::stream;
    let Setup {
        gantry: _gantry,
        net: _net,
        tmp: _tmp,
        image,
        mut sides,
        run,
    } = setup(args, "streaming").await?;
    let mib = args.forward_mib;
    let script = format!(
        "mkdir -p /www && busybox dd if=/dev/zero of=/www/big bs=1048576 count={mib} 2>/dev/null && \
         busybox httpd -p 8080 -h /www && exec sleep 100000"
    );
    let mut targets = Vec::new();
    for side in sides.iter_mut() {
        let pc = sandbox_config(side.name, run, 0);
        let pod = side.run_pod(&pc).await?;
        let mut cfg = container_config(&image, "web");
        cfg.command = vec!["/bin/sh".into(), "-c".into(), script.clone()];
        let id = create_start(side, &pod, &pc, cfg).await?;
        targets.push((pod, id));
    }
    // The file is written and the server up before anything is timed.
    for (k, side) in sides.iter_mut().enumerate() {
        let mut ready = false;
        for _ in 0..100 {
            let r = side
                .rt
                .exec_sync(ExecSyncRequest {
                    container_id: targets[k].1.clone(),
                    cmd: vec![
                        "busybox".into(),
                        "wget".into(),
                        "-q".into(),
                        "-O".into(),
                        "/dev/null".into(),
                        "http://127.0.0.1:8080/big".into(),
                    ],
                    timeout: 30,
                })
                .await?
                .into_inner();
            if r.exit_code == 0 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !ready {
            bail!("{}: the web server in the pod never served /big", side.name);
        }
    }

    let session = stream::Session {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let rounds = args.exec_rounds;
    let mut exec_t: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    for _ in 0..rounds {
        for (k, side) in sides.iter_mut().enumerate() {
            let t = Instant::now();
            let url = side
                .rt
                .exec(gantry_proto::v1::ExecRequest {
                    container_id: targets[k].1.clone(),
                    cmd: vec!["echo".into(), "hi".into()],
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .url;
            let o = stream::spdy_session(&url, &session, Duration::from_secs(30)).await;
            exec_t[k].push(t.elapsed());
            if o.stdout != "hi\n" || o.exit_code() != Some(0) {
                bail!("{}: exec echo hi gave {o:?}", side.name);
            }
        }
    }
    println!("exec round trip ({rounds} sessions of `echo hi` over SPDY):");
    report(
        "Exec + echo hi",
        &exec_t[0],
        exec_t.get(1).map(Vec::as_slice).unwrap_or(&[]),
    );

    println!("port forward of a {mib} MiB HTTP download (3 rounds, best):");
    let mut best: Vec<f64> = vec![0.0; sides.len()];
    for _ in 0..3 {
        for (k, side) in sides.iter_mut().enumerate() {
            let url = side
                .rt
                .port_forward(gantry_proto::v1::PortForwardRequest {
                    pod_sandbox_id: targets[k].0.clone(),
                    port: vec![8080],
                })
                .await?
                .into_inner()
                .url;
            let t = Instant::now();
            let f = stream::port_forward(
                &url,
                8080,
                b"GET /big HTTP/1.0\r\n\r\n",
                64,
                Duration::from_secs(300),
            )
            .await;
            let secs = t.elapsed().as_secs_f64();
            if f.bytes < (mib as u64) << 20
                || !String::from_utf8_lossy(&f.head).starts_with("HTTP/1.")
            {
                bail!("{}: forwarded {} bytes ({})", side.name, f.bytes, f.error);
            }
            let bytes = f.bytes;
            best[k] = best[k].max(bytes as f64 / (1 << 20) as f64 / secs);
        }
    }
    print!("{:>26}: gantry {:8.1} MiB/s", "port forward", best[0]);
    if let Some(p) = best.get(1) {
        print!(
            "  peer {p:8.1} MiB/s  ratio (gantry/peer) {:.2}",
            best[0] / p
        );
    }
    println!();

    for (k, side) in sides.iter_mut().enumerate() {
        side.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: targets[k].0.clone(),
            })
            .await?;
        side.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: targets[k].0.clone(),
            })
            .await?;
    }
    Ok(())
}

/// What soak mode watches on one runtime.
struct Watched {
    pid: u32,
    /// Its per-container processes: gantry's monitors, containerd's shims.
    procs: (&'static str, Option<String>),
    dirs: Vec<std::path::PathBuf>,
}

struct SoakSample {
    rss_kib: u64,
    fds: usize,
    threads: u64,
    procs: usize,
    entries: usize,
}

impl Watched {
    fn sample(&self) -> SoakSample {
        let threads = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        SoakSample {
            rss_kib: rss_kib(self.pid),
            fds: std::fs::read_dir(format!("/proc/{}/fd", self.pid))
                .map(|d| d.count())
                .unwrap_or(0),
            threads,
            procs: processes(&[self.procs.0], self.procs.1.as_deref()).len(),
            entries: self.dirs.iter().map(|d| entries_on_fs(d)).sum(),
        }
    }
}

/// Entries under `dir` on its own filesystem: mounted container roots and
/// namespace pins are not walked into.
fn entries_on_fs(dir: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            count += 1;
            if let Ok(m) = e.path().symlink_metadata() {
                if m.is_dir() && m.dev() == top.dev() {
                    stack.push(e.path());
                }
            }
        }
    }
    count
}

fn soak_row(label: &str, s: &SoakSample, first: Option<&SoakSample>) {
    let drift = first
        .map(|f| {
            format!(
                "{:+.1}%",
                (s.rss_kib as f64 / f.rss_kib.max(1) as f64 - 1.0) * 100.0
            )
        })
        .unwrap_or_default();
    println!(
        "  {label:>8} | rss {:7.1} MiB {drift:>7} | fds {:5} | threads {:4} | per-container processes {:4} | state entries {:7}",
        s.rss_kib as f64 / 1024.0,
        s.fds,
        s.threads,
        s.procs,
        s.entries
    );
}

/// One pod lifecycle; returns the RunPodSandbox latency.
async fn soak_cycle(
    rt: &mut RuntimeServiceClient<Channel>,
    pc: &PodSandboxConfig,
    image: &str,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let run_pod = t0.elapsed();
    let container = async {
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(image, "soak")),
                sandbox_config: Some(pc.clone()),
            })
            .await?
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest { container_id: id })
            .await
    }
    .await;
    // The pod goes whether or not its container made it, so a failed cycle
    // leaves nothing running.
    let stopped = rt
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    let removed = rt
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await;
    container?;
    stopped?;
    removed?;
    Ok(run_pod)
}

/// `--cycles` pod lifecycles from `--clients` concurrent clients, gantry
/// first, then the peer, with the daemon's resources sampled as they go.
async fn bench_soak(args: &Args) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let Setup {
        gantry,
        net,
        tmp: _tmp,
        image,
        sides,
        run,
    } = setup(args, "soak").await?;
    println!(
        "soak benchmark, run {run:x}: {} pod lifecycles (pod, container, start, stop, remove) from {} concurrent clients per runtime",
        args.cycles, args.clients
    );
    let mut quantiles = Vec::new();
    for side in &sides {
        let watched = if side.name == "gantry" {
            Watched {
                pid: gantry.pid(),
                procs: ("gantry-monitor", Some(gantry.dir.display().to_string())),
                dirs: vec![gantry.dir.join("root"), gantry.dir.join("state")],
            }
        } else {
            let Some(pid) = args.peer_pid else {
                bail!("soak mode needs --peer-pid to watch the peer")
            };
            Watched {
                pid,
                procs: ("containerd-shim", None),
                dirs: vec![
                    "/var/lib/peer-containerd".into(),
                    "/run/peer-containerd".into(),
                ],
            }
        };
        println!("{}:", side.name);
        let first_sample = watched.sample();
        soak_row("start", &first_sample, None);
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..args.clients {
            let (next, done) = (next.clone(), done.clone());
            let mut rt = side.rt.clone();
            let (image, who, cycles) = (image.clone(), side.name, args.cycles);
            workers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= cycles {
                        return Ok::<_, anyhow::Error>(lat);
                    }
                    let pc = sandbox_config(&format!("soak-{who}"), run, i);
                    lat.push(
                        soak_cycle(&mut rt, &pc, &image)
                            .await
                            .with_context(|| format!("cycle {i} on {who}"))?,
                    );
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let mut after_first: Option<SoakSample> = None;
        let mut next_sample = args.sample_every.max(1);
        while workers.iter().any(|w| !w.is_finished()) || next_sample <= done.load(Ordering::SeqCst)
        {
            if done.load(Ordering::SeqCst) >= next_sample {
                let s = watched.sample();
                soak_row(&next_sample.to_string(), &s, after_first.as_ref());
                if after_first.is_none() {
                    after_first = Some(s);
                }
                next_sample += args.sample_every.max(1);
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Every client ends its cycle in flight before the first failure
        // is reported, so none is cut off half-way.
        let mut lat = Vec::new();
        let mut failed = None;
        for w in workers {
            match w.await {
                Ok(Ok(l)) => lat.extend(l),
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(e) => failed = failed.or(Some(e.into())),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        // What the last removals leave running in the background (a shim
        // exiting, a reaper) is given a moment before the final count.
        tokio::time::sleep(Duration::from_secs(3)).await;
        soak_row("end", &watched.sample(), after_first.as_ref());
        let (p50, p95) = (percentile(&lat, 0.5), percentile(&lat, 0.95));
        println!(
            "  RunPodSandbox at {} clients: p50 {:.1} ms, p95 {:.1} ms",
            args.clients,
            ms(p50),
            ms(p95)
        );
        quantiles.push((p50, p95));
    }
    if let [(g50, g95), (p50, p95)] = quantiles[..] {
        println!(
            "RunPodSandbox ratio gantry/peer at {} clients: p50 {:.3}, p95 {:.3}",
            args.clients,
            ms(g50) / ms(p50).max(f64::MIN_POSITIVE),
            ms(g95) / ms(p95).max(f64::MIN_POSITIVE)
        );
    }
    drop(sides);
    drop(gantry);
    drop(net);
    Ok(())
}

/// StopPodSandbox of one pod holding `--pod-containers` running
/// containers, on each runtime.
async fn bench_stop_pod(args: &Args) -> anyhow::Result<()> {
    let Setup {
        gantry,
        net,
        tmp: _tmp,
        image,
        mut sides,
        run,
    } = setup(args, "stop-pod").await?;
    let n = args.pod_containers;
    let (mut times, mut removes) = (Vec::new(), Vec::new());
    for side in sides.iter_mut() {
        let pc = sandbox_config(&format!("stop-{}", side.name), run, 0);
        let pod = side.run_pod(&pc).await?;
        for i in 0..n {
            create_start(side, &pod, &pc, container_config(&image, &format!("c{i}"))).await?;
        }
        let t = Instant::now();
        side.rt
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await?;
        times.push(t.elapsed());
        let t = Instant::now();
        side.rt
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await?;
        removes.push(t.elapsed());
    }
    drop(sides);
    drop(gantry);
    drop(net);
    println!(
        "stop-pod benchmark, run {run:x}: StopPodSandbox of a pod with {n} running containers, then RemovePodSandbox"
    );
    for (what, t) in [("StopPodSandbox", &times), ("RemovePodSandbox", &removes)] {
        print!("  {what:>16}: gantry {:6.0} ms", ms(t[0]));
        if let Some(p) = t.get(1) {
            print!(
                "  peer {:6.0} ms  ratio gantry/peer {:.3}",
                ms(*p),
                ms(t[0]) / ms(*p).max(f64::MIN_POSITIVE)
            );
        }
        println!();
    }
    Ok(())
}

/// How fast a container writing `--log-mib` MiB of short lines gets its
/// output drained into the CRI log, from its start to its exit by the
/// runtime's own timestamps (best of 3): gantry with its default cap, gantry
/// with a pod capped at 1 MiB (the monitor drops the rest), and the peer.
/// Then the time of a gantry /metrics scrape (median of 20).
async fn bench_logs(args: &Args) -> anyhow::Result<()> {
    let Setup {
        gantry,
        net: _net,
        tmp: _tmp,
        image,
        mut sides,
        run,
    } = setup(args, "logs").await?;
    // Whole lines of `0123456789abcdef\n`.
    let bytes = (args.log_mib << 20) / 17 * 17;
    let script = format!("yes 0123456789abcdef | head -c {bytes}");
    let cases: Vec<(usize, &str, Option<&str>)> = {
        let mut c = vec![(0, "gantry", None), (0, "gantry, 1 MiB cap", Some("1Mi"))];
        if sides.len() > 1 {
            c.push((1, "peer", None));
        }
        c
    };
    println!(
        "log drain of {} MiB of 17-byte lines (best of 3):",
        args.log_mib
    );
    for (i, (side_ix, what, cap)) in cases.into_iter().enumerate() {
        let side = &mut sides[side_ix];
        let mut best = 0.0f64;
        let mut log_bytes = 0;
        for round in 0..3 {
            let mut pc = sandbox_config(side.name, run, i * 10 + round);
            if let Some(cap) = cap {
                pc.annotations
                    .insert("gantry.dev/log-max-bytes".into(), cap.into());
            }
            let pod = side.run_pod(&pc).await?;
            let mut cfg = container_config(&image, "flood");
            cfg.command = vec!["/bin/sh".into(), "-c".into(), script.clone()];
            let id = create_start(side, &pod, &pc, cfg).await?;
            let mut status = None;
            for _ in 0..6000 {
                let s = side
                    .rt
                    .container_status(ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    })
                    .await?
                    .into_inner()
                    .status
                    .context("no container status")?;
                if s.state == gantry_proto::v1::ContainerState::ContainerExited as i32 {
                    status = Some(s);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let s = status.context("the flood container did not exit in 5 minutes")?;
            if s.exit_code != 0 {
                bail!("{what}: the flood container exited with {}", s.exit_code);
            }
            let secs = (s.finished_at - s.started_at) as f64 / 1e9;
            best = best.max(bytes as f64 / (1 << 20) as f64 / secs);
            log_bytes = std::fs::metadata(&s.log_path).map(|m| m.len()).unwrap_or(0);
            side.remove_pod(&pod).await?;
            let _ = std::fs::remove_dir_all(&pc.log_directory);
        }
        println!(
            "{what:>26}: {best:8.1} MiB/s of output, log file {:.1} MiB",
            log_bytes as f64 / (1 << 20) as f64
        );
    }

    let mut scrapes = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let text = gantry.metrics().await;
        scrapes.push(t.elapsed());
        if !text.contains("gantry_container_log_dropped_bytes_total") {
            bail!("the scrape lacks the dropped-bytes counter");
        }
    }
    report("GET /metrics", &scrapes, &[]);
    Ok(())
}

/// The latencies of each call one runtime answered under the kubelet
/// load, and the failures of each (how many, and the first error).
#[derive(Default)]
struct CallLog {
    /// Each answered call: its name, when it started, how long it took.
    spans: Vec<(&'static str, Instant, Duration)>,
    failures: std::collections::BTreeMap<&'static str, (usize, String)>,
}

/// The calls of kubelet's 10 s stats poll.
const STATS_POLL: [&str; 3] = ["ListPodSandboxStats", "ListContainerStats", "ImageFsInfo"];

impl CallLog {
    /// The latencies of each call.
    fn times(&self) -> std::collections::BTreeMap<&'static str, Vec<Duration>> {
        let mut times = std::collections::BTreeMap::<_, Vec<_>>::new();
        for (name, _, took) in &self.spans {
            times.entry(*name).or_default().push(*took);
        }
        times
    }

    /// The other calls that took over `slow`, and how many of them
    /// overlapped a call of the stats poll.
    fn slow_beside_stats(&self, slow: Duration) -> (usize, usize) {
        let polls: Vec<(Instant, Instant)> = self
            .spans
            .iter()
            .filter(|s| STATS_POLL.contains(&s.0))
            .map(|s| (s.1, s.1 + s.2))
            .collect();
        let slow: Vec<_> = self
            .spans
            .iter()
            .filter(|s| !STATS_POLL.contains(&s.0) && s.2 > slow)
            .collect();
        let beside = slow
            .iter()
            .filter(|s| polls.iter().any(|p| s.1 < p.1 && p.0 < s.1 + s.2))
            .count();
        (slow.len(), beside)
    }
}

/// A [`CallLog`] shared by the loops that play kubelet's goroutines.
#[derive(Clone, Default)]
struct Calls(std::sync::Arc<std::sync::Mutex<CallLog>>);

impl Calls {
    /// Times `call` under `name`; its answer, or `None` once its failure
    /// is counted (kubelet logs a failed poll and polls again later).
    async fn time<T>(
        &self,
        name: &'static str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Option<T> {
        let t = Instant::now();
        let answer = call.await;
        let took = t.elapsed();
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(r) => {
                log.spans.push((name, t, took));
                Some(r.into_inner())
            }
            Err(e) => {
                log.failures
                    .entry(name)
                    .or_insert_with(|| (0, e.to_string()))
                    .0 += 1;
                None
            }
        }
    }

    fn take(&self) -> CallLog {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// CPU time of one process from /proc/<pid>/stat, in clock ticks.
#[derive(Clone, Copy)]
struct ProcCpu {
    /// When it started (ticks since boot): a reused PID is a new process.
    started: u64,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: children it has waited for.
    reaped: u64,
}

fn proc_cpu(pid: u32) -> Option<ProcCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields are counted
    // from the last ')' on (its first is field 3, the state).
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcCpu {
        started: field(22)?,
        own: field(14)? + field(15)?,
        reaped: field(16)? + field(17)?,
    })
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// The CPU of a runtime's processes at one moment: its daemon and the
/// processes it keeps per container (gantry's monitors, containerd's shims).
struct CpuSnapshot {
    daemon: (u32, Option<ProcCpu>),
    helpers: std::collections::HashMap<u32, ProcCpu>,
}

impl CpuSnapshot {
    fn take(daemon: u32, helpers: &[u32]) -> CpuSnapshot {
        CpuSnapshot {
            daemon: (daemon, proc_cpu(daemon)),
            helpers: helpers
                .iter()
                .filter_map(|p| Some((*p, proc_cpu(*p)?)))
                .collect(),
        }
    }
}

/// CPU seconds spent between two snapshots by the processes alive at the
/// end (one that started in between counts whole; one that ended in
/// between is not counted), and by the daemon's children it reaped.
struct CpuWindow {
    daemon: f64,
    helpers: f64,
    helper_count: usize,
    reaped: f64,
}

impl CpuWindow {
    fn between(a: &CpuSnapshot, b: &CpuSnapshot) -> CpuWindow {
        let hz = clock_ticks_per_sec();
        let since =
            |before: Option<&ProcCpu>, now: &ProcCpu, pick: fn(&ProcCpu) -> u64| match before {
                Some(s) if s.started == now.started => pick(now).saturating_sub(pick(s)),
                _ => pick(now),
            };
        let (daemon, reaped) = match (a.daemon, b.daemon) {
            ((pa, Some(s)), (pb, Some(e))) if pa == pb => (
                since(Some(&s), &e, |c| c.own),
                since(Some(&s), &e, |c| c.reaped),
            ),
            (_, (_, Some(e))) => (e.own, e.reaped),
            _ => (0, 0),
        };
        let helpers: u64 = b
            .helpers
            .iter()
            .map(|(pid, now)| since(a.helpers.get(pid), now, |c| c.own))
            .sum();
        CpuWindow {
            daemon: daemon as f64 / hz,
            helpers: helpers as f64 / hz,
            helper_count: b.helpers.len(),
            reaped: reaped as f64 / hz,
        }
    }

    fn total(&self) -> f64 {
        self.daemon + self.helpers
    }
}

/// What one runtime did under the kubelet load.
struct KubeletRun {
    calls: CallLog,
    cpu: CpuWindow,
    window: Duration,
    /// GetContainerEvents: the events received, and how the stream ended
    /// if it ended before the window did; `None` where it was not opened.
    events: Option<(usize, Option<String>)>,
}

/// Runs `f` every `period` until `deadline`, the first time at once; a
/// call that overruns delays the next as kubelet's `wait.Until` does.
async fn every<F, Fut>(period: Duration, deadline: Instant, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while next_tick(&mut tick, deadline).await {
        f().await;
    }
}

/// Waits for the next tick; false once `deadline` comes first.
async fn next_tick(tick: &mut tokio::time::Interval, deadline: Instant) -> bool {
    let deadline = tokio::time::Instant::from_std(deadline);
    tokio::time::timeout_at(deadline, tick.tick()).await.is_ok()
        && Instant::now() < deadline.into_std()
}

/// Kubelet's generic PLEG: every second ListPodSandbox and ListContainers
/// of everything, then ContainerStatus of each container whose state
/// changed since the last relist (all of them at the first, as after a
/// kubelet restart) and PodSandboxStatus of their pods.
async fn pleg(mut rt: RuntimeServiceClient<Channel>, calls: Calls, deadline: Instant) {
    use gantry_proto::v1::{ListPodSandboxRequest, PodSandboxStatusRequest};
    use std::collections::{BTreeSet, HashMap};
    let mut last: HashMap<String, (i32, String)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while next_tick(&mut tick, deadline).await {
        let Some(sandboxes) = calls
            .time(
                "ListPodSandbox",
                rt.list_pod_sandbox(ListPodSandboxRequest::default()),
            )
            .await
        else {
            continue;
        };
        let Some(containers) = calls
            .time(
                "ListContainers",
                rt.list_containers(ListContainersRequest::default()),
            )
            .await
        else {
            continue;
        };
        let now: HashMap<String, (i32, String)> = containers
            .containers
            .into_iter()
            .map(|c| (c.id, (c.state, c.pod_sandbox_id)))
            .collect();
        let mut changed_pods = BTreeSet::new();
        for (id, (state, pod)) in &now {
            if last.get(id).map(|l| l.0) != Some(*state) {
                calls
                    .time(
                        "ContainerStatus",
                        rt.container_status(ContainerStatusRequest {
                            container_id: id.clone(),
                            verbose: false,
                        }),
                    )
                    .await;
                changed_pods.insert(pod.clone());
            }
        }
        for (id, (_, pod)) in &last {
            if !now.contains_key(id) {
                changed_pods.insert(pod.clone());
            }
        }
        for pod in changed_pods {
            if sandboxes.items.iter().any(|s| s.id == pod) {
                calls
                    .time(
                        "PodSandboxStatus",
                        rt.pod_sandbox_status(PodSandboxStatusRequest {
                            pod_sandbox_id: pod,
                            verbose: false,
                        }),
                    )
                    .await;
            }
        }
        last = now;
    }
}

/// Plays kubelet against one runtime for `length`: the PLEG relist every
/// second, `Status` every 5 s (its runtime health check), the stats
/// kubelet's summary and eviction manager read every 10 s
/// (ListPodSandboxStats, ListContainerStats, ImageFsInfo), ListImages every
/// 30 s (its image cache), and with `events` GetContainerEvents held open.
/// CPU is sampled from the processes `watched` names at the start and end.
async fn kubelet_window(
    side: &Side,
    length: Duration,
    events: bool,
    watched: impl Fn() -> (u32, Vec<u32>),
) -> anyhow::Result<KubeletRun> {
    use gantry_proto::v1::{
        GetEventsRequest, ImageFsInfoRequest, ListContainerStatsRequest, ListImagesRequest,
        ListPodSandboxStatsRequest, StatusRequest,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let received = Arc::new(AtomicUsize::new(0));
    let stream = if events {
        let mut rt = side.rt.clone();
        let mut stream = rt
            .get_container_events(GetEventsRequest {})
            .await
            .with_context(|| format!("{}: GetContainerEvents", side.name))?
            .into_inner();
        let received = received.clone();
        Some(tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => received.fetch_add(1, Ordering::Relaxed),
                    Ok(None) => return "the runtime ended the stream".to_string(),
                    Err(e) => return e.to_string(),
                };
            }
        }))
    } else {
        None
    };
    let calls = Calls::default();
    let (daemon, helpers) = watched();
    let before = CpuSnapshot::take(daemon, &helpers);
    let started = Instant::now();
    let deadline = started + length;
    let status = every(Duration::from_secs(5), deadline, || {
        let (mut rt, calls) = (side.rt.clone(), calls.clone());
        async move {
            calls
                .time("Status", rt.status(StatusRequest { verbose: false }))
                .await;
        }
    });
    let stats = every(Duration::from_secs(10), deadline, || {
        let (mut rt, mut im, calls) = (side.rt.clone(), side.images.clone(), calls.clone());
        async move {
            calls
                .time(
                    "ListPodSandboxStats",
                    rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest::default()),
                )
                .await;
            calls
                .time(
                    "ListContainerStats",
                    rt.list_container_stats(ListContainerStatsRequest::default()),
                )
                .await;
            calls
                .time("ImageFsInfo", im.image_fs_info(ImageFsInfoRequest {}))
                .await;
        }
    });
    let images = every(Duration::from_secs(30), deadline, || {
        let (mut im, calls) = (side.images.clone(), calls.clone());
        async move {
            calls
                .time("ListImages", im.list_images(ListImagesRequest::default()))
                .await;
        }
    });
    tokio::join!(
        pleg(side.rt.clone(), calls.clone(), deadline),
        status,
        stats,
        images
    );
    let window = started.elapsed();
    let (daemon, helpers) = watched();
    let cpu = CpuWindow::between(&before, &CpuSnapshot::take(daemon, &helpers));
    let events = match stream {
        Some(task) if task.is_finished() => Some((
            received.load(Ordering::Relaxed),
            Some(task.await.unwrap_or_else(|e| e.to_string())),
        )),
        Some(task) => {
            task.abort();
            Some((received.load(Ordering::Relaxed), None))
        }
        None => None,
    };
    Ok(KubeletRun {
        calls: calls.take(),
        cpu,
        window,
        events,
    })
}

/// The steady load kubelet puts on a node, on each runtime in turn:
/// `--kubelet-pods` pods of one running container each are started, left
/// to settle, driven as kubelet drives them for `--seconds`, and removed
/// before the next runtime's turn. Prints the CPU seconds of each runtime's
/// processes over the window and the latencies of each call.
async fn bench_kubelet(args: &Args) -> anyhow::Result<()> {
    let Setup {
        gantry,
        net,
        tmp: _tmp,
        image,
        mut sides,
        run,
    } = setup(args, "kubelet").await?;
    let peer_socket = args
        .peer
        .as_deref()
        .and_then(|p| p.strip_prefix("unix://"))
        .unwrap_or_default()
        .to_string();
    if sides.len() > 1 && args.peer_pid.is_none() {
        bail!("kubelet mode needs --peer-pid to count the peer's CPU");
    }
    let n = args.kubelet_pods;
    let length = Duration::from_secs(args.seconds);
    let parent = format!("/gantry-bench-{run:x}");
    let ours = gantry.dir.display().to_string();
    let mut runs = Vec::new();
    let mut failed = None;
    for side in sides.iter_mut() {
        let mut pods = Vec::new();
        let mut started = Ok(());
        for i in 0..n {
            started = start_kubelet_pod(side, run, &parent, &image, 4000 + i, &mut pods).await;
            if started.is_err() {
                break;
            }
        }
        let measured = match started {
            Ok(()) => {
                // Whatever the starts left running in the background ends
                // before the window opens.
                tokio::time::sleep(Duration::from_secs(5)).await;
                if side.name == "gantry" {
                    kubelet_window(side, length, true, || {
                        (gantry.pid(), processes(&["gantry-monitor"], Some(&ours)))
                    })
                    .await
                } else {
                    // containerd 1.6 has no GetContainerEvents.
                    let pid = args.peer_pid.unwrap_or_default();
                    kubelet_window(side, length, false, || {
                        (pid, processes(&["containerd-shim"], Some(&peer_socket)))
                    })
                    .await
                }
            }
            Err(e) => Err(e),
        };
        remove_pods(side, &pods).await;
        match measured {
            Ok(r) => runs.push(r),
            Err(e) => {
                failed = Some(e.context(format!("{} under the kubelet load", side.name)));
                break;
            }
        }
    }
    drop(sides);
    drop(gantry);
    drop(net);
    remove_cgroup_parent(&parent);
    if let Some(e) = failed {
        return Err(e);
    }
    print_kubelet(&runs, n, run);
    Ok(())
}

fn print_kubelet(runs: &[KubeletRun], n: usize, run: u64) {
    let names = ["gantry", "peer"];
    println!(
        "kubelet-shaped load, run {run:x}: {n} pods of one running container each, one runtime at a time"
    );
    println!(
        "  every 1 s ListPodSandbox + ListContainers, then ContainerStatus and PodSandboxStatus of what changed \
         (everything at the first relist); every 5 s Status; every 10 s ListPodSandboxStats, ListContainerStats, \
         ImageFsInfo; every 30 s ListImages; GetContainerEvents held open on gantry (containerd 1.6 has none)"
    );
    for (who, r) in names.iter().zip(runs) {
        let (helpers, what) = if *who == "gantry" {
            ("monitors", "gantry")
        } else {
            ("shims", "containerd")
        };
        println!(
            "  {who}: CPU {:.2} s over {:.0} s ({:.1}% of a core): {what} {:.2} s + {} {helpers} {:.2} s; \
             children it reaped meanwhile (not in the figure) {:.2} s",
            r.cpu.total(),
            r.window.as_secs_f64(),
            r.cpu.total() / r.window.as_secs_f64() * 100.0,
            r.cpu.daemon,
            r.cpu.helper_count,
            r.cpu.helpers,
            r.cpu.reaped
        );
        if let Some((count, ended)) = &r.events {
            println!(
                "  {who}: GetContainerEvents open for the whole window: {count} events{}",
                ended
                    .as_ref()
                    .map(|e| format!(", but it ended early: {e}"))
                    .unwrap_or_default()
            );
        }
        let (slow, beside) = r.calls.slow_beside_stats(Duration::from_millis(10));
        println!(
            "  {who}: {slow} calls outside the stats poll took over 10 ms; {beside} of them ran while a call of the stats poll ({}) was in flight",
            STATS_POLL.join(", ")
        );
        for (call, (count, first)) in &r.calls.failures {
            println!("  {who}: {call} failed {count} times; first: {first}");
        }
    }
    if let [g, p] = runs {
        println!(
            "  CPU ratio gantry/peer: {:.3}",
            g.cpu.total() / p.cpu.total().max(f64::MIN_POSITIVE)
        );
    }
    let times: Vec<_> = runs.iter().map(|r| r.calls.times()).collect();
    let mut calls: Vec<&'static str> = times.iter().flat_map(|t| t.keys().copied()).collect();
    calls.sort();
    calls.dedup();
    println!(
        "  {:<20} | {:>6} {:>8} {:>8} {:>8} | {:>6} {:>8} {:>8} {:>8} | ratio p50 p99",
        "call (ms)", "gantry", "p50", "p99", "max", "peer", "p50", "p99", "max"
    );
    let mut over = Vec::new();
    for call in calls {
        let mut row = format!("  {call:<20}");
        let mut p = Vec::new();
        for (who, t) in names.iter().zip(&times) {
            match t.get(call).filter(|t| !t.is_empty()) {
                Some(t) => {
                    let (p50, p99) = (percentile(t, 0.5), percentile(t, 0.99));
                    let max = t.iter().max().copied().unwrap_or_default();
                    row += &format!(
                        " | {:>6} {:>8.2} {:>8.2} {:>8.2}",
                        t.len(),
                        ms(p50),
                        ms(p99),
                        ms(max)
                    );
                    if *who == "gantry" && p99 > Duration::from_millis(10) {
                        over.push(call);
                    }
                    p.push((p50, p99));
                }
                None => {
                    row += &format!(" | {:>6} {:>8} {:>8} {:>8}", 0, "-", "-", "-");
                    p.push((Duration::ZERO, Duration::ZERO));
                }
            }
        }
        if let [(g50, g99), (p50, p99)] = p[..] {
            if !p50.is_zero() && !g50.is_zero() {
                row += &format!(
                    " | {:>5.2} {:>5.2}",
                    g50.as_secs_f64() / p50.as_secs_f64(),
                    g99.as_secs_f64() / p99.as_secs_f64()
                );
            }
        }
        println!("{row}");
    }
    if over.is_empty() {
        println!("  no gantry call's p99 is over 10 ms");
    } else {
        println!("  gantry calls with p99 over 10 ms: {}", over.join(", "));
    }
}
