# Sourced by scripts/example.sh and scripts/test.sh: installs what is missing
# on a Debian machine and configures Nix for this offline environment.
set -euo pipefail

NIXOCI_DEBS=(nix-bin busybox-static umoci skopeo protobuf-compiler pigz zstd tar time bc containerd runc
    containernetworking-plugins iptables iproute2 docker-registry apache2-utils openssl python3-venv
    git qemu-user-static binfmt-support rootlesskit slirp4netns uidmap fuse-overlayfs xfsprogs e2fsprogs)

missing=()
for p in "${NIXOCI_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Nix: flakes on, and no binary cache (none can be reached here). nixoci
# passes the experimental features itself; the tests also call nix directly.
if [ "$(id -u)" = 0 ] && [ -w /etc/nix/nix.conf ]; then
    grep -q '^experimental-features' /etc/nix/nix.conf || echo 'experimental-features = nix-command flakes' >> /etc/nix/nix.conf
    grep -q '^substituters' /etc/nix/nix.conf || echo 'substituters =' >> /etc/nix/nix.conf
else
    export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters ='
fi

# Emulation for other platforms (multi-platform images): qemu-user-static's
# binfmt handlers, registered where the kernel has binfmt_misc. Nix then
# builds aarch64-linux derivations here (`extra-platforms`).
if [ "$(id -u)" = 0 ]; then
    if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
    fi
    if [ -e /proc/sys/fs/binfmt_misc/status ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
    if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && [ -w /etc/nix/nix.conf ]; then
        grep -q '^extra-platforms' /etc/nix/nix.conf || echo 'extra-platforms = aarch64-linux' >> /etc/nix/nix.conf
    fi
fi

# Rootless use (an unprivileged developer): what a desktop distribution
# already provides. The Nix daemon (multi-user Nix is how a user without
# root builds) runs where no init system started it, and /dev/net/tun is
# usable by users (slirp4netns opens it), as distributions ship it; this
# image leaves it 0600.
if [ "$(id -u)" = 0 ]; then
    if ! nix store ping --store daemon >/dev/null 2>&1; then
        mkdir -p /nix/var/nix/daemon-socket /var/log/nix
        setsid nix-daemon </dev/null >>/var/log/nix/daemon.log 2>&1 &
        for _ in $(seq 100); do
            nix store ping --store daemon >/dev/null 2>&1 && break
            sleep 0.1
        done
    fi
    if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
        chmod 0666 /dev/net/tun
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo is needed (https://rustup.rs)" >&2
    exit 1
fi
