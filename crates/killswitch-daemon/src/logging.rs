//! Where the daemon's log goes and how it looks: one set-up for `killswitchd`, `--early-boot` and
//! `--teardown`.
//!
//! Everything goes to stderr, in one of three styles:
//!
//! - **journal**: stderr is the stream systemd connected to the journal (`JOURNAL_STREAM` names its
//!   device and inode, see systemd.exec(5)). Each line starts with its syslog priority as
//!   sd-daemon(3) defines it (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace), so
//!   that `journalctl -p` and the journal's colours work, and carries no timestamp or level word
//!   (the journal records both).
//! - **terminal**: stderr is a terminal and `NO_COLOR` is not set: timestamps, levels, colours.
//! - **plain**: anything else (a file, a pipe, a logger): timestamps and levels, no escape codes.
//!
//! `JOURNAL_STREAM` is inherited by every process a service starts; it counts only when it names
//! this process's own stderr, so that output redirected elsewhere is not mistaken for the journal.
//! The filter is `RUST_LOG` (default `info`).

use std::ffi::OsStr;
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Lines for the journal: a priority prefix, no timestamp, no level word, no colours.
    Journal,
    /// Lines for a person at a terminal: timestamps, levels and colours.
    Terminal,
    /// Lines for a file or a pipe: timestamps and levels, no colours.
    Plain,
}

impl Style {
    /// Decides the style from what stderr is and the environment: `journal_stream` is the value
    /// of `JOURNAL_STREAM`, `stderr` the device and inode of stderr (if it could be read),
    /// `no_color` the value of `NO_COLOR`.
    pub fn choose(
        journal_stream: Option<&OsStr>,
        stderr: Option<(u64, u64)>,
        stderr_is_terminal: bool,
        no_color: Option<&OsStr>,
    ) -> Style {
        let to_the_journal = journal_stream
            .and_then(|value| parse_journal_stream(value.to_str()?))
            .is_some_and(|named| Some(named) == stderr);
        if to_the_journal {
            Style::Journal
        } else if stderr_is_terminal && no_color.is_none_or(OsStr::is_empty) {
            // NO_COLOR (no-color.org): set and not empty means no colours.
            Style::Terminal
        } else {
            Style::Plain
        }
    }

    /// The style for this process, from its stderr and environment.
    pub fn detect() -> Style {
        use std::io::IsTerminal;
        let stderr = nix::sys::stat::fstat(std::io::stderr())
            .ok()
            .map(|stat| (stat.st_dev, stat.st_ino));
        Style::choose(
            std::env::var_os("JOURNAL_STREAM").as_deref(),
            stderr,
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        )
    }
}

/// `JOURNAL_STREAM`'s `DEVICE:INODE`, both decimal.
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (device, inode) = value.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

/// sd-daemon(3)'s prefix for `level`: SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG.
pub fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// A line format that puts the event's priority before what `inner` writes.
#[derive(Debug)]
struct WithPriority<F> {
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(priority(*event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Installs the global subscriber in `style`, writing to `make_writer` (stderr, outside tests).
/// Fails only if a subscriber is installed already.
pub fn install<W>(
    style: Style,
    make_writer: W,
) -> Result<(), tracing_subscriber::util::TryInitError>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    subscriber(style, filter, make_writer).try_init()
}

/// The subscriber for `style`, boxed so that the three styles have one type.
fn subscriber<W>(
    style: Style,
    filter: tracing_subscriber::EnvFilter,
    make_writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make_writer);
    match style {
        Style::Journal => {
            let inner = tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_ansi(false);
            Box::new(
                builder
                    .with_ansi(false)
                    .event_format(WithPriority { inner })
                    .finish(),
            )
        }
        Style::Terminal => Box::new(builder.with_ansi(true).finish()),
        Style::Plain => Box::new(builder.with_ansi(false).finish()),
    }
}

/// Sets up logging for this process on stderr, in the style [`Style::detect`] picks.
pub fn init() {
    // Nothing is installed yet when main() calls this; if something were, it would keep logging.
    let _ = install(Style::detect(), std::io::stderr);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn the_journal_only_when_it_is_our_stderr() {
        let stderr = Some((64769, 123456));
        assert_eq!(
            Style::choose(os("64769:123456"), stderr, false, None),
            Style::Journal
        );
        // Inherited from a service, but stderr was redirected to a file: not the journal.
        assert_eq!(
            Style::choose(os("64769:999"), stderr, false, None),
            Style::Plain
        );
        for garbage in ["", "64769", "a:b", "64769:123456:7", "-1:5"] {
            assert_eq!(
                Style::choose(os(garbage), stderr, false, None),
                Style::Plain,
                "{garbage:?}"
            );
        }
        assert_eq!(
            Style::choose(os("64769:123456"), None, false, None),
            Style::Plain
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert_eq!(Style::choose(None, None, true, None), Style::Terminal);
        assert_eq!(Style::choose(None, None, true, os("")), Style::Terminal);
        assert_eq!(Style::choose(None, None, true, os("1")), Style::Plain);
        assert_eq!(Style::choose(None, None, false, None), Style::Plain);
    }

    #[test]
    fn priorities_are_sd_daemons() {
        assert_eq!(priority(Level::ERROR), "<3>");
        assert_eq!(priority(Level::WARN), "<4>");
        assert_eq!(priority(Level::INFO), "<6>");
        assert_eq!(priority(Level::DEBUG), "<7>");
        assert_eq!(priority(Level::TRACE), "<7>");
    }

    /// What `style` writes for one event at each level, with an optional pid.
    fn render(style: Style) -> String {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buffer.clone();
        let make_writer = move || Sink(sink.clone());
        let subscriber = subscriber(
            style,
            tracing_subscriber::EnvFilter::new("debug"),
            make_writer,
        );
        tracing::subscriber::with_default(subscriber, || {
            let pid: Option<i32> = Some(1234);
            let unknown: Option<i32> = None;
            tracing::error!("broken");
            tracing::warn!(uid = 65534, pid = unknown, "refused");
            tracing::info!(uid = 0, pid = pid, "request `status`");
            tracing::debug!("details");
        });
        let bytes = buffer.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut buffer) = self.0.lock() {
                buffer.extend_from_slice(data);
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journal_lines_carry_priorities_and_nothing_the_journal_adds() {
        let text = render(Style::Journal);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for (line, prefix) in lines.iter().zip(["<3>", "<4>", "<6>", "<7>"]) {
            assert!(line.starts_with(prefix), "{line}");
            assert!(!line.contains("INFO") && !line.contains("ERROR"), "{line}");
            // No timestamp: the line goes straight on with the target.
            assert!(
                line[prefix.len()..].starts_with("killswitch_daemon"),
                "{line}"
            );
        }
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(lines[2].contains("pid=1234"), "{text}");
    }

    #[test]
    fn plain_lines_have_no_escape_codes_and_plain_pids() {
        let text = render(Style::Plain);
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(
            text.contains(" INFO ") && text.contains("pid=1234"),
            "{text}"
        );
        assert!(!text.contains("Some("), "{text}");
        // An unknown pid is left out rather than shown as `None`.
        assert!(!text.contains("None"), "{text}");
        let terminal = render(Style::Terminal);
        assert!(terminal.contains('\x1b'), "{terminal:?}");
    }
}
