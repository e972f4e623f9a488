//! The `netmon` command line: wiring only. The daemon is `netmon::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use netmon::config::{self, Config};

const HELP: &str = "\
Network monitor for the router it runs on

Usage: netmon [-c CONFIG] [COMMAND]

Commands:
  run             Run the monitor (the default)
  check-config    Validate the configuration file and print the effective configuration
  firewall-rules  Print the nftables table netmon loads (the OpenWrt fw4 include is this text)
  passwd          Set the web UI password: reads it (twice, without echo, from a terminal;
                  else the first line of stdin), stores its argon2id hash as
                  `[web] password_hash` in the config file, keeping the file's comments.
                  Restart netmon to apply it
  version         Print the version

Options:
  -c, --config <CONFIG>  Configuration file [default: {DEFAULT_PATH}]
  -h, --help             Print help
  -V, --version          Print version
";

#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    Run,
    CheckConfig,
    FirewallRules,
    Passwd,
    Version,
    Help,
}

/// The command line: `[-c CONFIG] [COMMAND]`, the option before or after the command.
#[derive(Debug)]
struct Cli {
    config: PathBuf,
    command: Cmd,
}

impl Cli {
    fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cli, lexopt::Error> {
        use lexopt::prelude::*;
        let mut parser = lexopt::Parser::from_args(args);
        let mut config = PathBuf::from(config::DEFAULT_PATH);
        let mut command = None;
        while let Some(arg) = parser.next()? {
            match arg {
                Short('c') | Long("config") => config = parser.value()?.into(),
                Short('h') | Long("help") => command = Some(Cmd::Help),
                Short('V') | Long("version") => command = Some(Cmd::Version),
                Value(word) if command.is_none() => {
                    command = Some(match word.to_str() {
                        Some("run") => Cmd::Run,
                        Some("check-config") => Cmd::CheckConfig,
                        Some("firewall-rules") => Cmd::FirewallRules,
                        Some("passwd") => Cmd::Passwd,
                        Some("version") => Cmd::Version,
                        Some("help") => Cmd::Help,
                        _ => {
                            return Err(format!(
                                "unknown command {word:?} (run, check-config, \
                                 firewall-rules, passwd, version)"
                            )
                            .into());
                        }
                    })
                }
                _ => return Err(arg.unexpected()),
            }
        }
        Ok(Cli {
            config,
            command: command.unwrap_or(Cmd::Run),
        })
    }
}

fn main() -> ExitCode {
    let cli = match Cli::parse(std::env::args_os().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!(
                "netmon: {e}\n\nUsage: netmon [-c CONFIG] [COMMAND]; netmon --help lists them"
            );
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match cli.command {
        Cmd::Help => {
            print!("{}", HELP.replace("{DEFAULT_PATH}", config::DEFAULT_PATH));
            ExitCode::SUCCESS
        }
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
                for note in check_config_notes(&config) {
                    println!("# note: {note}");
                }
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

/// What a valid config still leaves undone or at risk, for `check-config`: without a
/// password the web UI answers only its "set a password" page; a history budget larger
/// than the room on its file system fills the flash.
fn check_config_notes(config: &Config) -> Vec<String> {
    let locked = (config.web.auth == config::WebAuth::Password
        && config.web.password_hash.is_empty())
    .then(|| {
        "no password is set: the web UI stays locked until you run `netmon passwd` \
         (then restart netmon)"
            .to_owned()
    });
    locked
        .into_iter()
        .chain(netmon::store::history::budget_warning(config))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::parse(args.iter().map(std::ffi::OsString::from)).map_err(|e| e.to_string())
    }

    #[test]
    fn check_config_says_when_the_ui_is_locked() {
        let empty = Config::parse("", std::path::Path::new("t.toml")).unwrap();
        assert!(check_config_notes(&empty)[0].contains("netmon passwd"));
        let open = Config::parse(
            "listen = [\"127.0.0.1:8080\"]\n[web]\nauth = \"none\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        assert!(check_config_notes(&open).is_empty());
    }

    #[test]
    fn the_config_goes_before_or_after_the_command() {
        let cli = parse(&["check-config", "--config", "/tmp/a.toml"]).unwrap();
        assert_eq!(cli.command, Cmd::CheckConfig);
        assert_eq!(cli.config, PathBuf::from("/tmp/a.toml"));
        let cli = parse(&["-c", "/tmp/b.toml", "firewall-rules"]).unwrap();
        assert_eq!(cli.command, Cmd::FirewallRules);
        assert_eq!(cli.config, PathBuf::from("/tmp/b.toml"));
        let cli = parse(&["--config=/tmp/c.toml"]).unwrap();
        assert_eq!((cli.command, cli.config), (Cmd::Run, "/tmp/c.toml".into()));
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.config, PathBuf::from(config::DEFAULT_PATH));
        assert_eq!(parse(&["-V"]).unwrap().command, Cmd::Version);
        assert_eq!(parse(&["passwd", "-h"]).unwrap().command, Cmd::Help);
    }

    #[test]
    fn unknown_words_and_options_are_refused_by_name() {
        let e = parse(&["strat"]).unwrap_err();
        assert!(e.contains("strat") && e.contains("check-config"), "{e}");
        let e = parse(&["run", "--verbose"]).unwrap_err();
        assert!(e.contains("--verbose"), "{e}");
        let e = parse(&["run", "extra"]).unwrap_err();
        assert!(e.contains("extra"), "{e}");
        let e = parse(&["--config"]).unwrap_err();
        assert!(e.contains("--config"), "{e}");
    }
}
