//! The `gantry` binary: command line, logging and the runtime; everything
//! else lives in the library crates and the daemon's own library
//! ([`gantry::daemon`]).

use gantry::{check, config, daemon, reload};

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "gantry", version, about = "A Kubernetes CRI runtime")]
struct Cli {
    /// YAML config file; keys it omits keep their built-in defaults.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Print the effective configuration as YAML.
    Config,
    /// Check that the host has what gantry needs.
    Check {
        /// One JSON object: {"ok", "checks": [{"name", "ok", "detail"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Dump pods, containers, monitors, mounts and images from the state
    /// directories, read-only (the daemon may be stopped), as JSON.
    State {
        /// Readable tables instead of JSON.
        #[arg(long)]
        table: bool,
    },
    /// Print gantry's version, the commit it was built from and its CRI API.
    Version,
    /// Have the running daemon reload its config file (SIGHUP) and say
    /// whether it applied it; exits non-zero when it refused it.
    Reload {
        /// Seconds to wait for the daemon's answer.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

/// Colour codes only reach a terminal: in a file or the journal they are
/// noise that breaks grep and log parsers. A line that cannot be written
/// (stderr is a file on a full disk) is lost quietly: the subscriber's own
/// report of it goes through `eprintln!`, which panics on that same
/// failure and took the daemon down. Returns the setter a reload changes
/// the filter with.
fn init_logging(filter: EnvFilter, format: config::LogFormat) -> reload::LogLevelSetter {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    fn setter<S: 'static>(
        handle: tracing_subscriber::reload::Handle<EnvFilter, S>,
    ) -> reload::LogLevelSetter {
        Box::new(move |level: &str| {
            let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())
        })
    }
    match format {
        config::LogFormat::Text => {
            let builder = builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            setter(handle)
        }
        config::LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            setter(handle)
        }
    }
}

/// `gantry reload`: prints what the daemon did with the file.
fn reload_command(config_path: Option<&std::path::Path>, timeout: u64) -> std::process::ExitCode {
    let state_dir = config::Config::state_dir_of(config_path);
    match reload::request_reload(&state_dir, std::time::Duration::from_secs(timeout)) {
        Ok(status) if status.result == "applied" => {
            if status.applied.is_empty() {
                println!(
                    "reload applied (generation {}): nothing reloadable changed",
                    status.generation
                );
            } else {
                println!(
                    "reload applied (generation {}): {}",
                    status.generation,
                    status.applied.join(", ")
                );
            }
            for key in &status.restart_needed {
                println!("{key} changed; restart needed (the running value stays)");
            }
            std::process::ExitCode::SUCCESS
        }
        Ok(status) => {
            println!(
                "reload refused (generation {}): {}",
                status.generation,
                status.error.as_deref().unwrap_or("no reason given")
            );
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gantry: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Needs no config: it must work on a host whose config is broken.
    if !matches!(cli.command, None | Some(Command::Run)) {
        // A one-shot command piped into `head` ends quietly when the pipe
        // closes, as other command-line tools do, instead of panicking in
        // println!. The daemon keeps Rust's ignored SIGPIPE: a client
        // that hangs up must never kill it.
        // SAFETY: restoring a signal's default disposition before any
        // thread is started touches no other state.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if matches!(cli.command, Some(Command::Version)) {
        println!("gantry {}", env!("CARGO_PKG_VERSION"));
        println!("commit: {}", env!("GANTRY_GIT_COMMIT"));
        println!(
            "CRI API: v1 of Kubernetes {}",
            gantry_proto::CRI_KUBERNETES_VERSION
        );
        return std::process::ExitCode::SUCCESS;
    }
    // The daemon validates the file itself and says what is wrong with it.
    if let Some(Command::Reload { timeout }) = cli.command {
        return reload_command(cli.config.as_deref(), timeout);
    }
    let config = match config::Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gantry: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Config => match config.to_yaml() {
            Ok(y) => {
                print!("{y}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gantry: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        // Answered before the config is read.
        Command::Version | Command::Reload { .. } => std::process::ExitCode::SUCCESS,
        Command::Check { json: true } => {
            let items = check::run_checks(&config);
            let report = check::to_json(&items);
            println!("{report:#}");
            if report["ok"] == true {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Command::State { table } => {
            let dump = gantry::state::dump(&config);
            if table {
                print!("{}", gantry::state::table(&dump));
            } else {
                match serde_json::to_string_pretty(&dump) {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("gantry: {e}");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Command::Check { json: false } => {
            let mut failed = false;
            for item in check::run_checks(&config) {
                match item.result {
                    Ok(msg) => println!("ok    {:<11} {msg}", item.name),
                    Err(msg) => {
                        failed = true;
                        println!("FAIL  {:<11} {msg}", item.name);
                    }
                }
            }
            if failed {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Command::Run => {
            let filter = EnvFilter::try_from_default_env()
                .or_else(|_| EnvFilter::try_new(&config.log_level))
                .unwrap_or_else(|_| EnvFilter::new("info"));
            let log_level = init_logging(filter, config.log_format);
            // glibc gives every thread its own malloc arena; a handful of
            // arenas keeps the idle footprint small at no cost here.
            // SAFETY: mallopt only adjusts allocator tuning.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(16)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("gantry: starting the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let options = daemon::Options {
                // Made absolute: the daemon re-reads it on SIGHUP.
                config_path: cli
                    .config
                    .as_deref()
                    .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
                log_level: Some(log_level),
            };
            match runtime.block_on(daemon::run(config, options)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("gantry: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
