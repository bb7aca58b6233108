"""Drives gantry over its unix socket with gRPC's C core (Python grpcio),
channel options left at their defaults, as a monitoring agent or an
operator's script would. Called by e2e/tests/grpc_clients.rs with stubs
generated from proto/ at test time; prints one JSON object of what it saw.
"""

import importlib
import json
import sys
import time

import grpc


def main():
    stubs, module, socket, image, log_dir = sys.argv[1:6]
    sys.path.insert(0, stubs)
    pb = importlib.import_module(module + "_pb2")
    rpc = importlib.import_module(module + "_pb2_grpc")

    channel = grpc.insecure_channel("unix:" + socket)
    rt = rpc.RuntimeServiceStub(channel)
    img = rpc.ImageServiceStub(channel)
    out = {}

    v = rt.Version(pb.VersionRequest(), timeout=10)
    out["runtime_name"] = v.runtime_name
    out["runtime_api_version"] = v.runtime_api_version

    pulled = img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    out["image_ref"] = pulled.image_ref
    out["images"] = [i.id for i in img.ListImages(pb.ListImagesRequest(), timeout=10).images]

    meta = pb.PodSandboxMetadata(name="py-pod", uid="py-pod-uid", namespace="e2e", attempt=0)
    pod_config = pb.PodSandboxConfig(metadata=meta, hostname="py-pod", log_directory=log_dir)
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_config), timeout=60).pod_sandbox_id
    out["pod_id"] = pod

    ctr_config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="py-ctr", attempt=0),
        image=pb.ImageSpec(image=image),
        command=["/bin/sh", "-c", "echo hello from python; sleep 300"],
        log_path="py-ctr.log",
    )
    ctr = rt.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=pod, config=ctr_config, sandbox_config=pod_config),
        timeout=60,
    ).container_id
    out["container_id"] = ctr
    rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)

    status = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr), timeout=10).status
    out["state_after_start"] = pb.ContainerState.Name(status.state)

    # Stats need the process to have run for a moment: poll briefly.
    stats = []
    for _ in range(50):
        stats = rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=10).stats
        if stats and any(s.cpu.usage_core_nano_seconds.value > 0 for s in stats):
            break
        time.sleep(0.1)
    out["stats"] = [
        {
            "id": s.attributes.id,
            "cpu_ns": s.cpu.usage_core_nano_seconds.value,
            "memory": s.memory.working_set_bytes.value,
        }
        for s in stats
    ]
    out["pods_listed"] = [p.id for p in rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items]

    rt.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=2), timeout=30)
    status = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr), timeout=10).status
    out["state_after_stop"] = pb.ContainerState.Name(status.state)
    rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr), timeout=30)
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    out["containers_left"] = len(rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers)
    out["pods_left"] = len(rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items)

    # A refused call comes back as a gRPC status, not a broken stream.
    try:
        rt.ContainerStatus(pb.ContainerStatusRequest(container_id="no-such-container"), timeout=10)
        out["missing_container"] = "OK"
    except grpc.RpcError as e:
        out["missing_container"] = e.code().name

    print(json.dumps(out))


if __name__ == "__main__":
    main()
