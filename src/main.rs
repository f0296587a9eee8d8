use std::process::ExitCode;

use clap::Parser;
use meshform::cli::{self, Cli, Exit};

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
    let exit = match cli::run(&cli, &mut std::io::stdout().lock(), &mut std::io::stderr().lock()) {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("{:?}", miette::Report::new(error));
            Exit::Error
        }
    };
    ExitCode::from(exit as u8)
}
