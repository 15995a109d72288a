//! The callcat example server: the HTTP API, webhooks, live events and metrics
//! over in-memory storage and the simulator unless configured otherwise.
//!
//! ```sh
//! cargo run --example server            # then follow the printed curl lines
//! cargo run --example server -- --help  # every setting (env var or flag)
//! cargo run --example server -- --rekey # re-encrypt under the current master key
//! ```

use std::process::ExitCode;

use callcat_server::{Config, ConfigError, Server};

#[tokio::main]
async fn main() -> ExitCode {
    callcat_server::init_tracing();
    let config = match Config::from_env_and_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(ConfigError::Help(usage)) => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(command) = config.admin {
        // `--rekey` / `--key-report`: an administration command, not the server.
        return match callcat_server::admin::run(&config, command).await {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("callcat server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let run = async {
        let server = Server::builder(config).build().await?;
        let listener = server.bind().await?;
        println!("{}", server.startup_message(listener.local_addr()?));
        server
            .serve(listener, callcat_server::shutdown_signal())
            .await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callcat server: {e}");
            ExitCode::FAILURE
        }
    }
}
