//! The `netmon` command line: wiring only. The daemon is `netmon::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netmon::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "netmon",
    version,
    about = "Network monitor for the router it runs on"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, short = 'c', global = true, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the monitor (the default).
    Run,
    /// Validate the configuration file and print the effective configuration.
    CheckConfig,
    /// Print the nftables table netmon loads (the OpenWrt fw4 include is this text).
    FirewallRules,
    /// Set the web UI password: reads it (twice, without echo, from a terminal; else
    /// the first line of stdin), stores its argon2id hash as `[web] password_hash` in
    /// the config file, keeping the file's comments. Restart netmon to apply it.
    Passwd,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Version => {
            println!("netmon {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Cmd::Passwd => match passwd(&cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("netmon: {e:#}");
                ExitCode::from(2)
            }
        },
        Cmd::CheckConfig => match Config::load(&cli.config) {
            Ok(config) => {
                println!("# {}: ok", cli.config.display());
                // Secrets are not echoed to a terminal or a support paste.
                print!("{}", config.redacted().to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("netmon: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::FirewallRules => match Config::load(&cli.config) {
            Ok(config) => {
                print!("{}", netmon::firewall::ruleset(&config));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("netmon: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run => {
            let config = match Config::load(&cli.config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("netmon: {e}");
                    return ExitCode::from(2);
                }
            };
            match netmon::daemon::run(config, &cli.config) {
                Ok(netmon::daemon::Exit::Stopped) => ExitCode::SUCCESS,
                Ok(netmon::daemon::Exit::Reload) => {
                    // A fresh process (same pid, same arguments) reads the new config:
                    // every setting applies, and nothing of the old run lingers.
                    // Keeps the capabilities netmon kept (they are ambient, see
                    // `netmon::privs`) and nothing else: every descriptor closes.
                    use std::os::unix::process::CommandExt;
                    netmon::daemon::set_cloexec_from(3);
                    let e = std::process::Command::new("/proc/self/exe")
                        .args(std::env::args_os().skip(1))
                        .exec();
                    eprintln!("netmon: reloading: cannot re-execute myself: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("netmon: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `netmon passwd`: read, check, hash, store.
fn passwd(config: &std::path::Path) -> anyhow::Result<()> {
    use netmon::passwd;
    let password = passwd::read_new_password()?;
    passwd::check_new_password(&password)
        .map_err(|why| anyhow::anyhow!("{why}; nothing changed"))?;
    let hash = passwd::hash(&password)?;
    passwd::set_hash_in_file(config, &hash)?;
    eprintln!(
        "netmon: password set in {} (argon2id m={} KiB t={} p={}); restart netmon to use it",
        config.display(),
        passwd::M_COST_KIB,
        passwd::T_COST,
        passwd::P_COST
    );
    if let Ok(c) = Config::load(config)
        && c.web.auth == config::WebAuth::None
    {
        eprintln!("netmon: note: web.auth is \"none\": set auth = \"password\" to require it");
    }
    Ok(())
}
