//! The man pages: `killswitch(1)` and `killswitchd(8)`, one page per binary.
//!
//! clap_mangen renders the parts clap knows (NAME, SYNOPSIS, DESCRIPTION, OPTIONS, from the same
//! text as `--help`); this module adds what a man page has and `--help` does not (EXIT STATUS,
//! ENVIRONMENT, FILES, EXAMPLES, SEE ALSO), from the binaries' own tables where they have one.
//!
//! One page for the CLI with every command in it (a COMMANDS section with a subsection per
//! command: its synopsis, description and options), rather than clap_mangen's page per command
//! (`killswitch-guard(1)`, ...): the commands are small, `man killswitch` then answers every
//! question with one search, and it is how the tools next to it are documented (`wg(8)`,
//! `nft(8)`).

use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};
use killswitch_types::PRODUCT_VERSION;
use killswitch_types::ipc::DEFAULT_SOCKET;
use std::io;

/// `killswitch(1)`, dated `date` (YYYY-MM-DD).
pub fn killswitch(date: &str) -> io::Result<Vec<u8>> {
    let mut cmd = killswitch_cli::args::command();
    cmd.build();
    let mut page = Vec::new();
    let man = page_of(cmd.clone(), "1", "User Commands", date);
    man.render_title(&mut page)?;
    page.extend(part(|w| man.render_name_section(w))?);
    page.extend(part(|w| man.render_synopsis_section(w))?);
    page.extend(part(|w| man.render_description_section(w))?);
    page.extend(part(|w| man.render_options_section(w))?);
    commands_section(&cmd, &mut page)?;

    let mut roff = Roff::new();
    exit_status_section(&mut roff, killswitch_cli::args::EXIT_STATUS);
    roff.control("SH", ["ENVIRONMENT"]);
    definitions(
        &mut roff,
        &[(
            "KILLSWITCH_SOCKET",
            "The daemon's socket, when --socket is not given.",
        )],
    );
    roff.control("SH", ["FILES"]);
    definitions(
        &mut roff,
        &[
            (
                DEFAULT_SOCKET,
                "The daemon's socket, where this command sends its requests.",
            ),
            (
                "/etc/wireguard/NAME.conf",
                "Where the daemon looks up a configuration that up names rather than gives as a file (wireguard_dir in the daemon's configuration).",
            ),
        ],
    );
    roff.control("SH", ["EXAMPLES"]);
    for (command, what) in killswitch_cli::args::EXAMPLES {
        roff.control("TP", []);
        roff.text([bold(*command)]);
        roff.text([roman(*what)]);
    }
    see_also(&mut roff, &[("killswitchd", "8")]);
    page.extend(part(|w| roff.to_writer(w))?);
    Ok(page)
}

/// `killswitchd(8)`, dated `date` (YYYY-MM-DD).
pub fn killswitchd(date: &str) -> io::Result<Vec<u8>> {
    let mut cmd = killswitch_daemon::args::command();
    cmd.build();
    let mut page = Vec::new();
    let man = page_of(cmd, "8", "System Administration", date);
    man.render_title(&mut page)?;
    page.extend(part(|w| man.render_name_section(w))?);
    page.extend(part(|w| man.render_synopsis_section(w))?);
    page.extend(part(|w| man.render_description_section(w))?);
    page.extend(part(|w| man.render_options_section(w))?);

    let mut roff = Roff::new();
    exit_status_section(&mut roff, killswitch_daemon::args::EXIT_STATUS);
    roff.control("SH", ["SIGNALS"]);
    roff.text([roman(
        "SIGTERM and SIGINT stop the daemon within a second. It leaves its rules in place \
         (a stop is not a reason to leak) and gives DNS back: resolv.conf as it was, or \
         systemd-resolved's own servers. SIGHUP (systemctl reload) reads the configuration \
         file again: the LAN, the allowed interfaces, subnets and inbound services and the \
         local-bridge setting apply at once, in one transaction; the WireGuard directory and \
         dead_after_seconds from the next up; admin_group, dns and resolv_conf at the next \
         start. A file that cannot be used is refused: the running configuration stays, and \
         status says why. SIGUSR1 and SIGUSR2 are ignored.",
    )]);
    roff.control("SH", ["ENVIRONMENT"]);
    definitions(
        &mut roff,
        &[(
            "KILLSWITCH_SOCKET",
            "The socket to listen on, when --socket is not given.",
        )],
    );
    roff.control("SH", ["FILES"]);
    let state_dir = killswitch_daemon::store::DEFAULT_STATE_DIR;
    let settings = format!("{state_dir}/settings.json");
    let lock = format!("{state_dir}/killswitchd.lock");
    let backup = format!("{state_dir}/resolv.conf.backup");
    definitions(
        &mut roff,
        &[
            (
                killswitch_daemon::config::DEFAULT_PATH,
                "The configuration (optional; its keys are documented in the installed file). \
                 A file that cannot be parsed makes the daemon start blocked, with the error in \
                 the status.",
            ),
            (DEFAULT_SOCKET, "The socket clients talk to."),
            (
                &settings,
                "The settings (lockdown, allow-lan) and the last requested state, so that a \
                 restart or a reboot resumes them. One that cannot be used or trusted starts the \
                 daemon blocked with lockdown on, and is kept as settings.json.corrupt.",
            ),
            (
                &lock,
                "Held while a daemon runs: one daemon per state directory.",
            ),
            (
                &backup,
                "resolv.conf as it was before the daemon pointed it at a tunnel's resolvers; put \
                 back by down, on stop, and after a crash on the next start.",
            ),
            (
                "/etc/resolv.conf",
                "Written while a tunnel that up started is connected, unless systemd-resolved \
                 runs (then it is told instead).",
            ),
            (
                "/etc/wireguard",
                "Where configurations that up names are looked up (wireguard_dir).",
            ),
            (
                "killswitchd.service, killswitch-early.service",
                "The systemd units: the daemon, and --early-boot before the network comes up.",
            ),
        ],
    );
    see_also(&mut roff, &[("killswitch", "1")]);
    page.extend(part(|w| roff.to_writer(w))?);
    Ok(page)
}

/// clap_mangen's page for `cmd`, titled as man pages are (the name in capitals) and footed with
/// the product's name and version rather than the binary's. The date is not optional: clap_mangen
/// writes an empty one as nothing, which shifts the source and the manual into its place.
fn page_of(cmd: clap::Command, section: &str, manual: &str, date: &str) -> Man {
    let title = cmd.get_name().to_uppercase();
    Man::new(cmd)
        .title(title)
        .section(section)
        .date(date)
        .source(format!("killswitch {PRODUCT_VERSION}"))
        .manual(manual)
}

/// The date (YYYY-MM-DD, UTC) of `seconds` since the Unix epoch: for the pages' dates, from
/// `SOURCE_DATE_EPOCH` when the build sets it (reproducible builds).
pub fn date(seconds: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01 (never negative here).
    let days = seconds / 86_400 + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// COMMANDS: a subsection per visible command, with its synopsis, description and own options.
/// The global options (`--socket`, `--json`) and `--help` are left out there: OPTIONS lists them
/// once.
fn commands_section(cmd: &clap::Command, page: &mut Vec<u8>) -> io::Result<()> {
    page.extend(part(|w| {
        Roff::new().control("SH", ["COMMANDS"]).to_writer(w)
    })?);
    for (path, sub) in commands(cmd, "") {
        // clap takes a name as `&'static str` (owned names need its `string` feature, which
        // would grow the CLI too): this build tool leaks the few it renders.
        let name: &'static str = Box::leak(path.clone().into_boxed_str());
        let sub = sub.name(name).mut_args(|arg| {
            if arg.is_global_set() || arg.get_id() == "help" {
                arg.hide(true)
            } else {
                arg
            }
        });
        let has_options = sub.get_arguments().any(|a| !a.is_hide_set());
        let man = Man::new(sub.clone());
        page.extend(part(|w| {
            Roff::new().control("SS", [path.as_str()]).to_writer(w)
        })?);
        page.extend(body(|w| man.render_synopsis_section(w))?);
        page.extend(part(|w| Roff::new().control("PP", []).to_writer(w))?);
        page.extend(body(|w| man.render_description_section(w))?);
        if has_options {
            page.extend(body(|w| man.render_options_section(w))?);
        }
    }
    Ok(())
}

/// Every command under `cmd`, depth first, each with its full name (`allow add subnet`): a
/// command with commands of its own comes first, then each of those. clap's own `help` command
/// is not one of ours (`-h` and `--help` are in OPTIONS).
pub fn commands(cmd: &clap::Command, prefix: &str) -> Vec<(String, clap::Command)> {
    let mut all = Vec::new();
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let path = format!("{prefix}{}", sub.get_name());
        all.push((path.clone(), sub.clone()));
        all.extend(commands(sub, &format!("{path} ")));
    }
    all
}

/// What the roff crate writes at the top of everything it renders: a string for apostrophes
/// (so that "daemon's" is not typeset with a right quote). The page needs it once, at the top.
const PREAMBLE: &[u8] = b".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// Something rendered (by clap_mangen or the roff crate), without the preamble: to follow the
/// title, which has it.
fn part(render: impl FnOnce(&mut dyn io::Write) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut rendered = Vec::new();
    render(&mut rendered)?;
    match rendered.strip_prefix(PREAMBLE) {
        Some(rest) => Ok(code_in_bold(&String::from_utf8_lossy(rest)).into_bytes()),
        None => Err(unexpected("a part without the roff preamble", &rendered)),
    }
}

/// The help texts mark commands, values and keys as `code`, which a terminal shows as it is; a
/// man page sets them in bold instead. Only in text lines (not requests), and only where the
/// backquotes pair up within the line (a help paragraph is one line).
fn code_in_bold(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len());
    for line in roff.split_inclusive('\n') {
        let quotes = line.matches('`').count();
        if line.starts_with('.') || quotes == 0 || quotes % 2 != 0 {
            out.push_str(line);
            continue;
        }
        for (i, piece) in line.split('`').enumerate() {
            if i > 0 {
                out.push_str(if i % 2 == 1 { "\\fB" } else { "\\fR" });
            }
            out.push_str(piece);
        }
    }
    out
}

/// A section clap_mangen rendered, without its `.SH` heading: for use inside a subsection.
fn body(render: impl FnOnce(&mut dyn io::Write) -> io::Result<()>) -> io::Result<Vec<u8>> {
    let mut section = part(render)?;
    match section.iter().position(|&b| b == b'\n') {
        Some(end) if section.starts_with(b".SH ") => Ok(section.split_off(end + 1)),
        _ => Err(unexpected(
            "a section without its .SH heading first",
            &section,
        )),
    }
}

/// An error for output of clap_mangen that this module does not expect (a newer version's).
fn unexpected(what: &str, rendered: &[u8]) -> io::Error {
    io::Error::other(format!(
        "clap_mangen rendered {what}: {}",
        String::from_utf8_lossy(rendered)
    ))
}

/// EXIT STATUS, from a binary's table.
fn exit_status_section(roff: &mut Roff, statuses: &[(u8, &str)]) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in statuses {
        roff.control("TP", []);
        roff.text([bold(code.to_string())]);
        roff.text([roman(capitalised(meaning))]);
    }
}

/// A list of terms (in bold) and what they are.
fn definitions(roff: &mut Roff, items: &[(&str, &str)]) {
    for (term, meaning) in items {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*meaning)]);
    }
}

/// SEE ALSO: the other binary's page, the tools killswitch works with, and the documentation
/// the package installs.
fn see_also(roff: &mut Roff, ours: &[(&str, &str)]) {
    roff.control("SH", ["SEE ALSO"]);
    let pages = ours
        .iter()
        .chain(&[("wg-quick", "8"), ("wg", "8"), ("nft", "8")]);
    let mut line = Vec::new();
    for (i, (name, section)) in pages.enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        line.push(bold(*name));
        line.push(roman(format!("({section})")));
    }
    roff.text(line);
    roff.control("PP", []);
    roff.text([
        roman("The rules, the states and the threat model: "),
        italic("/usr/share/doc/killswitch/security.md"),
        roman("; the overview: "),
        italic("/usr/share/doc/killswitch/README.md"),
        roman(" (both installed by the Debian package)."),
    ]);
}

/// `meaning` with its first letter in capitals and a full stop: the tables are written as
/// `--help` lists them, the man page shows sentences.
fn capitalised(meaning: &str) -> String {
    let mut chars = meaning.chars();
    let mut sentence: String = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "2026-01-02";

    fn text(page: io::Result<Vec<u8>>) -> String {
        String::from_utf8(page.expect("renders")).expect("utf-8")
    }

    #[test]
    fn the_cli_page_documents_every_command_and_option() {
        let page = text(killswitch(DATE));
        let cmd = killswitch_cli::args::command();
        let all = commands(&cmd, "");
        assert!(
            all.iter().any(|(path, _)| path == "allow add subnet"),
            "nested commands"
        );
        for (path, sub) in all {
            // roff quotes an argument with spaces.
            let heading = if path.contains(' ') {
                format!(".SS \"{path}\"\n")
            } else {
                format!(".SS {path}\n")
            };
            assert!(page.contains(&heading), "no subsection for {path}");
            for long in sub.get_arguments().filter_map(|a| a.get_long()) {
                // roff escapes the dashes: \-\-interface.
                assert!(
                    page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                    "{path} --{long} missing"
                );
            }
        }
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "COMMANDS",
            "\"EXIT STATUS\"",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "\"SEE ALSO\"",
        ] {
            assert!(page.contains(&format!(".SH {section}\n")), "no {section}");
        }
        // The global options once, in OPTIONS; not again under every command.
        for global in ["json", "socket"] {
            let entry = format!(".TP\n\\fB\\-\\-{global}\\fR");
            assert_eq!(page.matches(&entry).count(), 1, "{entry}");
        }
        assert!(page.contains(&format!(
            ".TH KILLSWITCH 1 {DATE} \"killswitch {PRODUCT_VERSION}\" \"User Commands\""
        )));
    }

    #[test]
    fn the_daemon_page_documents_every_visible_option() {
        let page = text(killswitchd(DATE));
        for arg in killswitch_daemon::args::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let mentioned = page.contains(&format!("\\-\\-{}", long.replace('-', "\\-")));
            assert_eq!(mentioned, !arg.is_hide_set(), "--{long}");
        }
        assert!(page.contains("\n.TH KILLSWITCHD 8 "), "{page}");
        for section in ["\"EXIT STATUS\"", "SIGNALS", "FILES", "\"SEE ALSO\""] {
            assert!(page.contains(&format!(".SH {section}\n")), "no {section}");
        }
    }

    #[test]
    fn dates_are_civil_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_700_000_000), "2023-11-14");
        assert_eq!(date(4_107_542_399), "2100-02-28");
    }

    #[test]
    fn code_is_set_in_bold_where_the_quotes_pair_up() {
        assert_eq!(
            code_in_bold("run `a` and `b`\n.TP\nnot `this\n"),
            "run \\fBa\\fR and \\fBb\\fR\n.TP\nnot `this\n"
        );
        let page = text(killswitch(DATE));
        assert!(page.contains("\\fBkillswitch\\fR by default"), "{page}");
    }

    #[test]
    fn every_exit_status_is_on_the_page() {
        let page = text(killswitch(DATE));
        for (code, _) in killswitch_cli::args::EXIT_STATUS {
            assert!(page.contains(&format!(".TP\n\\fB{code}\\fR\n")), "{code}");
        }
    }
}
