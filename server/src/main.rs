//! The `gantry` binary: command line, logging and the runtime; everything
//! else lives in the library crates and the daemon's own library
//! ([`gantry::daemon`]).

use gantry::{check, config, daemon};

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
    Check,
    /// Print gantry's version, the commit it was built from and its CRI API.
    Version,
}

/// Colour codes only reach a terminal: in a file or the journal they are
/// noise that breaks grep and log parsers. A line that cannot be written
/// (stderr is a file on a full disk) is lost quietly: the subscriber's own
/// report of it goes through `eprintln!`, which panics on that same
/// failure and took the daemon down.
fn init_logging(filter: EnvFilter, format: config::LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Needs no config: it must work on a host whose config is broken.
    if matches!(cli.command, Some(Command::Version)) {
        println!("gantry {}", env!("CARGO_PKG_VERSION"));
        println!("commit: {}", env!("GANTRY_GIT_COMMIT"));
        println!(
            "CRI API: v1 of Kubernetes {}",
            gantry_proto::CRI_KUBERNETES_VERSION
        );
        return std::process::ExitCode::SUCCESS;
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
        Command::Version => std::process::ExitCode::SUCCESS,
        Command::Check => {
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
            init_logging(filter, config.log_format);
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
            match runtime.block_on(daemon::run(config)) {
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
