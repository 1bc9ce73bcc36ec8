# Build and install killswitch without a package manager.
#   make                       build release binaries
#   sudo make install          install under PREFIX (default /usr/local), units, config, group
#   sudo make uninstall        remove what install put there (not the settings)
#   make deb                   build the Debian package (needs cargo-deb)
PREFIX    ?= /usr/local
DESTDIR   ?=
BINDIR    ?= $(PREFIX)/bin
SBINDIR   ?= $(PREFIX)/sbin
UNITDIR   ?= /etc/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
CONFDIR   ?= /etc/killswitch

.PHONY: all build install uninstall deb
all: build

build:
	cargo build --release --workspace --bins --locked

install: build
	install -Dm755 target/release/killswitchd $(DESTDIR)$(SBINDIR)/killswitchd
	install -Dm755 target/release/killswitch $(DESTDIR)$(BINDIR)/killswitch
	install -d $(DESTDIR)$(UNITDIR)
	for unit in killswitchd.service killswitch-early.service; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' packaging/systemd/$$unit > $(DESTDIR)$(UNITDIR)/$$unit && \
		chmod 644 $(DESTDIR)$(UNITDIR)/$$unit; \
	done
	install -Dm644 packaging/sysusers.d/killswitch.conf $(DESTDIR)$(SYSUSERSDIR)/killswitch.conf
	test -e $(DESTDIR)$(CONFDIR)/config.toml || install -Dm644 packaging/config.toml $(DESTDIR)$(CONFDIR)/config.toml
	@if [ -z "$(DESTDIR)" ]; then \
		getent group killswitch >/dev/null || groupadd --system killswitch; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; \
			echo "enable with: systemctl enable --now killswitch-early.service killswitchd.service"; fi; \
	fi

# The units go first: a running daemon would restore its rules, and a stop gives DNS back. Then
# --teardown removes what a stopped (or crashed) daemon leaves: its rules, its interfaces.
uninstall:
	-@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now killswitchd.service killswitch-early.service; fi
	-$(DESTDIR)$(SBINDIR)/killswitchd --teardown
	rm -f $(DESTDIR)$(SBINDIR)/killswitchd $(DESTDIR)$(BINDIR)/killswitch
	rm -f $(DESTDIR)$(UNITDIR)/killswitchd.service $(DESTDIR)$(UNITDIR)/killswitch-early.service
	rm -f $(DESTDIR)$(SYSUSERSDIR)/killswitch.conf

deb: build
	bash packaging/build-deb.sh
