# Build and install killswitch without a package manager.
#   make                       build release binaries
#   sudo make install          install under PREFIX (default /usr/local), units, config, group,
#                              man pages and bash/zsh/fish completions
#   sudo make uninstall        remove what install put there (not the settings)
#   make deb                   build the Debian package (needs cargo-deb)
PREFIX    ?= /usr/local
DESTDIR   ?=
BINDIR    ?= $(PREFIX)/bin
SBINDIR   ?= $(PREFIX)/sbin
UNITDIR   ?= /etc/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
CONFDIR   ?= /etc/killswitch
MANDIR    ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
# zsh reads $(PREFIX)/share/zsh/site-functions for /usr/local; Debian's zsh reads vendor-completions
# under /usr (where the package installs them), not site-functions.
ZSHCOMPDIR ?= $(if $(filter /usr,$(PREFIX)),$(PREFIX)/share/zsh/vendor-completions,$(PREFIX)/share/zsh/site-functions)
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# The man pages' date: the last commit's, so that one commit makes the same pages. Given to
# killswitch-docgen only: exported to cargo, it would rebuild the crates whose build scripts watch it.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
# What killswitch-docgen writes from the binaries' clap definitions (laid out as under share/).
GENERATED := target/release/share

.PHONY: all build install uninstall deb
all: build

build:
	cargo build --release --workspace --bins --locked
	rm -rf $(GENERATED)
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) target/release/killswitch-docgen $(GENERATED) >/dev/null

install: build
	install -Dm755 target/release/killswitchd $(DESTDIR)$(SBINDIR)/killswitchd
	install -Dm755 target/release/killswitch $(DESTDIR)$(BINDIR)/killswitch
	install -d $(DESTDIR)$(UNITDIR)
	for unit in killswitchd.service killswitch-early.service; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' packaging/systemd/$$unit > $(DESTDIR)$(UNITDIR)/$$unit && \
		chmod 644 $(DESTDIR)$(UNITDIR)/$$unit; \
	done
	install -Dm644 packaging/sysusers.d/killswitch.conf $(DESTDIR)$(SYSUSERSDIR)/killswitch.conf
	install -Dm644 packaging/systemd/exec.conf $(DESTDIR)$(PREFIX)/share/killswitch/exec.conf
	test -e $(DESTDIR)$(CONFDIR)/config.toml || install -Dm644 packaging/config.toml $(DESTDIR)$(CONFDIR)/config.toml
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	gzip -9n -c $(GENERATED)/man/man1/killswitch.1 > $(DESTDIR)$(MANDIR)/man1/killswitch.1.gz
	gzip -9n -c $(GENERATED)/man/man8/killswitchd.8 > $(DESTDIR)$(MANDIR)/man8/killswitchd.8.gz
	chmod 644 $(DESTDIR)$(MANDIR)/man1/killswitch.1.gz $(DESTDIR)$(MANDIR)/man8/killswitchd.8.gz
	for p in killswitch killswitchd; do \
		install -Dm644 $(GENERATED)/bash-completion/completions/$$p $(DESTDIR)$(BASHCOMPDIR)/$$p && \
		install -Dm644 $(GENERATED)/zsh/vendor-completions/_$$p $(DESTDIR)$(ZSHCOMPDIR)/_$$p && \
		install -Dm644 $(GENERATED)/fish/vendor_completions.d/$$p.fish $(DESTDIR)$(FISHCOMPDIR)/$$p.fish; \
	done
	@if [ -z "$(DESTDIR)" ]; then \
		getent group killswitch >/dev/null || groupadd --system killswitch; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; \
			echo "enable with: systemctl enable --now killswitch-early.service killswitchd.service"; fi; \
	fi

# The units go first: a running daemon would restore its rules, and a stop gives DNS back. Then
# --teardown removes what a stopped (or crashed) daemon leaves: its rules, its interfaces. Both
# only without DESTDIR: a staging directory's copy has no business with this machine's network.
uninstall:
	-@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now killswitchd.service killswitch-early.service; fi
	-@if [ -z "$(DESTDIR)" ]; then $(SBINDIR)/killswitchd --teardown; fi
	rm -f $(DESTDIR)$(SBINDIR)/killswitchd $(DESTDIR)$(BINDIR)/killswitch
	rm -f $(DESTDIR)$(UNITDIR)/killswitchd.service $(DESTDIR)$(UNITDIR)/killswitch-early.service
	rm -f $(DESTDIR)$(SYSUSERSDIR)/killswitch.conf
	rm -f $(DESTDIR)$(PREFIX)/share/killswitch/exec.conf
	rm -f $(DESTDIR)$(MANDIR)/man1/killswitch.1.gz $(DESTDIR)$(MANDIR)/man8/killswitchd.8.gz
	for p in killswitch killswitchd; do \
		rm -f $(DESTDIR)$(BASHCOMPDIR)/$$p $(DESTDIR)$(ZSHCOMPDIR)/_$$p $(DESTDIR)$(FISHCOMPDIR)/$$p.fish; \
	done

deb: build
	bash packaging/build-deb.sh
