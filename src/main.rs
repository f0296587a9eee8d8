use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use meshform::cli::{self, Cli, Exit};
use tracing_subscriber::EnvFilter;

// Planning a large mesh makes millions of small allocations from more than
// one thread; mimalloc's thread-local heaps took a 1,000-cluster plan from
// 0.4–0.6 s to 0.25–0.4 s against glibc's malloc (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // clap's own help and usage errors follow --color as well.
    let color = cli::clap_color(std::env::args_os());
    let mut command = Cli::command().color(color);
    if let Some(name) = cli::plugin_bin_name(std::env::args_os().next().as_deref()) {
        command = command.bin_name(name);
    }
    let parsed = command
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        // clap exits 2 on a usage error, which `plan --detailed-exitcode` uses for
        // "changes": a mistyped flag in a drift check must not read as drift.
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { Exit::Error } else { Exit::Success } as u8);
        }
    };
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
            let exit = error.exit();
            eprintln!("{:?}", miette::Report::new(error));
            exit
        }
    };
    ExitCode::from(exit as u8)
}
