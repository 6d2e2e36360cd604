//! `weir-broker`: parse the configuration, then serve until SIGTERM or SIGINT.
//!
//! Every setting of [`BrokerConfig::SETTINGS`] is a flag and a `WEIR_*` variable here, made
//! from its one declaration; flags win over variables, which win over the file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};
use weir_broker::BrokerConfig;
use weir_broker::config::{CONFIG_VARIABLE, check_environment};

fn options() -> Vec<Arg> {
    let mut options = vec![
        Arg::new("config")
            .long("config")
            .env(CONFIG_VARIABLE)
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("A TOML config file; unknown keys are an error."),
    ];
    for setting in BrokerConfig::SETTINGS {
        let mut arg = Arg::new(setting.key)
            .long(setting.flag())
            .env(setting.variable())
            .value_name("VALUE")
            .action(ArgAction::Set)
            .help(setting.help);
        if setting.key == "broker_id" {
            arg = arg.visible_alias("id");
        }
        options.push(arg);
    }
    options
}

fn command() -> Command {
    Command::new("weir-broker")
        .version(env!("CARGO_PKG_VERSION"))
        .about("The Weir broker")
        .args(options())
        .subcommand(
            Command::new("dev")
                .about(
                    "One broker with everything it needs embedded, on 127.0.0.1:9192 (gRPC) and \
                     :9193 (HTTP), data in ./weir-data: ready for the `weir` CLI with no other setup.",
                )
                .args(options()),
        )
}

/// The file's settings, then each given flag or variable over them.
fn config(matches: &ArgMatches) -> anyhow::Result<BrokerConfig> {
    let mut config = match matches.get_one::<PathBuf>("config") {
        Some(path) => BrokerConfig::from_file(path)?,
        None => BrokerConfig::default(),
    };
    for setting in BrokerConfig::SETTINGS {
        if let Some(value) = matches.get_one::<String>(setting.key) {
            config.set(setting.key, value)?;
        }
    }
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let matches = match matches.subcommand() {
        Some(("dev", dev)) => dev,
        _ => &matches,
    };
    let checked = check_environment(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))
        .map_err(anyhow::Error::from)
        .and_then(|()| config(matches));
    let config = match checked {
        Ok(config) => config,
        Err(e) => {
            eprintln!("weir-broker: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir-broker: start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weir_broker::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop the broker with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_a_flag_and_a_variable() {
        let matches = command()
            .try_get_matches_from([
                "weir-broker",
                "--retention-check-interval",
                "90s",
                "--id",
                "7",
                "--topic-defaults",
                "flush.messages=1,retention.ms=1000",
            ])
            .expect("parses");
        let config = config(&matches).expect("valid");
        assert_eq!(
            config.retention_check_interval,
            std::time::Duration::from_secs(90)
        );
        assert_eq!(config.broker_id, 7);
        assert_eq!(config.topic_defaults["flush.messages"], "1");
        let command = command();
        for setting in BrokerConfig::SETTINGS {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == setting.key)
                .expect("an argument per setting");
            assert_eq!(arg.get_long(), Some(setting.flag().as_str()));
            assert_eq!(
                arg.get_env().and_then(|v| v.to_str()),
                Some(setting.variable().as_str())
            );
        }
    }
}
