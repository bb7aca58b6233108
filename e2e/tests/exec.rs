//! Native exec (gantry-exec) end to end on runc containers: an exec'd
//! command is indistinguishable from the container's init where it
//! matters (namespaces, cgroups, credentials, capabilities, seccomp, env,
//! cwd) in private-PID, shared-PID and host-network pods; the helper stays
//! out of the container's cgroups; a timed-out command leaves nothing
//! behind; a command that cannot run says so.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_e2e::fixture::{create_and_start, remove_pod, run_pod, verbose_pid, BusyboxEnv};
use gantry_proto::v1::runtime_service_client::RuntimeServiceClient;
use gantry_proto::v1::security_profile::ProfileType;
use gantry_proto::v1::{
    Capability, ContainerConfig, ExecSyncRequest, ExecSyncResponse, Int64Value,
    LinuxContainerConfig, LinuxContainerSecurityContext, NamespaceMode, PodSandboxConfig,
    SecurityProfile,
};
use tonic::transport::Channel;
use tonic::Code;

type Rt = RuntimeServiceClient<Channel>;

/// Creates and starts `c`; returns its ID and its init's host PID.
async fn run(rt: &mut Rt, pod: &str, pc: &PodSandboxConfig, c: ContainerConfig) -> (String, i32) {
    let id = create_and_start(rt, pod, pc, c).await;
    let pid = verbose_pid(rt, &id).await;
    (id, pid as i32)
}

/// A container whose init is `sleep` itself, not a shell, for execs to be
/// compared with.
fn sleep_container(env: &BusyboxEnv, name: &str) -> ContainerConfig {
    ContainerConfig {
        command: vec!["/bin/sleep".into(), "1000".into()],
        ..env.container(name, "")
    }
}

/// The streaming URL of an exec of `cmd` on a terminal, with stdin.
async fn tty_exec_url(rt: &mut Rt, id: &str, cmd: &[&str]) -> String {
    rt.exec(gantry_proto::v1::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: true,
        stdin: true,
        stdout: true,
        stderr: false,
    })
    .await
    .unwrap()
    .into_inner()
    .url
}

async fn exec(rt: &mut Rt, id: &str, cmd: &[&str], timeout: i64) -> ExecSyncResponse {
    rt.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"))
    .into_inner()
}

async fn exec_ok(rt: &mut Rt, id: &str, cmd: &[&str]) -> String {
    let r = exec(rt, id, cmd, 20).await;
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?}: {} {}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

const NAMESPACES: [&str; 7] = ["cgroup", "ipc", "mnt", "net", "pid", "uts", "user"];

/// The status lines that say who a process is and what it may do.
const STATUS_FIELDS: [&str; 11] = [
    "Uid",
    "Gid",
    "Groups",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
    "Seccomp",
    "Seccomp_filters",
];

fn status_fields(status: &str) -> BTreeMap<String, String> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| STATUS_FIELDS.contains(k))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

fn environ(raw: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    v
}

/// The exec'd command against the init, seen from the host where it can
/// be, from inside where only the container's view makes sense.
async fn assert_like_init(rt: &mut Rt, id: &str, init: i32, cwd: &str) {
    // Namespace links name the namespace the same way from anywhere.
    let script = NAMESPACES
        .iter()
        .map(|n| format!("busybox readlink /proc/self/ns/{n}"))
        .collect::<Vec<_>>()
        .join("; ");
    let inside: Vec<String> = exec_ok(rt, id, &["sh", "-c", &script])
        .await
        .lines()
        .map(str::to_string)
        .collect();
    let host: Vec<String> = NAMESPACES
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/{init}/ns/{n}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(inside, host, "namespaces of {id}");

    // Credentials, capabilities, no_new_privs and seccomp: `cat` is the
    // exec'd process itself.
    let status = exec_ok(rt, id, &["cat", "/proc/self/status"]).await;
    let init_status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let (mine, theirs) = (status_fields(&status), status_fields(&init_status));
    assert_eq!(mine.len(), STATUS_FIELDS.len(), "{status}");
    assert_eq!(mine, theirs, "status of {id}");

    // The environment is the container's (HOME included, added as runc
    // adds it), and so is the working directory.
    let env = exec(rt, id, &["cat", "/proc/self/environ"], 20).await;
    let init_env = std::fs::read(format!("/proc/{init}/environ")).unwrap();
    assert_eq!(environ(&env.stdout), environ(&init_env), "env of {id}");
    assert!(
        environ(&env.stdout).iter().any(|e| e.starts_with("HOME=")),
        "{:?}",
        environ(&env.stdout)
    );
    assert_eq!(exec_ok(rt, id, &["sh", "-c", "pwd"]).await.trim(), cwd);
}

/// Processes whose command line contains `needle`, with their PIDs.
fn processes(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push((pid, cmd));
            }
        }
    }
    found
}

fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_as_the_container_in_every_pod_kind() {
    let env = BusyboxEnv::start("nativeexec", "").await;
    let mut rt = env.g.runtime().await;
    let sleeper = |name: &str, sc: LinuxContainerSecurityContext| {
        let mut c = sleep_container(&env, name);
        c.envs = vec![gantry_proto::v1::KeyValue {
            key: "FOO".into(),
            value: "bar baz".into(),
        }];
        c.linux = Some(LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        });
        c
    };
    let runtime_default = || {
        Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            ..Default::default()
        })
    };

    // A private PID namespace: root with a capability dropped, seccomp
    // without no_new_privs (the filter goes in before capabilities are
    // dropped); and a user with groups, no_new_privs and a working
    // directory.
    let (pod, pc) = env.start_pod(&mut rt, "private").await;
    let (root, root_init) = run(
        &mut rt,
        &pod,
        &pc,
        sleeper(
            "root",
            LinuxContainerSecurityContext {
                seccomp: runtime_default(),
                capabilities: Some(Capability {
                    drop_capabilities: vec!["NET_RAW".into()],
                    add_capabilities: vec!["SYS_ADMIN".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    )
    .await;
    assert_like_init(&mut rt, &root, root_init, "/").await;
    let mut user_c = sleeper(
        "user",
        LinuxContainerSecurityContext {
            seccomp: runtime_default(),
            run_as_user: Some(Int64Value { value: 1000 }),
            run_as_group: Some(Int64Value { value: 1001 }),
            supplemental_groups: vec![3000, 3001],
            no_new_privs: true,
            ..Default::default()
        },
    );
    user_c.working_dir = "/tmp".into();
    let (user, user_init) = run(&mut rt, &pod, &pc, user_c).await;
    assert_like_init(&mut rt, &user, user_init, "/tmp").await;
    let ids = exec_ok(&mut rt, &user, &["id"]).await;
    assert!(
        ids.contains("uid=1000") && ids.contains("gid=1001"),
        "{ids}"
    );
    assert!(ids.contains("3000") && ids.contains("3001"), "{ids}");

    // A syscall RuntimeDefault refuses even with the capability it needs:
    // swapoff with CAP_SYS_ADMIN, on a file that does not exist, which the
    // kernel would answer with ENOENT.
    let r = exec(&mut rt, &root, &["busybox", "swapoff", "/no-such-swap"], 20).await;
    let err = String::from_utf8_lossy(&r.stderr);
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert!(
        err.contains("not permitted"),
        "EPERM from the filter: {err}"
    );

    // The exec'd command joins every cgroup of the init; gantry-exec, its
    // parent on the host, joins none of them (it must not count against
    // the container's pids limit).
    let mut rt2 = rt.clone();
    let root2 = root.clone();
    let long = tokio::spawn(async move { exec(&mut rt2, &root2, &["sleep", "3"], 20).await });
    let mut pair = None;
    for _ in 0..100 {
        let helpers: Vec<i32> = processes("gantry-exec")
            .into_iter()
            .filter(|(_, c)| c.contains(&root) && c.contains("sleep 3"))
            .map(|(p, _)| p)
            .collect();
        if let Some(h) = helpers.first() {
            let children =
                std::fs::read_to_string(format!("/proc/{h}/task/{h}/children")).unwrap_or_default();
            if let Some(c) = children.split_whitespace().next() {
                let c: i32 = c.parse().unwrap();
                if std::fs::read(format!("/proc/{c}/cmdline"))
                    .unwrap_or_default()
                    .starts_with(b"sleep")
                {
                    pair = Some((*h, c));
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (helper, command) = pair.expect("gantry-exec and its command");
    assert_eq!(cgroup_of(command), cgroup_of(root_init));
    let helper_cg = cgroup_of(helper);
    for line in cgroup_of(root_init).lines() {
        assert!(
            !helper_cg.lines().any(|l| l == line) || line.ends_with(":/"),
            "the helper shares {line} with the container: {helper_cg}"
        );
    }
    assert_eq!(long.await.unwrap().exit_code, 0);

    // SIGTERM sent to gantry-exec (as to `runc exec`) reaches the command.
    let mut rt3 = rt.clone();
    let root3 = root.clone();
    let script = "trap 'exit 7' TERM; echo armed > /tmp/armed; while :; do sleep 0.1; done";
    let trapped =
        tokio::spawn(async move { exec(&mut rt3, &root3, &["sh", "-c", script], 20).await });
    let mut armed = false;
    for _ in 0..100 {
        let r = exec(&mut rt, &root, &["cat", "/tmp/armed"], 20).await;
        if r.exit_code == 0 {
            armed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(armed, "the trap is set");
    let helper = processes("gantry-exec")
        .into_iter()
        .find(|(_, c)| c.contains(&root) && c.contains("exit 7"))
        .map(|(p, _)| p)
        .expect("the helper runs");
    // SAFETY: signalling the helper process found above.
    unsafe { libc::kill(helper, libc::SIGTERM) };
    assert_eq!(trapped.await.unwrap().exit_code, 7);

    // A command that cannot run fails as `runc exec` does (255), naming
    // itself.
    for missing in ["no-such-command", "/bin/no-such-command"] {
        let r = exec(&mut rt, &root, &[missing, "x"], 20).await;
        assert_eq!(r.exit_code, 255, "{r:?}");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains(missing), "{err}");
    }

    // A timed-out command is killed and reaped: no zombie, no process, no
    // helper left.
    let t = std::time::Instant::now();
    let e = rt
        .exec_sync(ExecSyncRequest {
            container_id: user.clone(),
            cmd: vec!["sleep".into(), "4321".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let mut left = processes("4321");
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = processes("4321");
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    let stats = exec_ok(&mut rt, &user, &["sh", "-c", "cat /proc/[0-9]*/stat"]).await;
    assert!(
        !stats.lines().any(|l| l.contains(" Z ")),
        "a zombie in the container: {stats}"
    );
    remove_pod(&mut rt, &pod).await;

    // Shared PID namespace: the pod's init is PID 1, the container's init
    // is not; the exec'd command still joins its namespaces.
    let pc = env.pod_config_with("shared", |o| o.pid = NamespaceMode::Pod as i32);
    let pod = run_pod(&mut rt, &pc).await;
    let (a, a_init) = run(&mut rt, &pod, &pc, sleeper("a", Default::default())).await;
    let (b, _) = run(&mut rt, &pod, &pc, sleeper("b", Default::default())).await;
    assert_like_init(&mut rt, &a, a_init, "/").await;
    let seen = exec_ok(&mut rt, &b, &["sh", "-c", "cat /proc/[0-9]*/comm"]).await;
    assert_eq!(seen.lines().filter(|c| *c == "sleep").count(), 2, "{seen}");
    remove_pod(&mut rt, &pod).await;

    // Host network: the host's network namespace is shared, the others
    // are the container's.
    let pc = env.pod_config_with("hostnet", |o| o.network = NamespaceMode::Node as i32);
    let pod = run_pod(&mut rt, &pc).await;
    let (h, h_init) = run(&mut rt, &pod, &pc, sleeper("h", Default::default())).await;
    assert_like_init(&mut rt, &h, h_init, "/").await;
    assert_eq!(
        exec_ok(&mut rt, &h, &["busybox", "readlink", "/proc/self/ns/net"])
            .await
            .trim(),
        std::fs::read_link("/proc/self/ns/net")
            .unwrap()
            .to_string_lossy()
    );
    remove_pod(&mut rt, &pod).await;
}

/// A profile of the container's own, with arguments: the exec'd command
/// gets it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_gets_a_localhost_seccomp_profile() {
    let env = BusyboxEnv::start("nativeexec-seccomp", "").await;
    let mut rt = env.g.runtime().await;
    let profile = env.logs.path().join("profile.json");
    // Changing a mode to 0600 is refused with EACCES, whichever syscall
    // the libc uses; other modes are allowed.
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["chmod"],"action":"SCMP_ACT_ERRNO","errnoRet":13,
             "args":[{"index":1,"value":384,"op":"SCMP_CMP_EQ"}]},
            {"names":["fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO","errnoRet":13,
             "args":[{"index":2,"value":384,"op":"SCMP_CMP_EQ"}]}]}"#,
    )
    .unwrap();
    let (pod, pc) = env.start_pod(&mut rt, "seccomp").await;
    let mut c = sleep_container(&env, "c");
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: profile.display().to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (id, init) = run(&mut rt, &pod, &pc, c).await;
    assert_like_init(&mut rt, &id, init, "/").await;
    let r = exec(&mut rt, &id, &["busybox", "chmod", "600", "/etc/group"], 20).await;
    assert_ne!(r.exit_code, 0, "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("ermission denied"),
        "errnoRet 13 (EACCES): {}",
        String::from_utf8_lossy(&r.stderr)
    );
    exec_ok(&mut rt, &id, &["busybox", "chmod", "644", "/etc/group"]).await;
    remove_pod(&mut rt, &pod).await;
}

/// A terminal exec gets our pty's follower as its own terminal: a resize
/// mid-session reaches the command as SIGWINCH with the new size, with no
/// runtime relaying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_exec_follows_resizes() {
    use gantry_e2e::stream::{spdy_upgrade, SpdyClient};
    let env = BusyboxEnv::start("nativeexec-tty", "").await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "tty").await;
    let (id, _) = run(&mut rt, &pod, &pc, sleep_container(&env, "c")).await;
    let script = "trap 'stty size; exit 0' WINCH; stty size; echo ready; \
                  while :; do sleep 0.1; done";
    let url = tty_exec_url(&mut rt, &id, &["sh", "-c", script]).await;
    let up = spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101, "{}", up.body);
    let mut s = SpdyClient::new(up.stream.unwrap());
    let _err = s.open(&[("streamType", "error")]).await;
    let _stdin = s.open(&[("streamType", "stdin")]).await;
    let out = s.open(&[("streamType", "stdout")]).await;
    let resize = s.open(&[("streamType", "resize")]).await;
    s.send(resize, b"{\"Width\":80,\"Height\":24}\n").await;
    let first = s.wait_for(out, "ready", Duration::from_secs(20)).await;
    assert!(first.contains("24 80"), "{first:?}");
    s.send(resize, b"{\"Width\":100,\"Height\":50}\n").await;
    let after = s.wait_for(out, "50 100", Duration::from_secs(20)).await;
    assert!(after.contains("50 100"), "{after:?}");
    s.abort().await;
    remove_pod(&mut rt, &pod).await;
}

/// `exec: runtime` keeps `runc exec` for a runc handler: plain and
/// terminal sessions and ExecSync still work through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_can_keep_the_runtime_exec() {
    use gantry_e2e::stream::{spdy_session, Session};
    let env = BusyboxEnv::start(
        "runtimeexec",
        "runtime:\n  runtimes:\n    runc:\n      exec: runtime\n",
    )
    .await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "viaruntime").await;
    let (id, init) = run(&mut rt, &pod, &pc, sleep_container(&env, "c")).await;
    assert_like_init(&mut rt, &id, init, "/").await;
    let r = exec(&mut rt, &id, &["no-such-command"], 20).await;
    assert_ne!(r.exit_code, 0);
    assert!(
        !String::from_utf8_lossy(&r.stderr).contains("gantry-exec"),
        "runc, not gantry-exec, ran it: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let s = Session {
        stdin: Some(Vec::new()),
        keep_stdin_open: true,
        stdout: true,
        tty: true,
        resize: Some((91, 27)),
        ..Default::default()
    };
    let url = tty_exec_url(&mut rt, &id, &["busybox", "stty", "size"]).await;
    let o = spdy_session(&url, &s, Duration::from_secs(20)).await;
    assert_eq!(o.stdout.trim_end(), "27 91", "{o:?}");
    remove_pod(&mut rt, &pod).await;
}

/// The exit code of a finished SPDY exec, from its error stream.
fn exit_code_of(error: &[u8]) -> Option<i32> {
    gantry_e2e::stream::Output {
        error: String::from_utf8_lossy(error).into_owned(),
        ..Default::default()
    }
    .exit_code()
}

/// A terminal exec gets a terminal of the container's own devpts, as
/// `runc exec -t` does: `tty` names a `/dev/pts/N` that exists in the
/// container, the command is the session leader with it as controlling
/// terminal (^C interrupts the foreground job, `ps` shows the terminal),
/// and it holds nothing but its three standard descriptors; in pods with
/// a private and a shared PID namespace, over SPDY and WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_exec_gets_a_terminal_of_the_container() {
    use gantry_e2e::stream::{spdy_upgrade, ws_session, Session, SpdyClient};
    let env = BusyboxEnv::start("nativeexec-pts", "").await;
    let mut rt = env.g.runtime().await;
    for (name, mode) in [
        ("private", NamespaceMode::Container),
        ("shared", NamespaceMode::Pod),
    ] {
        let pc = env.pod_config_with(name, |o| o.pid = mode as i32);
        let pod = run_pod(&mut rt, &pc).await;
        let (id, _) = run(&mut rt, &pod, &pc, sleep_container(&env, "c")).await;
        let script = "tty; stty size; ps -o pid,tty,comm; echo pid $$; echo ready; \
                      read line; echo got $line; sleep 1000";
        let url = tty_exec_url(&mut rt, &id, &["sh", "-c", script]).await;
        let up = spdy_upgrade(&url, &["v4.channel.k8s.io"]).await;
        assert_eq!(up.status, 101, "{}", up.body);
        let mut s = SpdyClient::new(up.stream.unwrap());
        let err = s.open(&[("streamType", "error")]).await;
        let stdin = s.open(&[("streamType", "stdin")]).await;
        let out = s.open(&[("streamType", "stdout")]).await;
        let resize = s.open(&[("streamType", "resize")]).await;
        s.send(resize, b"{\"Width\":83,\"Height\":21}\n").await;
        let first = s.wait_for(out, "ready", Duration::from_secs(20)).await;
        let lines: Vec<&str> = first.lines().map(str::trim).collect();
        let tty = lines[0];
        assert!(tty.starts_with("/dev/pts/"), "{name}: {first:?}");
        assert_eq!(lines[1], "21 83", "{name}: {first:?}");
        // The shell is on its terminal, as `ps` shows it (busybox names
        // it by device number: 136 is the first pts major).
        let pid = lines
            .iter()
            .find_map(|l| l.strip_prefix("pid "))
            .expect("the shell's PID");
        let short = format!("136,{}", tty.trim_start_matches("/dev/pts/"));
        assert!(
            lines.iter().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 3 && f[0] == pid && f[1] == short && f[2] == "sh"
            }),
            "{name}: {first:?}"
        );
        // The path names the same terminal inside the container.
        let seen = exec_ok(
            &mut rt,
            &id,
            &[
                "sh",
                "-c",
                &format!("test -c {tty} && readlink /proc/{pid}/fd/0"),
            ],
        )
        .await;
        assert_eq!(seen.trim(), tty, "{name}");
        // The line discipline is the container terminal's: a whole line
        // reaches `read`, then ^C interrupts the foreground `sleep` (and
        // the shell waiting for it).
        s.send(stdin, b"hello\n").await;
        let got = s.wait_for(out, "got hello", Duration::from_secs(20)).await;
        assert!(got.contains("got hello"), "{name}: {got:?}");
        // ^C is typed once the shell has started `sleep` on the terminal
        // (a loaded machine takes its time), so that it cannot land in
        // between.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ps = exec_ok(&mut rt, &id, &["sh", "-c", "ps -o tty,comm"]).await;
            if ps.lines().any(|l| {
                let mut f = l.split_whitespace();
                matches!((f.next(), f.next()), (Some(t), Some("sleep")) if t != "?")
            }) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: no sleep on the terminal: {ps}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s.send(stdin, &[0x03]).await;
        let rest = s.collect(Duration::from_secs(20)).await;
        assert_eq!(
            exit_code_of(rest.get(&err).map(Vec::as_slice).unwrap_or_default()),
            Some(130),
            "{name}: {:?}",
            rest.get(&err)
                .map(|e| String::from_utf8_lossy(e).into_owned())
        );

        // Over WebSocket too, with exactly the standard descriptors, all
        // on the terminal (`ls -l` closes the directory it reads before it
        // prints).
        let session = Session {
            stdin: Some(Vec::new()),
            keep_stdin_open: true,
            stdout: true,
            tty: true,
            resize: Some((77, 22)),
            ..Default::default()
        };
        let url = tty_exec_url(
            &mut rt,
            &id,
            &["sh", "-c", "tty; stty size; exec ls -l /proc/self/fd"],
        )
        .await;
        let o = ws_session(&url, &session, Duration::from_secs(20)).await;
        let lines: Vec<&str> = o.stdout.lines().map(str::trim).collect();
        assert!(lines[0].starts_with("/dev/pts/"), "{name}: {o:?}");
        assert_eq!(lines[1], "22 77", "{name}: {o:?}");
        let fds: Vec<(&str, &str)> = lines
            .iter()
            .filter_map(|l| {
                let (left, target) = l.split_once(" -> ")?;
                Some((left.split_whitespace().last()?, target))
            })
            .collect();
        assert_eq!(
            fds,
            [("0", lines[0]), ("1", lines[0]), ("2", lines[0])],
            "{name}: {o:?}"
        );
        remove_pod(&mut rt, &pod).await;
    }
}

/// The exec'd command holds its standard streams and nothing of the
/// daemon's or the helper's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_holds_only_its_standard_descriptors() {
    let env = BusyboxEnv::start("nativeexec-fds", "").await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "fds").await;
    let (id, _) = run(&mut rt, &pod, &pc, sleep_container(&env, "c")).await;
    // `ls` is the exec'd process itself (busybox runs the applet); it
    // closes the directory it lists before it prints.
    let listing = exec_ok(&mut rt, &id, &["ls", "-l", "/proc/self/fd"]).await;
    let fds: Vec<(String, String)> = listing
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?;
            Some((fd.to_string(), target.to_string()))
        })
        .collect();
    let numbers: Vec<&str> = fds.iter().map(|(fd, _)| fd.as_str()).collect();
    assert_eq!(numbers, ["0", "1", "2"], "{listing}");
    assert_eq!(fds[0].1, "/dev/null", "{listing}");
    assert!(fds[1].1.starts_with("pipe:"), "{listing}");
    remove_pod(&mut rt, &pod).await;
}

/// A container that may ptrace (so being non-dumpable does not stop it)
/// opens `/proc/<pid>/exe` of every exec while the exec is still the
/// helper, and tries to reopen it for writing then and once the helper is
/// gone (runc's CVE-2019-5736). Its `/etc/passwd` is a FIFO, so each exec
/// waits inside the container, still the helper, until the container has
/// looked; the test checks it did see every one. It never gets the host's
/// binary, only a sealed copy nobody can write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_helper_binary_cannot_be_written_from_the_container() {
    let env = BusyboxEnv::start("nativeexec-exe", "").await;
    let mut rt = env.g.runtime().await;
    let (pod, pc) = env.start_pod(&mut rt, "exe").await;
    let scanner = r#"
rm -f /etc/passwd; mkfifo /etc/passwd; : > /tmp/log
release() { echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd; }
echo armed > /tmp/armed
while :; do
  for d in /proc/[0-9]*; do
    t=$(readlink $d/exe 2>/dev/null) || continue
    case "$t" in *gantry-exec*) ;; *) continue;; esac
    p=${d#/proc/}
    if ! (exec 4<$d/exe) 2>/dev/null; then
      echo "denied $p $t" >> /tmp/log; release; continue
    fi
    (
      exec 4<$d/exe
      echo "R $p $(readlink /proc/self/fd/4)" >> /tmp/log
      try() {
        (exec 5>>/proc/self/fd/4) 2>/dev/null || return 1
        echo "W $1 $p $(readlink /proc/self/fd/4)" >> /tmp/log
        # Only a copy is ever written to, never a file of the host.
        case "$(readlink /proc/self/fd/4)" in /memfd:*)
          if (exec 5>>/proc/self/fd/4; printf x >&5) 2>/dev/null; then
            echo "WRITTEN $1 $p" >> /tmp/log
          fi
        esac
      }
      try running
      release
      while [ -e $d ]; do sleep 0.05; done
      # The file stays busy while any helper runs from it: keep trying.
      n=0
      until try after || [ $n -ge 40 ]; do sleep 0.05; n=$((n+1)); done
    )
  done
  sleep 0.02
done
"#;
    let mut c = env.container("scanner", scanner);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: vec!["SYS_PTRACE".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (id, _) = run(&mut rt, &pod, &pc, c).await;
    let mut armed = false;
    for _ in 0..100 {
        // The FIFO is not there yet while this succeeds without help.
        if exec(&mut rt, &id, &["cat", "/tmp/armed"], 20)
            .await
            .exit_code
            == 0
        {
            armed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(armed, "the scanner runs");
    for i in 0..3 {
        let r = exec(&mut rt, &id, &["echo", &format!("exec {i}")], 30).await;
        assert_eq!(r.exit_code, 0, "{r:?}");
    }
    // The last exec's "after" attempt, once its helper is gone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = exec_ok(&mut rt, &id, &["cat", "/tmp/log"]).await;
    println!("what the container got:\n{log}");
    let read: Vec<&str> = log.lines().filter(|l| l.starts_with("R ")).collect();
    assert!(read.len() >= 3, "the container saw every exec: {log}");
    for l in &read {
        assert!(l.contains("/memfd:gantry-exec"), "{log}");
    }
    assert!(!log.contains("denied"), "{log}");
    for l in log.lines().filter(|l| l.starts_with("W ")) {
        assert!(
            l.contains("/memfd:gantry-exec"),
            "a writable host file: {log}"
        );
    }
    assert!(!log.contains("WRITTEN"), "{log}");
    remove_pod(&mut rt, &pod).await;
}
