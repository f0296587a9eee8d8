use std::process::ExitCode;

use clap::Parser;
use meshform::cli::{self, Cli, Exit};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let style = cli.style();
    miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(style.color)
                .unicode(style.color)
                .width(style.width)
                .build(),
        )
    }))
    .ok();
    // Logs go to stderr, coloured like the diagnostics; RUST_LOG, when set, wins over -q/-v.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cli.log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(style.color)
        .with_target(cli.verbose > 1)
        .without_time()
        .init();
    // stderr stays unlocked: log lines come from runtime worker threads too,
    // and a lock held here for the whole run would block them.
    let exit = match cli::run(&cli, &mut std::io::stdout().lock(), &mut std::io::stderr()) {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("{:?}", miette::Report::new(error));
            Exit::Error
        }
    };
    ExitCode::from(exit as u8)
}
