//! The agent's log: `tracing` to standard output, at the start-up level `CALICO_LOG_LEVEL`
//! (default `info`, any `EnvFilter` directive) until FelixConfiguration's `logSeverityScreen`
//! says otherwise; [`set_level`] changes it at run time without a restart.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    startup: String,
    current: Mutex<String>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the process's subscriber (once; later calls do nothing).
pub fn init() {
    let startup = std::env::var("CALICO_LOG_LEVEL")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| "info".into());
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&startup));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = CONTROL.set(Control {
            handle,
            current: Mutex::new(startup.clone()),
            startup,
        });
    }
}

/// Sets the level (`debug`, `info`, `warn`, `error`); `None` restores the start-up level.
/// Does nothing when [`init`] did not install the subscriber (tests, embedding).
pub fn set_level(level: Option<&str>) {
    let Some(c) = CONTROL.get() else { return };
    let want = level.unwrap_or(&c.startup).to_string();
    let mut current = c.current.lock().unwrap_or_else(|p| p.into_inner());
    if *current == want {
        return;
    }
    // Logged at warn under the old level, before the change: going quieter (the usual
    // direction when debugging ends), the line still shows.
    tracing::warn!(from = %current, to = %want, "log level changing (logSeverityScreen)");
    match c.handle.reload(EnvFilter::new(&want)) {
        Ok(()) => *current = want,
        Err(e) => tracing::error!(error = %e, "cannot change the log level"),
    }
}
