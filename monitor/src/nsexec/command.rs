//! The command an exec runs: found by the container's `PATH`, with the
//! environment and `HOME` the runtimes give.

use super::*;

/// The home directory of `uid` in an `/etc/passwd`.
pub fn home_from_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
    })
}

/// The process environment: the spec's, with HOME from the container's
/// passwd file (or `/`) when the spec has none.
pub fn environment(env: &[String], uid: u32, passwd: Option<&str>) -> Vec<String> {
    let mut out = env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = passwd
            .and_then(|p| home_from_passwd(p, uid))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".into());
        out.push(format!("HOME={home}"));
    }
    out
}

pub(super) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `p` is something `execve` can run: a file with an execute bit.
pub(super) fn executable(p: &Path) -> std::result::Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Err("is a directory".into()),
        Ok(m) if m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err("permission denied".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err("no such file or directory".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The file to execute for `cmd`: as given when it contains a `/`, else
/// the first executable match in the process environment's `PATH` (an
/// empty entry is the working directory).
pub fn resolve_command(cmd: &str, env: &[String]) -> Result<PathBuf> {
    let fail = |reason: String| ExecError::Command {
        cmd: cmd.to_string(),
        reason,
    };
    if cmd.is_empty() {
        return Err(fail("empty command".into()));
    }
    if cmd.contains('/') {
        executable(Path::new(cmd)).map_err(fail)?;
        return Ok(PathBuf::from(cmd));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(cmd);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(r) if r == "permission denied" => denied = denied.or(Some(r)),
            Err(_) => {}
        }
    }
    Err(fail(denied.unwrap_or_else(|| {
        "executable file not found in $PATH".into()
    })))
}

/// The container's `/etc/passwd`, for HOME; the container writes that
/// file, so what is read of it is bounded.
pub(super) fn read_passwd() -> Option<String> {
    use std::io::Read;
    const MAX: u64 = 4 << 20;
    let f = std::fs::File::open("/etc/passwd").ok()?;
    let mut text = String::new();
    f.take(MAX).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_resolve_in_the_process_path() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        let sbin = d.path().join("sbin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&sbin).unwrap();
        let mk = |p: &Path, mode: u32| {
            std::fs::write(p, b"#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mk(&bin.join("tool"), 0o755);
        mk(&sbin.join("tool"), 0o755);
        mk(&bin.join("data"), 0o644);
        std::fs::create_dir(sbin.join("dir")).unwrap();
        let env = vec![
            "A=1".to_string(),
            format!("PATH={}:{}", bin.display(), sbin.display()),
        ];
        assert_eq!(resolve_command("tool", &env).unwrap(), bin.join("tool"));
        let e = resolve_command("nope", &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "exec \"nope\": executable file not found in $PATH"
        );
        assert!(resolve_command("data", &env)
            .unwrap_err()
            .to_string()
            .contains("permission denied"));
        assert!(resolve_command("dir", &env).is_err());
        let abs = sbin.join("tool");
        assert_eq!(resolve_command(abs.to_str().unwrap(), &[]).unwrap(), abs);
        let e = resolve_command("/no/such/binary", &env).unwrap_err();
        assert!(e.to_string().contains("/no/such/binary"), "{e}");
        // Without PATH in the environment: the usual directories.
        assert!(resolve_command("sh", &[]).unwrap().ends_with("sh"));
    }

    #[test]
    fn home_comes_from_the_spec_or_the_container_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\nbad line\n";
        assert_eq!(home_from_passwd(passwd, 33).as_deref(), Some("/var/www"));
        assert_eq!(home_from_passwd(passwd, 5), None);
        let env = environment(&["PATH=/bin".into()], 33, Some(passwd));
        assert_eq!(env, vec!["PATH=/bin".to_string(), "HOME=/var/www".into()]);
        let env = environment(&["HOME=/x".into()], 33, Some(passwd));
        assert_eq!(env, vec!["HOME=/x".to_string()]);
        assert_eq!(environment(&[], 7, None), vec!["HOME=/".to_string()]);
    }
}
