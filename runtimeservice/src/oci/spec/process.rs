//! The process: command line and environment, by the CRI's rules over the
//! image config.

use super::*;

pub(super) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The command line, by the CRI rules: `command` replaces the image's
/// entrypoint (and drops its cmd), `args` replaces its cmd.
pub fn command_line(config: &cri::ContainerConfig, image: &Value) -> Result<Vec<String>> {
    let entrypoint = strings(&image["config"]["Entrypoint"]);
    let cmd = strings(&image["config"]["Cmd"]);
    let mut argv = if !config.command.is_empty() {
        config.command.clone()
    } else {
        entrypoint
    };
    if !config.args.is_empty() {
        argv.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        argv.extend(cmd);
    }
    if argv.is_empty() {
        return Err(Error::InvalidArgument(
            "no command: neither the container config nor the image names one".into(),
        ));
    }
    Ok(argv)
}

/// Image env first, container env overriding by name. CRI 1.36 lets a
/// value be any bytes, but the OCI spec is JSON and holds only text, so a
/// value that is not UTF-8 is refused rather than mangled.
pub fn environment(config: &cri::ContainerConfig, image: &Value) -> Result<Vec<String>> {
    let mut out: Vec<String> = strings(&image["config"]["Env"]);
    for kv in &config.envs {
        let value = std::str::from_utf8(&kv.value).map_err(|_| {
            Error::InvalidArgument(format!(
                "the value of environment variable {:?} is not UTF-8, which an OCI runtime spec cannot hold",
                kv.key
            ))
        })?;
        out.retain(|e| e.split('=').next() != Some(kv.key.as_str()));
        out.push(format!("{}={}", kv.key, value));
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Value {
        json!({"config": {"Entrypoint": ["/ep"], "Cmd": ["default"], "Env": ["PATH=/bin", "A=image"], "User": "app"}})
    }

    #[test]
    fn command_follows_cri_rules() {
        let img = image();
        let mut c = cri::ContainerConfig::default();
        assert_eq!(command_line(&c, &img).unwrap(), ["/ep", "default"]);
        c.args = vec!["x".into()];
        assert_eq!(command_line(&c, &img).unwrap(), ["/ep", "x"]);
        c.command = vec!["/bin/sh".into()];
        assert_eq!(command_line(&c, &img).unwrap(), ["/bin/sh", "x"]);
        c.args.clear();
        assert_eq!(command_line(&c, &img).unwrap(), ["/bin/sh"]);
        assert!(command_line(&cri::ContainerConfig::default(), &json!({})).is_err());
    }

    #[test]
    fn env_merges_by_name() {
        let c = cri::ContainerConfig {
            envs: vec![
                cri::KeyValue {
                    key: "A".into(),
                    value: "mine".into(),
                },
                cri::KeyValue {
                    key: "B".into(),
                    value: "b".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            environment(&c, &image()).unwrap(),
            ["PATH=/bin", "A=mine", "B=b"]
        );
        assert!(environment(&c, &json!({})).unwrap()[0].starts_with("PATH="));
        let binary = cri::ContainerConfig {
            envs: vec![cri::KeyValue {
                key: "BIN".into(),
                value: vec![0xff, 0xfe],
            }],
            ..Default::default()
        };
        assert!(matches!(
            environment(&binary, &image()),
            Err(Error::InvalidArgument(m)) if m.contains("BIN")
        ));
    }
}
