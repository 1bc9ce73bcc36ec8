//! What `killswitch` accepts: the global options, the commands and their arguments, and the exit
//! statuses and examples that `--help` and the man page show.
//!
//! Every doc comment on the definitions is user-facing text: the first paragraph is the short
//! help (`-h`, the command list, the man page's NAME line), the whole the long help (`--help`,
//! the man page).

use clap::{Parser, Subcommand, ValueEnum, ValueHint};
use killswitch_types::{Fwmark, InterfaceName};
use std::net::IpAddr;
use std::path::PathBuf;

/// The exit statuses of `killswitch` and what each means: `--help` and the man page list them,
/// and the binary exits with these numbers.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "the request succeeded (for --version: whether or not the daemon answered)",
    ),
    (
        1,
        "the daemon refused or failed the request, or `up --wait` ended without a connection (the reason is printed on one line); for verify: a check failed, or nothing is protected",
    ),
    (
        2,
        "the command line was invalid, or names a file path that does not exist or cannot be read (as for killswitchd); a configuration name for `up` that the daemon cannot find is 1",
    ),
    (
        3,
        "the daemon could not be reached, or answered something unreadable",
    ),
];

/// Examples for `--help` and the man page: a command line, and what it does.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("killswitch status", "Show what the kill switch is doing."),
    (
        "sudo killswitch up /etc/wireguard/se1.conf /etc/wireguard/se2.conf",
        "Bring up WireGuard with two servers to fail over between, protected from the start.",
    ),
    (
        "sudo killswitch up --wait --timeout 20 se1 se2 && ./backup.sh",
        "Connect, and go on only once the tunnel is up (exit status 1, with each server's failure, if it is not within 20 s).",
    ),
    (
        "sudo killswitch guard wg0",
        "Protect a tunnel that wg-quick manages: its servers, fwmark and DNS are found.",
    ),
    (
        "sudo killswitch guard tun0 --ovpn /etc/openvpn/client/work.conf",
        "Protect an OpenVPN tunnel: every `remote` of its file is a server.",
    ),
    (
        "sudo killswitch guard wg0 --endpoint 198.51.100.1:51820 --dns 10.64.0.1 --mark 0xca6c",
        "Protect a tunnel with everything given, nothing discovered.",
    ),
    (
        "sudo killswitch lockdown on",
        "Block everything whenever no tunnel is connected, across reboots too.",
    ),
    (
        "killswitch --json status | jq .state",
        "Read the state from a script.",
    ),
    (
        "killswitch verify",
        "Check that the kernel holds the rules and that packets going around the tunnel are refused.",
    ),
    (
        "killswitch blocked",
        "Watch what is refused: counts per reason, the last destinations and who sent them.",
    ),
    (
        "killswitch exec -- transmission-cli file.torrent",
        "Run one program through the tunnel only, whatever the rest of the machine does.",
    ),
];

/// The text after `--help`: the exit statuses and the examples, from the tables above.
fn after_help() -> String {
    let mut text = String::from("Exit status:\n");
    for (code, meaning) in EXIT_STATUS {
        text.push_str(&format!("  {code}  {meaning}\n"));
    }
    text.push_str("\nExamples:\n");
    for (command, _) in EXAMPLES {
        text.push_str(&format!("  {command}\n"));
    }
    text.pop();
    text
}

/// Control the killswitch daemon: a kernel-enforced VPN kill switch.
///
/// While a tunnel is guarded, nothing leaves this machine except through the tunnel and to the
/// VPN server itself; when the tunnel drops, traffic stops instead of leaking. The rules live in the
/// kernel (nftables), so they hold even if this command, the VPN client or the daemon dies.
///
/// This command only asks killswitchd, over its socket; it never changes the firewall itself.
/// Anyone may read the status. Changing anything needs root or membership in the daemon's admin
/// group (`killswitch` by default).
#[derive(Debug, Parser)]
#[command(
    name = "killswitch",
    version = killswitch_types::PRODUCT_VERSION,
    // `--version` is ours (below): it asks the daemon for its version too.
    disable_version_flag = true,
    // A command is needed, except with --version; clap can say only one of the two.
    override_usage = "killswitch [OPTIONS] <COMMAND>\n       killswitch --version [--json] [--socket PATH]",
    subcommand_value_name = "COMMAND",
    after_help = after_help(),
)]
pub struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, value_name = "PATH", value_hint = ValueHint::FilePath, env = "KILLSWITCH_SOCKET", default_value = killswitch_types::ipc::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print machine-readable JSON instead of text (one object; one per line for `events`).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print this program's version and the running daemon's, then exit.
    ///
    /// The daemon is asked through its socket, for at most two seconds; if it does not answer,
    /// that is printed instead of its version, and the exit status is still 0.
    #[arg(short = 'V', long)]
    pub version: bool,
    /// What to do; `None` only with `--version` (the binary refuses it otherwise).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the state, the settings, the tunnel and the last error.
    ///
    /// Anyone may ask. With --json, the status object as the daemon sent it: `protocol` (the
    /// socket protocol's version), `schema` (the layout of the object, which changes only when a
    /// field is removed, renamed or changes its meaning: scripts should ignore fields they do not
    /// know), `daemon_version` (the daemon's release), then the state, the settings, the tunnel,
    /// the last error, the firewall and DNS.
    ///
    /// For a tunnel of `up`, each server's last failure is shown (`failed:`; in JSON
    /// `tunnel.managed.failures`, with `server`, `cause` and `message`). Causes: `no_handshake`
    /// (handshakes went unanswered: a wrong key or a server that is down, which WireGuard cannot
    /// tell apart), `answered_without_handshake`, `unreachable` (not one packet could be sent;
    /// told by kernel WireGuard only), `silent` (the tunnel was up, then nothing came back),
    /// `device_lost`, `device_creation`, `config` and `device_error`.
    Status,
    /// Protect a tunnel that another program manages (OpenVPN, wg-quick, ...).
    ///
    /// Blocks everything at once except the VPN servers' exact addresses, ports and protocols.
    /// When the interface is up with an address, traffic may also leave through it. DNS is allowed
    /// only to the tunnel's resolvers, through the tunnel. Replaces whatever was guarded before,
    /// atomically.
    ///
    /// `killswitch guard wg0` finds the rest itself. The daemon (which may read the device, where
    /// you may not) asks a WireGuard interface for its peers' endpoints and its fwmark, over the
    /// userspace implementation's UAPI socket (/var/run/wireguard/IFACE.sock: wireguard-go,
    /// boringtun) or kernel WireGuard's generic netlink. A device without a fwmark gets 0xca6c
    /// (wg-quick's 51820; the next of 0xca6d-0xca6f if a routing rule already uses it), and the
    /// reply says so: only packets with the mark, the tunnel's own, may use the hole. DNS comes
    /// from systemd-resolved's servers for the interface; with none, DNS is blocked and the reply
    /// says to pass --dns. Peers without an endpoint are skipped.
    ///
    /// For OpenVPN (a tun device), pass --ovpn with its configuration file: every `remote` (with
    /// the file's `proto` and `port`, and `<connection>` blocks) becomes a server, and its `mark` the
    /// fwmark. Host names there and in --endpoint are resolved by this command when it runs,
    /// every address covered and printed; the hole is on those addresses, not on the name.
    ///
    /// What is given always wins over what would be found.
    Guard {
        /// The tunnel interface, e.g. wg0 or tun0.
        #[arg(
            value_name = "IFACE",
            required_unless_present = "interface",
            conflicts_with = "interface"
        )]
        iface: Option<InterfaceName>,
        /// The tunnel interface, as an option (as older releases took it).
        #[arg(long, value_name = "IFACE")]
        interface: Option<InterfaceName>,
        /// A VPN server: IP:PORT[/udp|/tcp] ([v6]:PORT for IPv6), or HOST:PORT[/PROTO], resolved
        /// now. UDP if not given. Repeat for several (at most 16 in all).
        #[arg(long, value_name = "HOST:PORT[/PROTO]")]
        endpoint: Vec<String>,
        /// An OpenVPN configuration file: its `remote`s are the servers, its `mark` the fwmark.
        ///
        /// Read by this command, with your permissions. `remote HOST [PORT] [PROTO]` lines, the
        /// global `proto` and `port`, `<connection>` blocks; udp, udp4, udp6, tcp, tcp-client
        /// and tcp4/tcp6 forms. --endpoint and --mark, when given, win.
        #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
        ovpn: Option<PathBuf>,
        /// A DNS server inside the tunnel; repeat for more. Without it, systemd-resolved's servers
        /// for the interface, if any; otherwise DNS is blocked entirely.
        #[arg(long, value_name = "IP")]
        dns: Vec<IpAddr>,
        /// Only packets with this fwmark (the tunnel's own socket) may reach the servers outside
        /// the tunnel. Decimal or 0x-hex. Defeats programs that try a server's address directly.
        ///
        /// The mark is the one the tunnel program puts on its socket: `wg set wg0 fwmark N`,
        /// OpenVPN's `--mark N`. Without it, a WireGuard interface's own mark is used (and one is
        /// set if it has none).
        #[arg(long, value_name = "N")]
        mark: Option<Fwmark>,
        /// Only sockets owned by this uid may reach the servers outside the tunnel.
        ///
        /// For a tunnel program that runs as a user of its own and sets no fwmark.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..i64::from(u32::MAX)))]
        uid: Option<u32>,
    },
    /// Bring up WireGuard, protected: firewall first, then the tunnel; fail over between servers.
    ///
    /// Each CONFIG is a wg-quick style file (a path, read by this command with your permissions)
    /// or a name that the daemon looks up in /etc/wireguard (NAME.conf). Several configurations
    /// are servers to fail over between, in that order. Only the tunnel's own packets may reach the
    /// current server outside the tunnel; when the tunnel dies (no sign of life for 3 s by default,
    /// `dead_after_seconds` in config.toml), the next server is tried while everything stays
    /// blocked. `down` removes the tunnel.
    ///
    /// Without --wait, the command returns once the daemon has taken the request, usually while
    /// still connecting (it says so); `status` and `events` show when the tunnel is up. With
    /// --wait it returns when the tunnel is connected (exit status 0), or with exit status 1 and
    /// one line saying why not (each failed server's last failure: no handshake, unreachable ...)
    /// when the timeout passes, or at once if the daemon stops trying (a configuration fault,
    /// or another command replaced the tunnel).
    Up {
        /// Configuration files or names, in failover order.
        ///
        /// An argument with a `/` in it, ending in `.conf` or naming an existing file is a file;
        /// anything else is a name. Each configuration needs `DNS =`: the resolvers that
        /// applications and the daemon's tunnel checks are sent to.
        #[arg(value_name = "CONFIG", value_hint = ValueHint::FilePath, required = true)]
        configs: Vec<String>,
        /// The interface name (default: the first configuration's file name, as wg-quick does).
        #[arg(long, value_name = "IFACE")]
        interface: Option<InterfaceName>,
        /// Return only once the tunnel is connected, or with the reason it is not.
        ///
        /// Follows the daemon's changes as they happen (as `events` does); polls nothing. The
        /// reason goes to standard error; with --json the last status is printed either way.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits for the connection, in seconds (default 30).
        ///
        /// One server that never answers costs a 5 s handshake timeout before the next is tried.
        #[arg(long, value_name = "SECONDS", requires = "wait", value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: Option<u64>,
    },
    /// Stop guarding: back to disconnected (everything stays blocked if lockdown is on).
    ///
    /// A tunnel that `up` started is removed, after the blocking rules are in place; a tunnel
    /// another program manages is left to it.
    Down,
    /// Block everything while no tunnel is connected, even after `down` and across reboots.
    ///
    /// `lockdown on` after `off` arms the kill switch again: the machine is blocked at once.
    Lockdown {
        /// `on` blocks whenever no tunnel is connected; `off` no longer does.
        #[arg(hide_possible_values = true)]
        value: OnOff,
    },
    /// Allow the local network (private, link-local and multicast ranges) outside the tunnel.
    ///
    /// The ranges are fixed (10/8, 172.16/12, 192.168/16, 169.254/16, fe80::/10, fc00::/7,
    /// multicast and broadcast), never "whatever the network says is local"; `lan_subnets` in the
    /// daemon's config.toml narrows them to the subnets it names. DNS to the LAN stays blocked.
    AllowLan {
        /// `on` lets the local network through outside the tunnel; `off` blocks it again.
        #[arg(hide_possible_values = true)]
        value: OnOff,
    },
    /// Protect only `killswitch exec` programs and tunnel-only users, not this machine itself.
    ///
    /// With apps-only on, this machine's own traffic is NOT protected: no machine-wide rules,
    /// and `up` does not route the machine into the tunnel or change its DNS. `up` and `guard`
    /// still run and watch the tunnel, and the scopes (programs under `killswitch exec`,
    /// tunnel-only users) leave through it or not at all, as in every state. Lockdown contradicts
    /// it: each is refused while the other is on. allow-lan changes nothing while it is on.
    /// `apps_only = true` in the daemon's config.toml does the same (then only the file can
    /// switch it off).
    AppsOnly {
        /// `on` protects only the scopes; `off` protects the whole machine again.
        #[arg(hide_possible_values = true)]
        value: OnOff,
    },
    /// Exceptions besides the tunnel: allowed interfaces, subnets and inbound services.
    ///
    /// Each passes outside the tunnel in every state, blocked included; none ever opens DNS (a
    /// query goes to the tunnel's resolvers through the tunnel, or nowhere). Entries added here
    /// are kept across restarts; those in the daemon's config.toml (`allow_interfaces`,
    /// `allow_subnets`, `allow_inbound`) are the file's. This machine's own container and VM
    /// bridges (docker0, virbr0 ...) need no entry: the daemon finds them, and `list` shows them.
    Allow {
        /// What to do.
        #[command(subcommand)]
        action: AllowAction,
    },
    /// Users whose programs may reach the network only through the tunnel, in every state.
    ///
    /// Everything a tunnel-only user's processes send leaves through the tunnel the daemon
    /// protects (while it is connected) or not at all: never the physical link, not with a socket
    /// bound to it (SO_BINDTODEVICE), not with a ping socket, not over IPv6 the tunnel does not
    /// carry; DNS only to the tunnel's resolvers. This holds in every state, `disconnected` and
    /// `off` included, where the rest of the machine is unprotected; with no tunnel connected they
    /// reach only this machine itself (loopback). The headless case: `killswitch users add
    /// debian-transmission`, and the torrent client never leaks, whatever else happens. Entries
    /// added here are kept across restarts; those in the daemon's config.toml
    /// (`tunnel_only_users`) are the file's. Root cannot be one.
    Users {
        /// What to do.
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Router mode: protect the clients of a LAN this machine is the gateway of.
    ///
    /// On a Linux gateway, `killswitch router add lan0` makes lan0 a router LAN: its clients'
    /// forwarded traffic leaves through the tunnel the daemon protects (masqueraded, TCP MSS
    /// clamped to the tunnel's MTU) or not at all, never through the WAN, in every state,
    /// `disconnected` and `off` included; while no tunnel is connected they get an error at once
    /// (ICMP unreachable, TCP reset), not silence. Their DNS (ports 53 and 853, to any resolver)
    /// is answered through the tunnel's resolver, and fails fast without a tunnel. Forwarded IPv6
    /// leaves only through a tunnel that carries IPv6. Only sources inside the networks of the
    /// interface's own addresses are accepted from the LAN (spoofed ones are dropped). When the
    /// tunnel, its addresses or its server change, the LAN's existing connections are dropped
    /// from the connection table, so that none sticks to a path it can no longer take.
    ///
    /// The daemon switches IPv4 forwarding on for each LAN interface only
    /// (net.ipv4.conf.IFACE.forwarding); net.ipv4.ip_forward stays the administrator's, and
    /// `status` warns when it is off (the tunnel's replies are then not forwarded to the LAN).
    /// Entries added here are kept across restarts; those in the daemon's config.toml
    /// (`router_lan_interfaces`) are the file's. Never lo, the tunnel, or the WAN (the interface
    /// holding the default route).
    Router {
        /// What to do.
        #[command(subcommand)]
        action: RouterAction,
    },
    /// Run a program with a network scope of its own: the tunnel only, or (`--bypass`) around it.
    ///
    /// `killswitch exec -- CMD [ARGS...]` runs CMD as you, with your environment, working
    /// directory and terminal, in a network namespace of its own whose only way out is the tunnel
    /// the daemon protects: when the tunnel is down (connecting, blocked, disconnected, off), its
    /// connections fail at once and nothing of it reaches the physical link; when the tunnel is
    /// back, its traffic flows again without a restart. This holds whatever the rest of the
    /// machine does, `disconnected` and `off` included: it is the per-app kill switch. DNS goes to
    /// the tunnel's resolvers only (its /etc/resolv.conf names them). IPv4 only: the namespace has
    /// no IPv6, so programs fall back to IPv4. The program cannot reach this machine's own
    /// services either.
    ///
    /// Any user may use it (it only adds protection); each user may have a limited number running
    /// at once (`exec_limit_per_user` in the daemon's config.toml, 16 by default). The namespace
    /// is removed when the program and every child it started have exited.
    ///
    /// The exit status is the program's (128 + N when signal N killed it), 127 when the program
    /// was not found, 126 when it could not be run (or the working directory cannot be entered
    /// as you); otherwise 1 when the daemon refused (the reason is printed) and 3 when it could not
    /// be reached. Ctrl-C, SIGTERM, SIGHUP and SIGQUIT are forwarded to the program; if this
    /// command is killed, the program gets SIGHUP, as from a closed terminal. The program is not
    /// in the terminal's foreground process group (it runs in a session of its own, started by
    /// the daemon): Ctrl-C works because it is forwarded, but job control of the program itself
    /// (Ctrl-Z, `fg`) does not, and it has no controlling terminal (/dev/tty).
    ///
    /// `killswitch exec --bypass -- CMD [ARGS...]` runs CMD, and every child it forks, around
    /// the tunnel through the physical link, in every state, while nothing else does: split
    /// tunnelling. This LOOSENS the protection (whatever the program sends is seen by the local
    /// network and the internet provider), so it is for root and members of the admin group only.
    /// The program runs here, as you, with your environment, working directory and terminal; its
    /// exit status is this command's. Its DNS goes wherever it sends it: to the system's stub
    /// resolver (127.0.0.53) it is answered through the tunnel like everyone's; to a resolver of
    /// its own, around the tunnel. When it and its children have exited, nothing of the bypass
    /// remains. Needs cgroup v2 and cgroup BPF.
    ///
    /// Example: `killswitch exec -- transmission-cli file.torrent` (a torrent client that never
    /// leaks); `killswitch exec -- firefox --private-window`.
    Exec {
        /// Go around the tunnel through the physical link (administrators only).
        ///
        /// Loosens protection: the program's traffic (and its children's) leaves outside the
        /// tunnel, in clear to the local network.
        #[arg(long)]
        bypass: bool,
        /// Freeze the program (and its children) while the tunnel is lost; thaw when it is back.
        #[arg(long, conflicts_with_all = ["kill_on_drop", "bypass"])]
        freeze_on_drop: bool,
        /// Kill the program (and its children) when the tunnel is lost.
        #[arg(long, conflicts_with = "bypass")]
        kill_on_drop: bool,
        /// The program and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Remove the kill switch entirely: no rules at all, and lockdown off.
    ///
    /// Nothing is blocked until the next `guard`, `up` or `lockdown on`. A tunnel that `up`
    /// started is removed. Tunnel-only users (`killswitch users`) stay confined: `off` is about
    /// the machine, and they are removed only with `users remove`.
    Off,
    /// Print every state change as it happens, until interrupted.
    ///
    /// One line for the current status, then one per change, until interrupted or until the
    /// daemon stops (then it says so and exits with status 3, as when the daemon cannot be reached). Anyone may follow. Each text line starts with the time it was received
    /// (RFC 3339, UTC: `2026-12-02T18:40:01Z`), then the state, the settings, the tunnel, what the
    /// tunnel manager did last and the error; a line that would read as the one before is not
    /// printed.
    ///
    /// With --json, one status object per line (as `status --json` prints it), with three fields
    /// added: `type` (`status` for the first line, `change` after), `time` (as above) and, on
    /// `change` lines, `changed` (the names of the top-level fields that differ from the line
    /// before). A status identical to the one before is not printed.
    Events,
    /// Check that this machine is protected now: its rules read back, its probes refused.
    ///
    /// Prints one verdict line (`PROTECTED: 6 of 6 checks passed`, `LEAKING: IPv6 to
    /// 2001:db8::1 left through eth0`, `AT RISK: ...` or `NOT PROTECTING: state disconnected`),
    /// then one line per check; with --json, one object: `verdict`, `summary`, `checks` (each
    /// `name`, `passed`, `detail`), the checks that could not run under `skipped`, and the rules'
    /// comparison. Exits 0 only when the kill switch is protecting and every check passed, 1
    /// otherwise. Anyone may run it, and should, as the user whose programs matter.
    ///
    /// The daemon reads the kernel's rules back and compares them with what it means them to be
    /// (a digest of each, the first difference), and checks that the routing layer's rules are in
    /// place. Then this command sends probes as you: one UDP datagram each to 192.0.2.1 port 9,
    /// to the default gateway's DNS port (a bare 12-byte DNS header that asks nothing) and to
    /// 2001:db8::1 port 9, each bound to the interface of the default route (as a program going
    /// around the tunnel would), so that only the kill switch's firewall can stop it. Each must be
    /// refused on this machine; one the kernel sends is a leak.
    ///
    /// The probes are safe on a production machine: three datagrams at most, to documentation
    /// addresses or the LAN's gateway, with a TTL (hop limit) of 1 so that a leaked one dies at
    /// the first router, and none at all while nothing is meant to be blocked.
    Verify,
    /// Show what is being blocked right now, refreshed every second.
    ///
    /// The state, the tunnel (its interface's received and sent bytes, and how long ago its last
    /// WireGuard handshake completed), the packets and bytes
    /// refused per reason since the kill switch first blocked (`non-tunnel`: leaving outside the
    /// tunnel; `dns`: DNS to anything but the tunnel's resolvers; `ipv6`: IPv6 outside the
    /// tunnel; `inbound`: arriving unasked), and the last refused destinations with the interface
    /// and the user that sent them. The kernel logs at most 10 refused packets a second, so the
    /// list is a sample under a flood; the counts are exact. Payloads are never logged. Anyone may
    /// watch. With --json, one status object per refresh, its `blocked` field holding the counts
    /// and the destinations.
    Blocked {
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
    },
}

/// What `router` does.
#[derive(Debug, Subcommand)]
pub enum RouterAction {
    /// Show each router LAN: its networks, whether it exists, whether forwarding is on for it,
    /// and whether config.toml or `add` made it one (anyone may ask). With --json, the
    /// `router_lans` list of `status --json`, each with `clients`: what its clients get now.
    List,
    /// Make an interface a router LAN, at once and across restarts (root or the admin group).
    ///
    /// The interface need not exist yet: its rules are in place by name, and follow its
    /// addresses when it appears. Refused: lo, the tunnel, killswitch exec's ksx interfaces, and
    /// the interface holding the default route (the WAN).
    Add {
        /// The LAN interface (e.g. lan0, br-lan, eth1).
        interface: InterfaceName,
    },
    /// Stop treating an interface added with `add` as a router LAN (root or the admin group).
    ///
    /// Its clients are no longer confined to the tunnel, nor forwarded by this rule set: what
    /// happens to them is the rest of your firewall's business. Entries of config.toml are
    /// removed there (then `systemctl reload killswitchd`).
    Remove {
        /// The LAN interface, as added.
        interface: InterfaceName,
    },
}

/// What `users` does.
#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Show each tunnel-only user, its uid, and whether config.toml or `add` made it one (anyone
    /// may ask).
    List,
    /// Make a user tunnel-only, at once and across restarts (root or the admin group).
    ///
    /// Connections its processes have open outside the tunnel fail with their next packet.
    Add {
        /// A user name (e.g. debian-transmission) or a numeric uid (e.g. 1001).
        user: String,
    },
    /// Stop confining a user added with `add` (root or the admin group).
    Remove {
        /// The user name or uid, as added.
        user: String,
    },
}

/// What `allow` does.
#[derive(Debug, Subcommand)]
pub enum AllowAction {
    /// Show the local bridges found and every exception in force (anyone may ask).
    List,
    /// Add an exception (root or the admin group).
    Add {
        /// What to allow.
        #[command(subcommand)]
        what: AllowWhat,
    },
    /// Remove an exception added with `add` (root or the admin group).
    Remove {
        /// What to stop allowing.
        #[command(subcommand)]
        what: AllowWhat,
    },
}

/// One exception.
#[derive(Debug, Subcommand)]
pub enum AllowWhat {
    /// An interface whose traffic passes both ways (e.g. tailscale0); never a physical one.
    ///
    /// Its own networks are routed to it rather than into the tunnel. The daemon refuses to honour
    /// a physical Ethernet or Wi-Fi interface (status says so): that would be the kill switch off.
    Interface {
        /// The interface.
        name: InterfaceName,
    },
    /// A subnet reachable outside the tunnel, by one interface (e.g. a NAS on another subnet).
    ///
    /// Private ranges only, unless --public says that the internet is really meant.
    Subnet {
        /// The subnet, ADDRESS/PREFIX (e.g. 10.99.0.0/16).
        subnet: String,
        /// The only interface it may be reached by.
        #[arg(long = "on", value_name = "IFACE")]
        interface: InterfaceName,
        /// Allow a range outside the private ones (10/8, 172.16/12, 192.168/16, link-local, ULA).
        #[arg(long)]
        public: bool,
    },
    /// A service of this machine reachable from outside the tunnel (e.g. tcp/22 for SSH).
    ///
    /// New connections to the port arriving on the interface are let in, and only their replies
    /// out: a connection that started in the tunnel cannot use the exception after a drop.
    Inbound {
        /// PROTOCOL/PORT: tcp/22, udp/51820 ...
        service: String,
        /// The interface the connections arrive on.
        #[arg(long = "on", value_name = "IFACE")]
        interface: InterfaceName,
    },
}

/// The value of `lockdown` and `allow-lan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Switch it on.
    On,
    /// Switch it off.
    Off,
}

impl OnOff {
    /// Whether this is `on`.
    pub fn enabled(self) -> bool {
        self == OnOff::On
    }
}

/// The whole command line as clap sees it, for the man page and the completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_definitions_are_consistent() {
        command().debug_assert();
    }

    #[test]
    fn every_command_and_argument_has_help() {
        let cmd = command();
        for arg in cmd.get_arguments() {
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
        for sub in cmd.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
            for arg in sub.get_arguments() {
                assert!(
                    arg.get_help().is_some(),
                    "{} {} has no help",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn help_lists_every_exit_status_and_example() {
        let help = after_help();
        for (code, _) in EXIT_STATUS {
            assert!(help.contains(&format!("  {code}  ")), "{help}");
        }
        for (example, _) in EXAMPLES {
            assert!(help.contains(example), "{help}");
        }
    }

    #[test]
    fn up_timeout_needs_wait_and_a_sane_number() {
        let parse = |args: &[&str]| Cli::try_parse_from(["killswitch", "up"].iter().chain(args));
        let Ok(Cli {
            command: Some(Command::Up { wait, timeout, .. }),
            ..
        }) = parse(&["--wait", "se1"])
        else {
            panic!("--wait parses");
        };
        assert!(wait);
        assert_eq!(timeout, None, "the default is main's");
        assert!(parse(&["--wait", "--timeout", "5", "se1"]).is_ok());
        let alone = parse(&["--timeout", "5", "se1"]).expect_err("--timeout without --wait");
        assert_eq!(alone.exit_code(), 2);
        assert!(parse(&["--wait", "--timeout", "0", "se1"]).is_err());
    }

    #[test]
    fn router_commands_parse_and_bad_names_are_usage_errors() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(["killswitch", "router"].iter().chain(args));
        let Ok(Cli {
            command:
                Some(Command::Router {
                    action: RouterAction::Add { interface },
                }),
            ..
        }) = parse(&["add", "lan0"])
        else {
            panic!("router add lan0 parses");
        };
        assert_eq!(interface.as_str(), "lan0");
        assert!(matches!(
            parse(&["remove", "br-lan"]),
            Ok(Cli {
                command: Some(Command::Router {
                    action: RouterAction::Remove { .. }
                }),
                ..
            })
        ));
        let list = parse(&["list", "--json"]).expect("list --json");
        assert!(list.json);
        for bad in [
            &["add"][..],
            &["add", "a/b"],
            &["add", "sixteen-chars-xx"],
            &["add", ""],
            &["add", "lan0", "lan1"],
            &["flush"],
        ] {
            let err = parse(bad).expect_err("refused");
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_command_is_needed_except_with_version() {
        assert!(Cli::try_parse_from(["killswitch", "--version"]).is_ok());
        assert!(Cli::try_parse_from(["killswitch", "-V", "--json"]).is_ok());
        let cli = Cli::try_parse_from(["killswitch"]).expect("parses; main refuses it");
        assert!(cli.command.is_none() && !cli.version);
    }
}
