//! The `upkeep` binary: a thin shell over the libraries. See `upkeep --help`.

mod cli;
mod commands;
mod context;
mod daemon;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = cli::Cli::parse();
    // The long-running processes log their work at info; one-shot commands print their
    // result and keep info lines behind -v (the demo prints its own story on the
    // simulator's clock).
    let daemon = matches!(cli.command, cli::Command::Serve(_) | cli::Command::Sim(_));
    init_tracing(cli.verbose, daemon);
    // One TLS provider in the whole tree (ring, through rustls); install it before any
    // client is built.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("upkeep: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("upkeep: {}", one_line(&e));
            ExitCode::from(commands::exit_code_for(&e))
        }
    }
}

/// `upkeep token | head -c 10` closes stdout early; Rust ignores SIGPIPE, so the next
/// `println!` panics with "Broken pipe". Exit quietly (status 0: the reader got what it
/// wanted) instead of printing a panic. Every other panic keeps the default report.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn init_tracing(verbose: u8, daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if daemon => "info,sqlx=warn,hyper=warn,reqwest=warn",
        0 => "warn,sqlx=error",
        1 => "debug,sqlx=warn,hyper=info",
        _ => "trace",
    };
    // The login flow's cookie store logs whole Set-Cookie lines at debug level: they are
    // login credentials, so that target is always off, whatever UPKEEP_LOG says.
    let mut filter =
        EnvFilter::try_from_env("UPKEEP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    if let Ok(off) = "cookie_store=off".parse() {
        filter = filter.add_directive(off);
    }
    // Colour only on a terminal, and never with NO_COLOR set.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The error and its causes on one line, each cause once: library errors often repeat
/// their source's text in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}
